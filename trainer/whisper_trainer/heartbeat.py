"""What a running trainer tells `status`: a heartbeat per rank and rank 0's run record (paths in
``whisper_k8s.progress.layout``).

- **Heartbeat** (``progress/rank-NNNNN.json``, every rank): phase, the last completed iteration and when, host,
  pid, attempt. The training thread only sets attributes (a few hundred nanoseconds per iteration, see
  ``bench/progress.py``); a daemon thread writes the file every ``WHISPER_HEARTBEAT_SECONDS`` (5 s) and at
  once when the phase changes, to a temporary name then renamed. Because that thread keeps writing while the
  training thread waits in a collective, a rank that stops writing is frozen, killed or stuck holding the
  GIL: that is how the stall detector (``whisper_k8s.progress.stall``) names the rank that holds a job up.
- **Run record** (``progress/run.json``, rank 0): train_iters, world size, every attempt (when it started and
  the iteration it resumed from) and the latest complete checkpoint with the time its write took: the rare
  events a tail of metrics.jsonl may no longer reach. They also go to metrics.jsonl as ``{"start": ...}`` and
  ``{"checkpoint": ...}`` lines, for the history.

Nothing is written before set-up has checked its inputs (model.json, data, ``ckpt_path``): a run refused for
bad input leaves the outputs untouched. Reporting starts with the ``loading`` phase (finding, verifying and
loading the checkpoint to resume from). Progress is advisory: a volume that refuses the writes costs one
warning, never the run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from whisper_k8s.atomic import write_text
from whisper_k8s.progress import layout
from whisper_trainer import parallel

log = logging.getLogger(__name__)

MAX_ATTEMPTS_KEPT = 100  # run.json keeps the newest attempts (the attempt numbers keep counting)


def _write_json(path: Path, item: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(item, separators=(",", ":")) + "\n", mode=0o644)  # readable like metrics.jsonl


class Heartbeat:
    """One rank's heartbeat file, rewritten by a daemon thread; ``path=None`` makes every method a no-op."""

    def __init__(self, path: Path | None, identity: dict[str, Any], interval: float):
        self.path = path
        self.identity = {**identity, "host": socket.gethostname(), "pid": os.getpid(), "interval": interval}
        self.interval = interval
        self.phase = layout.LOADING
        self.phase_since = time.time()
        self.detail = ""
        self.iteration: int | None = None
        self.iteration_time: float | None = None
        self.waiting_since: float | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._warned = False
        self._thread = threading.Thread(target=self._run, name="whisper-heartbeat", daemon=True)

    def start(self) -> None:
        if self.path is not None:
            self._thread.start()

    def set_phase(self, phase: str, detail: str = "") -> None:
        self.phase, self.phase_since, self.detail = phase, time.time(), detail
        self._wake.set()

    def iteration_done(self, iteration: int) -> None:
        self.iteration, self.iteration_time = iteration, time.time()

    def next_batch(self, batches: Iterator[dict]) -> dict:
        """``next(batches)``, reported as the ``data-wait`` phase while it blocks."""
        self.waiting_since = time.time()
        try:
            return next(batches)
        finally:
            self.waiting_since = None

    def snapshot(self) -> dict[str, Any]:
        phase, since, waiting = self.phase, self.phase_since, self.waiting_since
        if waiting is not None and phase == layout.TRAINING:
            phase, since = layout.DATA_WAIT, waiting
        return {**self.identity, "phase": phase, "phase_since": since, "iteration": self.iteration,
                "iteration_time": self.iteration_time, "detail": self.detail, "time": time.time()}

    def write(self) -> None:
        try:
            _write_json(self.path, self.snapshot())
        except OSError as err:
            if not self._warned:
                log.warning("heartbeat %s not written (%s): `status` cannot tell this rank's progress", self.path, err)
                self._warned = True

    def _run(self) -> None:
        self.write()
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.write()

    def close(self, phase: str, detail: str = "") -> None:
        """Stop the thread and write the final phase (``finished`` or ``failed``) from this thread; a heartbeat
        that never started writes nothing."""
        if self.path is None or self._thread.ident is None:
            return
        self.phase, self.phase_since, self.detail = phase, time.time(), detail
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(5.0, 2 * self.interval))
        self.write()


