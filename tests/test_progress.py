"""Live progress, without a running job: the probe's tail reading, the figures, the stall rules, the output.

Snapshots here are what the probe reads from files these tests write in the trainer's formats (iteration
records, start/checkpoint events, heartbeats, run.json); tests/test_progress_run.py reads a real run.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from whisper_k8s.backends.base import JobState, JobStatus, PodStatus
from whisper_k8s.errors import ClusterError, UserError
from whisper_k8s.progress import layout, probe
from whisper_k8s.progress.render import dump, format_duration, format_progress, status_document
from whisper_k8s.progress.source import CommandSource, LocalSource, parse_snapshot
from whisper_k8s.progress.stall import Evidence, RankReport, StallPolicy, assess
from whisper_k8s.progress.summary import build_progress, loss_trend, read_progress

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000.0  # the attempt's start in every snapshot below


def record(iteration: int, *, time: float, loss: float = 2.0, ms: float = 1000.0, world: int = 2, **extra) -> dict:
    return {"iteration": iteration, "loss": loss, "lr": 1e-4, "grad_norm": 1.0, "iteration_ms": ms,
            "samples_per_second": 16.0, "samples_per_second_per_device": 16.0 / world, "data_wait_share": 0.05,
            "global_samples": 16, "consumed_samples": 16 * iteration, "train_iters": 1000, "world_size": world,
            "time": time, **extra}


def beat(rank: int, phase: str, time: float, *, iteration: int | None = 10, iteration_time: float | None = None,
         phase_since: float | None = None, attempt: int = 1, interval: float = 5.0, **extra) -> dict:
    return {"rank": rank, "world_size": 2, "local_rank": rank, "node_rank": 0, "attempt": attempt,
            "host": f"node-{rank}", "pid": 100 + rank, "interval": interval, "phase": phase,
            "phase_since": T0 if phase_since is None else phase_since, "iteration": iteration,
            "iteration_time": iteration_time, "detail": "", "time": time, **extra}


def write_outputs(folder: Path, records: list[dict], heartbeats: list[dict] = (), run: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / layout.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    progress = folder / layout.PROGRESS_DIR
    progress.mkdir(exist_ok=True)
    for item in heartbeats:
        (progress / layout.heartbeat_name(item["rank"])).write_text(json.dumps(item))
    if run is not None:
        (progress / layout.RUN_FILE).write_text(json.dumps(run))
    return folder


def training_snapshot(now: float, *, last: int = 10, phase: str = "training", phase_since: float | None = None,
                      seen: tuple[float, float] | None = None, run: dict | None = None) -> dict:
    """Iterations 1..last one second apart from T0 + 60, both ranks in ``phase``; heartbeats seen at ``seen``."""
    records = [{"start": {"attempt": 1, "time": T0, "resumed_from": None, "ready": T0 + 50}}]
    records += [record(i, time=T0 + 60 + i) for i in range(1, last + 1)]
    last_time = T0 + 60 + last
    seen = seen or (now, now)
    since = last_time if phase_since is None else phase_since
    beats = [beat(r, phase, seen[r], iteration=last, iteration_time=last_time, phase_since=since) for r in (0, 1)]
    run = run or {"train_iters": 1000, "world_size": 2, "attempts": [{"attempt": 1, "started": T0,
                                                                       "resumed_from": None}]}
    return {"format": probe.FORMAT, "now": now, "outputs": "/outputs", "problems": [], "run": run,
            "heartbeats": beats, "metrics": {"records": records}}


# --------------------------------------------------------------------------------------------- tail reading
def test_partial_last_line_is_left_out_and_earlier_damage_counted(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps(record(i, time=T0 + i)) for i in (1, 2, 3)]
    path.write_text(lines[0] + "\n" + "{not json\n" + lines[1] + "\n" + lines[2] + "\n" + lines[2][:40])
    tail = probe.metrics_tail(path)
    assert [r["iteration"] for r in tail["records"]] == [1, 2, 3]
    assert tail["unreadable_lines"] == 1 and tail["offset"] == 0


def test_tail_starting_mid_line_drops_the_cut_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(record(i, time=T0 + i)) + "\n" for i in range(1, 201)))
    tail = probe.metrics_tail(path, records=5, tail_bytes=3000)
    assert tail["offset"] > 0 and tail["unreadable_lines"] == 0
    iterations = [r["iteration"] for r in tail["records"]]
    assert iterations == list(range(iterations[0], 201)) and len(iterations) >= 5


def test_huge_file_is_read_from_its_end_only(tmp_path):
    path = tmp_path / "metrics.jsonl"
    line = json.dumps(record(0, time=T0))
    with open(path, "w") as f:
        for i in range(1, 100_001):
            f.write(line.replace('"iteration": 0', f'"iteration": {i}', 1) + "\n")
    tail = probe.metrics_tail(path, records=100)
    assert tail["records"][-1]["iteration"] == 100_000
    assert sum(probe.is_iteration_record(r) for r in tail["records"]) >= 100
    assert tail["bytes_read"] == probe.TAIL_BYTES and tail["size"] > 400 * probe.TAIL_BYTES


def test_tail_grows_until_it_holds_the_records_wanted_and_stops_at_the_cap(tmp_path):
    path = tmp_path / "metrics.jsonl"
    filler = json.dumps({"note": "x" * 2000})
    path.write_text("".join(json.dumps(record(i, time=T0 + i)) + "\n" + filler + "\n" for i in range(1, 401)))
    grown = probe.metrics_tail(path, records=100)
    assert probe.TAIL_BYTES < grown["bytes_read"] < grown["size"]
    assert sum(probe.is_iteration_record(r) for r in grown["records"]) >= 100
    capped = probe.metrics_tail(path, records=400, max_bytes=probe.TAIL_BYTES * 4)
    assert capped["bytes_read"] == probe.TAIL_BYTES * 4 and capped["records"][-1]["note"]


def test_empty_missing_and_replaced_files(tmp_path):
    outputs = tmp_path / "outputs"
    assert probe.snapshot(outputs)["metrics"] is None  # nothing written yet: not an error
    outputs.mkdir()
    (outputs / layout.METRICS_FILE).write_text("")
    assert probe.snapshot(outputs)["metrics"]["records"] == []
    write_outputs(outputs, [record(i, time=T0 + i) for i in range(1, 50)])
    assert probe.snapshot(outputs)["metrics"]["records"][-1]["iteration"] == 49
    write_outputs(outputs, [record(1, time=T0 + 99)])  # rotated / truncated under the reader: no state kept
    assert [r["iteration"] for r in probe.snapshot(outputs)["metrics"]["records"]] == [1]


def test_bad_progress_files_are_named_and_skipped(tmp_path):
    outputs = write_outputs(tmp_path, [record(1, time=T0)], [beat(0, "training", T0)])
    (tmp_path / layout.PROGRESS_DIR / layout.heartbeat_name(1)).write_text("{torn")
    (tmp_path / layout.PROGRESS_DIR / layout.RUN_FILE).write_text("[1, 2]")
    (tmp_path / layout.PROGRESS_DIR / ".rank-00002.json.tmp").write_text("{}")  # a writer's temporary file
    snap = probe.snapshot(outputs)
    assert [b["rank"] for b in snap["heartbeats"]] == [0]
    assert snap["run"] is None
    assert any("rank-00001.json: not JSON" in p for p in snap["problems"])
    assert any("run.json: not a JSON object" in p for p in snap["problems"])


def test_probe_command_prints_one_snapshot_line_that_a_command_source_reads(tmp_path):
    outputs = write_outputs(tmp_path / "out", [record(i, time=T0 + i) for i in range(1, 4)], [beat(0, "training", T0)])

    def run_here(argv: list[str]) -> str:  # what `kubectl exec` / `docker exec` would run in the pod
        argv = [sys.executable, *argv[1:]]
        done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=tmp_path,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        return "a warning the runtime printed\n" + done.stdout

    snap = CommandSource(run_here, where="pod job-master-0", outputs=str(outputs)).snapshot()
    assert snap["metrics"]["records"][-1]["iteration"] == 3 and snap["heartbeats"][0]["rank"] == 0
    assert snap["metrics"] == LocalSource(outputs).snapshot()["metrics"]


def test_probe_output_that_is_not_a_snapshot_is_one_clear_error():
    with pytest.raises(ClusterError, match="pod p printed no snapshot .*No module named whisper_k8s"):
        parse_snapshot("/usr/bin/python: No module named whisper_k8s\n", "pod p")
    with pytest.raises(ClusterError, match="format 99, this CLI 1: use the same whisper-k8s version"):
        parse_snapshot('{"format": 99}\n', "pod p")


def test_bad_heartbeat_interval_names_the_variable(monkeypatch):
    monkeypatch.setenv(layout.HEARTBEAT_SECONDS_ENV, "soon")
    with pytest.raises(UserError, match="WHISPER_HEARTBEAT_SECONDS='soon': expected seconds"):
        layout.heartbeat_seconds()
    monkeypatch.setenv(layout.HEARTBEAT_SECONDS_ENV, "0.5")
    assert layout.heartbeat_seconds() == 0.5


# --------------------------------------------------------------------------------------- figures and trend
def test_loss_trend_tells_falling_flat_and_rising_apart_through_noise():
    noise = [0.03 * ((i * 7919) % 11 - 5) for i in range(50)]  # deterministic, +-0.15
    assert loss_trend([(i, 3.0 - 0.01 * i + noise[i]) for i in range(50)]).direction == "falling"
    assert loss_trend([(i, 3.0 + noise[i]) for i in range(50)]).direction == "flat"
    rising = loss_trend([(i, 3.0 + 0.01 * i + noise[i]) for i in range(50)])
    assert rising.direction == "rising" and rising.iterations == 49 and rising.change == pytest.approx(0.38 / 3.055, rel=0.2)
    assert loss_trend([(i, 3.0 - i) for i in range(4)]) is None  # too few points to tell


def test_figures_eta_and_checkpoint_from_a_snapshot():
    snap = training_snapshot(now=T0 + 75, last=10)
    snap["run"]["last_checkpoint"] = {"iteration": 8, "time": T0 + 69, "seconds": 1.5}
    snap["metrics"]["records"][-1]["skipped_samples"] = {"too_long": 2, "corrupt_audio": 0}
    p = build_progress(snap)
    assert (p.iteration, p.train_iters, p.loss, p.world_size) == (10, 1000, 2.0, 2)
    assert p.samples_per_second == 16.0 and p.samples_per_second_per_device == 8.0
    assert p.iteration_seconds == 1.0 and p.data_wait_share == pytest.approx(0.05)
    assert p.eta_seconds == pytest.approx(990 * 1.0)  # wall clock: records one second apart
    assert (p.last_checkpoint.iteration, p.last_checkpoint.age_seconds) == (8, 6.0)
    assert p.skipped_samples == {"too_long": 2, "corrupt_audio": 0}
    assert p.phase == "training" and not p.stalled and p.restarts == 0


def test_eta_uses_the_current_attempts_pace_and_restarts_are_counted():
    records = [record(i, time=T0 + i) for i in range(1, 21)]  # attempt 1: 1 s per iteration
    records.append({"start": {"attempt": 2, "time": T0 + 100, "resumed_from": 12, "ready": T0 + 110}})
    records += [record(i, time=T0 + 110 + 3 * (i - 12)) for i in range(13, 23)]  # attempt 2: 3 s per iteration
    run = {"train_iters": 1000, "world_size": 2, "attempts": [
        {"attempt": 1, "started": T0, "resumed_from": None}, {"attempt": 2, "started": T0 + 100, "resumed_from": 12}]}
    snap = {"format": 1, "now": T0 + 141, "run": run, "heartbeats": [], "metrics": {"records": records}}
    p = build_progress(snap)
    assert p.iteration == 22 and p.eta_seconds == pytest.approx(978 * 3.0)
    assert p.restarts == 1 and [(a.attempt, a.resumed_from) for a in p.attempts] == [(1, None), (2, 12)]
    assert "restarts    1 (attempt 2 from iteration 12)" in format_progress(p)


def test_eta_ignores_a_checkpoint_gap_and_adds_the_writes_left():
    """1 s iterations with a 30 s write after iteration 20; saves every 100 of 1000 iterations take 30 s."""
    records = [record(i, time=T0 + i + (30 if i > 20 else 0)) for i in range(1, 41)]
    run = {"train_iters": 1000, "world_size": 2, "save_interval": 100,
           "last_checkpoint": {"iteration": 20, "time": T0 + 50, "seconds": 30.0}}
    p = build_progress({"format": 1, "now": T0 + 71, "run": run, "heartbeats": [], "metrics": {"records": records}})
    assert p.eta_seconds == pytest.approx(960 * 1.0 + 10 * 30.0)  # saves at 100, 200, ... 1000


# ------------------------------------------------------------------------------------------------- stalls
POLICY = StallPolicy()  # the documented defaults: 60 s floor, 10x mean iteration, 30 min start-up, 10 min write


def test_training_stall_is_reported_after_the_allowance_naming_the_silent_rank():
    last_iteration = T0 + 70
    quiet = build_progress(training_snapshot(now=last_iteration + 59, seen=(last_iteration + 58, last_iteration)))
    assert not quiet.stalled and quiet.stall.allowance_seconds == 60.0
    stalled = build_progress(training_snapshot(now=last_iteration + 61, seen=(last_iteration + 60, last_iteration)))
    assert stalled.stalled and stalled.stall.since == last_iteration and stalled.stall.suspects == [1]
    assert "rank 1 (node-1, pid 101) last reported 61 s ago (then training, iteration 10)" in stalled.stall.reason
    assert "rank 0 still reports and waits for it" in stalled.stall.reason
    text = format_progress(stalled)
    assert "STALLED     no progress since 2023-11-14T22:14:30Z (1m 01s; allowance 1m 00s for training)" in text
    assert "rank 1: node-1 (node 0) pid 101, training at iteration 10, last seen 1m 01s ago" in text


def test_stall_bound_follows_the_mean_iteration_time():
    snap = training_snapshot(now=T0 + 70 + 299, seen=(T0 + 369, T0 + 369))
    for r in snap["metrics"]["records"][1:]:
        r["iteration_ms"] = 30_000.0  # 30 s iterations: 10 x 30 s = 300 s allowance
    assert not build_progress(snap).stalled
    snap["now"] = T0 + 70 + 301
    p = build_progress(snap)
    assert p.stalled and p.stall.allowance_seconds == 300.0 and p.stall.suspects == []
    assert "they wait in a collective" in p.stall.reason


def test_polling_reports_a_freeze_within_the_documented_bound():
    """Simulated polls every 5 s over a run whose iterations take 2 s and that freezes at t=100 s."""
    freeze, mean = 100.0, 2.0
    first_report = None
    for now in range(0, 400, 5):
        last = min(now, freeze) // mean * mean  # the last completed iteration's time
        snap = training_snapshot(now=T0 + now, seen=(T0 + now, T0 + min(now, freeze)))
        snap["metrics"]["records"][-1]["time"] = T0 + last
        for b in snap["heartbeats"]:
            b["iteration_time"] = b["phase_since"] = T0 + last
        for r in snap["metrics"]["records"][1:]:
            r["iteration_ms"] = 1000 * mean
        if build_progress(snap).stalled:
            first_report = now
            break
    bound = max(POLICY.floor_seconds, POLICY.factor * mean)
    assert first_report is not None and freeze < first_report <= freeze + bound + 5


def test_no_false_stall_during_a_long_checkpoint_write():
    write_began = T0 + 70
    for minutes in (2, 5, 9.9):
        snap = training_snapshot(now=write_began + 60 * minutes, phase="checkpointing", phase_since=write_began)
        p = build_progress(snap)
        assert not p.stalled and p.stall.allowance == "checkpoint write" and p.phase == "checkpointing"
    assert build_progress(training_snapshot(now=write_began + 601, phase="checkpointing",
                                            phase_since=write_began)).stalled
    slow_saver = training_snapshot(now=write_began + 900, phase="checkpointing", phase_since=write_began)
    slow_saver["run"]["longest_checkpoint_seconds"] = 120.0  # earlier saves took 2 min: 10x that is allowed
    assert not build_progress(slow_saver).stalled


def test_the_clock_restarts_when_a_checkpoint_write_ends():
    """Iteration 10 at T0+70, a 5-minute write, training again since T0+370: quiet for 40 s, not 340 s."""
    p = build_progress(training_snapshot(now=T0 + 410, phase="training", phase_since=T0 + 370))
    assert not p.stalled and p.stall.since == T0 + 370


def test_no_false_stall_during_startup_loading_or_compilation():
    for phase in ("loading", "compiling"):
        snap = training_snapshot(now=T0 + 1700, phase=phase, phase_since=T0 + 10)
        snap["metrics"]["records"] = snap["metrics"]["records"][:1]  # no iteration of this attempt yet
        for b in snap["heartbeats"]:
            b.update(iteration=0, iteration_time=None)
        p = build_progress(snap)
        assert not p.stalled and p.stall.allowance == "start-up" and p.phase == phase
        snap["now"] = T0 + 1811
        assert build_progress(snap).stalled


def test_files_of_processes_that_no_longer_run_do_not_make_a_restart_look_stalled():
    """Attempt 1 was killed at T0+71 (its heartbeats stay, silent); the backend says new processes started at
    T0+600, still checking their inputs (which writes nothing): starting, not stalled, until 30 min pass."""
    snap = training_snapshot(now=T0 + 900, seen=(T0 + 71, T0 + 71))
    assert build_progress(snap).stalled  # without the backend's hint: silent ranks, no progress
    p = build_progress(snap, processes_started=T0 + 600)
    assert not p.stalled and p.phase == "starting" and p.ranks == [] and p.stall.allowance == "start-up"
    snap["now"] = T0 + 600 + 1801
    late = build_progress(snap, processes_started=T0 + 600)
    assert late.stalled and late.stall.since == T0 + 600
    assert "every rank reports" not in late.stall.reason and "never reported" in late.stall.reason
    fresh = build_progress(training_snapshot(now=T0 + 900), processes_started=T0 - 10)  # the hint is older
    assert fresh.phase == "training" and len(fresh.ranks) == 2


def test_first_iteration_of_a_resumed_attempt_gets_the_startup_allowance():
    """Attempt 2 resumed at iteration 10 is compiling; attempt 1's records and heartbeats do not count."""
    snap = training_snapshot(now=T0 + 2000, phase="compiling", phase_since=T0 + 1000)
    snap["run"]["attempts"].append({"attempt": 2, "started": T0 + 900, "resumed_from": 10})
    snap["metrics"]["records"].append({"start": {"attempt": 2, "time": T0 + 900, "resumed_from": 10}})
    stale = beat(3, "training", T0 + 80)  # rank 3 of an older, larger attempt
    for b in snap["heartbeats"]:
        b.update(attempt=2, iteration_time=None)
    snap["heartbeats"].append(stale)
    p = build_progress(snap)
    assert [r.rank for r in p.ranks] == [0, 1] and p.restarts == 1
    assert not p.stalled and p.stall.allowance == "start-up"


