"""Faults injected into real 2-node local runs of the chart's PyTorchJob (tiny preset, real trainer, gloo).

Every run is the same job (same values, data, seed; 5 iterations, a checkpoint every 2 and at the end) on the
local backend, which runs the chart's pods as process groups with the operator's restart rules. One
uninterrupted run is the reference; each faulty run must end with a model bitwise equal to it:

- ``killed``: SIGKILL of rank 1 in the middle of the run. Its container restarts in place (the operator's
  ``restartPolicy: OnFailure``); the master's trainer loses its peer, fails and restarts in place too; both
  resume from the latest complete checkpoint (two restarts, under backoffLimit).
- ``publish``: rank 0 is SIGKILLed while it writes a checkpoint (paused at the trainer's
  ``checkpoint-publish`` fault-injection point, after the files are written, before they are published):
  the previous checkpoint stays the latest, and the restarted replicas load it.
- ``stopped`` + ``resumed``: SIGTERM (what a pod deletion sends) makes the trainer checkpoint and exit within
  the chart's terminationGracePeriodSeconds; the newest checkpoint file is then corrupted, and a new job on
  the same outputs falls back to the previous valid checkpoint, says so, and finishes.

Without a training run: the chart's launch wrapper passes a pod's SIGTERM to the training processes (not to
torchrun, which would cut a long checkpoint short), and the launcher is told the pod's grace period.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from whisper_k8s.backends import AppRequest, get_scheduler
from whisper_k8s.backends import local_state as state
from whisper_k8s.chart import render
from whisper_k8s.formats import megatron

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ITERS = 5
SAVE_INTERVAL = 2
KILL_GRACE = 5  # seconds: a group restart after a kill waits at most this for the survivors
STOP_GRACE = 60  # seconds the SIGTERM run gets, as the chart's terminationGracePeriodSeconds
BACKOFF = 3  # the operator fails the job once the pods' restarts add up to it: a killed rank costs two
PUBLISH_PAUSE = 4  # seconds rank 0 waits at the checkpoint-publish fault point (the window to kill it)
JOB_TIMEOUT = 900


# ------------------------------------------------------------------------------------------------- helpers
def job_values(name: str, dataset: Path, processor: Path, outputs: Path, *, grace: int = KILL_GRACE,
               env: dict[str, str] | None = None) -> dict:
    """The chart values of every run here; only the grace period and extra env differ (neither reaches the
    training computation)."""
    return {
        "fullnameOverride": name, "nodes": 2, "accelerator": {"type": "cpu"}, "model": {"preset": "tiny"},
        "data": {"language": "en", "whisperLanguage": "English", "processor": str(processor)},
        "storage": {"dataset": {"type": "hostPath", "hostPath": str(dataset)},
                    "outputs": {"type": "hostPath", "hostPath": str(outputs)}},
        "training": {"trainIters": ITERS, "microBatchSize": 1, "numWorkers": 0, "bf16": False, "lr": 1.0e-3,
                     "saveInterval": SAVE_INTERVAL, "logInterval": 1, "seed": 1234},
        "terminationGracePeriodSeconds": grace, "runPolicy": {"backoffLimit": BACKOFF},
        "extraEnv": [{"name": k, "value": v} for k, v in (env or {}).items()],
    }


def submit(scheduler, name: str, values: dict) -> Path:
    outputs = Path(values["storage"]["outputs"]["hostPath"])
    outputs.mkdir(parents=True, exist_ok=True)
    scheduler.submit(AppRequest(name=name, values=values, documents=render(values, name), operator="pytorchjob"))
    return outputs


def wait_until(what: str, condition, timeout: float = JOB_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def iterations_logged(outputs: Path) -> int:
    path = outputs / "metrics.jsonl"
    if not path.is_file():
        return 0
    return sum('"iteration"' in line and '"loss"' in line for line in path.read_text().splitlines())


def attempt_log(scheduler, name: str, replica: str, attempt: int) -> str:
    path = state.log_file(state.job_dir(scheduler.root, name), replica, attempt)
    return path.read_text(errors="replace") if path.is_file() else ""


def trainer_pid(scheduler, name: str, replica: str) -> int:
    """The training process of one replica (below the launch wrapper and torchrun), as `kubectl exec ... kill`
    would find it."""
    processes = scheduler.replica_processes(name, replica)
    parents = {pid: parent_of(pid) for pid in processes}
    training = [pid for pid in processes if b"whisper_trainer" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    # The wrapper's and torchrun's command lines name the module too: the worker is the one with no child.
    workers = [pid for pid in training if pid not in parents.values()]
    assert len(workers) == 1, (processes, training)
    return workers[0]


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def finished(scheduler, name: str):
    status = scheduler.wait(name, timeout=JOB_TIMEOUT, poll_seconds=0.2)
    logs = "\n".join(scheduler.log_iter(name))
    assert status.state == "Succeeded", (status, logs[-4000:])
    return status


def model_at(save: Path, iteration: int) -> dict[str, torch.Tensor]:
    return megatron.load_file(megatron.model_file(megatron.iteration_dir(save, iteration)))["model"]


def assert_bitwise_equal(a: dict, b: dict) -> int:
    """Every tensor of two MindSpeed-MM state dicts equal bit for bit; returns how many were compared."""
    assert list(a) == list(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, e.g. {different[:3]}"
    return len(a)


def saved_iterations(log: str) -> list[int]:
    return [int(line.rsplit("iter_", 1)[1][:7]) for line in log.splitlines() if "saved checkpoint" in line]


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def jobs(tmp_path_factory, cv_dataset, processor_dir):
    root = tmp_path_factory.mktemp("faults")
    scheduler = get_scheduler("local", state_dir=root / "state")

    def values(name, outputs=None, **options):
        return job_values(name, cv_dataset, processor_dir, outputs or root / f"{name}-outputs", **options)

    yield scheduler, values
    for job in scheduler.list():  # never leave a test's processes running
        if not job.is_terminal:
            scheduler.cancel(job.name)


@pytest.fixture(scope="module")
def reference(jobs):
    """The uninterrupted run every faulty one is compared with."""
    scheduler, values = jobs
    outputs = submit(scheduler, "reference", values("reference"))
    finished(scheduler, "reference")
    save = outputs / "checkpoints"
    assert megatron.read_tracker(save) == ITERS
    return save


@pytest.fixture(scope="module")
def killed(jobs):
    """SIGKILL of rank 1 once iteration 3 is done (a checkpoint exists, the run is not over)."""
    scheduler, values = jobs
    outputs = submit(scheduler, "killed", values("killed"))
    wait_until("iteration 3", lambda: iterations_logged(outputs) >= 3)
    os.kill(trainer_pid(scheduler, "killed", "worker-0"), signal.SIGKILL)
    save = outputs / "checkpoints"
    # Once both replicas restarted, the first runs' processes are gone: what they left is the latest checkpoint.
    wait_until("the restarts", lambda: all(
        replica["attempt"] >= 1 for replica in
        state.read_json(state.job_dir(scheduler.root, "killed") / state.JOB_FILE)["replicas"].values()))
    latest_complete = megatron.read_tracker(save)
    status = finished(scheduler, "killed")
    logs = [attempt_log(scheduler, "killed", "master-0", attempt) for attempt in (0, 1)]
    return save, latest_complete, status, logs


@pytest.fixture(scope="module")
def publish(jobs):
    """Rank 0 SIGKILLed while it publishes iteration 4's checkpoint; what was on disk at that moment."""
    scheduler, values = jobs
    fault = {"WHISPER_TRAINER_FAULT": f"checkpoint-publish@4:{PUBLISH_PAUSE}"}
    outputs = submit(scheduler, "publish", values("publish", env=fault))
    save = outputs / "checkpoints"
    wait_until("the fault point", lambda: "fault injection: pausing" in attempt_log(scheduler, "publish", "master-0", 0))
    os.kill(trainer_pid(scheduler, "publish", "master-0"), signal.SIGKILL)
    at_kill = {"tracker": megatron.read_tracker(save), "on_disk": megatron.iterations_on_disk(save),
               "staged": sorted(p.name for p in save.iterdir() if p.name.startswith("."))}
    finished(scheduler, "publish")
    logs = [attempt_log(scheduler, "publish", "master-0", attempt) for attempt in (0, 1)]
    return save, at_kill, logs