class RunRecord:
    """Rank 0's ``progress/run.json``: the attempts and the latest complete checkpoint."""

    def __init__(self, path: Path, fields: dict[str, Any]):
        self.path = path
        self.item: dict[str, Any] = {"attempts": [], "last_checkpoint": None, "longest_checkpoint_seconds": None}
        try:
            previous = json.loads(path.read_text())
            if isinstance(previous, dict):
                self.item.update(previous)
        except (OSError, ValueError):
            pass
        self.item.update(fields)

    @property
    def next_attempt(self) -> int:
        attempts = self.item["attempts"]
        return attempts[-1]["attempt"] + 1 if attempts else 1

    def begin_attempt(self, started: float) -> int:
        attempt = self.next_attempt
        entry = {"attempt": attempt, "started": started, "resumed_from": None}
        self.item["attempts"] = [*self.item["attempts"], entry][-MAX_ATTEMPTS_KEPT:]
        self.save()
        return attempt

    def resumed(self, iteration: int | None) -> None:
        self.item["attempts"][-1]["resumed_from"] = iteration
        self.save()

    def checkpoint_saved(self, saved: dict[str, Any]) -> None:
        self.item["last_checkpoint"] = saved
        self.item["longest_checkpoint_seconds"] = max(saved["seconds"], self.item["longest_checkpoint_seconds"] or 0)
        self.save()

    def save(self) -> None:
        try:
            _write_json(self.path, self.item)
        except OSError as err:
            log.warning("%s not written (%s): `status` will miss attempts and checkpoints", self.path, err)


class TrainerProgress:
    """The progress hooks the Trainer calls: the start of reporting, phases, iterations, checkpoints, the end.
    Collective only in ``__init__`` (rank 0 tells every rank the attempt number; nothing is written yet)."""

    def __init__(self, metrics_file: str, env: parallel.DistEnv, metrics, fields: dict[str, Any]):
        folder = layout.progress_dir(metrics_file) if metrics_file else None
        self.metrics = metrics
        self.started_at = time.time()  # the attempt's start: the stall detector's start-up allowance counts from it
        self.run = RunRecord(folder / layout.RUN_FILE, fields) if folder and env.is_main else None
        self.attempt = parallel.broadcast_object(env, self.run.next_attempt if self.run else 1)
        identity = {"rank": env.rank, "world_size": env.world_size, "local_rank": env.local_rank,
                    "node_rank": env.node_rank, "attempt": self.attempt}
        path = folder / layout.heartbeat_name(env.rank) if folder else None
        self.heartbeat = Heartbeat(path, identity, layout.heartbeat_seconds())

    def start_reporting(self) -> None:
        """Set-up has checked its inputs: record the attempt (rank 0) and start the heartbeat, phase ``loading``."""
        if self.run:
            self.run.begin_attempt(self.started_at)
        self.heartbeat.set_phase(layout.LOADING)
        self.heartbeat.start()

    def started(self, resumed_from: int | None, compiling: bool) -> None:
        """Set-up done: the first iteration (compiling layers when ``compiling``) begins."""
        if self.run:
            self.run.resumed(resumed_from)
        self.metrics.write({"start": {"attempt": self.attempt, "time": self.started_at, "resumed_from": resumed_from,
                                      "ready": time.time()}})
        self.heartbeat.iteration = resumed_from or 0
        self.heartbeat.set_phase(layout.COMPILING if compiling else layout.TRAINING)

    def next_batch(self, batches: Iterator[dict]) -> dict:
        return self.heartbeat.next_batch(batches)

    def iteration_done(self, iteration: int) -> None:
        self.heartbeat.iteration_done(iteration)
        if self.heartbeat.phase == layout.COMPILING:
            self.heartbeat.set_phase(layout.TRAINING)

    @contextmanager
    def checkpointing(self, iteration: int) -> Iterator[None]:
        """Around a checkpoint write: the ``checkpointing`` phase; once complete, recorded (rank 0)."""
        began = time.time()
        self.heartbeat.set_phase(layout.CHECKPOINTING)
        yield
        saved = {"iteration": iteration, "time": time.time(), "seconds": time.time() - began}
        if self.run:
            self.run.checkpoint_saved(saved)
        self.metrics.write({"checkpoint": saved})
        self.heartbeat.set_phase(layout.TRAINING)

    def finished(self, reason: str) -> None:
        self.heartbeat.close(layout.FINISHED, reason)

    @contextmanager
    def running(self) -> Iterator[None]:
        """The heartbeat of a run: an exception leaving the block marks this rank ``failed`` with its first line."""
        try:
            yield
        except BaseException as err:
            first = (str(err).strip().splitlines() or [""])[0]
            self.heartbeat.close(layout.FAILED, f"{type(err).__name__}: {first}"[:300])
            raise
        finally:
            if self.heartbeat.phase not in layout.ENDED_PHASES:
                self.heartbeat.close(layout.FINISHED, "left the loop")
