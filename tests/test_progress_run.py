"""Live progress of a real run: the trainer (tiny preset, 2 processes over gloo with torchrun) runs while this
test reads its outputs folder the way `status` will, through whisper_k8s.progress.

One run, in order:
1. progress advances (at least two distinct iterations seen), and no poll reports a stall, also not while a
   checkpoint write is held for longer than the stall floor (the fault point ``checkpoint-publish`` pauses
   rank 0 for 11 s, the other rank waits for it) nor during start-up;
2. rank 1 is frozen with SIGSTOP: `stalled` is reported within the documented bound (the allowance after the
   last completed iteration) and names rank 1 by its pid;
3. SIGCONT: iterations resume and the stall clears; SIGTERM: the run saves and every rank ``finished``.
The policy is the default one scaled down (8 s floor, heartbeat every 0.5 s) so the test takes seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_trainer import run_env, trainer_command, write_configs

from whisper_k8s.progress.render import format_progress
from whisper_k8s.progress.source import LocalSource
from whisper_k8s.progress.stall import StallPolicy
from whisper_k8s.progress.summary import Progress, read_progress

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

POLICY = StallPolicy(floor_seconds=8.0, factor=5.0, startup_seconds=300.0, checkpoint_seconds=60.0,
                     silent_intervals=3.0, silent_slack_seconds=3.0)
HEARTBEAT_SECONDS = "0.5"
POLL_SECONDS = 0.25
CHECKPOINT_PAUSE = 11.0  # longer than the 8 s floor: a false stall would show
SAVE_INTERVAL = 5


class Poller:
    def __init__(self, outputs, proc):
        self.source = LocalSource(outputs)
        self.proc = proc
        self.seen: list[Progress] = []

    def until(self, condition, seconds: float, what: str) -> Progress:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the trainer exited ({self.proc.returncode}) before {what}"
            progress = read_progress(self.source, POLICY)
            self.seen.append(progress)
            if condition(progress):
                return progress
            time.sleep(POLL_SECONDS)
        last = format_progress(self.seen[-1]) if self.seen else "nothing read"
        raise AssertionError(f"no {what} within {seconds} s; last progress:\n{last}")


@pytest.fixture()
def running_job(tmp_path, processor_dir):
    from whisper_k8s.dataset.synth import synthesize

    synthesize(tmp_path / "cv", lang="en", train=4, test=0, seed=1)
    model_json, data_json = write_configs(tmp_path, processor_dir, tmp_path / "cv")
    outputs = tmp_path / "outputs"
    command = trainer_command(model_json, data_json, outputs / "checkpoints", "--train-iters", "500",
                              "--save-interval", str(SAVE_INTERVAL), "--log-interval", "2")
    env = dict(run_env(), WHISPER_HEARTBEAT_SECONDS=HEARTBEAT_SECONDS,
               WHISPER_TRAINER_FAULT=f"checkpoint-publish@{SAVE_INTERVAL}:{CHECKPOINT_PAUSE}")
    log = open(tmp_path / "trainer.log", "w")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield Poller(outputs, proc), proc, tmp_path / "trainer.log"
    finally:
        stop_everything(proc)
        log.close()


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (torchrun starts its workers in sessions of their own, so a signal to
    torchrun's group does not reach them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_everything(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and every worker it started (thawed first), so no frozen rank outlives the test."""
    for pid in [*descendants(proc.pid), proc.pid]:
        for signum in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
    proc.wait(timeout=30)


def test_progress_of_a_real_run_with_a_held_checkpoint_and_a_frozen_rank(running_job):
    poller, proc, log = running_job
    # 1. progress, a checkpoint write held past the floor, and no stall
    poller.until(lambda p: (p.iteration or 0) >= SAVE_INTERVAL + 2 and p.phase == "training", 240,
                 "iterations past the held checkpoint")
    iterations = {p.iteration for p in poller.seen if p.iteration}
    assert len(iterations) >= 2, iterations
    assert not [format_progress(p) for p in poller.seen if p.stalled]
    writing = [p for p in poller.seen if p.phase == "checkpointing"]
    assert writing and max(p.stall.quiet_seconds for p in writing) > POLICY.floor_seconds, \
        "the held write was not seen for longer than the floor"
    assert {p.phase for p in poller.seen} >= {"training", "checkpointing"}
    last = poller.seen[-1]
    assert last.last_checkpoint.iteration == SAVE_INTERVAL and last.train_iters == 500 and last.world_size == 2
    assert last.loss is not None and last.samples_per_second > 0 and last.eta_seconds > 0

    # 2. freeze rank 1
    rank1 = next(r for r in last.ranks if r.rank == 1)
    frozen_at = time.time()
    os.kill(rank1.pid, signal.SIGSTOP)
    try:
        stalled = poller.until(lambda p: p.stalled, 60, "stall")
        detected_at = time.time()
        last_iteration = stalled.stall.since
        bound = stalled.stall.allowance_seconds
        assert stalled.stall.allowance == "training" and bound == max(POLICY.floor_seconds,
                                                                      POLICY.factor * stalled.iteration_seconds)
        assert detected_at - last_iteration <= bound + POLL_SECONDS + 2.0, (detected_at - last_iteration, bound)
        named = poller.until(lambda p: p.stall.suspects == [1], POLICY.silent_after(0.5), "rank 1 named")
        assert f"pid {rank1.pid}" in named.stall.reason and "rank 0 still reports and waits" in named.stall.reason
        text = format_progress(named)
        assert "STALLED" in text and f"rank 1: {rank1.host} (node 0) pid {rank1.pid}" in text
        assert detected_at - frozen_at < bound + 5
        print(f"stall reported {detected_at - last_iteration:.1f} s after the last iteration (allowance "
              f"{bound:.1f} s), {detected_at - frozen_at:.1f} s after SIGSTOP; rank 1 named")
    finally:
        os.kill(rank1.pid, signal.SIGCONT)

    # 3. thawed: it goes on; then stopped by SIGTERM, it saves and every rank finishes
    before = poller.seen[-1].iteration
    poller.until(lambda p: (p.iteration or 0) > before and not p.stalled, 60, "progress after SIGCONT")
    os.killpg(proc.pid, signal.SIGTERM)  # what the kubelet does; torchrun itself then exits 1 (SignalException)
    proc.wait(timeout=120)
    assert log.read_text().count("(signal)") == 2, log.read_text()[-3000:]  # both workers saved and left
    final = read_progress(poller.source, POLICY)
    assert final.phase == "finished" and {r.detail for r in final.ranks} == {"signal"}
    assert final.last_checkpoint.iteration == final.iteration and not final.stalled
