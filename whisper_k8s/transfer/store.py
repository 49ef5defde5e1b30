"""Writing files onto a volume so that nothing under a final name is ever incomplete.

A file arrives in ``.whisper-k8s/partial/<key>`` (``key`` from its path, size and source identity), files of
1 MiB and more with a sidecar ``<key>.json`` naming it (what makes them resumable; a smaller partial file is
removed by the next transfer and its file sent again). Only when every byte is there and the digest matches what the other side
announced is it fsynced, renamed to its final path (one atomic rename on the same file system) and recorded
in the manifest. An interrupted write leaves the partial file, which a later transfer of the very same
source continues from where it stopped; a full volume removes it (its bytes are better used elsewhere).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from whisper_k8s.errors import UserError
from whisper_k8s.transfer.manifest import STATE_DIR, Record, VolumeManifest, check_relative_path

PARTIAL_DIR = "partial"
LOCK = "lock"
RESUMABLE_BYTES = 1 << 20  # smaller files are simply sent again: no sidecar, so no extra file per small file
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_CHUNK = 1 << 20


class VolumeFull(OSError):
    """The volume (or the quota) has no room left for the file being written."""


class Rejected(ValueError):
    """A received file does not verify (size or digest); nothing was written under its name."""


@dataclass
class TransferResult:
    """What one upload or fetch did: files (and bytes) stored now, those already there, the tree check."""

    stored_files: int = 0
    stored_bytes: int = 0
    kept_files: int = 0
    kept_bytes: int = 0
    resumed_files: int = 0
    seconds: float = 0.0
    files_on_volume: int = 0
    tree: dict | None = None
    rejected: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Partial:
    """An unfinished file: ``received`` of ``size`` bytes of ``path`` from ``source``."""

    path: str
    size: int
    source: str
    received: int


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def human_size(count: int) -> str:
    """``512 KiB``, ``3.0 MiB``, ``1.25 GiB``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if count >= scale:
            return f"{count / scale:.{2 if unit == 'GiB' else 1}f} {unit}"
    return f"{count / 1024:.0f} KiB"


class VolumeStore:
    """The destination folder of a transfer, its manifest and its partial files."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.partial_dir = self.root / STATE_DIR / PARTIAL_DIR
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.root / STATE_DIR / LOCK, "a")  # noqa: SIM115 - held while this process writes
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"another upload or fetch into {self.root} is running: wait for it to end, or stop "
                            "it, then run this again") from None
        self.manifest = VolumeManifest.load(self.root)
        self._drop_orphans()

    def close(self) -> None:
        """Release the destination for the next transfer."""
        self._lock.close()

    def __enter__(self) -> VolumeStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _drop_orphans(self) -> None:
        """Partial files without a sidecar (small files of an interrupted transfer) are of no further use."""
        for data in self.partial_dir.iterdir():
            if data.suffix != ".json" and not data.with_name(data.name + ".json").exists():
                data.unlink(missing_ok=True)

    def partials(self) -> dict[str, Partial]:
        """Unfinished files by path (the newest one when a path has several sources)."""
        found: dict[str, Partial] = {}
        if not self.partial_dir.is_dir():
            return found
        for sidecar in self.partial_dir.glob("*.json"):
            data = sidecar.with_suffix("")
            try:
                meta = json.loads(sidecar.read_text())
                found[meta["path"]] = Partial(meta["path"], int(meta["size"]), meta["source"], data.stat().st_size)
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found

    def begin(self, path: str, size: int, source: str, offset: int = 0, *, md5: bool = False) -> Incoming:
        return Incoming(self, check_relative_path(path), size, source, offset, md5)

    def drop_partials(self, paths: set[str] | None = None) -> None:
        """Remove unfinished files (those of ``paths``, or all)."""
        for path, partial in self.partials().items():
            if paths is None or path in paths:
                for file in Incoming.files_of(self, path, partial.size, partial.source):
                    file.unlink(missing_ok=True)


class Incoming:
    """One file being received: ``write`` its bytes in order, then ``finish`` (or ``suspend``/``discard``)."""

    def __init__(self, store: VolumeStore, path: str, size: int, source: str, offset: int, md5: bool):
        self.store, self.path, self.size, self.source = store, path, size, source
        self.data, sidecar = self.files_of(store, path, size, source)
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        if offset:
            self._continue(offset)
        elif size >= RESUMABLE_BYTES:
            sidecar.write_text(json.dumps({"path": path, "size": size, "source": source}))
        self.handle = open(self.data, "r+b" if offset else "wb")  # noqa: SIM115 - closed by finish/suspend/discard
        self.handle.seek(offset)
        self.received = offset

    @staticmethod
    def files_of(store: VolumeStore, path: str, size: int, source: str) -> tuple[Path, Path]:
        key = hashlib.sha256(f"{path}\0{size}\0{source}".encode()).hexdigest()[:32]
        return store.partial_dir / key, store.partial_dir / f"{key}.json"

    def _continue(self, offset: int) -> None:
        """Hash the ``offset`` bytes already there (and cut anything beyond them)."""
        if not self.data.is_file() or self.data.stat().st_size < offset:
            raise Rejected(f"{self.path}: no partial file of {offset} bytes to continue")
        with open(self.data, "r+b") as handle:
            handle.truncate(offset)
            left = offset
            while left:
                chunk = handle.read(min(_CHUNK, left))
                self._digest(chunk)
                left -= len(chunk)

    def _digest(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        if self.md5 is not None:
            self.md5.update(chunk)

    def write(self, chunk: bytes) -> None:
        if self.received + len(chunk) > self.size:
            self.discard()
            raise Rejected(f"{self.path}: more than the announced {self.size} bytes")
        try:
            self.handle.write(chunk)
        except OSError as err:
            self._raise_full(err)
        self._digest(chunk)
        self.received += len(chunk)

    def _raise_full(self, err: OSError):
        if err.errno in _FULL:
            self.discard()
            raise VolumeFull(err.errno, f"no space left on the volume while writing {self.path} "
                                        f"({self.received} of {self.size} bytes)") from None
        raise err

    def finish(self, sha256: str | None = None, md5: str | None = None) -> Record:
        """Verify, fsync, rename into place and record; Rejected (nothing renamed) when it does not verify."""
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
        except OSError as err:
            self._raise_full(err)
        self.handle.close()
        digest = self.sha256.hexdigest()
        why = (f"{self.received} bytes arrived, {self.size} announced" if self.received != self.size
               else f"sha256 {digest} differs from the sender's {sha256}" if sha256 and sha256 != digest
               else f"md5 {self.md5.hexdigest()} differs from the ETag {md5}"
               if md5 and self.md5 is not None and md5 != self.md5.hexdigest() else None)
        if why:
            self.discard()
            raise Rejected(f"{self.path}: {why}")
        target = self.store.root / self.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            self.discard()
            raise Rejected(f"{self.path}: a folder of that name is on the volume")
        os.replace(self.data, target)
        self.files_of(self.store, self.path, self.size, self.source)[1].unlink(missing_ok=True)
        record = Record(size=self.size, sha256=digest, source=self.source, stored_ns=target.stat().st_mtime_ns)
        self.store.manifest.record(self.path, record)
        return record

    def suspend(self) -> None:
        """Keep what arrived so far for a later transfer of the same source (connection lost)."""
        try:
            self.handle.close()
        except OSError:
            pass

    def discard(self) -> None:
        try:
            self.handle.close()
        except (OSError, AttributeError):
            pass
        for path in self.files_of(self.store, self.path, self.size, self.source):
            path.unlink(missing_ok=True)