@pytest.fixture(scope="module")
def stopped(jobs):
    """SIGTERM to the job (what `delete` and a pod eviction send) once iteration 3 is done."""
    scheduler, values = jobs
    outputs = submit(scheduler, "stopped", values("stopped", grace=STOP_GRACE))
    wait_until("iteration 3", lambda: iterations_logged(outputs) >= 3)
    supervisor = state.read_json(state.job_dir(scheduler.root, "stopped") / state.SUPERVISOR_FILE)
    started = time.monotonic()
    os.kill(supervisor["pid"], signal.SIGTERM)  # it SIGTERMs each pod's main process (torchrun), as the kubelet
    wait_until("the job to stop", lambda: not state.is_ours_and_alive(supervisor), timeout=STOP_GRACE + 30)
    elapsed = time.monotonic() - started
    logs = {replica: attempt_log(scheduler, "stopped", replica, 0) for replica in ("master-0", "worker-0")}
    scheduler.cancel("stopped")  # removes the job; its outputs (a hostPath) stay
    return outputs, elapsed, logs


@pytest.fixture(scope="module")
def resumed(jobs, stopped):
    """The newest checkpoint of the stopped run corrupted (one flipped byte), then a new job on its outputs."""
    scheduler, values = jobs
    outputs, _, _ = stopped
    save = outputs / "checkpoints"
    newest = megatron.read_tracker(save)
    model_file = megatron.model_file(megatron.iteration_dir(save, newest))
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    submit(scheduler, "resumed", values("resumed", outputs=outputs))
    finished(scheduler, "resumed")
    return save, newest, attempt_log(scheduler, "resumed", "master-0", 0)


