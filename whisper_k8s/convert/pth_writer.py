"""Write a ``.pth`` (or Megatron ``model_optim_rng.pt``) without ever holding the checkpoint in memory.

``torch.save`` needs every tensor as an object at once. We give it tensors that are views into memory-mapped
files: the source itself when a tensor is written unchanged, else a staging file the converted (cast) tensors
were streamed into one by one. While torch.save copies each storage into the output, the pages it touched are
handed back (``pages.PageReleaser``), so resident memory stays near one tensor instead of the whole checkpoint.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from pathlib import Path

import torch

from whisper_k8s.convert.pages import MappedRegion, PageReleaser
from whisper_k8s.formats import megatron

_ALIGN = 64


def exact_view(tensor: torch.Tensor) -> torch.Tensor:
    """The same bytes under a storage of their own, exactly the tensor's size.

    torch.save writes whole storages, once per storage object: a view keeps a larger source storage out of
    the file, and a distinct storage makes a tensor used twice (the materialised LM head) its own record, as
    in a checkpoint MindSpeed-MM saves itself.
    """
    storage = tensor.untyped_storage()
    begin = tensor.storage_offset() * tensor.element_size()
    own = storage[begin: begin + tensor.numel() * tensor.element_size()]
    return torch.empty(0, dtype=tensor.dtype).set_(own, 0, tensor.shape, tensor.stride())


class StagingFile:
    """Converted tensors streamed to a scratch file, then mapped back as zero-copy views."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "wb")  # noqa: SIM115 (closed in mapped())
        self._entries: list[tuple[int, torch.dtype, tuple[int, ...]]] = []

    def add(self, tensor: torch.Tensor) -> int:
        """Append ``tensor``'s bytes; returns its index for ``mapped()``."""
        self._file.write(b"\0" * (-self._file.tell() % _ALIGN))
        offset = self._file.tell()
        if tensor.numel():
            self._file.write(memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()))
        self._entries.append((offset, tensor.dtype, tuple(tensor.shape)))
        return len(self._entries) - 1

    def mapped(self) -> tuple[list[torch.Tensor], MappedRegion | None]:
        self._file.close()
        size = self.path.stat().st_size
        if size == 0:
            return [torch.empty(shape, dtype=dtype) for _, dtype, shape in self._entries], None
        with open(self.path, "rb") as f:
            region_map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        views = []
        for offset, dtype, shape in self._entries:
            numel = 1
            for n in shape:
                numel *= n
            views.append(torch.frombuffer(region_map, dtype=dtype, count=numel, offset=offset).view(shape)
                         if numel else torch.empty(shape, dtype=dtype))
        whole = torch.frombuffer(region_map, dtype=torch.uint8)
        return views, MappedRegion.spanning([(whole.data_ptr(), whole.numel())], backing_file=self.path)

    def remove(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


def save_mapped(obj: dict, path: Path, regions: list[MappedRegion], *, on_write: Callable[[int], None],
                before_rename: Callable[[Path], None] | None = None, durable: bool = False) -> None:
    """``megatron.save_file`` of mapped tensors, releasing their pages as the bytes go out."""
    releaser = PageReleaser([r for r in regions if r is not None])

    def written(nbytes: int) -> None:
        releaser.advance(nbytes)
        on_write(nbytes)

    megatron.save_file(obj, path, on_write=written, before_rename=before_rename, fsync=durable)
    releaser.release_all()


def staging_path(next_to: Path) -> Path:
    return next_to.parent / f".{next_to.name}.staging-{os.getpid()}"
