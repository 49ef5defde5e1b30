"""Open any Whisper checkpoint we meet as a lazy, memory-mapped ``name -> tensor`` source.

Accepted: a Hugging Face folder (``model.safetensors``, a sharded ``model.safetensors.index.json``,
``pytorch_model.bin`` or its sharded index), a single ``.safetensors`` file, a MindSpeed-MM ``.pth`` (a plain
state dict), a Megatron save folder (its tracker names the iteration), one ``iter_*`` folder or a
``model_optim_rng.pt`` file (its ``model`` entry). Tensors are views into private file maps: shapes and dtypes
are known without reading, data is paged in when used and handed back with ``release()``. torch files are read
only through ``whisper_k8s.formats.megatron.load_file`` (``weights_only`` with an allow-list).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from whisper_k8s.convert import safetensors_io
from whisper_k8s.convert.pages import MappedRegion
from whisper_k8s.errors import UserError
from whisper_k8s.formats import megatron

HF_WEIGHT_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)
CONFIG_FILES = ("config.json", "model.json")
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
# Entries a Megatron/Transformer-Engine state dict may carry that are not weights.
_NON_WEIGHT_SUFFIX = "._extra_state"


@dataclass
class TensorSource:
    """A checkpoint's tensors under normalised names (``model.`` prefix, no ``module.``), memory-mapped."""

    path: Path
    format: str  # e.g. "hf-safetensors", "mindspeed-pth", "megatron"
    tensors: dict[str, torch.Tensor]
    files: list[Path]  # the files whose bytes are the checkpoint (for fingerprints)
    regions: list[MappedRegion] = field(default_factory=list)
    config_path: Path | None = None  # a config.json / model.json shipped with it
    details: dict = field(default_factory=dict)  # e.g. {"iteration": 300}

    @property
    def key_style(self) -> str:
        """``"mm"`` (MindSpeed-MM names), ``"hf"`` (Hugging Face names) or ``"unknown"``."""
        names = self.tensors.keys()
        if any(".proj_q." in n or ".proj_k." in n for n in names):
            return "mm"
        if any(".q_proj." in n or ".k_proj." in n for n in names):
            return "hf"
        return "unknown"

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(t.shape) for name, t in self.tensors.items()}

    def release(self) -> None:
        """Hand back every page read so far (the data stays readable: it is paged in again on use)."""
        for region in self.regions:
            region.release()


