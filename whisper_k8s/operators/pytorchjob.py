"""Kubeflow training-operator v1.9 (PyTorchJob, ``kubeflow.org/v1``): how it turns the job into pods.

The rules, from the operator's defaulting and ``pkg/controller.v1/pytorch/envvar.go`` (see
``tests/fixtures/reference/README.md``):

* Replica types ``Master`` (exactly one) and ``Worker``; ``replicas`` defaults to 1, ``restartPolicy`` to
  ``OnFailure``, ``nprocPerNode`` to ``auto``. Pods are named ``<job>-master-0`` and ``<job>-worker-<i>``.
* The node rank is the pod index: master 0, worker ``i`` -> ``i + 1``.
* The master port is the container port named ``pytorchjob-port`` of the master's ``pytorch`` container
  (the operator adds it with 23456 when absent); the master address is the master pod's name (a headless
  service the operator creates).
* Appended to every container of every pod, in this order: ``PYTHONUNBUFFERED=0``; when there is a master:
  ``MASTER_PORT``, ``MASTER_ADDR``, ``PET_MASTER_PORT``, ``PET_MASTER_ADDR``, ``WORLD_SIZE`` (replicas x
  nprocPerNode, x 1 when nprocPerNode is not an integer), ``RANK`` and ``PET_NODE_RANK`` (both the node
  rank), ``PET_NPROC_PER_NODE`` (verbatim); then ``PET_NNODES`` (total replicas).
* The job succeeds when the master succeeds (the default success policy).
* Restarts (``pkg/controller.v1/common/pod.go``, ``pkg/core/job.go`` ``PastBackoffLimit``): the pod gets the
  replica's ``restartPolicy``, so with ``OnFailure`` the kubelet restarts a failed pod's container in place
  and the other pods keep running; the operator fails the job once the restart counts of its running pods
  add up to ``runPolicy.backoffLimit`` (any restart when it is 0; never when it is unset). With ``ExitCode``
  a failed pod is deleted and recreated when its exit code is 128 or more (a signal), else the job fails.
* Conditions ``Created``, ``Running``, ``Restarting``, ``Succeeded``, ``Failed``, ``Suspended``.

Not modelled: ``elasticPolicy`` (refused, the chart does not render it), the DNS-wait init container the
operator adds to workers (meaningless where the master address is known) and the kubelet's growing delay
between restarts of one container (10 s, doubling).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from whisper_k8s.errors import UserError
from whisper_k8s.operators.base import (
    SUCCEEDED,
    JobState,
    OperatorContract,
    OperatorJob,
    Replica,
    ReplicaId,
    RestartRule,
    int_field,
    replica_name,
)

MASTER = "Master"
WORKER = "Worker"
REPLICA_TYPES = (MASTER, WORKER)
CONTAINER = "pytorch"
PORT_NAME = "pytorchjob-port"
DEFAULT_PORT = 23456
DEFAULT_NPROC_PER_NODE = "auto"
DEFAULT_RESTART_POLICY = "OnFailure"
OPERATOR_NAME = "pytorchjob-controller"
LABEL_PREFIX = "training.kubeflow.org/"
JOB_NAME_LABEL = LABEL_PREFIX + "job-name"
REPLICA_TYPE_LABEL = LABEL_PREFIX + "replica-type"
REPLICA_INDEX_LABEL = LABEL_PREFIX + "replica-index"
JOB_ROLE_LABEL = LABEL_PREFIX + "job-role"
OPERATOR_NAME_LABEL = LABEL_PREFIX + "operator-name"


def pod_name(job: str, replica_type: str, index: int) -> str:
    """``<job>-master-0``, ``<job>-worker-3``: the operator's pod (and service) names."""
    return f"{job}-{replica_name(replica_type.lower(), index)}"


def master_port(spec: dict[str, Any]) -> int:
    """The ``pytorchjob-port`` of the master's ``pytorch`` container (23456 when the port is absent)."""
    template = ((spec.get("pytorchReplicaSpecs") or {}).get(MASTER) or {}).get("template") or {}
    for container in (template.get("spec") or {}).get("containers") or []:
        if container.get("name") != CONTAINER:
            continue
        for port in container.get("ports") or []:
            if port.get("name") == PORT_NAME:
                return int_field(port.get("containerPort"), f"Master {CONTAINER} port {PORT_NAME}", minimum=1)
    return DEFAULT_PORT


def node_rank(role: str, index: int) -> int:
    """Master is node rank 0; worker ``i`` is node rank ``i + 1`` (the operator's RANK and PET_NODE_RANK)."""
    return index + 1 if role == WORKER.lower() else index


def world_size(total_replicas: int, nproc_per_node: str) -> int:
    """replicas x nprocPerNode, or x 1 when nprocPerNode is not an integer (``auto``, ``cpu``, ``gpu``)."""
    return total_replicas * (int(nproc_per_node) if nproc_per_node.isdigit() else 1)


def injected_env(job: str, port: int, node_rank: int, total_replicas: int, nproc_per_node: str,
                 has_master: bool = True) -> dict[str, str]:
    """The variables the operator appends to each container of a pod, in the operator's order."""
    env = {"PYTHONUNBUFFERED": "0"}
    if has_master:
        address = pod_name(job, MASTER, 0)
        env.update({
            "MASTER_PORT": str(port),
            "MASTER_ADDR": address,
            "PET_MASTER_PORT": str(port),
            "PET_MASTER_ADDR": address,
            "WORLD_SIZE": str(world_size(total_replicas, nproc_per_node)),
            "RANK": str(node_rank),
            "PET_NPROC_PER_NODE": nproc_per_node,
            "PET_NODE_RANK": str(node_rank),
        })
    env["PET_NNODES"] = str(total_replicas)
    return env


