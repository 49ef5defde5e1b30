"""The docker backend: run the pods the chart rendered as containers on this host (``submit --backend docker``).

This is how one server is used without a cluster (a single 8-NPU Ascend server, a multi-GPU box). What each
container is (name, network, volumes, security, devices, environment) is planned by
:mod:`whisper_k8s.backends.docker_plan`; this module runs the plan with the engine and reads jobs back.

State lives in the engine only, as container labels (every CLI command is a fresh process): the job, its
namespace, operator, role, index, node rank, step, and the host folders of its outputs and config.
``delete`` removes the containers, the network and the job's folder except the claims a cluster keeps
(:mod:`whisper_k8s.backends.kept_outputs`: the outputs stay, ``collect`` still reads them, a new job of the
same name resumes from them).
The engine is ``docker`` (or ``$WHISPER_K8S_CONTAINER_ENGINE``, e.g. ``podman``; its CLI is the same here).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from whisper_k8s import places
from whisper_k8s.backends import kept_outputs
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
)
from whisper_k8s.backends.docker_plan import LABEL, OUTPUTS_MOUNT, build_plan, network_name
from whisper_k8s.errors import ClusterError, UserError
from whisper_k8s.logs import ReplicaRef, merge_logs, parse_timestamped
from whisper_k8s.operators import DEFAULT_OPERATOR, RestartRule, get_contract, replica_name

ENGINE_ENV = "WHISPER_K8S_CONTAINER_ENGINE"
STATE_ENV = "WHISPER_K8S_DOCKER_STATE"
DEFAULT_STATE_ROOT = Path("runs") / "docker"
KEPT_LABELS = "folders.json"  # a deleted job's outputs/config host folders (its containers' labels are gone)
_POLL_SECONDS = 1.0


def state_root(explicit: str | os.PathLike | None = None) -> Path:
    """Where docker jobs keep their volume folders: the argument, $WHISPER_K8S_DOCKER_STATE, ./runs/docker."""
    return Path(explicit or os.environ.get(STATE_ENV) or DEFAULT_STATE_ROOT).absolute()


# --------------------------------------------------------------------------------------------- scheduler
class DockerScheduler(Scheduler):
    name = "docker"

    def __init__(self, namespace: str = "default", state_dir: str | os.PathLike | None = None,
                 engine: str | None = None, runtimes: set[str] | None = None) -> None:
        super().__init__(namespace)
        self.root = state_root(state_dir)
        self.engine = engine or os.environ.get(ENGINE_ENV) or "docker"
        self._runtimes = runtimes

    # ----------------------------------------------------------------------------------------- engine
    def _run(self, *argv: str, check: bool = True, timeout: float | None = 120) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run([self.engine, *argv], capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise ClusterError(f"container engine {self.engine!r} is not installed (set {ENGINE_ENV} to "
                               "docker or podman)") from None
        if check and proc.returncode != 0:
            raise ClusterError(f"`{self.engine} {shlex.join(argv[:3])} ...` failed: {proc.stderr.strip()[-800:]}")
        return proc

    def runtimes(self) -> set[str]:
        """The engine's container runtimes (``runc``, ``nvidia``, ``ascend``...), read once from its info."""
        if self._runtimes is None:
            info = self._run("info", "--format", "{{json .Runtimes}}")
            self._runtimes = set(json.loads(info.stdout or "{}") or {})
        return self._runtimes

    # ----------------------------------------------------------------------------------------- submit
    def dryrun(self, request: AppRequest) -> DryRunInfo:
        contract = get_contract(request.operator)
        job = contract.read_job(request.documents)
        plan = build_plan(job, request.documents, self.root / job.name, self.runtimes())
        actions = [f"{self.engine} network create {plan['network']}"]
        actions += [f"{self.engine} {shlex.join(run['argv'])}" + ("  (waits for it to finish)" if run["init"] else "")
                    for run in plan["runs"]]
        return DryRunInfo(backend=self.name, request=request, documents=request.documents,
                          actions=[line.replace("\n", "\\n") for line in actions], extra={"plan": plan})

    def schedule(self, info: DryRunInfo) -> str:
        plan = info.extra["plan"]
        if self._containers(plan["name"]):
            raise UserError(f"docker job {plan['name']} already exists: delete it first with "
                            f"`{places.command('delete', plan['name'], flags=['--backend', 'docker'])}` (its "
                            "outputs are kept)")
        self._prepare_folders(plan)
        kept_outputs.forget_deleted(Path(plan["job_path"]))
        network = plan["network"]
        if self._run("network", "inspect", network, check=False).returncode != 0:
            self._run("network", "create", "--label", f"{LABEL}job={plan['name']}", network)
        for run in plan["runs"]:
            self._run(*run["argv"])
            if run["init"]:
                self._wait_init(run["name"])
        return make_handle(self.name, plan["namespace"], plan["name"])

    def _prepare_folders(self, plan: dict[str, Any]) -> None:
        """Create the volume folders and ConfigMap files; hand them to the pod's user when we are root."""
        job_path = Path(plan["job_path"])
        folders = {Path(f) for run in plan["runs"] for f in run["folders"]}
        created = [f for f in folders if not f.exists()]
        for folder in created:
            folder.mkdir(parents=True)
        for path, content in plan["config_files"].items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(content)
        owner = plan["owner"]
        if owner and os.geteuid() == 0:
            for folder in created:
                if job_path in folder.parents:
                    for path in [folder, *folder.rglob("*")]:
                        os.chown(path, *owner)
        elif owner and os.geteuid() != owner[0]:
            for folder in created:
                if job_path in folder.parents:
                    folder.chmod(0o777)  # the pod's user is not us: let it write, as fsGroup would

    def _wait_init(self, name: str) -> None:
        """Block until an init container ends; ClusterError with its log tail when it fails."""
        waited = self._run("wait", name, timeout=None)
        code = int((waited.stdout.strip().splitlines() or ["1"])[-1])
        if code != 0:
            log = self._run("logs", "--tail", "20", name, check=False)
            raise ClusterError(f"init container {name} failed (exit {code}):\n{(log.stdout + log.stderr).strip()}")

    # ----------------------------------------------------------------------------------------- read back
    def _containers(self, name: str | None = None) -> list[dict[str, Any]]:
        """``docker inspect`` of the containers of one job (or of all jobs) in our namespace."""
        filters = ["--filter", f"label={LABEL}namespace={self.namespace}"]
        filters += ["--filter", f"label={LABEL}job={name}" if name else f"label={LABEL}job"]
        ids = self._run("ps", "--all", "--quiet", "--no-trunc", *filters).stdout.split()
        if not ids:
            return []
        return json.loads(self._run("inspect", *ids).stdout)

    def describe(self, name: str) -> JobStatus | None:
        containers = self._containers(name)
        if not containers:
            return None
        status = job_status(name, self.namespace, containers)
        running = [c["Id"] for c in containers if c["State"].get("Status") in ("running", "restarting")]
        if status.state == JobState.FAILED and running:  # the operator deletes the pods of a failed job
            self._run("stop", "--time", "30", *running, timeout=None, check=False)
        return status

    def list(self) -> list[JobStatus]:
        by_job: dict[str, list[dict[str, Any]]] = {}
        for container in self._containers():
            by_job.setdefault(_labels(container)["job"], []).append(container)
        return [job_status(job, self.namespace, found) for job, found in sorted(by_job.items())]

    def cancel(self, name: str, *, purge_outputs: bool = False) -> Deleted:
        """Stop the containers (SIGTERM, the pods' grace period, SIGKILL), remove them, the network and the
        job's folder except the claims a cluster keeps; return where the kept outputs are."""
        containers = self._containers(name)
        job_path = self.root / name
        if not containers and kept_outputs.read_deleted(job_path):
            if purge_outputs:
                return kept_outputs.purge_deleted(job_path)
            raise UserError(f"docker job {name} is deleted already; its outputs are kept in {job_path}: `"
                            + places.command("delete", name, "--purge-outputs", flags=["--backend", "docker"])
                            + "` removes them")
        if not containers:
            raise UserError(f"no docker job {name} in namespace {self.namespace} (see `"
                            f"{places.command('list', flags=['--backend', 'docker'])}`)")
        ids = [c["Id"] for c in containers]
        self._run("stop", "--time", "30", *ids, timeout=None, check=False)
        self._run("rm", "--force", *ids)
        self._run("network", "rm", network_name(name), check=False)
        labels = _labels(containers[0])
        if not job_path.is_dir():
            job_path.mkdir(parents=True)  # host folders only: the record of what stays goes here
        (job_path / KEPT_LABELS).write_text(json.dumps({k: labels[k] for k in ("outputs", "config") if k in labels}))
        return kept_outputs.delete_job_folder(job_path, json.loads(labels.get("claims", "[]")),
                                              outputs=labels.get("outputs"), config=labels.get("config"),
                                              purge_outputs=purge_outputs,
                                              keep_files=(KEPT_LABELS,))

    def deleted_job(self, name: str) -> list[str]:
        return (kept_outputs.read_deleted(self.root / name) or {}).get("kept", [])

    # ----------------------------------------------------------------------------------------- logs
    def log_iter(self, name: str, *, follow: bool = False, since: float | None = None,
                 role: str | None = None, rank: int | None = None) -> Iterator[str]:
        """Merged logs of every container of the job (init containers first), ``[master-0] ...``."""
        if not self._containers(name):
            raise UserError(f"no docker job {name} in namespace {self.namespace}")
        snapshots = self._snapshots(name) if follow else iter([self._refs(name)])

        def open_stream(replica: ReplicaRef, following: bool) -> Iterator[tuple[datetime | None, str]]:
            container, started = replica.instance.split("/", 1)[0], replica.instance.split("@", 1)[-1]
            argv = [self.engine, "logs", "--timestamps"] + (["--follow"] if following else [])
            if replica.previous:  # the attempts before a restart: the engine keeps one log per container
                argv += ["--until", started]
            elif since is not None:
                argv += ["--since", f"{int(since)}s"]
            elif replica.attempt:  # a restarted container: only this run's lines
                argv += ["--since", started]
            yield from _stream_lines([*argv, container])

        for line in merge_logs(snapshots, open_stream, follow=follow, role=role, rank=rank):
            yield str(line)

    def _refs(self, name: str, earlier: bool = True) -> list[ReplicaRef]:
        """Each container's current run (init containers first); after a restart, with ``earlier``, also the
        runs before it (the engine does not keep why they ended)."""
        refs = []
        containers = sorted(self._containers(name), key=lambda c: (_labels(c)["step"] == "main", c.get("Created", "")))
        for container in containers:
            labels, state = _labels(container), container["State"]
            restarts, started = int(container.get("RestartCount") or 0), state.get("StartedAt", "")
            current = ReplicaRef(role=labels["role"], index=int(labels["index"]), rank=int(labels["node-rank"]),
                                 name=labels["pod"], instance=f"{container['Id']}/{restarts}@{started}",
                                 ready=state.get("Status") != "created", attempt=restarts, started=_time(started))
            if restarts and earlier:
                refs.append(dataclasses.replace(current, instance=f"{container['Id']}/before@{started}", attempt=0,
                                                previous=True))
            refs.append(current)
        return refs

    def _snapshots(self, name: str) -> Iterator[list[ReplicaRef]]:
        first = True
        while True:
            status = self.describe(name)
            yield self._refs(name, earlier=first)  # later restarts: the running readers saw the earlier runs
            first = False
            if status is None or status.is_terminal:
                return
            time.sleep(_POLL_SECONDS)

    # ----------------------------------------------------------------------------------------- outputs
    def _job_folder(self, name: str, key: str) -> Path | None:
        """A host folder the job's containers mount (``outputs``, ``config``), also of a deleted job whose
        outputs were kept."""
        labels = [_labels(container) for container in self._containers(name)]
        if not labels and kept_outputs.read_deleted(self.root / name):
            labels = [json.loads((self.root / name / KEPT_LABELS).read_text())]
        folder = next((label[key] for label in labels if label.get(key)), None)
        return Path(folder) if folder else None

    def outputs_dir(self, name: str) -> Path:
        if not self._containers(name) and not kept_outputs.read_deleted(self.root / name):
            raise UserError(f"no docker job {name} in namespace {self.namespace}")
        folder = self._job_folder(name, "outputs")
        if folder is None:
            raise UserError(f"docker job {name} mounts no volume at {OUTPUTS_MOUNT}: nothing to collect")
        return folder

    def fetch_outputs(self, name: str, dest: Path) -> Path:
        """Copy what ``collect`` needs from the job's outputs folder (see whisper_k8s.collect.copy_outputs)."""
        from whisper_k8s.collect import copy_outputs

        return copy_outputs(self.outputs_dir(name), Path(dest), config=self._job_folder(name, "config"))


