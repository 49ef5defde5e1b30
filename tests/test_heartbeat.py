"""The trainer's side of live progress: the heartbeat thread, run.json and the hooks the Trainer calls
(one process, no process group; tests/test_progress_run.py runs them in a real 2-process job)."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest
import torch
from whisper_trainer.heartbeat import Heartbeat, RunRecord, TrainerProgress
from whisper_trainer.metrics import MetricsWriter
from whisper_trainer.parallel import DistEnv

from whisper_k8s.progress import layout, probe
from whisper_k8s.progress.summary import build_progress

ENV = DistEnv(rank=0, world_size=1, local_rank=0, node_rank=0, device=torch.device("cpu"))


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_thread_writes_on_its_interval_and_at_once_on_a_phase_change(tmp_path):
    path = tmp_path / layout.heartbeat_name(3)
    beat = Heartbeat(path, {"rank": 3, "attempt": 1}, interval=60.0)  # the timer alone would not write again
    beat.start()
    wait_for(path.exists)
    assert read(path)["phase"] == "loading" and read(path)["rank"] == 3 and read(path)["interval"] == 60.0
    beat.set_phase(layout.TRAINING)
    wait_for(lambda: read(path)["phase"] == "training")
    beat.close(layout.FINISHED, "signal")
    assert not beat._thread.is_alive()
    assert (read(path)["phase"], read(path)["detail"]) == ("finished", "signal")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # temporary files renamed, none left
    assert path.stat().st_mode & 0o777 == 0o644  # readable by whoever reads metrics.jsonl


def test_liveness_keeps_coming_while_the_training_thread_blocks(tmp_path):
    """What makes a frozen rank stand out: this rank's thread writes while its loop waits (here on a lock)."""
    path = tmp_path / layout.heartbeat_name(0)
    beat = Heartbeat(path, {"rank": 0, "attempt": 1}, interval=0.05)
    beat.start()
    beat.set_phase(layout.TRAINING)
    gate = threading.Event()

    def batches():
        gate.wait()  # a data loader that does not deliver
        yield {"num_samples": 1}

    waiter = threading.Thread(target=lambda: beat.next_batch(batches()), daemon=True)
    waiter.start()
    try:
        wait_for(lambda: path.exists() and read(path)["phase"] == "data-wait")
        first = read(path)["time"]
        wait_for(lambda: read(path)["time"] > first + 0.1)  # still writing while the loop is blocked
    finally:
        gate.set()
    waiter.join()
    wait_for(lambda: read(path)["phase"] == "training")
    beat.close(layout.FINISHED)


def test_an_unwritable_volume_costs_one_warning_not_the_run(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    beat = Heartbeat(blocker / "progress" / layout.heartbeat_name(0), {"rank": 0}, interval=0.01)
    with caplog.at_level(logging.WARNING, logger="whisper_trainer.heartbeat"):
        beat.start()
        time.sleep(0.1)
        beat.close(layout.FINISHED)
    warnings = [r for r in caplog.records if "not written" in r.getMessage()]
    assert len(warnings) == 1 and "status` cannot tell this rank's progress" in warnings[0].getMessage()


def test_run_record_counts_attempts_across_restarts(tmp_path):
    path = tmp_path / layout.RUN_FILE
    first = RunRecord(path, {"train_iters": 100, "world_size": 2})
    assert first.begin_attempt(started=10.0) == 1
    first.checkpoint_saved({"iteration": 12, "time": 20.0, "seconds": 4.0})
    second = RunRecord(path, {"train_iters": 200, "world_size": 2})  # a restarted trainer reads it back
    assert second.begin_attempt(started=30.0) == 2
    second.resumed(12)
    second.checkpoint_saved({"iteration": 24, "time": 40.0, "seconds": 1.0})
    item = read(path)
    assert item["attempts"] == [{"attempt": 1, "started": 10.0, "resumed_from": None},
                                {"attempt": 2, "started": 30.0, "resumed_from": 12}]
    assert item["train_iters"] == 200 and item["last_checkpoint"]["iteration"] == 24
    assert item["longest_checkpoint_seconds"] == 4.0


def test_trainer_hooks_write_what_the_progress_block_reads(tmp_path, monkeypatch):
    monkeypatch.setenv(layout.HEARTBEAT_SECONDS_ENV, "0.05")
    metrics_file = tmp_path / layout.METRICS_FILE
    metrics = MetricsWriter(str(metrics_file))
    progress = TrainerProgress(str(metrics_file), ENV, metrics, {"train_iters": 4, "world_size": 1})
    with progress.running():
        assert not (tmp_path / layout.PROGRESS_DIR).exists()  # nothing before set-up has checked its inputs
        progress.start_reporting()
        progress.started(resumed_from=None, compiling=True)
        assert progress.heartbeat.phase == "compiling"
        for iteration in (1, 2):
            metrics.write({"iteration": iteration, "loss": 3.0 - iteration, "iteration_ms": 10.0, "time": time.time()})
            progress.iteration_done(iteration)
            assert progress.heartbeat.phase == "training"
        with progress.checkpointing(2):
            assert progress.heartbeat.phase == "checkpointing"
        progress.finished("finished")
    snap = probe.snapshot(tmp_path)
    kinds = [next(iter(r)) for r in snap["metrics"]["records"]]
    assert kinds == ["start", "iteration", "iteration", "checkpoint"]
    p = build_progress(snap)
    assert (p.iteration, p.train_iters, p.phase, p.last_checkpoint.iteration) == (2, 4, "finished", 2)
    assert [(a.attempt, a.resumed_from) for a in p.attempts] == [(1, None)]


def test_an_error_marks_the_rank_failed_and_a_failed_write_is_not_recorded(tmp_path):
    metrics_file = tmp_path / layout.METRICS_FILE
    progress = TrainerProgress(str(metrics_file), ENV, MetricsWriter(str(metrics_file)), {"train_iters": 4})
    progress.start_reporting()
    progress.started(resumed_from=None, compiling=False)
    with pytest.raises(OSError), progress.running(), progress.checkpointing(2):
        raise OSError("No space left on device\nmore text")
    beat = read(tmp_path / layout.PROGRESS_DIR / layout.heartbeat_name(0))
    assert (beat["phase"], beat["detail"]) == ("failed", "OSError: No space left on device")
    assert read(tmp_path / layout.PROGRESS_DIR / layout.RUN_FILE)["last_checkpoint"] is None
    assert "checkpoint" not in metrics_file.read_text()


def test_bad_input_found_during_set_up_writes_nothing(tmp_path):
    """The bad-input rule: a run refused before set-up has checked its inputs leaves the outputs untouched."""
    metrics_file = tmp_path / layout.METRICS_FILE
    progress = TrainerProgress(str(metrics_file), ENV, MetricsWriter(str(metrics_file)), {"train_iters": 4})
    with pytest.raises(ValueError), progress.running():
        raise ValueError("data.json: basic_parameters.language 'xx' is not a Common Voice locale")
    assert list(tmp_path.iterdir()) == []


def test_no_metrics_file_means_no_progress_files():
    progress = TrainerProgress("", ENV, MetricsWriter(""), {})
    with progress.running():
        progress.started(resumed_from=None, compiling=False)
        progress.iteration_done(1)
    assert progress.run is None and progress.heartbeat.path is None
    assert progress.heartbeat._thread.ident is None  # never started
