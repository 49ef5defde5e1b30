"""Give back the pages of memory-mapped checkpoint files once their bytes have been copied out.

Tensors read through a memory map cost no memory up front, but every page touched stays resident in the
process (and counts in its RSS and its container's memory) until the kernel needs it back. Converting a
6 GB checkpoint would therefore end with 6 GB resident although each tensor is needed only once. After a
tensor's bytes have been written out we tell the kernel we are done with them (``madvise(MADV_DONTNEED)``);
the mapping is private and never written, so a later access simply reads the file again.

Only file-backed mappings may be passed here: on anonymous memory ``MADV_DONTNEED`` would zero the data.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import sys
from dataclasses import dataclass
from pathlib import Path

_MADV_DONTNEED = 4  # the same value on Linux and macOS
PAGE_SIZE = mmap.PAGESIZE


def _load_madvise():
    if sys.platform not in ("linux", "darwin"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


_madvise = _load_madvise()


@dataclass(frozen=True)
class MappedRegion:
    """An address range inside one private, read-only-in-practice file mapping."""

    start: int
    length: int

    @classmethod
    def spanning(cls, ranges: list[tuple[int, int]], backing_file: str | os.PathLike) -> MappedRegion | None:
        """The page-aligned region covering ``(address, nbytes)`` ranges that all lie in ONE map of
        ``backing_file``; None (never released) unless /proc/self/maps confirms exactly that.

        A mapping starts on a page boundary and covers whole pages, so rounding outwards stays inside it.
        """
        ranges = [(addr, n) for addr, n in ranges if n > 0 and addr]
        if not ranges or _madvise is None:
            return None
        low = min(addr for addr, _ in ranges) // PAGE_SIZE * PAGE_SIZE
        high = max(addr + n for addr, n in ranges)
        high = -(-high // PAGE_SIZE) * PAGE_SIZE
        if not _inside_file_mapping(low, high, Path(backing_file)):
            return None
        return cls(low, high - low)

    def release(self) -> bool:
        """Drop this region's resident pages; False where the platform offers no madvise."""
        if _madvise is None:
            return False
        return _madvise(self.start, self.length, _MADV_DONTNEED) == 0


def _inside_file_mapping(low: int, high: int, file: Path) -> bool:
    """True when [low, high) is covered by contiguous mappings of ``file`` (Linux; elsewhere False)."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
        wanted = (file.stat().st_dev, file.stat().st_ino)
    except OSError:
        return False
    covered = low
    for line in maps:
        parts = line.split()
        if len(parts) < 6:
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        if not (start <= covered < end):
            continue
        try:
            mapped = os.stat(" ".join(parts[5:]))
            if (mapped.st_dev, mapped.st_ino) != wanted:
                return False
        except OSError:
            return False
        covered = end
        if covered >= high:
            return True
    return False


class PageReleaser:
    """Releases a set of mapped regions every ``every`` bytes of output (cheap: one syscall per region)."""

    def __init__(self, regions: list[MappedRegion], every: int = 64 << 20):
        self.regions = regions
        self.every = every
        self._since = 0

    def advance(self, nbytes: int) -> None:
        self._since += nbytes
        if self._since >= self.every:
            self.release_all()

    def release_all(self) -> None:
        self._since = 0
        for region in self.regions:
            region.release()
