"""The on-disk state of local jobs: where it lives, how it is written, and whether its processes are ours.

Every CLI command is a fresh process, so a local job lives entirely in a folder::

    <state root>/<job>/            state root: $WHISPER_K8S_STATE, else ./runs/local
        job.json                  phase, replicas (pid, exit code, phase), attempt, restarts, times
        plan.json                 what the supervisor runs (argv, env, cwd per replica step)
        documents.yaml            the documents the chart rendered
        supervisor.json           the supervisor's pid and start time
        supervisor.log            the supervisor's own messages
        logs/<replica>.<attempt>.log one file per replica (worker-0) per attempt (init containers, then the trainer)
        volumes/...               local folders standing in for the pods' volumes
        work/<pod>/               each replica's working directory

``job.json`` has one writer at a time (``submit`` before the supervisor starts, then the supervisor) and is
replaced atomically, so readers never see half of it. Processes are recorded with their kernel start time,
so a recycled pid is never mistaken for (and never signalled as) one of ours.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from whisper_k8s import atomic
from whisper_k8s.errors import UserError

STATE_ENV = "WHISPER_K8S_STATE"
DEFAULT_STATE_ROOT = Path("runs") / "local"
JOB_FILE = "job.json"
PLAN_FILE = "plan.json"
DOCUMENTS_FILE = "documents.yaml"
SUPERVISOR_LOG = "supervisor.log"
SUPERVISOR_FILE = "supervisor.json"  # {"pid", "start"} of the supervisor, written once by `submit`
_JOB_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def state_root(explicit: str | os.PathLike | None = None) -> Path:
    """The folder holding all local jobs: the argument, else $WHISPER_K8S_STATE, else ./runs/local."""
    chosen = explicit or os.environ.get(STATE_ENV) or DEFAULT_STATE_ROOT
    return Path(chosen).absolute()


def job_dir(root: Path, name: str) -> Path:
    if not _JOB_NAME.match(name or "") or len(name) > 63:
        raise UserError(f"job name {name!r} is not a valid Kubernetes name (lower-case letters, digits, '-')")
    return root / name


def job_exists(root: Path, name: str) -> bool:
    """Whether a local job of that name is in the state folder (a deleted job's kept outputs are not a job)."""
    return (job_dir(root, name) / JOB_FILE).is_file()


def log_file(job_path: Path, replica: str, attempt: int) -> Path:
    """``logs/worker-0.1.log``: what replica ``worker-0`` wrote in attempt 1."""
    return job_path / "logs" / f"{replica}.{attempt}.log"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to a temp file beside ``path`` and rename it over ``path`` (readers see old or new)."""
    atomic.write_text(path, json.dumps(data, indent=1) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


# ------------------------------------------------------------------------------------------- processes
def process_start(pid: int) -> int | None:
    """The kernel start time of ``pid`` (clock ticks since boot), None when it is gone or a zombie.

    Where /proc does not exist (macOS) any live pid counts, with start time 0.
    """
    stat = Path(f"/proc/{pid}/stat")
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return None
        return 0
    try:
        text = stat.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name in parentheses may contain spaces
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def process_record(pid: int) -> dict[str, int]:
    return {"pid": pid, "start": process_start(pid) or 0}


def is_ours_and_alive(record: dict[str, Any] | None) -> bool:
    """Whether the process recorded as ``{"pid", "start"}`` still runs (and is the same process)."""
    if not record or not record.get("pid"):
        return False
    start = process_start(int(record["pid"]))
    return start is not None and start == record.get("start", start)


def descendants(root: int) -> list[int]:
    """Every live (or not yet reaped) process below ``root``, parents before children (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(0), []):
            found.append(child)
            todo.append(child)
    return found
