"""The Megatron checkpoint layout that MindSpeed-MM saves and loads, and safe reading of it.

```
<save>/latest_checkpointed_iteration.txt          "300" (or "release")
<save>/iter_0000300/mp_rank_00/model_optim_rng.pt  {"model": {MM key: tensor}, "iteration": 300, "args": ...,
                                                    "checkpoint_version": 3.0, "optimizer": ..., ...}
```

Files are never unpickled wholesale: ``load_file`` uses ``torch.load(weights_only=True)`` with an explicit
allow-list of exactly the classes such files hold (``argparse.Namespace``, numpy's RNG state, inert stand-ins
for Megatron's enums). A file that needs anything else is refused with the class named.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from whisper_k8s.errors import UserError

TRACKER = "latest_checkpointed_iteration.txt"
MODEL_FILE = "model_optim_rng.pt"
RANK_DIR = "mp_rank_00"
RELEASE = "release"
CHECKPOINT_VERSION = 3.0
_ITER_DIR = re.compile(r"^iter_(\d{7,})$")


def iteration_dir(root: str | os.PathLike, iteration: int | str) -> Path:
    """``root/iter_0000300`` (or ``root/release``)."""
    name = RELEASE if iteration == RELEASE else f"iter_{int(iteration):07d}"
    return Path(root) / name


def model_file(iter_dir: str | os.PathLike) -> Path:
    return Path(iter_dir) / RANK_DIR / MODEL_FILE


def read_tracker(root: str | os.PathLike) -> int | str | None:
    """The iteration ``latest_checkpointed_iteration.txt`` names, ``"release"``, or None when absent."""
    path = Path(root) / TRACKER
    if not path.is_file():
        return None
    text = path.read_text().strip()
    if text == RELEASE:
        return RELEASE
    if not text.isdigit():
        raise UserError(f"{path}: expected an iteration number or 'release', found {text!r}")
    return int(text)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_tracker(root: str | os.PathLike, iteration: int | str) -> None:
    """Point the tracker at ``iteration`` atomically (temp file, fsync, rename, fsync the folder)."""
    root = Path(root)
    tmp = root / f".{TRACKER}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{iteration}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / TRACKER)
    _fsync_dir(root)


def iterations_on_disk(root: str | os.PathLike) -> list[int]:
    """Iterations that have a model file, ascending (complete or not: callers verify)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _ITER_DIR.match(child.name)
        if m and model_file(child).is_file():
            found.append(int(m.group(1)))
    return sorted(found)


def resolve_model_file(path: str | os.PathLike) -> Path:
    """The ``model_optim_rng.pt`` behind a save folder (via its tracker), an ``iter_*`` folder, or the file."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"{path}: no such checkpoint file or folder")
    if (path / TRACKER).is_file():
        latest = read_tracker(path)
        target = model_file(iteration_dir(path, latest))
        if not target.is_file():
            raise UserError(f"{path / TRACKER} names iteration {latest}, but {target} does not exist")
        return target
    if model_file(path).is_file():
        return model_file(path)
    raise UserError(
        f"{path}: not a Megatron checkpoint (expected {TRACKER} or {RANK_DIR}/{MODEL_FILE} inside)"
    )


_MEGATRON_ENUM_MODULES = (
    "megatron.core.enums.",
    "megatron.core.transformer.enums.",
    "megatron.training.enums.",
    "mindspeed",
)


class MegatronEnumStandIn:
    """Inert stand-in for Megatron's enums (``ModelType``, ``AttnMaskType``...) found in saved ``args``."""

    def __init__(self, value: Any = None):
        self.value = value

    def __repr__(self) -> str:
        return f"<megatron enum {self.value!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MegatronEnumStandIn) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


def _allowed_globals(names: Iterable[str]) -> list:
    """Map each global a checkpoint needs to an allowed object, or refuse it by name."""
    import numpy as np

    multiarray = getattr(np, "_core", None) or np.core
    known: dict[str, Any] = {"argparse.Namespace": argparse.Namespace}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        known[f"{mod}._reconstruct"] = multiarray.multiarray._reconstruct
        known[f"{mod}.scalar"] = multiarray.multiarray.scalar
    known["numpy.ndarray"] = np.ndarray
    known["numpy.dtype"] = np.dtype
    allowed, refused = [], []
    for name in names:
        if name in known:
            allowed.append((known[name], name))
        elif name.startswith(_MEGATRON_ENUM_MODULES) and name.split(".")[-1][:1].isupper():
            allowed.append((MegatronEnumStandIn, name))
        else:
            refused.append(name)
    if "numpy.dtype" in names:
        # The dtype's own class (numpy.dtypes.UInt32DType...) is built by np.dtype and not listed by torch.
        allowed += [type(np.dtype(t)) for t in (np.uint32, np.int64, np.int32, np.float64, np.float32)]
    if refused:
        raise UserError(
            "refusing to unpickle classes outside the allow-list: " + ", ".join(sorted(refused))
            + " (only tensors, argparse.Namespace, numpy RNG state and Megatron enums are read)"
        )
    return allowed


def load_file(path: str | os.PathLike, *, mmap: bool = True) -> dict:
    """Read a ``.pt``/``.pth`` file safely (``weights_only=True`` plus the allow-list above).

    ``mmap=True`` maps tensor storage instead of reading it, so converting a large checkpoint tensor by tensor
    keeps memory near the largest tensor.
    """
    import torch

    path = Path(path)
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as err:  # not a zip checkpoint, truncated, not a torch file
        raise UserError(f"{path}: not a readable torch checkpoint ({err})") from err
    allowed = _allowed_globals(list(needed))
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        raise UserError(f"{path}: could not be read ({err})") from err


class _ReportingWriter:
    """A binary file wrapper that reports each write's size (torch.save streams storages through it)."""

    def __init__(self, file, on_write: Callable[[int], None]):
        self._file = file
        self._on_write = on_write

    def write(self, data) -> int:
        written = self._file.write(data)
        self._on_write(memoryview(data).nbytes)
        return written

    def flush(self) -> None:
        self._file.flush()


def save_file(
    obj: dict,
    path: str | os.PathLike,
    *,
    on_write: Callable[[int], None] | None = None,
    before_rename: Callable[[Path], None] | None = None,
    fsync: bool = True,
) -> None:
    """``torch.save`` to a temp file beside ``path``, fsync, then rename: a reader never sees half a file.

    ``on_write(nbytes)`` is called as torch.save writes (progress bars, releasing memory-mapped sources);
    ``before_rename(tmp)`` runs on the finished temp file just before it is renamed into place;
    ``fsync=False`` skips waiting for the disk (still atomic for readers and killed processes, not durable
    across a power loss).
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, _ReportingWriter(f, on_write) if on_write else f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        if before_rename:
            before_rename(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(path.parent)


def remove_iteration(root: str | os.PathLike, iteration: int) -> None:
    shutil.rmtree(iteration_dir(root, iteration), ignore_errors=True)
