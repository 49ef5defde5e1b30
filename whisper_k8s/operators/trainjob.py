"""Kubeflow Trainer v2.3 (TrainJob, ``trainer.kubeflow.org/v1alpha1``): how a TrainJob becomes pods.

The rules (see ``tests/fixtures/reference/README.md``, section Trainer v2):

* A TrainJob names a runtime (``spec.runtimeRef``); the runtime's template is a JobSet whose replicated job
  ``node`` has a container ``node``. ``spec.trainer`` overrides that container's ``image``, ``command``,
  ``args``, ``env`` (merged by name) and resources (``resourcesPerNode``), and the number of nodes.
* Each node is one pod of an Indexed Job: the JobSet's job ``<job>-node-0`` runs pods with host names
  ``<job>-node-0-<index>`` in the subdomain ``<job>`` (the pods' own names add a random suffix).
* The torch plugin appends to the ``node`` container: ``PET_NNODES`` (numNodes), ``PET_NPROC_PER_NODE``
  (numProcPerNode; unset: the count of a resource whose name contains "gpu", else the CPU count),
  ``PET_NODE_RANK`` (the pod's ``batch.kubernetes.io/job-completion-index``), ``PET_MASTER_ADDR``
  (``<job>-node-0-0.<job>``) and ``PET_MASTER_PORT`` (29500). A TrainJob that sets one of these five in
  ``trainer.env`` is rejected.
* Restarts are the JobSet's (``failurePolicy``, JobSet API: "a restart is achieved by recreating all active
  child jobs"): when a node fails, every node is stopped and recreated, up to ``failurePolicy.maxRestarts``
  times (none when unset), then the job fails. The job succeeds when every node has succeeded.
* Conditions ``Complete``, ``Failed``, ``Suspended``; no Running condition: a job whose child Jobs have
  active or ready pods is running.

Not modelled: ``runtimePatches`` (refused; the chart renders a runtime of its own instead), runtimes other
than a ``TrainingRuntime`` rendered beside the TrainJob, and the Indexed Job's own in-place pod restarts
(counted against the child Job's ``backoffLimit`` before the JobSet restarts everything).
"""

from __future__ import annotations

import copy
import math
import re
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
)

ROLE = "node"
CONTAINER = "node"
RUNTIME_KIND = "TrainingRuntime"
RUNTIME_PLURAL = "trainingruntimes"
MASTER_PORT = 29500
RESERVED_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def host_name(job: str, index: int) -> str:
    """``<job>-node-0-<index>``: the node pod's host name (its pod name adds a random suffix)."""
    return f"{job}-{ROLE}-0-{index}"


def master_address(job: str) -> str:
    return f"{host_name(job, 0)}.{job}"


def _quantity(value: Any) -> float:
    """A Kubernetes quantity of CPUs or devices as a number (``"4"``, ``8``, ``"500m"``)."""
    text = str(value)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m?)", text)
    if not match:
        raise UserError(f"resource quantity {text!r} is not a number of CPUs or devices")
    return float(match.group(1)) / (1000 if match.group(2) else 1)


def procs_per_node(explicit: Any, resources: Mapping[str, Any]) -> str:
    """numProcPerNode, else a "gpu" resource's count, else the CPU count (the reason Ascend needs it set)."""
    if explicit is not None:
        return str(explicit)
    amounts = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
    for name, value in amounts.items():
        if "gpu" in name:
            return str(int(_quantity(value)))
    if "cpu" in amounts:
        return str(max(1, math.ceil(_quantity(amounts["cpu"]))))
    return "1"


def injected_env(job: str, index: int, nodes: int, nproc: str) -> dict[str, str]:
    """What the torch plugin appends to the ``node`` container, in its order."""
    return {
        "PET_NNODES": str(nodes),
        "PET_NPROC_PER_NODE": nproc,
        "PET_NODE_RANK": str(index),
        "PET_MASTER_ADDR": master_address(job),
        "PET_MASTER_PORT": str(MASTER_PORT),
    }


