"""The operator contract: what a training operator turns a rendered job document into.

A Kubernetes training operator reads one job object (a PyTorchJob, a TrainJob) and creates pods from it: it
names them, labels them, gives each a node rank, and appends a fixed set of environment variables to their
containers. Everything that reproduces the job outside a cluster (the local backend, the docker backend) and
everything that finds its pods again (status, logs) needs exactly those rules, so they live here, once per
operator, and tests compare them with the facts in ``tests/fixtures/reference/README.md``.

An operator module implements :class:`OperatorContract`; :func:`get_contract` picks one by the name used in
chart values and requests (``pytorchjob``, later ``trainjob``). A contract only *describes*: it never maps
addresses or ports to local ones (the backend does that) and never starts anything.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from whisper_k8s.errors import UserError

# operator name -> (module, class); imported lazily like the backends.
CONTRACTS: dict[str, tuple[str, str]] = {
    "pytorchjob": ("whisper_k8s.operators.pytorchjob", "PyTorchJobContract"),
    "trainjob": ("whisper_k8s.operators.trainjob", "TrainJobContract"),
}

# Pod phases of one replica as the operator's success policies see them.
SUCCEEDED = "Succeeded"
FAILED = "Failed"
RUNNING = "Running"


@dataclass(frozen=True)
class Replica:
    """One pod the operator creates for the job.

    ``role`` is the lower-case replica type (``master``/``worker`` for PyTorchJob, ``node`` for TrainJob),
    ``index`` its index within that type (the pod name's suffix), ``node_rank`` its rank among all pods
    (what torchrun gets as ``--node_rank``). ``template`` is the pod template (metadata + spec) the pod is
    built from, ``container`` the name of the container that runs the trainer, ``env`` the variables the
    operator appends to every container of the pod, in the operator's order, and ``labels`` the pod's labels.
    """

    role: str
    index: int
    node_rank: int
    pod_name: str
    template: dict[str, Any]
    container: str
    env: dict[str, str]
    labels: dict[str, str]
    restart_policy: str = "OnFailure"

    @property
    def label(self) -> str:
        """``master-0``, ``worker-1``: the pod name without the job name, used as the log prefix."""
        return f"{self.role}-{self.index}"

    @property
    def pod_spec(self) -> dict[str, Any]:
        return self.template.get("spec") or {}


@dataclass(frozen=True)
class OperatorJob:
    """A job document read through its operator's contract: every pod it becomes, and the run policy."""

    operator: str
    name: str
    namespace: str
    replicas: list[Replica]
    master_host: str
    master_port: int
    backoff_limit: int | None = None
    document: dict[str, Any] = field(default_factory=dict)

    def replica(self, label: str) -> Replica:
        for replica in self.replicas:
            if replica.label == label:
                return replica
        raise KeyError(label)


class OperatorContract(ABC):
    """The rules of one operator. Subclasses set the class attributes and implement the two methods."""

    name: str = ""  # the operator's name in values and requests: "pytorchjob"
    kind: str = ""  # the job document's kind: "PyTorchJob"
    api_version: str = ""
    # Variables whose value is the master's host name / port (a local run maps them to 127.0.0.1 / a free port).
    master_address_variables: tuple[str, ...] = ()
    master_port_variables: tuple[str, ...] = ()
    # Label that selects every pod of a job (value = job name).
    job_name_label: str = ""

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
        """Whether the job has succeeded, given each replica's phase by label (``master-0`` -> Succeeded)."""


def get_contract(operator: str) -> OperatorContract:
    """The contract of ``operator`` (``pytorchjob`` or ``trainjob``); UserError names the known ones."""
    try:
        module_name, class_name = CONTRACTS[operator]
    except KeyError:
        raise UserError(f"unknown operator {operator!r}: use one of {', '.join(CONTRACTS)}") from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        raise UserError(f"the {operator} operator contract is not implemented yet") from None
    return getattr(module, class_name)()


def int_field(value: Any, where: str, *, default: int | None = None, minimum: int = 0) -> int:
    """An integer field of a job document, refusing strings like the API server does (named by path)."""
    if value is None:
        if default is None:
            raise UserError(f"{where} is missing: set it to an integer")
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return value