# ------------------------------------------------------------------------------------------------- tests
def test_sigkilled_rank_restarts_both_replicas_and_resumes_from_the_latest_checkpoint(killed, record_property):
    save, latest_complete, status, (first, second) = killed
    assert [pod.restarts for pod in status.pods] == [1, 1] and sum(pod.restarts for pod in status.pods) < BACKOFF
    assert latest_complete in saved_iterations(first) and 2 <= latest_complete < ITERS
    record_property("resumed_from", latest_complete)
    assert f"resumed from {megatron.iteration_dir(save, latest_complete)} (iteration {latest_complete})" in second
    assert f"iteration {ITERS:>7d}/{ITERS}" in second and f"iteration {ITERS:>7d}/{ITERS}" not in first


def test_sigkilled_run_ends_bitwise_equal_to_the_uninterrupted_one(reference, killed, record_property):
    record_property("tensors_equal", assert_bitwise_equal(model_at(reference, ITERS), model_at(killed[0], ITERS)))


def test_kill_during_checkpoint_write_leaves_the_previous_checkpoint_latest(reference, publish, record_property):
    save, at_kill, (first, second) = publish
    assert at_kill == {"tracker": 2, "on_disk": [2], "staged": [".iter_0000004.tmp"]}, first[-2000:]
    assert f"resumed from {megatron.iteration_dir(save, 2)} (iteration 2)" in second
    assert megatron.read_tracker(save) == ITERS and not list(save.glob(".iter_*"))
    record_property("tensors_equal", assert_bitwise_equal(model_at(reference, ITERS), model_at(save, ITERS)))


