"""The one interface every backend implements (TorchX style), and the plain data it exchanges.

Why an interface: `submit`, `status`, `logs`, `collect`, `delete` and `list` are written once against
:class:`Scheduler`; the Kubernetes backend installs what the chart rendered, the local backend runs the same
rendered pod specs as process groups, and the docker backend runs them as containers.

The flow of one submission::

    request = AppRequest(name, namespace, values, documents)   # documents = whisper_k8s.chart.render(...)
    info = scheduler.dryrun(request)      # pure: nothing touches a cluster or the disk; print(info) = YAML
    handle = scheduler.schedule(info)     # "kubernetes://default/whisper-ft"

Every CLI command is a fresh process, so a backend never keeps job state in memory: it reads it back from
the backend (Kubernetes labels, the local state folder) by job name.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from whisper_k8s.errors import ClusterError, UserError
from whisper_k8s.operators import CONTRACTS, DEFAULT_OPERATOR, JobState, replica_name


def yaml_documents(documents: list[dict[str, Any]]) -> str:
    """Render Kubernetes documents the way `helm template` and `kubectl apply -f` read them.

    Multi-line strings (model.json in the ConfigMap, shell scripts) are written as ``|`` blocks so that the
    dry run stays readable; strings Go's YAML 1.1 would misread (a release named ``n``) are quoted.
    """
    import yaml

    from whisper_k8s import goyaml

    dumper = goyaml.dumper(block_multiline=True)
    return "".join(
        "---\n" + yaml.dump(doc, Dumper=dumper, sort_keys=False, default_flow_style=False, width=1000)
        for doc in documents
    )


@dataclass
class AppRequest:
    """What the user asked for, already rendered by the chart; the same for every backend.

    ``values`` are the validated chart values (see whisper_k8s.values), ``documents`` the objects
    `helm template` produced from them (ConfigMap, PyTorchJob or TrainingRuntime + TrainJob, ...),
    ``values_file`` the kept copy of the values the user can re-submit with ``-f``.
    """

    name: str
    namespace: str = "default"
    values: dict[str, Any] = field(default_factory=dict)
    documents: list[dict[str, Any]] = field(default_factory=list)
    operator: str = DEFAULT_OPERATOR
    values_file: Path | None = None
    chart: Path | None = None

    def __post_init__(self) -> None:
        if self.operator not in CONTRACTS:
            raise UserError(f"operator {self.operator!r} is not supported: use one of {', '.join(CONTRACTS)}")

    def __str__(self) -> str:
        return yaml_documents(self.documents)


@dataclass
class DryRunInfo:
    """The exact thing a backend would do for a request: printable, and what :meth:`Scheduler.schedule` runs.

    ``documents`` are the objects that would be applied (for Kubernetes: the helm-rendered manifests),
    ``actions`` one human line per step a backend takes besides them (e.g. the `helm upgrade --install`
    command line, or "start master-0: torchrun ..." for the local backend), ``extra`` backend-private data
    that ``schedule`` needs (never required to print the request).
    ``str(info)`` is the YAML of the documents, preceded by the actions as comments, so that
    ``submit --dry-run | kubectl apply --dry-run=server -f -`` works.
    """

    backend: str
    request: AppRequest
    documents: list[dict[str, Any]] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        header = "".join(f"# {line}\n" for line in self.actions)
        return header + yaml_documents(self.documents)


@dataclass
class JobCondition:
    """One status condition of the job object (PyTorchJob: Created/Running/Succeeded/Failed/Restarting)."""

    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition: datetime | None = None


@dataclass
class PodStatus:
    """One replica of the job: its pod name, role (``master``/``worker``/``node``), index within the role,
    node rank, and why it is unwell.

    ``reason`` and ``message`` carry the explanation when something is wrong: the scheduler's
    ``Insufficient huawei.com/Ascend910``, ``ImagePullBackOff``, ``CrashLoopBackOff``, an exit code.
    """

    name: str
    role: str
    index: int
    rank: int
    phase: str
    restarts: int = 0
    node: str = ""
    started: datetime | None = None
    reason: str = ""
    message: str = ""

    @property
    def replica(self) -> str:
        """``master-0``, ``worker-0``: the replica's name (its pod name without the job name)."""
        return replica_name(self.role, self.index)


@dataclass
class JobStatus:
    """A job as read back from its backend: state, conditions, replicas and the reasons worth showing."""

    name: str
    namespace: str
    backend: str
    state: str = JobState.UNKNOWN
    conditions: list[JobCondition] = field(default_factory=list)
    pods: list[PodStatus] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    created: datetime | None = None
    operator: str = DEFAULT_OPERATOR
    nodes: int | None = None  # replicas the job asked for (pods may not exist yet)

    @property
    def handle(self) -> str:
        return make_handle(self.backend, self.namespace, self.name)

    @property
    def is_terminal(self) -> bool:
        return self.state in JobState.TERMINAL

    def __str__(self) -> str:
        return format_status(self)


@dataclass
class PodLogLine:
    """One line of one replica's log; ``str()`` gives the merged-log form ``[worker-0] text``."""

    role: str
    index: int
    rank: int
    text: str
    pod: str = ""
    timestamp: datetime | None = None

    @property
    def replica(self) -> str:
        return replica_name(self.role, self.index)

    def __str__(self) -> str:
        return f"[{self.replica}] {self.text}"


@dataclass
class Deleted:
    """What ``cancel`` left: where the kept outputs and claims are, and what ``purge_outputs`` removed."""

    kept: list[str] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)


