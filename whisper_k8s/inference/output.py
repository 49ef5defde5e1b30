"""Transcripts as files a user can use: plain text, JSON with segments, SubRip (.srt) and WebVTT (.vtt).

- txt: one segment per line;
- json: the whole result (path, text, language, whether it was detected, duration, segments with start, end,
  text, average log-probability, no-speech probability, compression ratio and temperature);
- srt: numbered cues ``HH:MM:SS,mmm --> HH:MM:SS,mmm`` (SubRip uses a decimal comma);
- vtt: ``WEBVTT`` then cues ``HH:MM:SS.mmm --> HH:MM:SS.mmm``.

One file per input, named after it (``talk.mp3`` -> ``talk.srt``), each written atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from whisper_k8s.atomic import write_text
from whisper_k8s.errors import UserError

FORMATS = ("txt", "json", "srt", "vtt")


def clock(seconds: float, decimal: str = ".") -> str:
    """``HH:MM:SS.mmm`` (hours may exceed 99 for very long audio)."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _cues(result, decimal: str) -> list[str]:
    return [f"{clock(s.start, decimal)} --> {clock(s.end, decimal)}\n{s.text.strip()}\n" for s in result.segments]


def render(result, fmt: str) -> str:
    """The text of ``result`` (a transcribe Result) in format ``fmt``."""
    if fmt == "txt":
        return "".join(f"{s.text.strip()}\n" for s in result.segments)
    if fmt == "json":
        return json.dumps(result.as_dict(), ensure_ascii=False, indent=2) + "\n"
    if fmt == "srt":
        return "\n".join(f"{i}\n{cue}" for i, cue in enumerate(_cues(result, ","), start=1))
    if fmt == "vtt":
        return "WEBVTT\n\n" + "\n".join(_cues(result, "."))
    raise UserError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")


def output_paths(inputs: Sequence[str | os.PathLike], fmt: str, out_dir: str | os.PathLike) -> list[Path]:
    """``out_dir/<input stem>.<fmt>`` per input; two inputs with the same stem are refused before any work."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file: give a folder (one transcript file is written per input)")
    paths = [out_dir / f"{Path(p).stem}.{fmt}" for p in inputs]
    seen: dict[Path, str] = {}
    for source, path in zip(inputs, paths, strict=True):
        if path in seen:
            raise UserError(f"{seen[path]} and {os.fspath(source)} would both be written to {path}: "
                            "transcribe them into different --out folders")
        seen[path] = os.fspath(source)
    return paths


def write_results(results, fmt: str, paths: Sequence[Path]) -> None:
    for result, path in zip(results, paths, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, render(result, fmt))
