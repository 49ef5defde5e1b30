"""An idempotency marker beside a conversion's output: rerunning with the same source is a no-op.

Init containers run ``convert hf-to-mm`` on every pod start; re-reading and re-writing gigabytes each time
would delay training for nothing. The marker records a fingerprint of the source (every file's name, size,
modification time and its first and last 64 KiB, plus the conversion options) and of the output (sizes and
modification times, so an output the marker does not describe, e.g. after a crash before the rename, is
redone).
Matching fingerprints and an intact output mean nothing to do; anything else reconverts. The fingerprint does
not hash whole files on purpose (that would read the whole source again on every start); replacing a
checkpoint changes its size or modification time, and ``--force`` reconverts unconditionally.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

MARKER_NAME = ".whisper-k8s-convert.json"
_EDGE = 64 << 10


def marker_path(output: Path) -> Path:
    """Inside an output folder; beside an output file (``.whisper.pth.whisper-k8s-convert.json``)."""
    output = Path(output)
    if output.suffix in (".pth", ".pt", ".bin", ".safetensors"):
        return output.parent / f".{output.name}{MARKER_NAME}"
    return output / MARKER_NAME


def _file_digest(path: Path, digest) -> None:
    stat = path.stat()
    digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    with open(path, "rb") as f:
        digest.update(f.read(_EDGE))
        if stat.st_size > 2 * _EDGE:
            f.seek(-_EDGE, os.SEEK_END)
            digest.update(f.read(_EDGE))


def fingerprint(files: Iterable[Path], options: Mapping) -> str:
    """sha256 over the conversion options and each input file's identity (see the module docstring)."""
    digest = hashlib.sha256(json.dumps(dict(options), sort_keys=True, default=str).encode())
    for path in sorted(Path(p) for p in files):
        _file_digest(path, digest)
    return digest.hexdigest()


def file_identity(path: Path) -> list[int]:
    """Size and modification time: a rename keeps both, so a temp file's identity is its final one's."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def output_files(output: Path) -> dict[str, list[int]]:
    """Relative name -> identity of what a conversion wrote (the marker itself excluded)."""
    output = Path(output)
    if output.is_file():
        return {output.name: file_identity(output)}
    if not output.is_dir():
        return {}
    return {str(p.relative_to(output)): file_identity(p) for p in sorted(output.rglob("*"))
            if p.is_file() and p.name != MARKER_NAME}


def read(output: Path) -> dict | None:
    try:
        return json.loads(marker_path(output).read_text())
    except (OSError, ValueError):
        return None


def is_current(output: Path, source_fingerprint: str) -> bool:
    """The output exists, is what the marker says was written, from a source with this fingerprint."""
    marker = read(output)
    return (marker is not None and marker.get("fingerprint") == source_fingerprint
            and marker.get("outputs") == output_files(output) and bool(marker.get("outputs")))


def write(output: Path, source_fingerprint: str, outputs: dict[str, list[int]], details: Mapping) -> None:
    """Write the marker atomically. For a folder output call it on the staging folder before the rename."""
    path = marker_path(output)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"fingerprint": source_fingerprint, "outputs": outputs, **details},
                              indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
