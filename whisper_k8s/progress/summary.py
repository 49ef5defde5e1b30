"""A probe snapshot turned into the figures of the progress block: :class:`Progress`.

Figures over a window of the latest iterations (``window``, 50 by default): the loss and its trend (*falling*
or *rising* when the slope of a least squares line through the window is at least twice its standard error,
else *flat*; the change is the mean of the window's last quarter against its first quarter), samples per
second (global and per device), time per iteration and data-wait share (means of what the trainer
measured), and the ETA: iterations left x the median wall-clock time per iteration of the current attempt
(logging included; a checkpoint write between two records is an outlier the median ignores), plus the
checkpoint writes left x the duration of the last one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import fmean, median
from typing import Any

from whisper_k8s.progress import layout, probe
from whisper_k8s.progress.source import ProgressSource
from whisper_k8s.progress.stall import DEFAULT_POLICY, Evidence, RankReport, Stall, StallPolicy, assess

WINDOW = 50
MIN_TREND_POINTS = 5


@dataclass
class Checkpoint:
    iteration: int
    time: float | None = None  # when it was complete (tracker moved)
    seconds: float | None = None  # how long the write took
    age_seconds: float | None = None


@dataclass
class Attempt:
    attempt: int
    started: float | None = None
    resumed_from: int | None = None  # None: started from scratch (or from --load's pretrained weights)


@dataclass
class LossTrend:
    direction: str  # "falling", "flat" or "rising"
    change: float  # mean of the window's last quarter against its first quarter (-0.1: 10 % lower)
    iterations: int  # the window's span in iterations


@dataclass
class Progress:
    now: float
    iteration: int | None = None
    train_iters: int | None = None
    phase: str | None = None
    loss: float | None = None
    loss_trend: LossTrend | None = None
    samples_per_second: float | None = None
    samples_per_second_per_device: float | None = None
    iteration_seconds: float | None = None
    data_wait_share: float | None = None
    eta_seconds: float | None = None
    world_size: int | None = None
    last_checkpoint: Checkpoint | None = None
    skipped_samples: dict[str, int] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    ranks: list[RankReport] = field(default_factory=list)
    stall: Stall = field(default_factory=Stall)
    updated: float | None = None  # when the newest iteration record was written
    problems: list[str] = field(default_factory=list)

    @property
    def stalled(self) -> bool:
        return self.stall.stalled

    @property
    def restarts(self) -> int:
        return max(0, self.attempts[-1].attempt - 1) if self.attempts else 0

    @property
    def fraction(self) -> float | None:
        if self.iteration is None or not self.train_iters:
            return None
        return min(1.0, self.iteration / self.train_iters)


def loss_trend(points: list[tuple[int, float]]) -> LossTrend | None:
    """Direction of a least squares line through (iteration, loss); None for fewer than 5 points."""
    if len(points) < MIN_TREND_POINTS:
        return None
    xs, ys = [float(x) for x, _ in points], [float(y) for _, y in points]
    mean_x, mean_y = fmean(xs), fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    residual = sum((y - mean_y - slope * (x - mean_x)) ** 2 for x, y in zip(xs, ys, strict=True))
    stderr = math.sqrt(residual / (len(xs) - 2) / sxx)
    significant = slope != 0 and (stderr == 0 or abs(slope) >= 2 * stderr)
    direction = "flat" if not significant else ("falling" if slope < 0 else "rising")
    quarter = max(1, len(ys) // 4)
    first, last = fmean(ys[:quarter]), fmean(ys[-quarter:])
    change = (last - first) / abs(first) if first else 0.0
    return LossTrend(direction=direction, change=change, iterations=int(xs[-1] - xs[0]))


def _mean(records: list[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return fmean(values) if values else None


def _seconds_per_iteration(current: list[dict[str, Any]]) -> float | None:
    """Median wall-clock seconds per iteration between consecutive records of the current attempt."""
    timed = [r for r in current if isinstance(r.get("time"), (int, float))]
    paces = [(b["time"] - a["time"]) / (b["iteration"] - a["iteration"])
             for a, b in zip(timed, timed[1:], strict=False) if b["iteration"] > a["iteration"]]
    return median(paces) if paces else None


def _checkpoint_writes_left(iteration: int, train_iters: int, save_interval: int | None) -> int:
    """Saves between ``iteration`` and the end: every ``save_interval`` and one at the end."""
    if not save_interval:
        return 0
    periodic = train_iters // save_interval - iteration // save_interval
    return periodic + (1 if train_iters % save_interval else 0)


def _events(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r[kind] for r in records if isinstance(r.get(kind), dict)]


def _checkpoint(run: dict[str, Any], records: list[dict[str, Any]], now: float) -> Checkpoint | None:
    latest = run.get("last_checkpoint") or next(iter(reversed(_events(records, "checkpoint"))), None)
    if not latest or latest.get("iteration") is None:
        return None
    done = latest.get("time")
    return Checkpoint(iteration=int(latest["iteration"]), time=done, seconds=latest.get("seconds"),
                      age_seconds=None if done is None else max(0.0, now - done))


def _attempts(run: dict[str, Any], records: list[dict[str, Any]]) -> list[Attempt]:
    items = run.get("attempts") or _events(records, "start")
    return [Attempt(attempt=int(a.get("attempt", n)), started=a.get("started", a.get("time")),
                    resumed_from=a.get("resumed_from")) for n, a in enumerate(items, 1)]


def job_phase(ranks: list[RankReport]) -> str | None:
    """One phase for the job: the one that explains its state best (a failure, a write, start-up...)."""
    phases = {r.phase for r in ranks}
    for phase in (layout.FAILED, layout.CHECKPOINTING, *layout.STARTUP_PHASES, layout.DATA_WAIT, layout.TRAINING):
        if phase in phases:
            return phase
    return layout.FINISHED if phases == {layout.FINISHED} else None


def current_ranks(heartbeats: list[dict[str, Any]], world_size: int | None,
                  attempt: int | None) -> list[RankReport]:
    """The heartbeats of the newest attempt (files left by an earlier, larger attempt are ignored)."""
    reports = []
    for beat in heartbeats:
        try:
            reports.append(RankReport.from_heartbeat(beat))
        except (KeyError, TypeError, ValueError):
            continue
    newest = max([r.attempt for r in reports] + [attempt or 0])
    return [r for r in reports if r.attempt == newest and (world_size is None or r.rank < world_size)]


def build_progress(snapshot: dict[str, Any], policy: StallPolicy = DEFAULT_POLICY, *, active: bool = True,
                   processes_started: float | None = None, window: int = WINDOW) -> Progress:
    """The figures of a snapshot; ``active=False`` (the job is not running) never reports a stall.

    ``processes_started``: when the job's current trainer processes started, where the backend knows it (the
    newest pod or process start). Heartbeats all older than that, and an attempt that began before it, are
    left by processes that no longer run: the new attempt is ``starting`` (checking its inputs, which writes
    nothing) and the start-up allowance counts from then.
    """
    now = float(snapshot["now"])
    run = snapshot.get("run") or {}
    records = (snapshot.get("metrics") or {}).get("records") or []
    iterations = [r for r in records if probe.is_iteration_record(r)]
    starts = [n for n, r in enumerate(records) if isinstance(r.get("start"), dict)]
    current = [r for r in records[starts[-1] + 1 if starts else 0:] if probe.is_iteration_record(r)]
    latest_of: dict[int, dict[str, Any]] = {int(r["iteration"]): r for r in iterations}
    recent = [latest_of[i] for i in sorted(latest_of)][-window:]
    attempts = _attempts(run, records)
    world_size = run.get("world_size") or next((r.get("world_size") for r in reversed(iterations)), None)
    ranks = current_ranks(snapshot.get("heartbeats") or [], world_size, attempts[-1].attempt if attempts else None)
    started = attempts[-1].started if attempts else None
    restarting = processes_started is not None and (started or 0) < processes_started and all(
        r.last_seen < processes_started for r in ranks)
    if restarting:
        ranks, started = [], processes_started
    world_size = world_size or (len(ranks) or None)
    progress = Progress(now=now, train_iters=run.get("train_iters"), world_size=world_size, ranks=ranks,
                        attempts=attempts, phase=layout.STARTING if restarting else job_phase(ranks),
                        last_checkpoint=_checkpoint(run, records, now), problems=list(snapshot.get("problems") or []))
    last = iterations[-1] if iterations else None
    if last is not None:
        progress.iteration = int(last["iteration"])
        progress.train_iters = last.get("train_iters") or progress.train_iters
        progress.loss = float(last["loss"])
        progress.updated = last.get("time")
    elif ranks:
        progress.iteration = max((r.iteration or 0) for r in ranks)
    in_window = {id(r) for r in recent}
    window_records = [r for r in current if id(r) in in_window] or recent
    progress.loss_trend = loss_trend([(int(r["iteration"]), float(r["loss"])) for r in recent])
    progress.samples_per_second = _mean(window_records, "samples_per_second")
    if progress.samples_per_second is not None and world_size:
        progress.samples_per_second_per_device = progress.samples_per_second / world_size
    mean_ms = _mean(window_records, "iteration_ms")
    progress.iteration_seconds = None if mean_ms is None else mean_ms / 1000
    progress.data_wait_share = _mean(window_records, "data_wait_share")
    progress.skipped_samples = next((dict(r["skipped_samples"]) for r in reversed(iterations)
                                     if isinstance(r.get("skipped_samples"), dict)), {})
    pace = _seconds_per_iteration(window_records) or progress.iteration_seconds
    if progress.train_iters and progress.iteration is not None:
        left = max(0, progress.train_iters - progress.iteration)
        writes = _checkpoint_writes_left(progress.iteration, progress.train_iters, run.get("save_interval"))
        write_seconds = (progress.last_checkpoint.seconds if progress.last_checkpoint else None) or 0.0
        progress.eta_seconds = 0.0 if left == 0 else (None if pace is None else left * pace + writes * write_seconds)
    iterated = any(r.iteration_time for r in ranks) or bool(
        current and (started is None or (progress.updated or 0) >= started))
    if active:
        progress.stall = assess(Evidence(
            now=now, ranks=ranks, world_size=world_size, last_iteration_time=progress.updated,
            attempt_started=started, iterated_this_attempt=iterated, mean_iteration_seconds=progress.iteration_seconds,
            longest_checkpoint_seconds=run.get("longest_checkpoint_seconds")), policy)
    else:
        progress.stall = Stall(reason="the job is not running")
    return progress


def read_progress(source: ProgressSource, policy: StallPolicy = DEFAULT_POLICY, *, active: bool = True,
                  processes_started: float | None = None, window: int = WINDOW) -> Progress:
    """What `status` calls: one snapshot from the backend's source, turned into figures."""
    return build_progress(source.snapshot(records=max(window, probe.DEFAULT_RECORDS)), policy, active=active,
                          processes_started=processes_started, window=window)