@pytest.mark.parametrize(("beats", "suspects", "words"), [
    ([beat(0, "checkpointing", T0 + 999), beat(1, "failed", T0 + 500, detail="RuntimeError: NCCL error")],
     [1], "rank 1 (node-1, pid 101) failed: RuntimeError: NCCL error; rank 0 still reports and waits for it"),
    ([beat(0, "training", T0 + 999, iteration=11), beat(1, "training", T0 + 999, iteration=10)],
     [1], "rank 1 at iteration 10, the others at 11"),
    ([beat(0, "training", T0 + 999), beat(1, "data-wait", T0 + 999, phase_since=T0 + 100)],
     [1], "rank 1 waiting for data for 900 s: a data-loader worker may have died"),
    ([beat(0, "training", T0 + 999)], [1], "rank 1 never reported"),
])
def test_blame_names_the_rank_that_holds_the_job_up(beats, suspects, words):
    stall = assess(Evidence(now=T0 + 1000, ranks=[RankReport.from_heartbeat(b) for b in beats], world_size=2,
                            last_iteration_time=T0 + 80, iterated_this_attempt=True, mean_iteration_seconds=1.0))
    assert stall.stalled and stall.suspects == suspects and words in stall.reason


def test_ended_or_inactive_jobs_are_never_stalled():
    ended = training_snapshot(now=T0 + 10_000, phase="finished")
    assert not build_progress(ended).stalled and build_progress(ended).phase == "finished"
    assert not build_progress(training_snapshot(now=T0 + 10_000), active=False).stalled
    assert not build_progress({"format": 1, "now": T0, "metrics": None, "run": None, "heartbeats": []}).stalled


