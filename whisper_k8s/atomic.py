"""Atomic writes: readers see the old state or the finished file or folder, never a half-written one.

Dataset trees, processor folders and converted models are read by other processes (init containers, the
trainer, a second test worker). Building them in a temporary sibling and renaming it into place at the end
means an interrupted run leaves the old state untouched and no partial folder behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from whisper_k8s.errors import UserError


def is_non_empty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def refuse_to_clobber(target: Path, what: str) -> None:
    """Raise a UserError when ``target`` holds something that a write would replace."""
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} exists and is not a folder: choose another output path for the {what}")
    if is_non_empty_dir(target):
        raise UserError(
            f"{target} already exists and is not empty: remove it, choose another output folder, "
            f"or pass --force (overwrite=True) to replace the {what}"
        )


@contextmanager
def atomic_directory(target: Path | str, *, overwrite: bool = False, what: str = "folder") -> Iterator[Path]:
    """Yield an empty temporary folder next to ``target``; rename it to ``target`` when the block succeeds.

    Without ``overwrite`` an existing non-empty ``target`` is refused before any work starts. With it, the old
    folder is moved aside and deleted only after the new one is in place.
    """
    target = Path(target).absolute()
    if not overwrite:
        refuse_to_clobber(target, what)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    staging.chmod(0o777 & ~_current_umask())  # mkdtemp's 0700 would hide the result from other users (pods)
    try:
        yield staging
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _swap_into_place(staging: Path, target: Path) -> None:
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        os.replace(staging, target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, retired / target.name)
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str, mode: int | None = None) -> Path:
    """Write ``text`` to a temp file beside ``path`` and rename it over ``path`` (no partial file on failure).

    The file keeps mkstemp's 0600 unless ``mode`` is given (set before the rename).
    """
    path = Path(path)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            if mode is not None:
                os.fchmod(out.fileno(), mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path