def pod_labels(template: dict[str, Any], job: str, replica_type: str, index: int) -> dict[str, str]:
    """The template's own labels plus the operator's ``training.kubeflow.org/*`` labels."""
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels.update({
        JOB_NAME_LABEL: job,
        OPERATOR_NAME_LABEL: OPERATOR_NAME,
        REPLICA_TYPE_LABEL: replica_type.lower(),
        REPLICA_INDEX_LABEL: str(index),
    })
    if replica_type == MASTER:
        labels[JOB_ROLE_LABEL] = "master"
    return labels


class PyTorchJobContract(OperatorContract):
    name = "pytorchjob"
    kind = "PyTorchJob"
    group, version, plural = "kubeflow.org", "v1", "pytorchjobs"
    crd = "pytorchjobs.kubeflow.org"
    install_hint = (
        "install the Kubeflow training operator (v1.9): kubectl apply --server-side "
        '-k "github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=v1.9.0" '
        "(the CRD is too large for a client-side apply)"
    )
    container = CONTAINER
    roles = tuple(rtype.lower() for rtype in REPLICA_TYPES)
    master_address_variables = ("MASTER_ADDR", "PET_MASTER_ADDR")
    master_port_variables = ("MASTER_PORT", "PET_MASTER_PORT")
    injected_variables = ("PYTHONUNBUFFERED", "MASTER_PORT", "MASTER_ADDR", "PET_MASTER_PORT", "PET_MASTER_ADDR",
                          "WORLD_SIZE", "RANK", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_NNODES")
    final_states = {"Failed": JobState.FAILED, "Succeeded": JobState.SUCCEEDED, "Suspended": JobState.SUSPENDED,
                    "Restarting": JobState.RUNNING, "Running": JobState.RUNNING, "Created": JobState.PENDING}

    def read_job(self, documents: list[dict[str, Any]]) -> OperatorJob:
        document = self.job_document(documents)
        metadata = document.get("metadata") or {}
        job = metadata.get("name") or ""
        if not job:
            raise UserError("the PyTorchJob has no metadata.name")
        spec = document.get("spec") or {}
        if spec.get("elasticPolicy"):
            raise UserError(f"PyTorchJob {job}: spec.elasticPolicy is not supported; remove it")
        replica_specs = spec.get("pytorchReplicaSpecs") or {}
        unknown = sorted(set(replica_specs) - set(REPLICA_TYPES))
        if unknown or MASTER not in replica_specs:
            raise UserError(
                f"PyTorchJob {job}: spec.pytorchReplicaSpecs must hold Master (and optionally Worker), "
                f"found {', '.join(sorted(replica_specs)) or 'nothing'}"
            )
        counts = {rtype: int_field(replica_specs[rtype].get("replicas"),
                                   f"spec.pytorchReplicaSpecs.{rtype}.replicas", default=1)
                  for rtype in REPLICA_TYPES if rtype in replica_specs}
        if counts[MASTER] != 1:
            raise UserError(f"PyTorchJob {job}: spec.pytorchReplicaSpecs.Master.replicas must be 1")
        total = sum(counts.values())
        nproc = str(spec.get("nprocPerNode") or DEFAULT_NPROC_PER_NODE)
        port = master_port(spec)
        replicas = []
        for rtype in REPLICA_TYPES:
            for index in range(counts.get(rtype, 0)):
                rank = node_rank(rtype.lower(), index)
                template = replica_specs[rtype].get("template") or {}
                replicas.append(Replica(
                    role=rtype.lower(),
                    index=index,
                    node_rank=rank,
                    pod_name=pod_name(job, rtype, index),
                    template=template,
                    container=CONTAINER,
                    env=injected_env(job, port, rank, total, nproc),
                    labels=pod_labels(template, job, rtype, index),
                    restart_policy=replica_specs[rtype].get("restartPolicy") or DEFAULT_RESTART_POLICY,
                ))
        backoff = (spec.get("runPolicy") or {}).get("backoffLimit")
        return OperatorJob(
            operator=self.name,
            name=job,
            namespace=metadata.get("namespace") or "default",
            replicas=replicas,
            master_host=pod_name(job, MASTER, 0),
            master_port=port,
            restart=RestartRule(
                scope=RestartRule.IN_PLACE, inclusive=True,
                limit=None if backoff is None else int_field(backoff, "spec.runPolicy.backoffLimit"),
                source="training-operator v1.9: restartPolicy OnFailure restarts the failed pod's container, "
                       "runPolicy.backoffLimit caps the sum of restarts"),
            document=document,
        )

    def succeeded(self, phases: Mapping[str, str]) -> bool:
        """The default success policy: the job is done when the master has succeeded."""
        return phases.get(replica_name("master", 0)) == SUCCEEDED

    def pod_selector(self, job: str) -> str:
        return f"{JOB_NAME_LABEL}={job}"

    def read_pod(self, pod: dict[str, Any]) -> ReplicaId:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        role = labels.get(REPLICA_TYPE_LABEL, "unknown").lower()
        index = int(labels.get(REPLICA_INDEX_LABEL, "0"))
        return ReplicaId(role=role, index=index, node_rank=node_rank(role, index))

    def nodes(self, job: dict[str, Any]) -> int | None:
        specs = (job.get("spec") or {}).get("pytorchReplicaSpecs") or {}
        return sum(int(spec.get("replicas", 1)) for spec in specs.values())