# ------------------------------------------------------------------------------------------------- output
def job_status(state: str = JobState.RUNNING) -> JobStatus:
    started = datetime(2027, 1, 15, 8, 0, tzinfo=timezone.utc)
    return JobStatus(name="hi-v3", namespace="team-a", backend="local", state=state, nodes=2, created=started,
                     pods=[PodStatus(name="hi-v3-master-0", role="master", index=0, rank=0, phase="Running", started=started),
                           PodStatus(name="hi-v3-worker-0", role="worker", index=0, rank=1, phase="Running", started=started)])


def test_status_document_has_the_documented_fields_in_json_and_yaml(tmp_path):
    outputs = write_outputs(tmp_path, training_snapshot(now=T0)["metrics"]["records"],
                            training_snapshot(now=T0 + 200, seen=(T0 + 200, T0 + 90))["heartbeats"],
                            {"train_iters": 1000, "world_size": 2, "last_checkpoint": {"iteration": 8, "time": T0 + 69,
                                                                                       "seconds": 2.0}})
    progress = read_progress(LocalSource(outputs))
    document = status_document(job_status(), progress)
    assert json.loads(dump(document, "json")) == yaml.safe_load(dump(document, "yaml")) == document
    assert list(document) == ["apiVersion", "kind", "job", "state", "conditions", "pods", "problems", "progress"]
    assert document["job"]["handle"] == "local://team-a/hi-v3" and document["pods"][1]["name"] == "hi-v3-worker-0"
    assert document["pods"][1]["replica"] == "worker-0" and document["pods"][1]["node_rank"] == 1
    p = document["progress"]
    for key in ("iteration", "train_iters", "loss", "samples_per_second", "eta_seconds", "data_wait_share",
                "skipped_samples", "stalled"):
        assert key in p, key
    assert (p["iteration"], p["train_iters"], p["last_checkpoint"]["iteration"]) == (10, 1000, 8)
    assert p["stalled"] is True and p["stall"]["suspects"] == [0, 1]  # read now: both heartbeats are years old
    assert status_document(job_status(JobState.PENDING), None)["progress"] is None


