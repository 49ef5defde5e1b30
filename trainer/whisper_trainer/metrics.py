"""Per-iteration metrics: the log line, JSON lines for plots, TensorBoard when installed, the headline figure.

Rank 0 writes; other ranks only contribute through the all-reduced values the loop hands in. The JSON-lines
file is appended to and flushed per record, so a resumed run continues the same file and a killed run loses
at most the line being written.

metrics.jsonl holds, one JSON object a line (``whisper_k8s.progress`` reads its tail, ``whisper_k8s.report``
all of it):

- an iteration: ``iteration``, ``train_iters``, ``loss``, ``lr``, ``grad_norm``, ``iteration_ms``,
  ``samples_per_second`` (global), ``samples_per_second_per_device``, ``data_wait_share`` (of the iteration's
  time, mean over ranks), ``global_samples``, ``consumed_samples``, ``world_size``, ``time`` (Unix seconds),
  and every ``--log-interval`` iterations ``skipped_samples`` (cumulative, by reason, summed over ranks);
- ``{"start": {"attempt", "time", "resumed_from", "ready"}}`` when a run has set up (``resumed_from`` null
  when it started from scratch; ``time`` when the process began, ``ready`` when set-up ended);
- ``{"checkpoint": {"iteration", "time", "seconds"}}`` once a checkpoint is complete (verified, renamed into
  place, tracker moved);
- ``{"summary": {...}}`` when a run ends.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from statistics import fmean
from typing import Any

log = logging.getLogger(__name__)

# Fields of an iteration record that are positions or constants, not series worth a TensorBoard plot.
NOT_PLOTTED = frozenset({"iteration", "train_iters", "world_size", "time"})


class MetricsWriter:
    def __init__(self, path: str, tensorboard_dir: str = "", enabled: bool = True):
        self.enabled = enabled
        self.path = Path(path) if path else None
        self._tb = None
        if enabled and self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if enabled and tensorboard_dir:
            self._tb = _tensorboard_writer(tensorboard_dir)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            step = record.get("iteration", 0)
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in NOT_PLOTTED:
                    self._tb.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _tensorboard_writer(logdir: str):
    """A TensorBoard writer, or None (with one log line) when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("--tensorboard-dir given but tensorboard is not installed: writing JSON lines only")
        return None
    return SummaryWriter(logdir)


def format_line(r: dict[str, Any], train_iters: int) -> str:
    """One Megatron-like line per iteration."""
    skipped = r.get("skipped_samples") or {}
    skipped_text = ",".join(f"{k}={v}" for k, v in sorted(skipped.items())) or "0"
    return (
        f"iteration {r['iteration']:>7d}/{train_iters} | loss {r['loss']:.5f} | lr {r['lr']:.3e} | "
        f"grad norm {r['grad_norm']:.4f} | iteration time {r['iteration_ms']:.1f} ms | "
        f"samples/s {r['samples_per_second']:.2f} | data wait {100 * r['data_wait_share']:.1f}% | "
        f"consumed samples {r['consumed_samples']} | skipped {skipped_text}"
    )


class Stopwatch:
    """Wall time of an iteration and the part of it spent waiting for the data loader."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.data_wait = 0.0

    def waited(self, seconds: float) -> None:
        self.data_wait += seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def average_samples_per_second(iteration_ms: list[float], global_batch: int) -> float | None:
    """The seed's headline: global batch x 1000 / mean iteration time in ms.

    Upstream reads iterations 150-200 of its log; here the first iteration of the process (start-up,
    allocator warm-up) is left out, and when 200 iterations ran, exactly 150-200 are used.
    """
    times = iteration_ms[149:200] if len(iteration_ms) >= 200 else iteration_ms[1:] or iteration_ms
    if not times:
        return None
    return global_batch * 1000.0 / fmean(times)
