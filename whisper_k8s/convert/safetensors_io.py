"""Read safetensors files as memory-mapped tensors and write them one tensor at a time.

The format is an 8-byte little-endian header length, a JSON header (``name -> {dtype, shape, data_offsets}``,
offsets relative to the end of the header) and the raw bytes. ``safetensors.safe_open`` copies each tensor
out of its own map, which we cannot release page by page; mapping the file ourselves gives zero-copy views
whose pages ``pages.MappedRegion`` can hand back. Writing needs every tensor in memory with the library's
``save_file``; since the header only needs shapes and dtypes, we write it first and then stream the tensors.
"""

from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from whisper_k8s.convert.pages import MappedRegion
from whisper_k8s.errors import UserError

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_MAX_HEADER = 100 << 20


def read_header(path: Path) -> tuple[dict, int]:
    """The JSON header (without ``__metadata__``) and the file offset where tensor data starts."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise UserError(f"{path}: too short to be a safetensors file")
        (size,) = struct.unpack("<Q", raw)
        if size > _MAX_HEADER:
            raise UserError(f"{path}: header length {size} is implausible: not a safetensors file")
        try:
            header = json.loads(f.read(size))
        except ValueError as err:
            raise UserError(f"{path}: unreadable safetensors header ({err})") from err
    if not isinstance(header, dict):
        raise UserError(f"{path}: safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    return header, 8 + size


def map_file(path: Path) -> tuple[dict[str, torch.Tensor], MappedRegion | None]:
    """Every tensor of ``path`` as a view into a private map of the file (nothing is read yet)."""
    header, data_start = read_header(path)
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if file_size else None
    tensors = {}
    for name, entry in header.items():
        tensors[name] = _view(path, mapped, name, entry, data_start, file_size)
    region = None
    if mapped is not None:
        whole = torch.frombuffer(mapped, dtype=torch.uint8)
        region = MappedRegion.spanning([(whole.data_ptr(), whole.numel())], backing_file=path)
    return tensors, region


def _view(path: Path, mapped, name: str, entry: dict, data_start: int, file_size: int) -> torch.Tensor:
    try:
        dtype = DTYPES[entry["dtype"]]
        shape = tuple(int(n) for n in entry["shape"])
        begin, end = (int(n) for n in entry["data_offsets"])
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: tensor {name!r} has an invalid or unsupported header entry {entry}") from err
    numel = 1
    for n in shape:
        numel *= n
    itemsize = torch.empty(0, dtype=dtype).element_size()
    if end - begin != numel * itemsize or data_start + end > file_size or begin < 0:
        raise UserError(f"{path}: tensor {name!r} ({shape}, {entry['dtype']}) has inconsistent data offsets "
                        f"[{begin}, {end}]: the file is truncated or corrupt")
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(mapped, dtype=dtype, count=numel, offset=data_start + begin).view(shape)


def _header_bytes(entries: list[tuple[str, torch.dtype, tuple[int, ...]]], metadata: dict[str, str]) -> bytes:
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name, dtype, shape in entries:
        numel = 1
        for n in shape:
            numel *= n
        nbytes = numel * torch.empty(0, dtype=dtype).element_size()
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(len(text) + 8) % 8)  # data starts 8-byte aligned, as the format requires
    return struct.pack("<Q", len(text)) + text


def write_streaming(
    file,
    entries: Iterable[tuple[str, torch.dtype, tuple[int, ...], Callable[[], torch.Tensor]]],
    *,
    metadata: dict[str, str] | None = None,
    on_tensor: Callable[[int], None] | None = None,
) -> None:
    """Write a safetensors file to the open binary ``file`` holding one tensor in memory at a time.

    ``entries`` are ``(name, dtype, shape, load)``; ``load()`` returns the tensor (any dtype: it is cast
    to ``dtype``). Larger element sizes come first so every tensor starts aligned for zero-copy readers.
    ``on_tensor(nbytes)`` is called after each tensor (progress, releasing source pages).
    """
    entries = sorted(entries, key=lambda e: -torch.empty(0, dtype=e[1]).element_size())
    file.write(_header_bytes([(n, d, s) for n, d, s, _ in entries], metadata or {"format": "pt"}))
    for name, dtype, shape, load in entries:
        tensor = load().to(dtype).contiguous()
        if tuple(tensor.shape) != tuple(shape):
            raise UserError(f"tensor {name}: shape {tuple(tensor.shape)} differs from the planned {shape}")
        if tensor.numel():
            file.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
        if on_tensor:
            on_tensor(tensor.numel() * tensor.element_size())
        del tensor
