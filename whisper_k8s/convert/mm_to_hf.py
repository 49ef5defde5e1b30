"""MindSpeed-MM ``.pth`` or Megatron checkpoint -> a complete Hugging Face Whisper folder.

Writes ``model.safetensors`` tensor by tensor, ``config.json`` (from the model.json, with
``tie_word_embeddings: false`` when the trained head differs from the embeddings, so transformers keeps it
instead of overwriting it with the embeddings), ``generation_config.json`` and, when given, the processor
files. The key set and shapes are checked against the config before anything is written.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from whisper_k8s.atomic import atomic_directory
from whisper_k8s.convert import marker, safetensors_io
from whisper_k8s.convert.hf_config import write_hf_configs
from whisper_k8s.convert.mapping import head_is_tied, plan_mm_to_hf
from whisper_k8s.convert.outputs import (
    ConversionResult,
    dtype_name,
    parse_dtype,
    progress_bar,
)
from whisper_k8s.convert.pages import PageReleaser
from whisper_k8s.convert.preparation import prepare_conversion
from whisper_k8s.convert.sources import TensorSource
from whisper_k8s.errors import UserError
from whisper_k8s.formats.mindspeed import LM_HEAD, TIED_EMBEDDING

WEIGHTS = "model.safetensors"
# Files of a processor folder that describe a model, not a processor: never copied over ours.
_FEATURE_EXTRACTOR_FILES = ("preprocessor_config.json", "processor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
_NOT_PROCESSOR_FILES = ("config.json", "generation_config.json", WEIGHTS, marker.MARKER_NAME)


def convert_mm_to_hf(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    config=None,
    processor: str | os.PathLike | None = None,
    dtype=None,
    force: bool = False,
    quiet: bool = False,
    durable: bool = False,
) -> ConversionResult:
    """Convert ``src`` (MindSpeed-MM .pth, Megatron save/iter folder or model file) into the HF folder ``dst``.

    ``config``: a model.json/config.json path or dict, needed when the checkpoint carries none and matches no
    preset; ``processor``: a processor folder copied into ``dst``. A rerun on the same source is a no-op.
    ``durable``: fsync the weights before the folder is renamed into place (see ``convert_hf_to_mm``).
    """
    src, dst = Path(src), Path(dst)
    cast = parse_dtype(dtype)
    processor_files = _processor_files(Path(processor)) if processor else []
    prepared = prepare_conversion(src, dst, direction="mm-to-hf", key_style="mm", config=config, cast=cast,
                                  force=force, extra_inputs=processor_files,
                                  accepts="MindSpeed-MM .pth files and Megatron checkpoints")
    if prepared is None:
        return ConversionResult(dst, skipped=True)
    source, fingerprint, model_config, origin = (prepared.source, prepared.fingerprint, prepared.model_config,
                                                 prepared.config_origin)
    plan = plan_mm_to_hf(source.shapes(), model_config, str(src))
    tied = head_is_tied({k: source.tensors[k] for k in (LM_HEAD, TIED_EMBEDDING)})
    source.release()
    if tied:
        plan = [(hf, mm) for hf, mm in plan if mm != LM_HEAD]
    out_dtype = cast or source.tensors[TIED_EMBEDDING].dtype
    details = {"source": str(src), "config": origin, "tie_word_embeddings": tied, **source.details}

    with atomic_directory(dst, overwrite=True, what="Hugging Face model folder") as staging:
        nbytes = _write_weights(source, plan, cast, staging / WEIGHTS, quiet, durable)
        write_hf_configs(staging, model_config, tie_word_embeddings=tied, dtype=dtype_name(out_dtype))
        for file in processor_files:
            shutil.copy2(file, staging / file.name)
        marker.write(staging, fingerprint, marker.output_files(staging), details)
    return ConversionResult(dst, skipped=False, tensors=len(plan), nbytes=nbytes,
                            details={"tie_word_embeddings": tied, "config": origin})


def _processor_files(folder: Path) -> list[Path]:
    has = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if not has & set(_FEATURE_EXTRACTOR_FILES) or not has & set(_TOKENIZER_FILES):
        raise UserError(f"--processor {folder}: not a Whisper processor folder (needs one of "
                        f"{', '.join(_FEATURE_EXTRACTOR_FILES)} and one of {', '.join(_TOKENIZER_FILES)}); "
                        "write one with `python -m whisper_k8s assets processor`")
    return [p for p in sorted(folder.iterdir()) if p.is_file() and p.name not in _NOT_PROCESSOR_FILES]


def _write_weights(source: TensorSource, plan, cast, path: Path, quiet: bool, durable: bool) -> int:
    entries = []
    for hf, mm in plan:
        tensor = source.tensors[mm]
        dtype = cast if cast is not None and tensor.is_floating_point() else tensor.dtype
        entries.append((hf, dtype, tuple(tensor.shape), lambda t=tensor: t))
    total = sum(t[1].itemsize * source.tensors[mm].numel() for t, (_, mm) in zip(entries, plan, strict=True))
    releaser = PageReleaser(source.regions)
    with progress_bar(total, f"writing {path.name}", quiet) as bar, open(path, "wb") as f:
        def done(nbytes: int) -> None:
            releaser.advance(nbytes)
            bar.update(nbytes)

        safetensors_io.write_streaming(f, entries, on_tensor=done)
        f.flush()
        if durable:
            os.fsync(f.fileno())
    releaser.release_all()
    return total
