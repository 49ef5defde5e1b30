"""What a transfer destination holds: one record per file the kit wrote there, kept on the volume itself.

    <dest>/.whisper-k8s/manifest.json   {"format": FORMAT, "version": 1, "files": {path: record}}
    <dest>/.whisper-k8s/journal.jsonl   one record per file completed since manifest.json was last written
    <dest>/.whisper-k8s/partial/        files being written (see ``store``), never under their final name

A record holds ``size`` and ``sha256`` of the file, ``source`` (what it was made from: ``<size>:<mtime_ns>``
of the sender's file, an object's ETag) and ``stored_ns`` (the file's mtime on the volume when it was
recorded). A file under its final name exists only once it was verified; it is listed here only then.

The journal makes progress durable file by file without rewriting a large manifest each time: a record is
appended right after its file was renamed into place (written through at once, so a killed process loses
nothing; fsynced at most once a second, so a power cut loses at most the last second's records, whose files
are then sent again); ``compact`` folds the journal into
manifest.json (written atomically) at the end of a transfer. A torn last line (a killed writer) is ignored:
that one file is simply sent again.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from whisper_k8s.atomic import write_text
from whisper_k8s.checksum import sha256_file
from whisper_k8s.errors import UserError

FORMAT = "whisper-k8s-volume-manifest"
VERSION = 1
STATE_DIR = ".whisper-k8s"
MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
SYNC_SECONDS = 1.0


@dataclass(frozen=True)
class Record:
    size: int
    sha256: str
    source: str = ""
    stored_ns: int = 0


def check_relative_path(path: str) -> str:
    """``path`` when it is a plain relative POSIX path inside the destination (not in the kit's state folder)."""
    parts = PurePosixPath(path).parts
    if (not path or path.startswith("/") or "\\" in path or any(p in ("..", ".", "") for p in parts)
            or parts[0] == STATE_DIR or "\n" in path or "\0" in path):
        raise UserError(f"refusing file path {path!r}: not a plain relative path inside the destination")
    return str(PurePosixPath(*parts))


def local_source_id(size: int, mtime_ns: int) -> str:
    """The identity of a local file for the quick check (as rsync's: same size and modification time)."""
    return f"{size}:{mtime_ns}"


class VolumeManifest:
    """The records of one destination folder (loaded from manifest.json plus the journal)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.state = self.root / STATE_DIR
        self.files: dict[str, Record] = {}
        self._journal = None
        self._synced = 0.0

    @classmethod
    def load(cls, root: str | os.PathLike) -> VolumeManifest:
        manifest = cls(root)
        path = manifest.state / MANIFEST
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("format") != FORMAT:
                    raise ValueError(f"format {data.get('format')!r}")
                manifest.files = {name: Record(**fields) for name, fields in data["files"].items()}
            except (ValueError, KeyError, TypeError) as err:
                raise UserError(f"{path} is not a whisper-k8s manifest ({err}): remove the {STATE_DIR} folder "
                                "to start the transfer afresh (the data files stay)") from None
        journal = manifest.state / JOURNAL
        if journal.is_file():
            for line in journal.read_bytes().splitlines():
                try:
                    entry = json.loads(line)
                    path = entry.pop("path")
                    manifest.files[path] = Record(**entry)
                except (ValueError, KeyError, TypeError):
                    continue  # a torn line of a killed writer: that file is sent again
        return manifest

    def record(self, path: str, record: Record) -> None:
        """Add one verified file (a journal line, written through; fsynced at most every SYNC_SECONDS)."""
        self.files[path] = record
        if self._journal is None:
            self.state.mkdir(parents=True, exist_ok=True)
            self._journal = open(self.state / JOURNAL, "ab")  # noqa: SIM115 - closed by compact()
        self._journal.write(json.dumps({"path": path, **asdict(record)}).encode() + b"\n")
        self._journal.flush()
        if time.monotonic() - self._synced >= SYNC_SECONDS:
            os.fsync(self._journal.fileno())
            self._synced = time.monotonic()

    def compact(self) -> None:
        """Write every record into manifest.json (atomically), then drop the journal it now contains."""
        if self._journal is not None:
            os.fsync(self._journal.fileno())
            self._journal.close()
            self._journal = None
        self.state.mkdir(parents=True, exist_ok=True)
        body = {"format": FORMAT, "version": VERSION,
                "files": {name: asdict(self.files[name]) for name in sorted(self.files)}}
        write_text(self.state / MANIFEST, json.dumps(body, indent=0) + "\n")
        (self.state / JOURNAL).unlink(missing_ok=True)

    def present(self, *, verify: bool = False) -> dict[str, Record]:
        """The records whose file is still there as it was recorded: same size and volume mtime, and with
        ``verify`` the same sha256 (reads every file). Others (changed, damaged, removed) are dropped."""
        kept = {}
        for name, record in self.files.items():
            path = self.root / name
            try:
                stat = path.stat()
            except OSError:
                continue
            if stat.st_size != record.size or (record.stored_ns and stat.st_mtime_ns != record.stored_ns):
                continue
            if verify and sha256_file(path) != record.sha256:
                continue
            kept[name] = record
        self.files = kept
        return kept