def merge_env(base: list[dict[str, Any]], override: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runtime container's env with the TrainJob's entries replacing same-named ones, then appended."""
    names = {entry["name"] for entry in override}
    return [entry for entry in base if entry["name"] not in names] + list(override)


class TrainJobContract(OperatorContract):
    name = "trainjob"
    kind = "TrainJob"
    group, version, plural = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
    runtime_plural = RUNTIME_PLURAL
    crd = "trainjobs.trainer.kubeflow.org"
    install_hint = (
        "install Kubeflow Trainer (v2.3): kubectl apply --server-side "
        '-k "github.com/kubeflow/trainer.git/manifests/overlays/manager?ref=v2.3.0" '
        "(or helm install kubeflow-trainer oci://ghcr.io/kubeflow/charts/kubeflow-trainer --version 2.3.0 "
        "--namespace kubeflow-system --create-namespace); the chart brings its own TrainingRuntime"
    )
    container = CONTAINER
    roles = (ROLE,)
    master_address_variables = ("PET_MASTER_ADDR",)
    master_port_variables = ("PET_MASTER_PORT",)
    injected_variables = RESERVED_ENV
    final_states = {"Failed": JobState.FAILED, "Complete": JobState.SUCCEEDED, "Suspended": JobState.SUSPENDED}

    def runtime(self, documents: list[dict[str, Any]], trainjob: dict[str, Any]) -> dict[str, Any]:
        """The TrainingRuntime the TrainJob references, from the same rendered documents."""
        ref = trainjob.get("spec", {}).get("runtimeRef") or {}
        kind = ref.get("kind", "ClusterTrainingRuntime")  # the API's default kind
        for doc in documents:
            if kind == RUNTIME_KIND and doc and doc.get("kind") == kind \
                    and doc.get("metadata", {}).get("name") == ref.get("name"):
                return doc
        raise UserError(f"TrainJob {trainjob['metadata']['name']}: spec.runtimeRef names {kind} "
                        f"{ref.get('name')!r}, which is not among the rendered documents (only a "
                        "TrainingRuntime rendered with the job can be run here)")

    def read_job(self, documents: list[dict[str, Any]]) -> OperatorJob:
        trainjob = self.job_document(documents)
        metadata = trainjob.get("metadata") or {}
        job = metadata.get("name") or ""
        spec = trainjob.get("spec") or {}
        trainer = spec.get("trainer") or {}
        if spec.get("runtimePatches"):
            raise UserError(f"TrainJob {job}: spec.runtimePatches is not supported here; put pod settings in "
                            "the TrainingRuntime")
        reserved = sorted({e["name"] for e in trainer.get("env") or []} & set(RESERVED_ENV))
        if reserved:
            raise UserError(f"TrainJob {job}: spec.trainer.env sets {', '.join(reserved)}, which the trainer "
                            "reserves (it rejects such a TrainJob): remove them")
        runtime_spec = self.runtime(documents, trainjob)["spec"]
        replicated = [r for r in runtime_spec["template"]["spec"].get("replicatedJobs") or []
                      if r.get("name") == ROLE]
        if not replicated:
            raise UserError(f"the runtime of TrainJob {job} has no replicated job named {ROLE!r}")
        policy = runtime_spec.get("mlPolicy") or {}
        nodes = int_field(trainer.get("numNodes", policy.get("numNodes")), "spec.trainer.numNodes", default=1,
                          minimum=1)
        template = self._pod_template(replicated[0]["template"]["spec"]["template"], trainer, job)
        container = next(c for c in template["spec"]["containers"] if c["name"] == CONTAINER)
        nproc = procs_per_node(trainer.get("numProcPerNode", (policy.get("torch") or {}).get("numProcPerNode")),
                               container.get("resources") or {})
        failure = runtime_spec["template"]["spec"].get("failurePolicy") or {}
        replicas = [
            Replica(role=ROLE, index=index, node_rank=index, pod_name=host_name(job, index), template=template,
                    container=CONTAINER, env=injected_env(job, index, nodes, nproc),
                    labels=self._labels(template, job, index),
                    restart_policy=template["spec"].get("restartPolicy", "OnFailure"))
            for index in range(nodes)
        ]
        return OperatorJob(
            operator=self.name, name=job, namespace=metadata.get("namespace") or "default", replicas=replicas,
            master_host=master_address(job), master_port=MASTER_PORT,
            restart=RestartRule(
                scope=RestartRule.WHOLE_JOB,
                limit=int_field(failure.get("maxRestarts"), "failurePolicy.maxRestarts", default=0),
                source="JobSet failurePolicy: a failed node recreates every node, up to maxRestarts times"),
            document=trainjob,
        )

    @staticmethod
    def _pod_template(runtime_template: dict[str, Any], trainer: dict[str, Any], job: str) -> dict[str, Any]:
        """The runtime's pod template with the TrainJob's ``spec.trainer`` overrides applied."""
        template = copy.deepcopy(runtime_template)
        containers = template.get("spec", {}).get("containers") or []
        node = next((c for c in containers if c.get("name") == CONTAINER), None)
        if node is None:
            raise UserError(f"the runtime of TrainJob {job} has no container named {CONTAINER!r}")
        for key in ("image", "command", "args"):
            if trainer.get(key):
                node[key] = trainer[key]
        if trainer.get("env"):
            node["env"] = merge_env(node.get("env") or [], trainer["env"])
        if trainer.get("resourcesPerNode"):
            node["resources"] = trainer["resourcesPerNode"]
        return template

    @staticmethod
    def _labels(template: dict[str, Any], job: str, index: int) -> dict[str, str]:
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        labels.update({JOBSET_NAME_LABEL: job, REPLICATED_JOB_LABEL: ROLE, COMPLETION_INDEX: str(index)})
        return labels

    def succeeded(self, phases: Mapping[str, str]) -> bool:
        """The JobSet's default success policy: every node has succeeded."""
        return bool(phases) and all(phase == SUCCEEDED for phase in phases.values())

    def pod_selector(self, job: str) -> str:
        return f"{JOBSET_NAME_LABEL}={job},{REPLICATED_JOB_LABEL}={ROLE}"

    def read_pod(self, pod: dict[str, Any]) -> ReplicaId:
        """The completion index (a label since Kubernetes 1.28, an annotation always) is index and node rank."""
        metadata = pod.get("metadata") or {}
        index = int((metadata.get("labels") or {}).get(COMPLETION_INDEX)
                    or (metadata.get("annotations") or {}).get(COMPLETION_INDEX, "0"))
        return ReplicaId(role=ROLE, index=index, node_rank=index)

    def nodes(self, job: dict[str, Any]) -> int | None:
        return ((job.get("spec") or {}).get("trainer") or {}).get("numNodes")

    def runtime_name(self, job: dict[str, Any]) -> str | None:
        ref = (job.get("spec") or {}).get("runtimeRef") or {}
        return ref.get("name") if ref.get("kind") == RUNTIME_KIND else None

    def unfinished_state(self, job: dict[str, Any]) -> str:
        children = (job.get("status") or {}).get("jobsStatus") or []
        return JobState.RUNNING if any(c.get("active") or c.get("ready") for c in children) else JobState.PENDING
