"""How progress is shown: the text block under `status NAME`, and the `status NAME -o json|yaml` document.

The document (schema ``whisper-k8s/v1`` ``JobStatus``; README "Live progress" documents every field)::

    apiVersion: whisper-k8s/v1
    kind: JobStatus
    job: {name, namespace, backend, handle, operator, nodes, created}
    state: Running                      # Pending Running Succeeded Failed Suspended Unknown
    conditions: [{type, status, reason, message, last_transition}]
    pods: [{name, role, rank, phase, restarts, node, started, reason, message}]
    problems: [...]
    progress: {iteration, train_iters, ..., stalled, stall: {...}, ranks: [...]}   # null: nothing to read yet

Times are RFC 3339 UTC strings, durations are seconds, shares are fractions (0.012 = 1.2 %).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from whisper_k8s.progress.summary import Progress

if TYPE_CHECKING:
    from whisper_k8s.backends.base import JobStatus

API_VERSION = "whisper-k8s/v1"
KIND = "JobStatus"
SUSPECT_LINES = 8  # ranks listed under a stall; the document lists them all


def iso(seconds: float | datetime | None) -> str | None:
    if seconds is None:
        return None
    moment = seconds if isinstance(seconds, datetime) else datetime.fromtimestamp(seconds, timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def format_duration(seconds: float | None) -> str:
    """``0.7s``, ``45s``, ``12m 03s``, ``3h 05m``, ``2d 04h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    for big, small, size_big, size_small in (("d", "h", 86400, 3600), ("h", "m", 3600, 60), ("m", "s", 60, 1)):
        if whole >= size_big:
            return f"{whole // size_big}{big} {(whole % size_big) // size_small:02d}{small}"
    return f"{whole}s"


def _number(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def _skipped(skipped: dict[str, int]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items()) if count) or "none"


def _restarts(progress: Progress) -> str:
    if not progress.restarts:
        return "none"
    resumed = [f"attempt {a.attempt} from {'scratch' if a.resumed_from is None else f'iteration {a.resumed_from}'}"
               for a in progress.attempts[1:][-3:]]
    return f"{progress.restarts} ({'; '.join(resumed)})"


def _ranks_line(progress: Progress) -> str:
    counts: dict[str, int] = {}
    for rank in progress.ranks:
        key = "silent" if rank.silent else rank.phase
        counts[key] = counts.get(key, 0) + 1
    total = f"{len(progress.ranks)} of {progress.world_size}" if progress.world_size else str(len(progress.ranks))
    return f"{total} reporting: " + ", ".join(f"{phase} {n}" for phase, n in sorted(counts.items()))


def format_progress(progress: Progress) -> str:
    """The progress block, one topic a line."""
    p = progress
    total = f" / {p.train_iters:,}" if p.train_iters else ""
    share = f" ({100 * p.fraction:.1f}%)" if p.fraction is not None else ""
    iteration = "-" if p.iteration is None else f"{p.iteration:,}"
    lines = [f"iteration   {iteration}{total}{share}   phase {p.phase or '-'}"]
    trend = ""
    if p.loss_trend:
        t = p.loss_trend
        trend = f"   {t.direction} ({100 * t.change:+.1f}% over the last {t.iterations} iterations)"
    lines.append(f"loss        {_number(p.loss, '.4f')}{trend}")
    lines.append(f"speed       {_number(p.samples_per_second, '.2f')} samples/s "
                 f"({_number(p.samples_per_second_per_device, '.2f')} per device), "
                 f"{_number(p.iteration_seconds, '.3f')} s per iteration, "
                 f"data wait {_number(None if p.data_wait_share is None else 100 * p.data_wait_share, '.1f')}%")
    lines.append(f"eta         {format_duration(p.eta_seconds)}")
    c = p.last_checkpoint
    lines.append("checkpoint  none yet" if c is None else
                 f"checkpoint  iteration {c.iteration:,}, {format_duration(c.age_seconds)} ago"
                 + (f" (written in {format_duration(c.seconds)})" if c.seconds is not None else ""))
    lines.append(f"skipped     {_skipped(p.skipped_samples)}")
    lines.append(f"restarts    {_restarts(p)}")
    if p.ranks:
        lines.append(f"ranks       {_ranks_line(p)}")
    s = p.stall
    if s.stalled:
        lines.append(f"STALLED     no progress since {iso(s.since)} ({format_duration(s.quiet_seconds)}; "
                     f"allowance {format_duration(s.allowance_seconds)} for {s.allowance})")
        lines.append(f"            {s.reason}")
        by_rank = {r.rank: r for r in p.ranks}
        for number in s.suspects[:SUSPECT_LINES]:
            r = by_rank.get(number)
            if r is not None:
                node = "" if r.node_rank is None else f" (node {r.node_rank})"
                lines.append(f"            rank {r.rank}: {r.host or '-'}{node} pid {r.pid or '-'}, {r.phase} at "
                             f"iteration {r.iteration}, last seen {format_duration(p.now - r.last_seen)} ago")
        if len(s.suspects) > SUSPECT_LINES:
            lines.append(f"            ... and {len(s.suspects) - SUSPECT_LINES} more ranks (-o yaml lists them)")
    lines.extend(f"! {problem}" for problem in p.problems)
    return "\n".join(lines)


