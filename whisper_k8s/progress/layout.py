"""Where the trainer writes progress on the outputs volume, and the phases a rank reports: the one place both
the writer (``whisper_trainer.heartbeat``) and the readers (the probe, the stall detector) take them from.

```
<outputs>/metrics.jsonl              rank 0: one JSON line per iteration, {"start": ...}, {"checkpoint": ...}
<outputs>/progress/run.json          rank 0: train_iters, world size, attempts, the latest complete checkpoint
<outputs>/progress/rank-00003.json   each rank: phase, iteration, host, pid, when it last wrote (heartbeat)
```
The progress folder sits beside the metrics file (``--metrics-file``; the chart passes
``/outputs/metrics.jsonl``). Every file there is written to a temporary name and renamed.
"""

from __future__ import annotations

import os
from pathlib import Path

from whisper_k8s.errors import UserError

METRICS_FILE = "metrics.jsonl"
PROGRESS_DIR = "progress"
RUN_FILE = "run.json"
HEARTBEAT_PREFIX = "rank-"
HEARTBEAT_SUFFIX = ".json"

# How often each rank rewrites its heartbeat (seconds); phase changes are written at once besides.
HEARTBEAT_SECONDS_ENV = "WHISPER_HEARTBEAT_SECONDS"
DEFAULT_HEARTBEAT_SECONDS = 5.0

# Phases, in the order a rank goes through them. Before the first, the process starts and checks its inputs
# (model, data, pretrained weights) without writing anything: readers call that stretch STARTING.
STARTING = "starting"  # inferred by readers: the job's processes run, no rank of theirs reports yet
LOADING = "loading"  # finding, verifying (checksums) and loading the checkpoint to resume from
COMPILING = "compiling"  # the first iteration when layers are compiled (torch.compile traces and generates code)
TRAINING = "training"
DATA_WAIT = "data-wait"  # inside training: waiting for the data loader's next batch
CHECKPOINTING = "checkpointing"  # writing, verifying and publishing a checkpoint (collective)
FINISHED = "finished"  # left the loop cleanly (end, --exit-interval or a signal); detail says which
FAILED = "failed"  # an exception ended the rank; detail holds its first line

PHASES = (STARTING, LOADING, COMPILING, TRAINING, DATA_WAIT, CHECKPOINTING, FINISHED, FAILED)
STARTUP_PHASES = (STARTING, LOADING, COMPILING)
ENDED_PHASES = (FINISHED, FAILED)


def progress_dir(metrics_file: str | os.PathLike) -> Path:
    """The progress folder that goes with a metrics file."""
    return Path(metrics_file).parent / PROGRESS_DIR


def heartbeat_name(rank: int) -> str:
    return f"{HEARTBEAT_PREFIX}{rank:05d}{HEARTBEAT_SUFFIX}"


def is_heartbeat_name(name: str) -> bool:
    middle = name[len(HEARTBEAT_PREFIX):-len(HEARTBEAT_SUFFIX)]
    return name.startswith(HEARTBEAT_PREFIX) and name.endswith(HEARTBEAT_SUFFIX) and middle.isdigit()


def heartbeat_seconds() -> float:
    """The heartbeat interval: ``WHISPER_HEARTBEAT_SECONDS`` when set, else 5 s."""
    text = os.environ.get(HEARTBEAT_SECONDS_ENV, "").strip()
    if not text:
        return DEFAULT_HEARTBEAT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise UserError(f"{HEARTBEAT_SECONDS_ENV}={text!r}: expected seconds between 0 and 3600 (e.g. 5), or unset it")
    return value
