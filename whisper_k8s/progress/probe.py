"""The progress probe: the tail of metrics.jsonl and the small progress files of an outputs folder, as one JSON
document. Standard library only; it runs where the outputs are::

    python -m whisper_k8s.progress.probe /outputs [--records 100]

and prints one line of JSON (the snapshot, see :func:`snapshot`), so that a backend which can only run a
command beside the volume (``kubectl exec`` into the master pod, ``docker exec``) gets everything in one round
trip, and a local backend calls :func:`snapshot` directly. metrics.jsonl is never read whole: the probe seeks
to its end and reads back only as far as it needs for ``--records`` iteration records (64 KiB first, then
four times more, at most ``--max-bytes``). A line still being written (no newline yet) is left out, and so is
the partial line where the read began.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from whisper_k8s.progress import layout

FORMAT = 1  # bumped when the snapshot's shape changes
TAIL_BYTES = 64 * 1024
MAX_TAIL_BYTES = 4 * 1024 * 1024
SMALL_FILE_BYTES = 256 * 1024  # run.json and heartbeats are a few hundred bytes; anything bigger is not ours
DEFAULT_RECORDS = 100


def read_tail(path: Path, max_bytes: int) -> tuple[bytes, int, int]:
    """(the last ``max_bytes`` of the file, the offset they start at, the file's size) from one open."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        offset = max(0, size - max_bytes)
        f.seek(offset)
        return f.read(size - offset), offset, size


def complete_lines(data: bytes, offset: int) -> list[bytes]:
    """The whole lines of a tail: without the partial first line (when the read began mid-file) and without a
    last line that has no newline yet (the writer is appending it)."""
    if offset > 0:
        cut = data.find(b"\n")
        data = b"" if cut < 0 else data[cut + 1:]
    end = data.rfind(b"\n")
    return data[: end + 1].splitlines() if end >= 0 else []


def parse_records(lines: list[bytes]) -> tuple[list[dict[str, Any]], int]:
    """JSON objects of the lines, and how many lines were not JSON objects (damage, or another writer)."""
    records, unreadable = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            unreadable += 1
            continue
        if isinstance(item, dict):
            records.append(item)
        else:
            unreadable += 1
    return records, unreadable


def is_iteration_record(record: dict[str, Any]) -> bool:
    return "iteration" in record and "loss" in record


def metrics_tail(path: Path, records: int = DEFAULT_RECORDS, tail_bytes: int = TAIL_BYTES,
                 max_bytes: int = MAX_TAIL_BYTES) -> dict[str, Any]:
    """The records at the end of metrics.jsonl: at least ``records`` iteration records when the file has them
    and they fit in ``max_bytes``."""
    size_read = max(1, tail_bytes)
    while True:
        data, offset, size = read_tail(path, size_read)
        parsed, unreadable = parse_records(complete_lines(data, offset))
        enough = sum(is_iteration_record(r) for r in parsed) >= records
        if enough or offset == 0 or size_read >= max_bytes:
            return {"size": size, "offset": offset, "bytes_read": len(data), "records": parsed,
                    "unreadable_lines": unreadable}
        size_read = min(max_bytes, size_read * 4)


def read_small_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    """A small JSON object file, or None (with the reason in ``problems``) when it is missing, big or bad."""
    try:
        with open(path, "rb") as f:
            data = f.read(SMALL_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as err:
        problems.append(f"{path}: {err.strerror or err}")
        return None
    if len(data) > SMALL_FILE_BYTES:
        problems.append(f"{path}: larger than {SMALL_FILE_BYTES} bytes, not a progress file")
        return None
    try:
        item = json.loads(data)
    except ValueError:
        problems.append(f"{path}: not JSON")
        return None
    if not isinstance(item, dict):
        problems.append(f"{path}: not a JSON object")
        return None
    return item


def heartbeats(folder: Path, problems: list[str]) -> list[dict[str, Any]]:
    """Every rank's heartbeat in the progress folder, in rank order."""
    try:
        names = sorted(name for name in os.listdir(folder) if layout.is_heartbeat_name(name))
    except FileNotFoundError:
        return []
    except OSError as err:
        problems.append(f"{folder}: {err.strerror or err}")
        return []
    found = (read_small_json(folder / name, problems) for name in names)
    return [beat for beat in found if beat is not None]


def snapshot(outputs: str | os.PathLike, *, records: int = DEFAULT_RECORDS, tail_bytes: int = TAIL_BYTES,
             max_bytes: int = MAX_TAIL_BYTES) -> dict[str, Any]:
    """Everything the progress block needs from an outputs folder, with this machine's clock as ``now``.

    ``metrics`` is None when there is no metrics.jsonl yet; ``run`` when there is no run.json; ``problems``
    lists files that could not be read (the snapshot is still useful without them).
    """
    outputs = Path(outputs)
    problems: list[str] = []
    metrics_path = outputs / layout.METRICS_FILE
    try:
        metrics = metrics_tail(metrics_path, records, tail_bytes, max_bytes)
    except FileNotFoundError:
        metrics = None
    except OSError as err:
        metrics = None
        problems.append(f"{metrics_path}: {err.strerror or err}")
    folder = outputs / layout.PROGRESS_DIR
    return {
        "format": FORMAT,
        "now": time.time(),
        "outputs": str(outputs),
        "metrics": metrics,
        "run": read_small_json(folder / layout.RUN_FILE, problems),
        "heartbeats": heartbeats(folder, problems),
        "problems": problems,
    }


def command(outputs: str, records: int = DEFAULT_RECORDS, python: str = "python") -> list[str]:
    """The command line that prints the snapshot of ``outputs`` where it runs (the image has this package)."""
    return [python, "-m", "whisper_k8s.progress.probe", outputs, "--records", str(records)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m whisper_k8s.progress.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("outputs", help="the outputs folder (holds metrics.jsonl and progress/)")
    parser.add_argument("--records", type=int, default=DEFAULT_RECORDS,
                        help=f"iteration records wanted from the end of metrics.jsonl (default {DEFAULT_RECORDS})")
    parser.add_argument("--max-bytes", type=int, default=MAX_TAIL_BYTES,
                        help=f"read at most this much of metrics.jsonl (default {MAX_TAIL_BYTES})")
    args = parser.parse_args(argv)
    json.dump(snapshot(args.outputs, records=args.records, max_bytes=args.max_bytes), sys.stdout,
              separators=(",", ":"))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