def test_durations_read_like_kubectl():
    assert [format_duration(s) for s in (None, 0.74, 45, 723, 11_100, 187_200)] == [
        "-", "0.7s", "45s", "12m 03s", "3h 05m", "2d 04h"]


@pytest.mark.parametrize(("final", "code"), [(JobState.SUCCEEDED, 0), (JobState.FAILED, 4)])
def test_watch_redraws_until_the_job_ends_and_exits_with_its_outcome(final, code):
    from whisper_k8s.progress.watch import CLEAR, watch

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    states = iter([JobState.PENDING, JobState.RUNNING, final])
    snapshots = iter([None, build_progress(training_snapshot(now=T0 + 75)), None])
    out = Terminal()
    assert watch(lambda: (job_status(next(states)), next(snapshots)), out=out, sleep=lambda s: None) == code
    assert out.getvalue().count(CLEAR) == 3 and "iteration   10 / 1,000 (1.0%)" in out.getvalue()
    piped_states = iter([JobState.RUNNING, final])
    piped = io.StringIO()
    assert watch(lambda: (job_status(next(piped_states)), None), out=piped, sleep=lambda s: None) == code
    assert piped.getvalue().count("--- ") == 2 and CLEAR not in piped.getvalue()


def test_bench_writes_ours_baseline_ratio_and_reads_only_the_tail(tmp_path):
    out = tmp_path / "progress.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "progress.py"), "--iterations", "3000", "--ranks", "4",
                           "--repeats", "2", "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["ratio"] == round(result["baseline"] / result["ours"], 1)
    assert result["metrics_bytes_read"] == probe.TAIL_BYTES < result["metrics_bytes"]
    assert result["heartbeat"]["hooks_per_iteration_ns"] >= 0 and result["heartbeat"]["heartbeat_write_us"] > 0
    assert "progress: 3,000 iterations" in proc.stdout and "ratio" in proc.stdout
