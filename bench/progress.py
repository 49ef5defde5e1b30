"""Benchmark: reading live progress of a long job stays fast, and the trainer's heartbeat costs nothing.

A realistic outputs folder is generated: metrics.jsonl of a job at iteration 100,000 (the trainer's record
format, ``skipped_samples`` every 10 iterations, a checkpoint event every 1,000, two restarts that resumed
and repeated iterations: about 45 MB), progress/run.json and one heartbeat per rank for 16 nodes x 8
devices (128 files). Then, page cache warm for both:

- ours: the probe's snapshot (seek to the end, read back until 100 iteration records: 64 KiB) and the
  figures built from it (:func:`whisper_k8s.progress.summary.read_progress`), in this process and as the
  command `status` runs in a pod (``python -m whisper_k8s.progress.probe``: interpreter start included);
- baseline: what reading the whole file costs (``whisper_k8s.report.read_metrics``, as `collect`'s report
  reads it), without even computing anything from it.

And the heartbeat's cost to the trainer: the hooks the training thread calls per iteration (attribute
writes), and one heartbeat file write (the daemon thread's work every 5 s), against an iteration of
whisper-large-v3 on an H200 (269 ms, README) and of the tiny preset on this CPU.

Prints one summary line and writes bench/results/progress.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "trainer"), str(ROOT / "bench")]

from host import host_info  # noqa: E402

from whisper_k8s.progress import layout, probe  # noqa: E402
from whisper_k8s.progress.source import LocalSource  # noqa: E402
from whisper_k8s.progress.summary import read_progress  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "progress.json"
SKIP_REASONS = ("bad_text_encoding", "corrupt_audio", "empty_audio", "empty_text", "malformed_row", "missing_file",
                "too_long", "too_many_tokens", "truncated_tar")
LARGE_V3_H200_ITERATION_S = 0.2693  # bench/results/train_throughput.json, README


def iteration_record(i: int, t: float, rng: random.Random, world: int, skipped: dict[str, int]) -> dict:
    ms = 269.3 * rng.uniform(0.97, 1.05)
    record = {"iteration": i, "loss": 4.0 * 0.99997 ** i + rng.uniform(-0.05, 0.05), "lr": 1e-5 * 0.99999 ** i,
              "grad_norm": rng.uniform(0.5, 2.0), "iteration_ms": ms, "samples_per_second": world * 8000 / ms,
              "data_wait_share": rng.uniform(0.0, 0.03), "global_samples": world * 8, "consumed_samples": world * 8 * i,
              "train_iters": 200_000, "world_size": world, "samples_per_second_per_device": 8000 / ms, "time": t}
    if i % 10 == 0:
        skipped["too_long"] += rng.randrange(3)
        record["skipped_samples"] = dict(skipped)
    return record


def write_outputs(folder: Path, iterations: int, world: int) -> dict:
    """The outputs folder of a job at ``iterations``; returns the sizes written."""
    rng = random.Random(0)
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    crashes = {iterations // 3 + 700, 2 * iterations // 3 + 700}  # each resumes from the checkpoint before it
    t, attempt, attempts = 1_700_000_000.0, 1, [{"attempt": 1, "started": 1_700_000_000.0, "resumed_from": None}]
    metrics = folder / layout.METRICS_FILE
    with open(metrics, "w") as f:
        f.write(json.dumps({"start": {"attempt": 1, "time": t, "resumed_from": None, "ready": t + 60}}) + "\n")
        i = 1
        while i <= iterations:
            record = iteration_record(i, t, rng, world, skipped)
            t += record["iteration_ms"] / 1000
            f.write(json.dumps(record) + "\n")
            if i % 1000 == 0:
                f.write(json.dumps({"checkpoint": {"iteration": i, "time": t + 40, "seconds": 40.0}}) + "\n")
                t += 40
            if i in crashes:
                crashes.remove(i)
                attempt, resumed = attempt + 1, i - i % 1000
                t += 300
                attempts.append({"attempt": attempt, "started": t, "resumed_from": resumed})
                f.write(json.dumps({"start": {"attempt": attempt, "time": t, "resumed_from": resumed,
                                              "ready": t + 60}}) + "\n")
                i = resumed
            i += 1
    progress = folder / layout.PROGRESS_DIR
    progress.mkdir()
    (progress / layout.RUN_FILE).write_text(json.dumps({
        "train_iters": 200_000, "world_size": world, "global_batch": world * 8, "attempts": attempts,
        "last_checkpoint": {"iteration": iterations - iterations % 1000, "time": t - 100, "seconds": 40.0},
        "longest_checkpoint_seconds": 41.0}))
    for rank in range(world):
        (progress / layout.heartbeat_name(rank)).write_text(json.dumps({
            "rank": rank, "world_size": world, "local_rank": rank % 8, "node_rank": rank // 8, "attempt": attempt,
            "host": f"job-worker-{rank // 8}", "pid": 1000 + rank, "interval": 5.0, "phase": "training",
            "phase_since": t - 500, "iteration": iterations, "iteration_time": t, "detail": "", "time": t + 1}))
    return {"metrics_bytes": metrics.stat().st_size, "ranks": world}


def timed(function, repeats: int) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def heartbeat_costs(folder: Path, repeats: int) -> dict:
    """Per-iteration hook cost (training thread) and one file write (heartbeat thread)."""
    from whisper_trainer.heartbeat import Heartbeat

    beat = Heartbeat(folder / "bench-rank.json", {"rank": 0, "attempt": 1}, interval=layout.DEFAULT_HEARTBEAT_SECONDS)
    beat.phase = layout.TRAINING
    batch = {"num_samples": 8}
    endless = iter(lambda: batch, None)
    calls = 200_000

    def hooks():
        for i in range(calls):
            beat.next_batch(endless)  # one micro batch per iteration here; --accumulation N calls it N times
            beat.iteration_done(i)

    def bare():
        for _ in range(calls):
            next(endless)

    hooks_s, _ = timed(hooks, 5)
    bare_s, _ = timed(bare, 5)
    write_s, _ = timed(beat.write, repeats)
    per_iteration_s = max(0.0, hooks_s - bare_s) / calls
    thread_share = write_s / layout.DEFAULT_HEARTBEAT_SECONDS
    return {
        "hooks_per_iteration_ns": round(per_iteration_s * 1e9, 1),
        "heartbeat_write_us": round(write_s * 1e6, 1),
        "heartbeat_thread_cpu_share": thread_share,
        "share_of_large_v3_h200_iteration": (per_iteration_s / LARGE_V3_H200_ITERATION_S
                                             + thread_share),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--ranks", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    host = host_info()
    with tempfile.TemporaryDirectory(prefix="bench-progress-") as tmp:
        folder = Path(tmp)
        sizes = write_outputs(folder, args.iterations, args.ranks)
        from whisper_k8s.report import read_metrics

        source = LocalSource(folder)
        read_metrics(folder / layout.METRICS_FILE)  # page cache warm for both
        ours_s, progress = timed(lambda: read_progress(source), args.repeats)
        snapshot_s, snap = timed(lambda: source.snapshot(), args.repeats)
        baseline_s, (records, _) = timed(lambda: read_metrics(folder / layout.METRICS_FILE), max(3, args.repeats // 4))
        command = [sys.executable, *probe.command(str(folder))[1:]]
        env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
        probe_s, output = timed(lambda: subprocess.run(command, capture_output=True, check=True, env=env).stdout,
                                max(3, args.repeats // 4))
        assert progress.iteration == args.iterations and len(records) > args.iterations
        costs = heartbeat_costs(folder, args.repeats)
    result = {
        "name": "progress",
        "unit": "seconds to read a job's progress (median, page cache warm)",
        "ours": round(ours_s, 5),
        "baseline": round(baseline_s, 5),
        "ratio": round(round(baseline_s, 5) / round(ours_s, 5), 1),  # of the figures as written
        "ours_what": "probe snapshot (tail of metrics.jsonl + run.json + heartbeats) and the figures from it",
        "baseline_what": "read and parse all of metrics.jsonl (whisper_k8s.report.read_metrics), no figures",
        "snapshot_seconds": round(snapshot_s, 5),
        "probe_command_seconds": round(probe_s, 4),
        "probe_output_bytes": len(output),
        "metrics_bytes": sizes["metrics_bytes"],
        "metrics_bytes_read": snap["metrics"]["bytes_read"],
        "iterations": args.iterations,
        "ranks": sizes["ranks"],
        "heartbeat": costs,
        "machine": host,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"progress: {args.iterations:,} iterations ({sizes['metrics_bytes'] / 1e6:.1f} MB), {args.ranks} ranks: "
          f"ours {1000 * ours_s:.2f} ms (read {snap['metrics']['bytes_read'] / 1024:.0f} KiB; as a pod command "
          f"{1000 * probe_s:.0f} ms, {len(output) / 1024:.0f} KiB out), whole file {1000 * baseline_s:.0f} ms: "
          f"ratio {result['ratio']}x | heartbeat: {costs['hooks_per_iteration_ns']:.0f} ns per iteration, "
          f"{costs['heartbeat_write_us']:.0f} us per write every {layout.DEFAULT_HEARTBEAT_SECONDS:.0f} s "
          f"({100 * costs['share_of_large_v3_h200_iteration']:.4f}% of a large-v3 H200 iteration)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
