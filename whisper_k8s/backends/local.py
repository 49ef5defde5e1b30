"""The local backend: run the job the chart rendered on this machine, one process group per replica.

``submit --local`` needs no cluster: the operator contract (:mod:`whisper_k8s.operators`) says which pods the
job becomes and what each one's environment is; :mod:`whisper_k8s.backends.local_plan` maps the pods to
local processes (volumes to folders, ``torchrun`` to this environment's); a detached supervisor
(:mod:`whisper_k8s.backends.local_supervisor`) runs them with the operator's restart rules. The job lives in
its state folder (:mod:`whisper_k8s.backends.local_state`), so ``status``, ``logs -f``, ``collect``,
``delete`` and ``list`` work from any later CLI process, and the job keeps running when ``submit`` returns.

Deleting a job sends SIGTERM to the supervisor, which forwards it to every replica's process group (the
trainer writes a checkpoint), waits the pod's grace period, SIGKILLs what is left, and then the job's folder
is removed except the claims a cluster keeps (:mod:`whisper_k8s.backends.kept_outputs`): the outputs stay,
``collect`` still reads them and a new job of the same name resumes from them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from whisper_k8s import places
from whisper_k8s.backends import kept_outputs
from whisper_k8s.backends import local_state as state
from whisper_k8s.backends.base import (
    AppRequest,
    Deleted,
    DryRunInfo,
    JobCondition,
    JobState,
    JobStatus,
    PodStatus,
    Scheduler,
    make_handle,
    yaml_documents,
)
from whisper_k8s.backends.local_plan import LOCAL_NODE, build_plan, describe_plan
from whisper_k8s.errors import UserError
from whisper_k8s.logs import ReplicaRef, merge_logs
from whisper_k8s.operators import get_contract

# Where the pods mount the outputs volume (checkpoints, metrics.jsonl, processor) and the job's config.
OUTPUTS_MOUNT = "/outputs"
CONFIG_MOUNT = "/config"
_EXTRA_WAIT_SECONDS = 15  # beyond the grace period, for the supervisor to write its last state
_POLL_SECONDS = 0.25


class LocalScheduler(Scheduler):
    name = "local"

    def __init__(self, namespace: str = "default", state_dir: str | os.PathLike | None = None) -> None:
        super().__init__(namespace)
        self.root = state.state_root(state_dir)

    # ------------------------------------------------------------------------------------------ submit
    def dryrun(self, request: AppRequest) -> DryRunInfo:
        contract = get_contract(request.operator)
        job = contract.read_job(request.documents)
        job_path = state.job_dir(self.root, job.name)
        plan = build_plan(job, request.documents, job_path,
                          address_variables=contract.master_address_variables,
                          port_variables=contract.master_port_variables)
        return DryRunInfo(backend=self.name, request=request, documents=request.documents,
                          actions=describe_plan(plan), extra={"plan": plan, "job_path": str(job_path)})

    def schedule(self, info: DryRunInfo) -> str:
        plan, job_path = info.extra["plan"], Path(info.extra["job_path"])
        if job_path.exists() and not kept_outputs.read_deleted(job_path):
            existing = self.describe(plan["name"])
            raise UserError(
                f"local job {plan['name']} already exists ({existing.state if existing else 'incomplete'}) in "
                f"{job_path}: delete it first with `{places.command('delete', plan['name'], flags=['--local'])}`"
                " (its outputs are kept)"
            )
        resumed = job_path.exists()  # a deleted job's kept claims: the new job mounts them again
        job_path.mkdir(parents=True, exist_ok=True)
        try:
            self._prepare(plan, job_path, info.documents)
            kept_outputs.forget_deleted(job_path)
            supervisor = self._start_supervisor(job_path)
        except BaseException:
            if not resumed:
                shutil.rmtree(job_path, ignore_errors=True)  # no half-created job left behind
            raise
        state.write_json(job_path / state.SUPERVISOR_FILE, state.process_record(supervisor.pid))
        return make_handle(self.name, plan["namespace"], plan["name"])

    def _prepare(self, plan: dict[str, Any], job_path: Path, documents: list[dict[str, Any]]) -> None:
        """The job folder: volume folders, the ConfigMap files, the rendered documents, plan and state."""
        for folder in ("logs", "volumes", "work"):
            (job_path / folder).mkdir(exist_ok=True)
        for local in map(Path, plan["folders"]):
            if not local.exists():
                local.mkdir(parents=True)
        for path, content in plan["config_files"].items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(content)
        (job_path / state.DOCUMENTS_FILE).write_text(yaml_documents(documents))
        state.write_json(job_path / state.PLAN_FILE, plan)
        state.write_json(job_path / state.JOB_FILE, {
            "name": plan["name"], "namespace": plan["namespace"], "operator": plan["operator"],
            "backend": self.name, "phase": JobState.PENDING, "reason": "Created", "message": "",
            "created": state.now_iso(), "started": "", "finished": "", "attempt": 0, "restarts": 0,
            "master_port": None, "replicas": {},
        })

    def _start_supervisor(self, job_path: Path) -> subprocess.Popen:
        env = dict(os.environ)
        # a source checkout works without `pip install -e`: whisper_k8s and trainer/whisper_trainer importable
        checkout = Path(__file__).resolve().parents[2]
        paths = [str(checkout), str(checkout / "trainer"), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        with open(job_path / state.SUPERVISOR_LOG, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "whisper_k8s.backends.local_supervisor", str(job_path)],
                cwd=job_path, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    # ------------------------------------------------------------------------------------------ read back
    def _job(self, name: str) -> dict[str, Any] | None:
        return state.read_json(state.job_dir(self.root, name) / state.JOB_FILE)

    def _require(self, name: str) -> dict[str, Any]:
        job = self._job(name)
        if job is None:
            raise UserError(f"no local job {name} in {self.root} (see `{places.command('list', flags=['--local'])}`)")
        return job

    def describe(self, name: str) -> JobStatus | None:
        job = self._job(name)
        return None if job is None else self._status(job)

    def _status(self, job: dict[str, Any]) -> JobStatus:
        phase = job["phase"]
        problems = []
        job_path = state.job_dir(self.root, job["name"])
        supervisor = state.read_json(job_path / state.SUPERVISOR_FILE)
        if phase not in JobState.TERMINAL and supervisor and not state.is_ours_and_alive(supervisor):
            job = state.read_json(job_path / state.JOB_FILE) or job  # it may have ended since the first read
            phase = job["phase"]
            if phase not in JobState.TERMINAL:
                phase = JobState.FAILED
                problems.append(f"the supervisor process {supervisor['pid']} is gone "
                                f"(see {job_path / state.SUPERVISOR_LOG})")
        if phase == JobState.FAILED and job.get("message"):
            problems.append(job["message"])
        plan = state.read_json(job_path / state.PLAN_FILE) or {}
        return JobStatus(
            name=job["name"], namespace=job["namespace"], backend=self.name, state=phase,
            conditions=_conditions(job, phase), pods=[_pod_status(r) for r in job["replicas"].values()],
            problems=problems, created=state.parse_time(job["created"]), operator=job["operator"],
            nodes=len(plan.get("replicas", [])) or None,
        )

    def list(self) -> list[JobStatus]:
        if not self.root.is_dir():
            return []
        jobs = (state.read_json(path / state.JOB_FILE) for path in sorted(self.root.iterdir()))
        return [self._status(job) for job in jobs if job is not None]

    # ------------------------------------------------------------------------------------------ delete
    def cancel(self, name: str, *, purge_outputs: bool = False) -> Deleted:
        """Stop the job like a pod deletion (SIGTERM, grace period, SIGKILL), then remove its folder except the
        claims a cluster keeps (see whisper_k8s.backends.kept_outputs); return where the kept outputs are."""
        job_path = state.job_dir(self.root, name)
        if not state.job_exists(self.root, name) and kept_outputs.read_deleted(job_path):
            if purge_outputs:
                return kept_outputs.purge_deleted(job_path)
            raise UserError(f"local job {name} is deleted already; its outputs are kept in {job_path}: "
                            f"`{places.command('delete', name, '--purge-outputs', flags=['--local'])}` removes them")
        self._require(name)
        supervisor = state.read_json(job_path / state.SUPERVISOR_FILE)
        plan = state.read_json(job_path / state.PLAN_FILE) or {}
        if state.is_ours_and_alive(supervisor):
            os.kill(supervisor["pid"], signal.SIGTERM)
            deadline = time.monotonic() + plan.get("grace_seconds", 30) + _EXTRA_WAIT_SECONDS
            while state.is_ours_and_alive(supervisor) and time.monotonic() < deadline:
                time.sleep(_POLL_SECONDS)
        job = self._require(name)
        for replica in job["replicas"].values():  # a supervisor that died or hung leaves replicas behind
            if state.is_ours_and_alive(replica.get("process")):
                os.killpg(replica["process"]["pid"], signal.SIGKILL)
        if state.is_ours_and_alive(supervisor):
            os.kill(supervisor["pid"], signal.SIGKILL)
        return kept_outputs.delete_job_folder(
            job_path, plan.get("claims", []), outputs=plan.get("mounts", {}).get(OUTPUTS_MOUNT),
            config=plan.get("mounts", {}).get(CONFIG_MOUNT), purge_outputs=purge_outputs,
            keep_files=(state.PLAN_FILE, state.DOCUMENTS_FILE))

    def deleted_job(self, name: str) -> list[str]:
        return (kept_outputs.read_deleted(state.job_dir(self.root, name)) or {}).get("kept", [])

    def replica_processes(self, name: str, replica_name: str) -> list[int]:
        """The live processes of one replica (``master-0``): its main process (the chart's launch wrapper),
        then the processes below it (torchrun, the training workers). For fault-injection tests and debugging."""
        replica = self._require(name)["replicas"].get(replica_name) or {}
        record = replica.get("process")
        if not state.is_ours_and_alive(record):
            return []
        return [record["pid"], *state.descendants(record["pid"])]

    # ------------------------------------------------------------------------------------------ logs
    def log_iter(self, name: str, *, follow: bool = False, since: float | None = None,
                 role: str | None = None, rank: int | None = None) -> Iterator[str]:
        """Merged logs, ``[master-0] ...`` / ``[worker-0] ...`` (the replicas' names, as on Kubernetes).

        Every attempt of a replica is one instance (its own log file), so a follow continues across
        restarts. Lines carry no timestamps: ``since`` keeps the attempts whose log changed since then.
        """
        self._require(name)
        job_path = state.job_dir(self.root, name)
        snapshots = self._snapshots(name, since) if follow else iter([self._replica_refs(name, since)])

        def open_stream(replica: ReplicaRef, following: bool) -> Iterator[tuple[datetime | None, str]]:
            attempt = int(replica.instance.rsplit("/", 1)[1])
            return _read_log(state.log_file(job_path, replica.replica, attempt),
                             (lambda: self._attempt_over(name, replica.replica, attempt)) if following else None)

        for line in merge_logs(snapshots, open_stream, follow=follow, role=role, rank=rank):
            yield str(line)

    def _replica_refs(self, name: str, since: float | None) -> list[ReplicaRef]:
        job = self._job(name)
        if job is None:
            return []
        job_path = state.job_dir(self.root, name)
        oldest = None if since is None else time.time() - since
        refs = []
        for replica_name, replica in job["replicas"].items():
            why = {entry["attempt"]: entry["why"] for entry in replica.get("ended", [])}
            for attempt in range(replica["attempt"] + 1):
                log = state.log_file(job_path, replica_name, attempt)
                if log.is_file() and (oldest is None or log.stat().st_mtime >= oldest):
                    refs.append(ReplicaRef(role=replica["role"], index=replica["index"], rank=replica["node_rank"],
                                           name=replica["pod"], instance=f"{replica_name}/{attempt}",
                                           attempt=attempt, previous_end=why.get(attempt - 1, "")))
        return refs

    def _snapshots(self, name: str, since: float | None) -> Iterator[list[ReplicaRef]]:
        """The replica list each time it may have changed, until the job has ended."""
        while True:
            job = self._job(name)
            yield self._replica_refs(name, since)
            if job is None or self._status(job).is_terminal:
                return
            time.sleep(_POLL_SECONDS * 2)

    def _attempt_over(self, name: str, replica_name: str, attempt: int) -> bool:
        job = self._job(name)
        if job is None or self._status(job).is_terminal:
            return True
        replica = job["replicas"].get(replica_name) or {}
        return replica.get("attempt", 0) > attempt or replica.get("phase") in JobState.TERMINAL

    # ------------------------------------------------------------------------------------------ outputs
    def _plan(self, name: str) -> dict[str, Any]:
        """The plan of a job, or of a deleted job whose outputs were kept."""
        job_path = state.job_dir(self.root, name)
        if not kept_outputs.read_deleted(job_path):
            self._require(name)
        return state.read_json(job_path / state.PLAN_FILE) or {}

    def outputs_dir(self, name: str) -> Path:
        """The local folder standing in for the job's outputs volume (mounted at /outputs)."""
        plan = self._plan(name)
        if OUTPUTS_MOUNT not in plan.get("mounts", {}):
            raise UserError(f"local job {name} mounts no volume at {OUTPUTS_MOUNT}: nothing to collect")
        return Path(plan["mounts"][OUTPUTS_MOUNT])

    def config_dir(self, name: str) -> Path | None:
        local = self._plan(name).get("mounts", {}).get(CONFIG_MOUNT)
        return Path(local) if local else None

    def fetch_outputs(self, name: str, dest: Path) -> Path:
        """Copy what ``collect`` needs from the outputs folder (see :func:`whisper_k8s.collect.copy_outputs`)."""
        from whisper_k8s.collect import copy_outputs

        return copy_outputs(self.outputs_dir(name), Path(dest), config=self.config_dir(name))


# ------------------------------------------------------------------------------------------------ helpers
def _pod_status(replica: dict[str, Any]) -> PodStatus:
    code = replica.get("exit_code")
    phase, reason = replica["phase"], ""
    if phase == JobState.FAILED:
        reason = f"Error (exit {code})"
    elif replica.get("waiting"):  # a crashed container waiting for its restart: the pod itself runs on
        phase, reason = JobState.RUNNING, replica["waiting"]
    elif phase == JobState.RUNNING and replica.get("init"):
        reason = f"Init:{replica.get('container')}"
    return PodStatus(name=replica["pod"], role=replica["role"], index=replica["index"], rank=replica["node_rank"],
                     phase=phase,
                     restarts=replica.get("restarts", 0), node=LOCAL_NODE,
                     started=state.parse_time(replica.get("started")), reason=reason,
                     message=f"log: {replica['log']}" if replica["phase"] == "Failed" else "")


def _conditions(job: dict[str, Any], phase: str) -> list[JobCondition]:
    """PyTorchJob-like conditions: Created, Running, Restarting, Succeeded/Failed."""
    created = state.parse_time(job["created"])
    conditions = [JobCondition("Created", "True", "Created", f"job {job['name']} is created", created)]
    if job.get("started"):
        running = "True" if phase == JobState.RUNNING else "False"
        conditions.append(JobCondition("Running", running, "Running", "", state.parse_time(job["started"])))
    if job.get("restarts"):
        conditions.append(JobCondition("Restarting", "True" if job.get("reason") == "Restarting" else "False",
                                       "Restarting", f"{job['restarts']} restart(s)"))
    if phase in JobState.TERMINAL:
        finished = state.parse_time(job.get("finished")) or datetime.now(timezone.utc)
        conditions.append(JobCondition(phase, "True", job.get("reason", phase), job.get("message", ""), finished))
    return conditions


def _read_log(path: Path, is_over: Any) -> Iterator[tuple[datetime | None, str]]:
    """The lines of one log file; with ``is_over`` keep tailing until it says the writer is done."""
    if not path.is_file():
        return
    with open(path, "rb") as f:
        pending, final = b"", is_over is None
        while True:
            chunk = f.read(65536)
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield None, line.decode("utf-8", errors="replace")
            elif final:
                break
            elif is_over():
                final = True  # one more read: what was written between the last read and the check
            else:
                time.sleep(_POLL_SECONDS)
        if pending:
            yield None, pending.decode("utf-8", errors="replace")
