"""The operator contract: everything the kit knows about one training operator, in one class.

A Kubernetes training operator reads one job object (a PyTorchJob, a TrainJob) and creates pods from it: it
names them, labels them, gives each a node rank, appends a fixed set of environment variables to their
containers, restarts them by its own rule and reports the job's state in conditions. The local and docker
backends reproduce a job from those rules; the Kubernetes backend uses them to find a job, its pods and their
ranks again and to read its state. So each operator's rules live here, once, in one
:class:`OperatorContract` subclass per module, and tests compare them with the facts in
``tests/fixtures/reference/README.md``.

Adding an operator is one module here (a subclass, registered in :data:`CONTRACTS`) plus its chart template.
A contract only *describes*: it never maps addresses or ports to local ones (the backends do) and never
starts anything or calls a cluster.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from whisper_k8s.errors import UserError

# operator name (chart value `operator`, `--operator`) -> (module, class), in the order a job is looked up.
CONTRACTS: dict[str, tuple[str, str]] = {
    "pytorchjob": ("whisper_k8s.operators.pytorchjob", "PyTorchJobContract"),
    "trainjob": ("whisper_k8s.operators.trainjob", "TrainJobContract"),
}
DEFAULT_OPERATOR = "pytorchjob"  # the chart's default


class JobState:
    """The coarse job states every operator's conditions (and every backend's processes) map onto."""

    PENDING = "Pending"  # accepted, no replica running yet (scheduling, image pull, init containers)
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    UNKNOWN = "Unknown"

    TERMINAL = (SUCCEEDED, FAILED)


# Phases of one replica (a pod's phase) as the operators' success and restart rules see them.
SUCCEEDED = JobState.SUCCEEDED
FAILED = JobState.FAILED
RUNNING = JobState.RUNNING


def replica_name(role: str, index: int) -> str:
    """``master-0``, ``worker-3``, ``node-1``: the one name of a replica everywhere (its pod name after the
    job name, its log prefix, its log file, its status lines). The node rank is shown beside it, never in it."""
    return f"{role}-{index}"


@dataclass(frozen=True)
class ReplicaId:
    """Which replica a pod is: its role (``master``/``worker``/``node``), its index within the role (the pod
    name's number) and its node rank among all pods (what torchrun gets as ``--node_rank``)."""

    role: str
    index: int
    node_rank: int

    @property
    def name(self) -> str:
        return replica_name(self.role, self.index)


@dataclass(frozen=True)
class Replica(ReplicaId):
    """One pod the operator creates for a rendered job.

    ``template`` is the pod template (metadata + spec) the pod is built from, ``container`` the name of the
    container that runs the trainer, ``env`` the variables the operator appends to that container, in the
    operator's order, ``labels`` the pod's labels and ``restart_policy`` the pod's restart policy.
    """

    pod_name: str
    template: dict[str, Any]
    container: str
    env: dict[str, str]
    labels: dict[str, str]
    restart_policy: str = "OnFailure"

    @property
    def pod_spec(self) -> dict[str, Any]:
        return self.template.get("spec") or {}


# The kubelet's delay before it restarts a crashed container in place (Kubernetes documentation, "Pod
# lifecycle", container restarts; KEP-4603): 10 s, doubling with each crash, at most 5 minutes; the count
# starts again once a container has run for 10 minutes.
CRASH_LOOP_BACKOFF_SECONDS = (10.0, 300.0)
CRASH_LOOP_RESET_SECONDS = 600.0


@dataclass(frozen=True)
class RestartRule:
    """How the operator restarts a failed replica, and when it gives up (the job then fails).

    ``scope`` :data:`IN_PLACE`: only the failed replica's container restarts (the kubelet does it, after
    :meth:`delay`), the others keep running; :data:`WHOLE_JOB`: every replica is stopped and recreated at once.
    ``limit`` counts restarts (None: no limit); ``limit_reached`` applies the operator's own comparison.
    """

    IN_PLACE = "in-place"
    WHOLE_JOB = "whole-job"

    scope: str
    limit: int | None
    # True: the limit is reached when the count equals it (PyTorchJob); False: when it exceeds it (JobSet).
    inclusive: bool = False
    source: str = ""  # where the rule comes from, printed with the plan

    def limit_reached(self, restarts: int) -> bool:
        if self.limit is None:
            return False
        if self.inclusive:
            return restarts >= self.limit if self.limit > 0 else restarts > 0
        return restarts > self.limit

    def delay(self, crashes: int) -> float:
        """Seconds before a replica that crashed ``crashes`` times in a row starts again (in place: the
        kubelet's crash-loop back-off; a recreated job's new pods start at once)."""
        if self.scope != self.IN_PLACE:
            return 0.0
        first, most = CRASH_LOOP_BACKOFF_SECONDS
        return min(most, first * 2 ** max(0, crashes - 1))


@dataclass(frozen=True)
class OperatorJob:
    """A rendered job document read through its operator's contract: every pod it becomes and how they restart."""

    operator: str
    name: str
    namespace: str
    replicas: list[Replica]
    master_host: str
    master_port: int
    restart: RestartRule
    document: dict[str, Any] = field(default_factory=dict)

    def replica(self, name: str) -> Replica:
        for replica in self.replicas:
            if replica.name == name:
                return replica
        raise KeyError(name)


class OperatorContract(ABC):
    """The rules of one operator. Subclasses set the class attributes and implement the abstract methods."""

    name: str = ""  # the operator's name in values and requests: "pytorchjob"
    kind: str = ""  # the job object's kind: "PyTorchJob"
    group: str = ""  # its API group, version and resource (plural)
    version: str = ""
    plural: str = ""
    runtime_plural: str = ""  # the resource a job object refers to for its pods (TrainJob: trainingruntimes)
    crd: str = ""  # the CustomResourceDefinition that serves it
    install_hint: str = ""  # how to install the operator, for "not served" errors
    container: str = ""  # the container that runs the trainer
    roles: tuple[str, ...] = ()  # replica roles, lower case
    # Variables whose value is the master's host name / port (a local run maps them to 127.0.0.1 / a free port).
    master_address_variables: tuple[str, ...] = ()
    master_port_variables: tuple[str, ...] = ()
    injected_variables: tuple[str, ...] = ()  # every variable the operator may append
    # condition type -> job state, most final first: the first condition that is True decides.
    final_states: dict[str, str] = {}

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    # ---------------------------------------------------------------------------- rendered documents
    def job_document(self, documents: list[dict[str, Any]]) -> dict[str, Any]:
        """The one document of this operator's kind among those the chart rendered."""
        found = [doc for doc in documents if doc and doc.get("kind") == self.kind]
        if len(found) != 1:
            kinds = sorted({str(doc.get("kind")) for doc in documents if doc})
            raise UserError(
                f"expected exactly one {self.kind} among the rendered documents, found {len(found)} "
                f"(kinds: {', '.join(kinds) or 'none'}): check the chart's `operator` value"
            )
        return found[0]

    @abstractmethod
    def read_job(self, documents: list[dict[str, Any]]) -> OperatorJob:
        """Every pod the operator would create for the rendered documents, with names, ranks, env, labels."""

    @abstractmethod
    def succeeded(self, phases: Mapping[str, str]) -> bool:
        """Whether the job has succeeded, given each replica's phase by name (``master-0`` -> Succeeded)."""

    def restartable(self, restart_policy: str, exit_code: int) -> bool:
        """Whether a replica that exited with ``exit_code`` is restarted under its pod's restart policy."""
        if restart_policy in ("OnFailure", "Always"):
            return True
        return restart_policy == "ExitCode" and exit_code >= 128

    # ---------------------------------------------------------------------------- live objects
    @abstractmethod
    def pod_selector(self, job: str) -> str:
        """The label selector of every pod of job ``job``."""

    @abstractmethod
    def read_pod(self, pod: dict[str, Any]) -> ReplicaId:
        """Role, index and node rank of a live pod of the job, from its labels (and annotations)."""

    @abstractmethod
    def nodes(self, job: dict[str, Any]) -> int | None:
        """The number of nodes (pods) a job object asks for."""

    def runtime_name(self, job: dict[str, Any]) -> str | None:
        """The namespaced runtime object the job runs on (None: the job object is complete by itself)."""
        return None

    def state(self, job: dict[str, Any]) -> str:
        """The job object's state from its ``status.conditions`` (see :attr:`final_states`)."""
        conditions = (job.get("status") or {}).get("conditions") or []
        true_types = {c.get("type") for c in conditions if c.get("status") == "True"}
        for condition_type, state in self.final_states.items():
            if condition_type in true_types:
                return state
        return self.unfinished_state(job)

    def unfinished_state(self, job: dict[str, Any]) -> str:
        return JobState.PENDING


def get_contract(operator: str) -> OperatorContract:
    """The contract of ``operator`` (a key of :data:`CONTRACTS`); UserError names the known ones."""
    try:
        module_name, class_name = CONTRACTS[operator]
    except KeyError:
        raise UserError(f"unknown operator {operator!r}: use one of {', '.join(CONTRACTS)}") from None
    return getattr(importlib.import_module(module_name), class_name)()


def all_contracts() -> list[OperatorContract]:
    """Every operator's contract, in lookup order."""
    return [get_contract(name) for name in CONTRACTS]


def all_roles() -> tuple[str, ...]:
    """Every replica role of every operator (for ``logs --role``)."""
    return tuple(dict.fromkeys(role for contract in all_contracts() for role in contract.roles))


def all_injected_variables() -> tuple[str, ...]:
    """Every variable some operator injects (a local replica must not inherit them from this machine)."""
    return tuple(dict.fromkeys(v for contract in all_contracts() for v in contract.injected_variables))


def int_field(value: Any, where: str, *, default: int | None = None, minimum: int = 0) -> int:
    """An integer field of a job document, refusing strings like the API server does (named by path)."""
    if value is None:
        if default is None:
            raise UserError(f"{where} is missing: set it to an integer")
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return value
