"""Is the job stalled, since when, and which rank holds it up.

A collective hang (one rank stuck or frozen, the others waiting for it in HCCL/NCCL/gloo) leaves every pod
Running and logs nothing until the collective timeout, 30 minutes by default. Two signals reveal it early:

- **Progress.** The last sign of progress is the latest of: an iteration completed (metrics.jsonl, any
  rank's heartbeat), a rank entering a phase, the attempt starting. The job is *stalled* when that is
  older than the allowance of what the ranks are doing:

  ==================  =====================================================================================
  training            ``max(floor_seconds, factor x mean iteration time)`` (60 s, 10x by default)
  start-up            ``startup_seconds`` (30 min) from the attempt's start until its first iteration
                      completes: process start and input checks (nothing is written then), checkpoint
                      verification and loading, and the first iteration, which compiles layers when
                      ``--compile`` is on
  checkpoint write    ``max(checkpoint_seconds, factor x the longest save so far)`` (10 min) from the write's
                      start
  ==================  =====================================================================================

  So a hang during training is reported at most ``max(60 s, 10 x mean iteration time)`` after the last
  iteration completed, plus the time to read the files (one `status` poll).
- **Liveness.** Each rank's heartbeat is rewritten every few seconds by a thread of its own, so a rank that
  waits in a collective keeps reporting while a frozen, killed or GIL-bound rank goes *silent*: its
  heartbeat is older than ``silent_intervals`` heartbeat intervals plus ``silent_slack_seconds`` (17 s at the
  default 5 s interval). Silent, failed and never-reported ranks are the suspects; when every rank still
  reports, the ones at a lower iteration, then the ones waiting for data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from whisper_k8s.progress import layout


@dataclass(frozen=True)
class StallPolicy:
    factor: float = 10.0
    floor_seconds: float = 60.0
    startup_seconds: float = 1800.0
    checkpoint_seconds: float = 600.0
    silent_intervals: float = 3.0
    silent_slack_seconds: float = 2.0

    def silent_after(self, interval: float) -> float:
        return self.silent_intervals * interval + self.silent_slack_seconds


DEFAULT_POLICY = StallPolicy()


@dataclass
class RankReport:
    """One rank as its heartbeat last described it."""

    rank: int
    phase: str
    last_seen: float  # when the heartbeat was written (the writer's clock)
    host: str = ""  # the pod's name on Kubernetes (its hostname)
    pid: int | None = None
    node_rank: int | None = None
    attempt: int = 1
    phase_since: float | None = None
    iteration: int | None = None
    iteration_time: float | None = None  # when this rank last completed an iteration (this attempt)
    interval: float = layout.DEFAULT_HEARTBEAT_SECONDS
    detail: str = ""
    silent: bool = False

    @classmethod
    def from_heartbeat(cls, beat: dict[str, Any]) -> RankReport:
        return cls(rank=int(beat["rank"]), phase=str(beat.get("phase", "")), last_seen=float(beat["time"]),
                   host=str(beat.get("host", "")), pid=beat.get("pid"), node_rank=beat.get("node_rank"),
                   attempt=int(beat.get("attempt", 1)),
                   phase_since=beat.get("phase_since"), iteration=beat.get("iteration"),
                   iteration_time=beat.get("iteration_time"),
                   interval=float(beat.get("interval") or layout.DEFAULT_HEARTBEAT_SECONDS),
                   detail=str(beat.get("detail", "")))

    @property
    def ended(self) -> bool:
        return self.phase in layout.ENDED_PHASES

    def where(self) -> str:
        place = ", ".join(part for part in (self.host, f"pid {self.pid}" if self.pid else "") if part)
        return f"rank {self.rank} ({place})" if place else f"rank {self.rank}"


@dataclass
class Stall:
    stalled: bool = False
    since: float | None = None  # the last sign of progress
    quiet_seconds: float | None = None  # how long ago that was
    allowance_seconds: float | None = None
    allowance: str = ""  # what the allowance is for: "training", "start-up", "checkpoint write"
    suspects: list[int] = field(default_factory=list)
    reason: str = ""


@dataclass
class Evidence:
    """What the stall decision reads, gathered by :func:`whisper_k8s.progress.summary.build_progress`."""

    now: float
    ranks: list[RankReport]  # the current attempt's heartbeats
    world_size: int | None = None
    last_iteration_time: float | None = None  # the newest iteration record's time (rank 0)
    attempt_started: float | None = None
    iterated_this_attempt: bool = False
    mean_iteration_seconds: float | None = None
    longest_checkpoint_seconds: float | None = None


def _allowance(evidence: Evidence, policy: StallPolicy) -> tuple[float, str]:
    live_phases = {r.phase for r in evidence.ranks if not r.ended}
    if layout.CHECKPOINTING in live_phases:
        longest = evidence.longest_checkpoint_seconds or 0.0
        return max(policy.checkpoint_seconds, policy.factor * longest), "checkpoint write"
    if live_phases & set(layout.STARTUP_PHASES) or not evidence.iterated_this_attempt:
        return policy.startup_seconds, "start-up"
    mean = evidence.mean_iteration_seconds or 0.0
    return max(policy.floor_seconds, policy.factor * mean), "training"


def assess(evidence: Evidence, policy: StallPolicy = DEFAULT_POLICY) -> Stall:
    """Stalled or not, with the suspects and one line saying why (see the module's docstring)."""
    now, ranks = evidence.now, evidence.ranks
    for rank in ranks:
        rank.silent = not rank.ended and now - rank.last_seen > policy.silent_after(rank.interval)
    if ranks and all(r.ended for r in ranks) and len(ranks) >= (evidence.world_size or 0):
        return Stall(reason="every rank has left the training loop")
    signs = [evidence.last_iteration_time, evidence.attempt_started]
    signs += [t for r in ranks for t in (r.iteration_time, r.phase_since)]
    signs = [t for t in signs if t is not None]
    if not signs:
        return Stall(reason="no progress reported yet")
    since = max(signs)
    allowance, kind = _allowance(evidence, policy)
    quiet = max(0.0, now - since)
    stall = Stall(stalled=quiet > allowance, since=since, quiet_seconds=quiet, allowance_seconds=allowance,
                  allowance=kind)
    if stall.stalled:
        stall.suspects, stall.reason = blame(evidence)
    return stall


def _ranks_text(numbers: list[int]) -> str:
    return ("rank " if len(numbers) == 1 else "ranks ") + ", ".join(str(n) for n in numbers)


def blame(evidence: Evidence) -> tuple[list[int], str]:
    """The ranks that hold the job up and a line saying how; ``[]`` when all look alike."""
    now, ranks = evidence.now, evidence.ranks
    reported = {r.rank for r in ranks}
    missing = [n for n in range(evidence.world_size or 0) if n not in reported]
    failed = [r for r in ranks if r.phase == layout.FAILED]
    silent = [r for r in ranks if r.silent]
    others = [r.rank for r in ranks if r not in failed and r not in silent and not r.ended]
    verbs = "reports and waits" if len(others) == 1 else "report and wait"
    waiting = f"; {_ranks_text(others)} still {verbs} for it" if others else ""
    if failed:
        first = failed[0]
        return [r.rank for r in failed], f"{first.where()} failed: {first.detail or 'see its log'}{waiting}"
    if silent or missing:
        parts = [f"{r.where()} last reported {now - r.last_seen:.0f} s ago (then {r.phase}, iteration {r.iteration})"
                 for r in silent]
        parts += [f"rank {n} never reported" for n in missing]
        return sorted([r.rank for r in silent] + missing), "; ".join(parts) + waiting
    live = [r for r in ranks if not r.ended]
    iterations = {r.iteration or 0 for r in live}
    if len(iterations) > 1:
        low = min(iterations)
        behind = [r.rank for r in live if (r.iteration or 0) == low]
        return behind, (f"{_ranks_text(behind)} at iteration {low}, the others at {max(iterations)}: "
                        "see the logs of the ranks behind")
    starving = [r for r in live if r.phase == layout.DATA_WAIT]
    if starving:
        numbers = [r.rank for r in starving]
        waited = max(now - (r.phase_since or now) for r in starving)
        return numbers, (f"{_ranks_text(numbers)} waiting for data for {waited:.0f} s: a data-loader worker may "
                         "have died (see those ranks' logs)")
    return [], ("every rank reports but none completes an iteration: they wait in a collective "
                "(see each rank's log; the collective timeout ends it)")