def make_handle(backend: str, namespace: str, name: str) -> str:
    """``kubernetes://default/whisper-ft``: what ``schedule`` returns and the CLI prints."""
    return f"{backend}://{namespace}/{name}"


def parse_handle(handle: str) -> tuple[str, str, str]:
    """Split a handle into (backend, namespace, name); raise UserError naming the expected form."""
    backend, sep, rest = handle.partition("://")
    namespace, slash, name = rest.partition("/")
    if not sep or not slash or not backend or not namespace or not name or "/" in name:
        raise UserError(f"job handle {handle!r} is not of the form backend://namespace/name")
    return backend, namespace, name


class Scheduler(ABC):
    """A place where a rendered job runs. Subclasses set ``name`` and implement the abstract methods.

    Constructors take the namespace and any client they need as keyword arguments, so tests inject fakes
    and the CLI builds them through :func:`whisper_k8s.backends.get_scheduler`.
    """

    name: str = ""

    def __init__(self, namespace: str = "default") -> None:
        self.namespace = namespace

    @abstractmethod
    def dryrun(self, request: AppRequest) -> DryRunInfo:
        """Build the exact request without side effects (no cluster call that changes anything, no writes)."""

    @abstractmethod
    def schedule(self, info: DryRunInfo) -> str:
        """Carry out a dry-run result (install/upgrade, start processes); return the job handle."""

    def place_flags(self) -> list[str]:
        """The flags a printed command needs to reach this backend's jobs beyond what ``submit`` recorded in the
        working folder (see whisper_k8s.places): none for backends whose jobs belong to that folder."""
        return []

    def submit(self, request: AppRequest) -> str:
        """Dry run then schedule, so ``--dry-run`` runs the very code that builds the real request."""
        return self.schedule(self.dryrun(request))

    @abstractmethod
    def describe(self, name: str) -> JobStatus | None:
        """The job's state, conditions and replicas, or None when no such job exists."""

    @abstractmethod
    def list(self) -> list[JobStatus]:
        """Jobs of this kit in the scheduler's namespace (found by label/state folder, never by memory)."""

    @abstractmethod
    def cancel(self, name: str, *, purge_outputs: bool = False) -> Deleted:
        """Stop and remove the job, keeping its outputs as ``helm uninstall`` keeps the chart's claims (with
        ``purge_outputs`` the outputs claim the chart created goes too; for a job deleted before, only that).
        UserError when there is no such job."""

    def deleted_job(self, name: str) -> list[str]:
        """Where the kept outputs of the deleted job ``name`` are, one line each ([] when there are none or the
        backend cannot tell)."""
        return []

    @abstractmethod
    def log_iter(
        self,
        name: str,
        *,
        follow: bool = False,
        since: float | None = None,
        role: str | None = None,
        rank: int | None = None,
    ) -> Iterator[str]:
        """Merged log lines of the job's replicas, each prefixed with the replica's name, ``[worker-0]``
        (see whisper_k8s.logs).

        ``since`` is in seconds before now; ``role``/``rank`` keep only matching replicas; with ``follow``
        the iterator keeps going across restarts and new replicas until the job ends or the caller stops.
        """

    @abstractmethod
    def fetch_outputs(self, name: str, dest: Path) -> Path:
        """Copy the job's outputs volume (checkpoints/, metrics.jsonl, processor/) to ``dest``; return it."""

    def wait(self, name: str, *, timeout: float | None = None, poll_seconds: float = 2.0) -> JobStatus:
        """Poll :meth:`describe` until the job succeeds or fails; raise ClusterError on timeout/vanishing."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.describe(name)
            if status is None:
                raise ClusterError(f"job {self.namespace}/{name} disappeared while waiting for it")
            if status.is_terminal:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise ClusterError(
                    f"job {self.namespace}/{name} is still {status.state} after {timeout:.0f}s"
                )
            time.sleep(poll_seconds)


def format_age(started: datetime | None, now: datetime | None = None) -> str:
    """kubectl-style age: ``45s``, ``12m``, ``3h``, ``2d``; ``-`` when unknown."""
    if started is None:
        return "-"
    now = now or datetime.now(timezone.utc)
    if started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    seconds = max(0, int((now - started).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """A kubectl-like left-aligned table with two spaces between columns."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [headers, *rows]]
    return "\n".join(lines)


def format_status(status: JobStatus, now: datetime | None = None) -> str:
    """The text `status NAME` prints: state, conditions, the pods table and the reasons below it."""
    lines = [f"job {status.handle}  operator {status.operator}  state {status.state}"]
    if status.conditions:
        lines.append("")
        lines.append(format_table(
            ["CONDITION", "STATUS", "REASON", "MESSAGE"],
            [[c.type, c.status, c.reason, c.message] for c in status.conditions],
        ))
    lines.append("")
    if status.pods:
        lines.append(format_table(
            ["POD", "ROLE", "RANK", "PHASE", "RESTARTS", "NODE", "AGE", "REASON"],
            [[p.name, p.role, str(p.rank), p.phase, str(p.restarts), p.node or "-",
              format_age(p.started, now), p.reason or "-"] for p in status.pods],
        ))
    else:
        lines.append("no pods yet")
    details = [f"{p.replica}: {p.message}" for p in status.pods if p.message]
    problems = status.problems + details
    if problems:
        lines.append("")
        lines.extend(f"! {problem}" for problem in problems)
    return "\n".join(lines)