def test_sigterm_checkpoints_and_exits_within_the_grace_period(stopped, record_property):
    outputs, elapsed, logs = stopped
    record_property("stop_seconds", round(elapsed, 1))
    assert elapsed < STOP_GRACE, f"the job took {elapsed:.1f} s to stop, over its {STOP_GRACE} s grace period"
    assert "received SIGTERM" in logs["master-0"] and "received SIGTERM" in logs["worker-0"]
    save = outputs / "checkpoints"
    stop = megatron.read_tracker(save)
    record_property("stopped_at_iteration", stop)
    assert 3 <= stop < ITERS  # stopped early, at an iteration boundary
    assert f"saved checkpoint {megatron.iteration_dir(save, stop)}" in logs["master-0"]
    assert f"training stopped at iteration {stop} (signal)" in logs["master-0"]
    summary = [json.loads(line)["summary"] for line in (outputs / "metrics.jsonl").read_text().splitlines()
               if '"summary"' in line]
    assert summary[-1]["stopped_by"] == "signal" and summary[-1]["iteration"] == stop


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_and_says_so(reference, resumed, record_property):
    save, corrupted, log = resumed
    assert f"skipping checkpoint iteration {corrupted}" in log and "corrupt (checksum differs" in log
    assert corrupted > 2  # the SIGTERM checkpoint; the one before is the save interval's, iteration 2
    assert f"resumed from {megatron.iteration_dir(save, 2)} (iteration 2)" in log
    assert megatron.read_tracker(save) == ITERS
    record_property("tensors_equal", assert_bitwise_equal(model_at(reference, ITERS), model_at(save, ITERS)))


@pytest.mark.parametrize("operator", ["pytorchjob", "trainjob"])
def test_the_launcher_waits_as_long_as_the_pod_for_a_sigterm_checkpoint(operator):
    """torchrun SIGKILLs its workers 30 s after forwarding SIGTERM unless told otherwise (torch >= 2.12):
    the chart passes the pod's grace period on, so a long checkpoint write is not cut short."""
    from k8s_validation import pod_templates

    documents = render({"terminationGracePeriodSeconds": 900, "operator": operator}, "grace")
    templates = [template for doc in documents for template in pod_templates(doc)]
    assert templates
    for template in templates:
        assert template["spec"]["terminationGracePeriodSeconds"] == 900
        env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
        assert env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "900"


SLOW_SAVER = """
import os, pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
def save_and_exit(signum, frame):
    time.sleep(3)  # a checkpoint write longer than torchrun's shutdown timeout below
    (out / f"saved-{os.environ['RANK']}").write_text("ok")
    sys.exit(0)
signal.signal(signal.SIGTERM, save_and_exit)
(out / f"ready-{os.environ['RANK']}").write_text("ok")
time.sleep(120)
"""


def test_sigterm_to_the_pod_reaches_the_trainers_not_torchrun(tmp_path):
    """The container's main process is the chart's launch wrapper; Kubernetes sends SIGTERM to it alone. The
    training processes must get it and may take their time to checkpoint: torchrun, were it signalled, would
    SIGKILL them after its shutdown timeout (30 s before torch 2.12; 1 s here)."""
    import subprocess
    import sys

    documents = render({"accelerator": {"type": "cpu"}}, "wrapper")
    job = next(doc for doc in documents if doc["kind"] == "PyTorchJob")
    command = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    (tmp_path / "saver.py").write_text(SLOW_SAVER)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                str(tmp_path / "saver.py"), str(tmp_path)]
    env = dict(os.environ, TORCH_ELASTIC_SHUTDOWN_TIMEOUT="1", OMP_NUM_THREADS="1")
    pod = subprocess.Popen(command + torchrun, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        wait_until("the workers", lambda: all((tmp_path / f"ready-{r}").exists() for r in (0, 1)), timeout=120)
        os.kill(pod.pid, signal.SIGTERM)  # the kubelet signals the container's main process only
        output = pod.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        if pod.poll() is None:
            os.killpg(pod.pid, signal.SIGKILL)
    assert pod.returncode == 143, output[-2000:]  # stopped, not done: the operator restarts, the trainer resumes
    assert [(tmp_path / f"saved-{r}").read_text() for r in (0, 1)] == ["ok", "ok"], output[-2000:]
