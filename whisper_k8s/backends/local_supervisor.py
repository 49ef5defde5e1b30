"""The process that owns a local job's replicas: ``python -m whisper_k8s.backends.local_supervisor JOB_DIR``.

The local backend starts it in its own session, so the job keeps running after ``submit`` returns. It runs
the plan (see :mod:`whisper_k8s.backends.local_plan`) the way the operator and kubelet would run the pods:

* each replica is a process group of its own (``torchrun`` and its workers), started with its init
  containers first, in order, then the trainer container; all replicas start together;
* the operator's success policy decides when the job has succeeded (PyTorchJob: the master succeeded);
  replicas still running then get the grace period to finish before they are stopped;
* when any replica fails, every replica of the attempt is stopped (SIGTERM to its process group, then
  SIGKILL after the pod's ``terminationGracePeriodSeconds``) and, if the replica's restart policy allows it
  and fewer than ``backoffLimit`` restarts happened, the whole group starts again on a fresh port (the trainer
  resumes from its latest checkpoint by itself); otherwise the job has failed;
* SIGTERM to the supervisor (what ``delete`` sends) stops the replicas the same way and ends the job.

SIGTERM goes to each replica's process group (the container's main process: ``torchrun``), which forwards it
to its workers, as in a pod. torchrun starts its workers in sessions of their own, so killing a group does
not reach them; like a container runtime that kills the whole cgroup, the supervisor makes itself the
"child subreaper" of everything it starts (Linux), and at the end of each attempt kills whatever of its
descendants is still alive, orphans included. Nothing outlives the attempt it belongs to.

Everything it knows is written to ``job.json`` after each change, never kept only in memory.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from whisper_k8s.backends import local_state as state
from whisper_k8s.backends.local_plan import PORT_PLACEHOLDER
from whisper_k8s.operators import all_injected_variables, get_contract
from whisper_k8s.operators.base import FAILED, RUNNING, SUCCEEDED

POLL_SECONDS = 0.2
PENDING = "Pending"
# Host variables a replica must not inherit: any operator's (set per replica) and torchrun's own (torchrun
# reads every PET_<flag>, and sets the others for its workers).
_INHERITED_BLOCKLIST = (*all_injected_variables(), "WORLD_SIZE", "RANK", "LOCAL_RANK", "GROUP_RANK",
                        "LOCAL_WORLD_SIZE", "ROLE_RANK", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_INHERITED_PREFIXES = ("PET_", "TORCHELASTIC_")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def exit_code(returncode: int) -> int:
    """Popen's ``-N`` for a signal becomes ``128 + N``, as a container's exit code reads."""
    return 128 - returncode if returncode < 0 else returncode


def host_environment(bin_dir: str) -> dict[str, str]:
    """What a replica inherits from this machine: the supervisor's env minus rank/rendezvous variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in _INHERITED_BLOCKLIST and not k.startswith(_INHERITED_PREFIXES)}
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    return env


def become_subreaper() -> None:
    """prctl(PR_SET_CHILD_SUBREAPER): orphans of our replicas become our children, not init's (Linux only)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def kill_leftovers(known: set[int]) -> None:
    """SIGKILL every descendant still alive, then reap those that are not our Popen objects' own."""
    for pid in state.descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in state.descendants(os.getpid()):
        if pid not in known:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def restartable(policy: str, code: int) -> bool:
    """Whether a failed replica may be restarted: OnFailure/Always yes, ExitCode only for 128+ codes."""
    if policy in ("OnFailure", "Always"):
        return True
    return policy == "ExitCode" and code >= 128


