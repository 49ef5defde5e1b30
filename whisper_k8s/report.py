"""The short training report ``collect`` writes: a summary of metrics.jsonl, a loss-curve PNG, report.md.

The trainer appends one JSON line per iteration (``iteration``, ``loss``, ``samples_per_second``,
``iteration_ms``, cumulative ``skipped_samples`` by reason...), ``{"start": ...}`` and ``{"checkpoint": ...}``
events (read by ``whisper_k8s.progress``; skipped here) and a ``{"summary": ...}`` line when a run ends. A
restarted job resumes from its latest checkpoint and appends again, so an iteration can appear more than
once: the last record of each iteration is the one the final weights descend from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

from whisper_k8s.errors import UserError
from whisper_k8s.progress.probe import is_iteration_record

LOSS_PNG = "loss.png"
REPORT_MD = "report.md"


@dataclass
class MetricsSummary:
    iterations: int = 0
    first_loss: float | None = None
    last_loss: float | None = None
    min_loss: float | None = None
    samples_per_second: float | None = None  # the trainer's headline when it wrote one, else the mean
    skipped: dict[str, int] = field(default_factory=dict)
    repeated_iterations: int = 0  # iterations run again after a restart resumed from an older checkpoint
    curve: list[tuple[int, float]] = field(default_factory=list)


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(iteration records, summary records) of a metrics.jsonl; a torn last line (killed writer) is ignored."""
    records, summaries = [], []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                continue
            raise UserError(f"{path}:{number}: not a JSON line") from None
        if "summary" in item:
            summaries.append(item["summary"])
        elif is_iteration_record(item):
            records.append(item)
    return records, summaries


def summarize(path: Path) -> MetricsSummary:
    records, summaries = read_metrics(path)
    if not records:
        return MetricsSummary()
    latest: dict[int, dict[str, Any]] = {}
    for record in records:
        latest[record["iteration"]] = record
    ordered = [latest[i] for i in sorted(latest)]
    speeds = [r["samples_per_second"] for r in ordered[1:] or ordered if "samples_per_second" in r]
    headline = next((s.get("average_samples_per_second") for s in reversed(summaries)
                     if s.get("average_samples_per_second")), None)
    skipped = next((r["skipped_samples"] for r in reversed(records) if "skipped_samples" in r), {})
    return MetricsSummary(
        iterations=ordered[-1]["iteration"],
        first_loss=ordered[0]["loss"],
        last_loss=ordered[-1]["loss"],
        min_loss=min(r["loss"] for r in ordered),
        samples_per_second=headline if headline is not None else (fmean(speeds) if speeds else None),
        skipped=dict(skipped),
        repeated_iterations=len(records) - len(ordered),
        curve=[(r["iteration"], r["loss"]) for r in ordered],
    )


def plot_loss(curve: list[tuple[int, float]], png: Path, title: str) -> None:
    """The loss curve as a PNG (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.add_subplot()
    axes.plot([i for i, _ in curve], [loss for _, loss in curve], marker="." if len(curve) < 50 else None)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("iteration")
    axes.set_ylabel("training loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(png)


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_markdown(job: str, state: str, checkpoint: str, summary: MetricsSummary, has_plot: bool) -> str:
    skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(summary.skipped.items())) or "none"
    lines = [
        f"# Training report: {job}",
        "",
        f"- job state: {state}",
        f"- checkpoint: {checkpoint}",
        f"- iterations: {summary.iterations}",
        f"- loss: first {_number(summary.first_loss)}, last {_number(summary.last_loss)}, "
        f"min {_number(summary.min_loss)}",
        f"- samples per second: {_number(summary.samples_per_second, 2)}",
        f"- skipped samples: {skipped}",
    ]
    if summary.repeated_iterations:
        lines.append(f"- iterations repeated after restarts: {summary.repeated_iterations}")
    if has_plot:
        lines += ["", f"![training loss]({LOSS_PNG})"]
    return "\n".join(lines) + "\n"


def write_report(folder: Path, *, job: str, state: str, checkpoint: str, metrics: Path | None) -> MetricsSummary:
    """Write report.md (and loss.png when there are metrics) into ``folder``; return the summary."""
    summary = summarize(metrics) if metrics and metrics.is_file() else MetricsSummary()
    has_plot = bool(summary.curve)
    if has_plot:
        plot_loss(summary.curve, folder / LOSS_PNG, f"{job}: training loss")
    (folder / REPORT_MD).write_text(render_markdown(job, state, checkpoint, summary, has_plot))
    return summary