def progress_document(progress: Progress) -> dict[str, Any]:
    p = progress
    c = p.last_checkpoint
    s = p.stall
    return {
        "iteration": p.iteration,
        "train_iters": p.train_iters,
        "fraction": p.fraction,
        "phase": p.phase,
        "loss": p.loss,
        "loss_trend": asdict(p.loss_trend) if p.loss_trend else None,
        "samples_per_second": p.samples_per_second,
        "samples_per_second_per_device": p.samples_per_second_per_device,
        "iteration_seconds": p.iteration_seconds,
        "data_wait_share": p.data_wait_share,
        "eta_seconds": p.eta_seconds,
        "world_size": p.world_size,
        "updated": iso(p.updated),
        "last_checkpoint": None if c is None else {
            "iteration": c.iteration, "time": iso(c.time), "age_seconds": c.age_seconds, "seconds": c.seconds},
        "skipped_samples": dict(p.skipped_samples),
        "restarts": p.restarts,
        "attempts": [{"attempt": a.attempt, "started": iso(a.started), "resumed_from": a.resumed_from}
                     for a in p.attempts],
        "stalled": s.stalled,
        "stall": {"since": iso(s.since), "quiet_seconds": s.quiet_seconds, "allowance_seconds": s.allowance_seconds,
                  "allowance": s.allowance or None, "suspects": list(s.suspects), "reason": s.reason or None},
        "ranks": [{"rank": r.rank, "node_rank": r.node_rank, "host": r.host, "pid": r.pid, "attempt": r.attempt,
                   "phase": r.phase,
                   "iteration": r.iteration, "last_seen_seconds": max(0.0, p.now - r.last_seen),
                   "silent": r.silent, "detail": r.detail or None} for r in p.ranks],
        "problems": list(p.problems),
    }


def status_document(status: JobStatus, progress: Progress | None) -> dict[str, Any]:
    """The whole `status -o json|yaml` document of a job (see the module's docstring)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "job": {"name": status.name, "namespace": status.namespace, "backend": status.backend,
                "handle": status.handle, "operator": status.operator, "nodes": status.nodes,
                "created": iso(status.created)},
        "state": status.state,
        "conditions": [{"type": c.type, "status": c.status, "reason": c.reason or None, "message": c.message or None,
                        "last_transition": iso(c.last_transition)} for c in status.conditions],
        "pods": [{"name": pod.name, "replica": pod.replica, "role": pod.role, "node_rank": pod.rank, "phase": pod.phase, "restarts": pod.restarts,
                  "node": pod.node or None, "started": iso(pod.started), "reason": pod.reason or None,
                  "message": pod.message or None} for pod in status.pods],
        "problems": list(status.problems),
        "progress": None if progress is None else progress_document(progress),
    }


def dump(document: dict[str, Any], output: str) -> str:
    """``json`` (indented) or ``yaml`` (block style, keys in schema order)."""
    if output == "json":
        return json.dumps(document, indent=2) + "\n"
    import yaml

    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=1000)


def format_status_with_progress(status: JobStatus, progress: Progress | None) -> str:
    """`status NAME`'s text: the job's state and pods (backends.base.format_status), then the progress block."""
    from whisper_k8s.backends.base import format_status

    text = format_status(status)
    if progress is None:
        return text
    return f"{text}\n\n{format_progress(progress)}"
