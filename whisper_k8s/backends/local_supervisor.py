"""The process that owns a local job's replicas: ``python -m whisper_k8s.backends.local_supervisor JOB_DIR``.

The local backend starts it in its own session, so the job keeps running after ``submit`` returns. It runs
the plan (see :mod:`whisper_k8s.backends.local_plan`) the way the operator and kubelet would run the pods:

* each replica is a process group of its own (``torchrun`` and its workers), started with its init
  containers first, in order, then the trainer container; all replicas start together;
* the operator's success policy decides when the job has succeeded (PyTorchJob: the master succeeded);
  replicas still running then get the grace period to finish before they are stopped;
* when a replica fails, the operator's restart rule (:class:`whisper_k8s.operators.RestartRule`, from the
  job's contract) decides, as the operator and the kubelet would: if the pod's restart policy allows a
  restart, a PyTorchJob's failed replica restarts *in place* (its failed container runs again on the same
  master port while the other replicas keep running, as the kubelet does for ``restartPolicy: OnFailure``),
  and a TrainJob restarts *every* replica on a fresh port (the JobSet recreates all its jobs); once the
  restarts reach the rule's limit (``runPolicy.backoffLimit``, ``failurePolicy.maxRestarts``), or the policy
  forbids a restart, every replica is stopped (SIGTERM to its process group, then SIGKILL after the pod's
  ``terminationGracePeriodSeconds``) and the job has failed. The trainer resumes from its latest checkpoint
  by itself;
* SIGTERM to the supervisor (what ``delete`` sends) stops the replicas the same way and ends the job.

SIGTERM goes to each replica's process group (the container's main process: ``torchrun``), which forwards it
to its workers, as in a pod. torchrun starts its workers in sessions of their own, so killing a group does
not reach them; like a container runtime that kills the whole cgroup, the supervisor makes itself the
"child subreaper" of everything it starts (Linux) and marks each replica run's processes with
:data:`RUN_MARKER` in their environment; a run's leftovers (orphans included) are killed when it is restarted,
everything left when the job ends. Nothing outlives the run it belongs to.

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
from whisper_k8s.logs import ended_because
from whisper_k8s.operators import RestartRule, all_injected_variables, get_contract
from whisper_k8s.operators.base import CRASH_LOOP_RESET_SECONDS, FAILED, RUNNING, SUCCEEDED

POLL_SECONDS = 0.2
PENDING = "Pending"
RUN_MARKER = "WHISPER_K8S_REPLICA_RUN"  # <job dir>/<replica>/<attempt>, in the environment of each run's processes
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


def kill_leftovers(marker: str = "") -> None:
    """SIGKILL every descendant still alive (only those of one replica run when ``marker`` is given: its
    processes carry it in their environment, as a container's processes share its cgroup), then reap them."""
    doomed = [pid for pid in state.descendants(os.getpid()) if not marker or _has_marker(pid, marker)]
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in doomed:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # not our child (its parent reaps it), or reaped already
            pass


def _has_marker(pid: int, marker: str) -> bool:
    try:
        return f"{RUN_MARKER}={marker}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


class ReplicaRun:
    """One run of one replica's containers (a pod's init containers then its trainer, or, after an in-place
    restart, the failed container onward): its steps run one after the other into one log file."""

    def __init__(self, spec: dict[str, Any], job_path: Path, port: int, base_env: dict[str, str], *,
                 attempt: int = 0, restarts: int = 0, first_step: int = 0, crashes: int = 0,
                 start_at: float = 0.0, ended: list[dict[str, Any]] | None = None):
        self.spec = spec
        self.attempt, self.restarts = attempt, restarts
        self.ended = ended or []  # the replica's earlier attempts: {"attempt", "why"} (restart markers in logs)
        self.crashes, self.start_at = crashes, start_at  # crashes in a row; when a delayed restart starts
        self.log_path = state.log_file(job_path, spec["replica"], attempt)
        self.marker = f"{job_path}/{spec['replica']}/{attempt}"
        self.port = str(port)
        self.base_env = base_env
        self.step = first_step - 1
        self.process: subprocess.Popen | None = None
        self.record: dict[str, int] | None = None
        self.phase = PENDING
        self.code: int | None = None
        self.started = ""
        self.started_at = 0.0
        self.finished = ""

    def restarted(self, rule: RestartRule) -> ReplicaRun:
        """The same replica, its failed container to start again in place after the kubelet's back-off."""
        ran_long = self.started_at and time.monotonic() - self.started_at >= CRASH_LOOP_RESET_SECONDS
        crashes = 1 if ran_long else self.crashes + 1
        return ReplicaRun(self.spec, self.log_path.parent.parent, int(self.port), self.base_env,
                          attempt=self.attempt + 1, restarts=self.restarts + 1, first_step=self.step,
                          crashes=crashes, start_at=time.monotonic() + rule.delay(crashes),
                          ended=self.history(ended_because(self.code)))

    def history(self, why: str) -> list[dict[str, Any]]:
        """The earlier attempts and this one, ended for ``why``."""
        return [*self.ended, {"attempt": self.attempt, "why": why}]

    def due(self) -> bool:
        """Whether a delayed restart may start now."""
        return self.phase == PENDING and self.process is None and time.monotonic() >= self.start_at

    def localize(self, text: str) -> str:
        return text.replace(PORT_PLACEHOLDER, self.port)

    def start_next(self) -> None:
        self.step += 1
        step = self.spec["steps"][self.step]
        Path(step["cwd"]).mkdir(parents=True, exist_ok=True)
        env = dict(self.base_env)
        env.update({k: self.localize(v) for k, v in step["env"].items()})
        env[RUN_MARKER] = self.marker
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
        self.started_at = self.started_at or time.monotonic()

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

    def as_json(self) -> dict[str, Any]:
        step = self.spec["steps"][max(self.step, 0)]
        return {
            "role": self.spec["role"], "index": self.spec["index"], "node_rank": self.spec["node_rank"],
            "pod": self.spec["pod"], "phase": self.phase, "container": step["container"], "init": step["init"],
            "process": self.record if self.phase == RUNNING else None, "exit_code": self.code,
            "attempt": self.attempt, "restarts": self.restarts, "started": self.started, "finished": self.finished,
            "waiting": "CrashLoopBackOff" if self.phase == PENDING and self.start_at else "",
            "log": str(self.log_path), "ended": self.ended,
        }


class Supervisor:
    def __init__(self, job_path: Path):
        self.job_path = job_path
        self.plan = state.read_json(job_path / state.PLAN_FILE)
        self.job = state.read_json(job_path / state.JOB_FILE)
        self.contract = get_contract(self.plan["operator"])
        self.rule = RestartRule(**self.plan["restart"])
        self.stop_requested = False
        self.base_env = host_environment(self.plan["bin_dir"])
        self.grace = float(self.plan["grace_seconds"])
        self.runs: list[ReplicaRun] = []  # the current run of every replica

    def request_stop(self, signum, frame) -> None:  # signal handler
        self.stop_requested = True

    def save(self, **fields: Any) -> None:
        self.job.update(fields)
        state.write_json(self.job_path / state.JOB_FILE, self.job)

    def save_replicas(self) -> None:
        self.save(replicas={run.spec["replica"]: run.as_json() for run in self.runs})

    def run(self) -> int:
        become_subreaper()
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.save(started=state.now_iso(), phase=RUNNING)
        try:
            return self.supervise()
        except Exception as err:  # never leave job.json saying Running for a job nobody runs
            self.stop_all()
            return self.end(FAILED, "SupervisorError", f"{type(err).__name__}: {err}")

    def start_all(self, attempt: int, ended: dict[str, list[dict[str, Any]]] | None = None) -> None:
        """Start every replica (at submit, and when the whole job restarts) on a fresh local master port;
        ``ended``: each replica's earlier attempts."""
        port = free_port()
        self.runs = [ReplicaRun(spec, self.job_path, port, self.base_env, attempt=attempt, restarts=attempt,
                                ended=(ended or {}).get(spec["replica"]))
                     for spec in self.plan["replicas"]]
        for run in self.runs:
            run.start_next()
        self.save(master_port=port, attempt=attempt)
        self.save_replicas()

    def supervise(self) -> int:
        self.start_all(0)
        success_deadline = None
        while True:
            changed = any([run.poll() for run in self.runs])
            for run in self.runs:
                if run.due():
                    run.start_next()
                    changed = True
            if self.stop_requested:
                self.stop_all()
                return self.end(FAILED, "Deleted", "stopped on request (SIGTERM)")
            failed = next((run for run in self.runs if run.phase == FAILED), None)
            if failed is not None:
                ended = self.restart_or_fail(failed)
                if ended is not None:
                    return ended
                changed = True
            if self.contract.succeeded({run.spec["replica"]: run.phase for run in self.runs}):
                success_deadline = success_deadline or time.monotonic() + self.grace
                if all(run.phase == SUCCEEDED for run in self.runs) or time.monotonic() >= success_deadline:
                    self.stop_all()  # the replicas still running, and orphaned helpers
                    return self.end(SUCCEEDED, "Succeeded", f"job {self.plan['name']} successfully completed")
            if changed:
                self.save_replicas()
            time.sleep(POLL_SECONDS)

    def restart_or_fail(self, failed: ReplicaRun) -> int | None:
        """The operator's answer to a failed replica (see its RestartRule): restart it in place or restart
        every replica, or end the job when its restart policy or the restart limit says so."""
        name, code, policy = failed.spec["replica"], failed.code, failed.spec["restart_policy"]
        self.save(history=[*self.job.get("history", []),
                           {"replica": name, "attempt": failed.attempt, "exit_code": code}])
        if not self.contract.restartable(policy, code):
            self.stop_all()
            return self.end(FAILED, "Failed", f"{name} exited with {code} (restartPolicy {policy})")
        restarts = self.job["restarts"] + 1
        if self.rule.limit_reached(restarts):
            if self.rule.inclusive:  # the kubelet restarted the container, then the operator counted it
                failed.restarts += 1
                self.job["restarts"] = restarts
            self.stop_all()
            return self.end(FAILED, "BackoffLimitExceeded",
                            f"{name} exited with {code} after {self.job['restarts']} restart(s) of the job: "
                            f"restart limit {self.rule.limit} reached ({self.rule.source})")
        if self.rule.scope == RestartRule.IN_PLACE:
            kill_leftovers(failed.marker)
            self.runs[self.runs.index(failed)] = again = failed.restarted(self.rule)
            action = f"restarting in place in {self.rule.delay(again.crashes):.0f} s (the kubelet's back-off)"
        else:
            self.stop_all()
            stopped = f"stopped: every replica restarts ({name} exited with {code})"
            self.start_all(self.job["attempt"] + 1, {
                run.spec["replica"]: run.history(ended_because(code) if run is failed else stopped)
                for run in self.runs})
            action = "restarting every replica"
        self.save(restarts=restarts, reason="Restarting", message=f"{name} exited with {code}: {action}")
        return None

    def stop_all(self) -> None:
        """Stop every running replica: SIGTERM to all groups at once, then wait for each within the grace."""
        for run in self.runs:
            run.terminate()
        deadline = time.monotonic() + self.grace
        for run in self.runs:
            run.reap(max(0.0, deadline - time.monotonic()))
        self.save_replicas()
        kill_leftovers()

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