class ReplicaRun:
    """One replica in one attempt: its steps run one after the other in one log file."""

    def __init__(self, spec: dict[str, Any], log_path: Path, port: int, base_env: dict[str, str]):
        self.spec = spec
        self.log_path = log_path
        self.port = str(port)
        self.base_env = base_env
        self.step = -1
        self.process: subprocess.Popen | None = None
        self.record: dict[str, int] | None = None
        self.phase = PENDING
        self.code: int | None = None
        self.started = ""
        self.finished = ""

    def localize(self, text: str) -> str:
        return text.replace(PORT_PLACEHOLDER, self.port)

    def start_next(self) -> None:
        self.step += 1
        step = self.spec["steps"][self.step]
        Path(step["cwd"]).mkdir(parents=True, exist_ok=True)
        env = dict(self.base_env)
        env.update({k: self.localize(v) for k, v in step["env"].items()})
        with open(self.log_path, "ab") as log:
            if step["init"]:
                log.write(f"(init container {step['container']})\n".encode())
                log.flush()
            self.process = subprocess.Popen(
                [self.localize(a) for a in step["argv"]], env=env, cwd=step["cwd"], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.record = state.process_record(self.process.pid)
        self.phase = RUNNING
        self.started = self.started or state.now_iso()

    def poll(self) -> bool:
        """Advance on a finished step; True when something changed."""
        if self.phase != RUNNING or self.process is None:
            return False
        returncode = self.process.poll()
        if returncode is None:
            return False
        self.kill_group(signal.SIGKILL)  # stragglers of a finished step (orphaned workers)
        code = exit_code(returncode)
        if code != 0:
            self.finish(FAILED, code)
        elif self.step + 1 < len(self.spec["steps"]):
            self.start_next()
        else:
            self.finish(SUCCEEDED, 0)
        return True

    def finish(self, phase: str, code: int) -> None:
        self.phase, self.code, self.finished = phase, code, state.now_iso()

    def kill_group(self, sig: int) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def terminate(self) -> None:
        """SIGTERM the whole process group (torchrun forwards it to its workers; the trainer checkpoints)."""
        if self.phase == RUNNING:
            self.kill_group(signal.SIGTERM)

    def reap(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a terminated replica, then SIGKILL its group; record the exit code."""
        if self.phase != RUNNING or self.process is None:
            return
        try:
            returncode = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group(signal.SIGKILL)
            returncode = self.process.wait()
        self.kill_group(signal.SIGKILL)
        self.finish(SUCCEEDED if returncode == 0 else FAILED, exit_code(returncode))

    def as_json(self, attempt: int, restarts: int) -> dict[str, Any]:
        step = self.spec["steps"][max(self.step, 0)]
        return {
            "role": self.spec["role"], "index": self.spec["index"], "node_rank": self.spec["node_rank"],
            "pod": self.spec["pod"], "phase": self.phase, "container": step["container"], "init": step["init"],
            "process": self.record if self.phase == RUNNING else None, "exit_code": self.code,
            "attempt": attempt, "restarts": restarts, "started": self.started, "finished": self.finished,
            "log": str(self.log_path),
        }


class Supervisor:
    def __init__(self, job_path: Path):
        self.job_path = job_path
        self.plan = state.read_json(job_path / state.PLAN_FILE)
        self.job = state.read_json(job_path / state.JOB_FILE)
        self.contract = get_contract(self.plan["operator"])
        self.stop_requested = False
        self.base_env = host_environment(self.plan["bin_dir"])
        self.runs: list[ReplicaRun] = []  # the current attempt's replicas

    def request_stop(self, signum, frame) -> None:  # signal handler
        self.stop_requested = True

    def save(self, **fields: Any) -> None:
        self.job.update(fields)
        state.write_json(self.job_path / state.JOB_FILE, self.job)

    def save_replicas(self, runs: list[ReplicaRun]) -> None:
        self.save(replicas={run.spec["replica"]: run.as_json(self.job["attempt"], self.job["restarts"])
                            for run in runs})

    def run(self) -> int:
        become_subreaper()
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.save(started=state.now_iso(), phase=RUNNING)
        try:
            return self.run_attempts()
        except Exception as err:  # never leave job.json saying Running for a job nobody runs
            self.stop_all(self.runs, float(self.plan["grace_seconds"]))
            return self.end(FAILED, "SupervisorError", f"{type(err).__name__}: {err}")

    def run_attempts(self) -> int:
        while True:
            if self.stop_requested:  # deleted between two attempts
                return self.end(FAILED, "Deleted", "stopped on request (SIGTERM)")
            outcome, failed = self.run_attempt()
            codes = {run.spec["replica"]: run.code for run in self.runs}
            self.save(history=[*self.job.get("history", []),
                               {"attempt": self.job["attempt"], "outcome": outcome, "exit_codes": codes}])
            if outcome == SUCCEEDED:
                return self.end(SUCCEEDED, "Succeeded", f"job {self.plan['name']} successfully completed")
            if outcome == "Stopped":
                return self.end(FAILED, "Deleted", "stopped on request (SIGTERM)")
            label, code = failed
            policy = next(r["restart_policy"] for r in self.plan["replicas"] if r["replica"] == label)
            if not restartable(policy, code):
                return self.end(FAILED, "Failed", f"{label} exited with {code} (restartPolicy {policy})")
            if self.job["restarts"] >= self.plan["backoff_limit"]:
                return self.end(FAILED, "BackoffLimitExceeded",
                                f"{label} exited with {code} after {self.job['restarts']} restart(s): "
                                f"backoffLimit {self.plan['backoff_limit']} reached")
            self.save(restarts=self.job["restarts"] + 1, attempt=self.job["attempt"] + 1,
                      reason="Restarting", message=f"{label} exited with {code}: restarting all replicas")

    def run_attempt(self) -> tuple[str, tuple[str, int] | None]:
        attempt = self.job["attempt"]
        port = free_port()
        self.runs = runs = [ReplicaRun(spec, state.log_file(self.job_path, spec["replica"], attempt), port,
                                       self.base_env) for spec in self.plan["replicas"]]
        for run in runs:
            run.start_next()
        self.save(master_port=port)
        self.save_replicas(runs)
        grace = float(self.plan["grace_seconds"])
        success_deadline = None
        while True:
            changed = [run.poll() for run in runs]
            failed = next((run for run in runs if run.phase == FAILED), None)
            if self.stop_requested or failed:
                self.stop_all(runs, grace)
                if self.stop_requested:
                    return "Stopped", None
                return FAILED, (failed.spec["replica"], failed.code)
            phases = {run.spec["replica"]: run.phase for run in runs}
            if self.contract.succeeded(phases):
                if all(run.phase == SUCCEEDED for run in runs):
                    self.stop_all(runs, grace)  # nothing left to stop but orphaned helpers
                    return SUCCEEDED, None
                success_deadline = success_deadline or time.monotonic() + grace
                if time.monotonic() >= success_deadline:
                    self.stop_all(runs, grace)
                    return SUCCEEDED, None
            if any(changed):
                self.save_replicas(runs)
            time.sleep(POLL_SECONDS)

    def stop_all(self, runs: list[ReplicaRun], grace: float) -> None:
        """Stop every running replica: SIGTERM to all groups at once, then wait for each within the grace."""
        for run in runs:
            run.terminate()
        deadline = time.monotonic() + grace
        for run in runs:
            run.reap(max(0.0, deadline - time.monotonic()))
        self.save_replicas(runs)
        kill_leftovers({run.process.pid for run in runs if run.process})

    def end(self, phase: str, reason: str, message: str) -> int:
        self.save(phase=phase, reason=reason, message=message, finished=state.now_iso())
        return 0 if phase == SUCCEEDED else 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m whisper_k8s.backends.local_supervisor JOB_DIR", file=sys.stderr)
        return 2
    return Supervisor(Path(args[0])).run()


if __name__ == "__main__":
    sys.exit(main())