# ------------------------------------------------------------------------------------------------ helpers
def _labels(container: dict[str, Any]) -> dict[str, str]:
    labels = (container.get("Config") or {}).get("Labels") or {}
    return {key[len(LABEL):]: value for key, value in labels.items() if key.startswith(LABEL)}


def _time(text: str | None) -> datetime | None:
    """The engine's RFC 3339 times (nanoseconds, ``Z``); None for its zero time."""
    if not text or text.startswith("0001-"):
        return None
    head, _, rest = text.rstrip("Z").partition(".")
    try:
        return datetime.fromisoformat(head).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _phase(state: dict[str, Any]) -> str:
    status = state.get("Status")
    if status in ("running", "restarting", "paused"):
        return JobState.RUNNING
    if status in ("exited", "dead"):
        return JobState.SUCCEEDED if state.get("ExitCode") == 0 else JobState.FAILED
    return JobState.PENDING


def job_status(name: str, namespace: str, containers: list[dict[str, Any]]) -> JobStatus:
    """Job state from its containers: the operator's success policy on the trainers, failures from any, and
    its restart limit on the trainers' restarts (which the engine counts per container)."""
    labels = [_labels(c) for c in containers]
    operator = labels[0].get("operator", DEFAULT_OPERATOR)
    pods, phases, problems = [], {}, []
    for container, label in sorted(zip(containers, labels, strict=True),
                                   key=lambda pair: (int(pair[1]["node-rank"]), pair[1]["step"] != "main")):
        state, phase = container["State"], _phase(container["State"])
        if label["step"] != "main":
            if phase == JobState.FAILED:
                problems.append(f"{label['pod']}: init container {label['step'][5:]} failed "
                                f"(exit {state.get('ExitCode')})")
                phases[replica_name(label["role"], int(label["index"]))] = JobState.FAILED
            continue
        reason = f"Error (exit {state.get('ExitCode')})" if phase == JobState.FAILED else ""
        if state.get("OOMKilled"):
            reason = "OOMKilled"
        pods.append(PodStatus(name=label["pod"], role=label["role"], index=int(label["index"]),
                              rank=int(label["node-rank"]), phase=phase,
                              restarts=int(container.get("RestartCount") or 0), node="docker",
                              started=_time(state.get("StartedAt")), reason=reason,
                              message=state.get("Error") or ""))
        phases.setdefault(replica_name(label["role"], int(label["index"])), phase)
    contract = get_contract(operator)
    rule = RestartRule(**json.loads(labels[0]["restart"])) if "restart" in labels[0] else None  # older jobs: none
    restarts = sum(pod.restarts for pod in pods)
    if contract.succeeded(phases):
        state = JobState.SUCCEEDED
    elif rule is not None and rule.scope == RestartRule.IN_PLACE and rule.limit_reached(restarts):
        state = JobState.FAILED
        problems.append(f"{restarts} restart(s) of the job: restart limit {rule.limit} reached ({rule.source})")
    elif JobState.FAILED in phases.values():
        state = JobState.FAILED
    elif JobState.RUNNING in phases.values():
        state = JobState.RUNNING
    else:
        state = JobState.PENDING
    created = min((_time(c.get("Created")) for c in containers if _time(c.get("Created"))), default=None)
    conditions = [JobCondition("Created", "True", "Created", f"job {name} is created", created)]
    if state in JobState.TERMINAL:
        conditions.append(JobCondition(state, "True", state, ""))
    return JobStatus(name=name, namespace=namespace, backend="docker", state=state, conditions=conditions,
                     pods=pods, problems=problems, created=created, operator=operator,
                     nodes=len({label["pod"] for label in labels}))


def _stream_lines(argv: list[str]) -> Iterator[tuple[datetime | None, str]]:
    """The lines of ``docker logs`` (stdout and stderr interleaved as the engine returns them)."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                yield parse_timestamped(raw.decode("utf-8", errors="replace").rstrip("\n"))
        finally:
            if proc.poll() is None:
                proc.kill()
