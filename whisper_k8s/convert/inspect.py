"""``convert inspect``: what a checkpoint is, without loading it (shapes come from headers and maps)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from whisper_k8s.convert.hf_config import describe_size, infer_dimensions, matching_preset, read_config_file
from whisper_k8s.convert.mapping import as_mapping, head_is_tied
from whisper_k8s.convert.sources import open_source
from whisper_k8s.errors import UserError
from whisper_k8s.formats.mindspeed import LM_HEAD, TIED_EMBEDDING, check_mm_state, hf_to_mm_key

FORMAT_NAMES = {
    "hf-safetensors": "Hugging Face safetensors",
    "hf-safetensors-sharded": "Hugging Face safetensors (sharded)",
    "hf-bin": "Hugging Face pytorch_model.bin",
    "hf-bin-sharded": "Hugging Face pytorch_model.bin (sharded)",
    "pth": "torch state dict (.pth)",
    "megatron": "Megatron checkpoint (model_optim_rng.pt)",
}


@dataclass
class Report:
    path: Path
    format: str
    key_style: str
    tensors: int
    parameters: int
    dtypes: dict[str, int]
    size: str
    preset: str | None
    head: str
    problems: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        style = {"mm": "MindSpeed-MM", "hf": "Hugging Face"}.get(self.key_style, "unrecognised")
        out = [
            f"path:       {self.path}",
            f"format:     {FORMAT_NAMES.get(self.format, self.format)}, {style} key names",
            f"tensors:    {self.tensors}",
            f"parameters: {self.parameters:,} ({self.parameters / 1e9:.3f} B)",
            f"dtype:      {', '.join(f'{d} x{n}' for d, n in self.dtypes.items())}",
            f"model:      {self.size}",
            f"preset:     {self.preset or 'none of the chart presets'}",
            f"LM head:    {self.head}",
        ]
        out += [f"{k}: {v}" for k, v in self.details.items()]
        out.append("problems:   none" if not self.problems else f"problems:   {len(self.problems)}")
        out += [f"  - {p}" for p in self.problems]
        return out


def inspect_checkpoint(path: str | os.PathLike, config=None) -> Report:
    """Describe ``path``; ``problems`` lists whatever would make a conversion or MindSpeed-MM load fail."""
    source = open_source(path)
    shapes = source.shapes()
    mm_shapes = {hf_to_mm_key(k): v for k, v in shapes.items()}
    dims = infer_dimensions(shapes)
    preset = matching_preset(shapes)
    problems = []
    model_config = read_config_file(config) if config else (
        read_config_file(source.config_path) if source.config_path else None)
    if model_config is None and dims:
        model_config = dict(dims)  # no config: at least check the structure the shapes imply
    if LM_HEAD not in mm_shapes and source.key_style == "mm":
        problems.append(f"{LM_HEAD} is missing: MindSpeed-MM loads with strict=False and would train a random "
                        "LM head (convert the Hugging Face checkpoint again with `convert hf-to-mm`)")
    if model_config is not None:
        expected = dict(mm_shapes)
        if source.key_style == "hf" and TIED_EMBEDDING in expected:
            expected.setdefault(LM_HEAD, expected[TIED_EMBEDDING])
        problems += [p for p in check_mm_state(expected, as_mapping(model_config))
                     if not p.startswith(f"missing: {LM_HEAD} ")]
    if source.key_style == "unknown":
        problems.append("no attention projection names found: not a Whisper checkpoint")
    report = Report(
        path=Path(path), format=source.format, key_style=source.key_style, tensors=len(shapes),
        parameters=_unique_parameters(source), dtypes=dict(Counter(str(t.dtype).removeprefix("torch.")
                                                                   for t in source.tensors.values())),
        size=describe_size(dims), preset=preset[0] if preset else None, head=_head(source),
        problems=problems, details={k: v for k, v in source.details.items()},
    )
    source.release()
    return report


def _unique_parameters(source) -> int:
    """Parameters counted once per distinct storage region (a tied head shares the embeddings')."""
    seen = set()
    total = 0
    for tensor in source.tensors.values():
        key = (tensor.data_ptr(), tensor.numel(), tensor.dtype)
        if key not in seen:
            seen.add(key)
            total += tensor.numel()
    return total


def _head(source) -> str:
    if LM_HEAD not in source.tensors:
        return "absent (tied to model.decoder.embed_tokens.weight)"
    if TIED_EMBEDDING not in source.tensors:
        return "present, no embeddings to compare"
    try:
        tied = head_is_tied({k: source.tensors[k] for k in (LM_HEAD, TIED_EMBEDDING)})
    except (RuntimeError, UserError):
        return "present"
    return "present, equal to the embeddings (tied)" if tied else "present, trained separately (untied)"