def open_source(path: str | os.PathLike) -> TensorSource:
    """Detect what ``path`` is and map it. UserError names what was expected when nothing fits."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint file or folder")
    if path.is_dir():
        return _open_folder(path)
    if path.suffix == ".safetensors":
        return _from_safetensors(path, [path], "hf-safetensors", _config_beside(path))
    if path.suffix in TORCH_SUFFIXES:
        return _from_torch_file(path, path, _config_beside(path))
    raise UserError(f"{path}: unknown checkpoint file type (expected .safetensors, .pth, .pt or .bin)")


def _config_beside(path: Path) -> Path | None:
    folder = path if path.is_dir() else path.parent
    return next((folder / name for name in CONFIG_FILES if (folder / name).is_file()), None)


def _open_folder(path: Path) -> TensorSource:
    for name in HF_WEIGHT_FILES:
        if (path / name).is_file():
            return _open_hf_folder(path, name)
    if (path / megatron.TRACKER).is_file() or megatron.model_file(path).is_file():
        return _from_torch_file(path, megatron.resolve_model_file(path), _megatron_config(path))
    raise UserError(
        f"{path}: not a checkpoint folder: expected one of {', '.join(HF_WEIGHT_FILES)} (Hugging Face), "
        f"{megatron.TRACKER} (Megatron save folder) or {megatron.RANK_DIR}/{megatron.MODEL_FILE} (iter_* folder)"
    )


def _megatron_config(path: Path) -> Path | None:
    """A model.json/config.json in the iteration folder or its save folder, if the trainer left one."""
    return _config_beside(path) or (_config_beside(path.parent) if path.name.startswith("iter_") else None)


def _open_hf_folder(path: Path, weights: str) -> TensorSource:
    config = path / "config.json" if (path / "config.json").is_file() else None
    if not weights.endswith(".index.json"):
        if weights.endswith(".safetensors"):
            return _from_safetensors(path, [path / weights], "hf-safetensors", config)
        return _from_torch_file(path, path / weights, config, fmt="hf-bin")
    index = path / weights
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{index}: not a valid index (expected a JSON object with a weight_map)") from err
    shards = [path / name for name in dict.fromkeys(weight_map.values())]
    missing = [str(s) for s in shards if not s.is_file()]
    if missing:
        raise UserError(f"{index} names shard files that do not exist: {', '.join(missing)}")
    if weights.startswith("model.safetensors"):
        source = _from_safetensors(path, shards, "hf-safetensors-sharded", config)
    else:
        source = _merge([_from_torch_file(s, s, None, fmt="hf-bin") for s in shards], path, "hf-bin-sharded", config)
    absent = sorted(set(_normalise_names(list(weight_map)).values()) - set(source.tensors))
    if absent:
        raise UserError(f"{index} lists tensors its shards do not hold: {', '.join(absent[:10])}")
    return source


def _from_safetensors(path: Path, files: list[Path], fmt: str, config: Path | None) -> TensorSource:
    tensors: dict[str, torch.Tensor] = {}
    regions = []
    for file in files:
        found, region = safetensors_io.map_file(file)
        clash = set(found) & set(tensors)
        if clash:
            raise UserError(f"{file}: tensors also found in another shard: {', '.join(sorted(clash)[:5])}")
        tensors.update(found)
        if region:
            regions.append(region)
    return TensorSource(path, fmt, _normalise(tensors, path), files, regions, config)


def _from_torch_file(path: Path, file: Path, config: Path | None, fmt: str | None = None) -> TensorSource:
    loaded = megatron.load_file(file, mmap=True)
    state, detected, details = _state_dict_of(loaded, file)
    tensors = {}
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            tensors[name] = value
        elif not name.endswith(_NON_WEIGHT_SUFFIX):
            raise UserError(f"{file}: entry {name!r} is a {type(value).__name__}, not a tensor")
    region = MappedRegion.spanning([(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
                                    for t in tensors.values()], backing_file=file)
    return TensorSource(path, fmt or detected, _normalise(tensors, file), [file],
                        [region] if region else [], config, details)


def _state_dict_of(loaded, file: Path) -> tuple[dict, str, dict]:
    """The state dict inside a loaded torch file: Megatron's ``model`` entry or the plain dict itself."""
    if not isinstance(loaded, dict):
        raise UserError(f"{file}: holds a {type(loaded).__name__}, expected a state dict")
    if isinstance(loaded.get("model"), dict):
        details = {k: loaded[k] for k in ("iteration", "checkpoint_version") if k in loaded}
        return loaded["model"], "megatron", details
    for wrapper in ("state_dict", "module"):
        if isinstance(loaded.get(wrapper), dict):
            return loaded[wrapper], "pth", {}
    return loaded, "pth", {}


def _merge(sources: list[TensorSource], path: Path, fmt: str, config: Path | None) -> TensorSource:
    tensors: dict[str, torch.Tensor] = {}
    for source in sources:
        tensors.update(source.tensors)
    return TensorSource(path, fmt, tensors, [f for s in sources for f in s.files],
                        [r for s in sources for r in s.regions], config)


def _normalise_names(names: list[str]) -> dict[str, str]:
    """``module.x`` -> ``x`` (a DDP-wrapped save); ``encoder.x`` -> ``model.encoder.x`` (a bare WhisperModel)."""
    renamed = {n: n for n in names}
    if names and all(n.startswith("module.") for n in names):
        renamed = {n: n[len("module."):] for n in names}
    if not any(v.startswith("model.") for v in renamed.values()):
        renamed = {n: f"model.{v}" if v.startswith(("encoder.", "decoder.")) else v for n, v in renamed.items()}
    return renamed


def _normalise(tensors: dict[str, torch.Tensor], origin: Path) -> dict[str, torch.Tensor]:
    if not tensors:
        raise UserError(f"{origin}: holds no tensors")
    return {new: tensors[old] for old, new in _normalise_names(list(tensors)).items()}
