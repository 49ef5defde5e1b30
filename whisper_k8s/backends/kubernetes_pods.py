"""A job's state and its pods as ``status`` shows them: conditions, each replica's phase, and why it is stuck.

The operator contract says which pods belong to a job (its label selector) and which replica each pod is
(role, index, node rank from the pod's labels); this module reads them with the job's events, and
:mod:`kubernetes_hints` turns the common ways a replica gets stuck into a fix.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from whisper_k8s.backends.base import JobCondition, JobStatus, PodStatus
from whisper_k8s.backends.kubernetes_api import Access, ClusterApi
from whisper_k8s.backends.kubernetes_hints import pod_fixes
from whisper_k8s.operators import OperatorContract

_STARTING = (None, "ContainerCreating", "PodInitializing")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def job_conditions(job: dict[str, Any]) -> list[JobCondition]:
    """The ``status.conditions`` of a job object (every operator's job uses the metav1 shape)."""
    return [JobCondition(type=c.get("type", ""), status=c.get("status", ""), reason=c.get("reason", ""),
                         message=c.get("message", ""), last_transition=parse_time(c.get("lastTransitionTime")))
            for c in (job.get("status") or {}).get("conditions") or []]


def job_status(contract: OperatorContract, job: dict[str, Any], namespace: str) -> JobStatus:
    """A job object as ``status``/``list`` report it (without its pods)."""
    metadata = job.get("metadata") or {}
    return JobStatus(name=metadata.get("name", ""), namespace=namespace, backend="kubernetes",
                     state=contract.state(job), conditions=job_conditions(job),
                     created=parse_time(metadata.get("creationTimestamp")), operator=contract.name,
                     nodes=contract.nodes(job))


def list_pods(api: ClusterApi, contract: OperatorContract, name: str) -> list[dict[str, Any]]:
    """The job's pods, found by the operator's labels, in node-rank order."""
    pods = api.call(Access("", "pods", "list"), api.core().list_namespaced_pod, api.namespace,
                    label_selector=contract.pod_selector(name)).get("items", [])
    return sorted(pods, key=lambda pod: contract.read_pod(pod).node_rank)


def warning_events(api: ClusterApi, pod_name: str) -> list[dict[str, Any]]:
    events = api.call(Access("", "events", "list"), api.core().list_namespaced_event, api.namespace,
                      field_selector=f"involvedObject.name={pod_name}").get("items", [])
    warnings = [e for e in events if e.get("type") == "Warning"]
    # events.k8s.io events have null lastTimestamp and carry eventTime instead
    return sorted(warnings, key=lambda e: e.get("lastTimestamp") or e.get("eventTime")
                  or e["metadata"].get("creationTimestamp") or "")


def pod_trouble(api: ClusterApi, pod: dict[str, Any]) -> tuple[str, str]:
    """Why a pod is not running: a waiting/failed container, else the scheduler's latest warning."""
    state = pod.get("status") or {}
    for container in (state.get("initContainerStatuses") or []) + (state.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in _STARTING:
            return waiting["reason"], waiting.get("message", "")
        terminated = (container.get("state") or {}).get("terminated")
        if terminated and terminated.get("exitCode", 0) != 0:
            return (terminated.get("reason", "Error"),
                    f"container {container.get('name')} exited with code {terminated.get('exitCode')}")
    if state.get("phase") != "Pending":
        return "", ""
    events = warning_events(api, pod["metadata"]["name"])
    if events:
        return events[-1].get("reason", ""), events[-1].get("message", "")
    unscheduled = [c for c in state.get("conditions") or []
                   if c.get("type") == "PodScheduled" and c.get("status") == "False"]
    if unscheduled:
        return unscheduled[0].get("reason", ""), unscheduled[0].get("message", "")
    return "", ""


def pod_status(api: ClusterApi, contract: OperatorContract, pod: dict[str, Any]) -> PodStatus:
    replica = contract.read_pod(pod)
    metadata, spec, state = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    phase = "Terminating" if metadata.get("deletionTimestamp") else state.get("phase", "Unknown")
    reason, message = pod_trouble(api, pod)
    return PodStatus(name=metadata.get("name", ""), role=replica.role, index=replica.index, rank=replica.node_rank,
                     phase=phase, restarts=sum(c.get("restartCount", 0) for c in state.get("containerStatuses") or []),
                     node=spec.get("nodeName", ""),
                     started=parse_time(state.get("startTime") or metadata.get("creationTimestamp")),
                     reason=reason, message=message)


def describe(api: ClusterApi, contract: OperatorContract, job: dict[str, Any]) -> JobStatus:
    """The job with its pods and the fixes worth showing."""
    status = job_status(contract, job, api.namespace)
    pods = list_pods(api, contract, status.name)
    status.pods = [pod_status(api, contract, pod) for pod in pods]
    status.problems = [fix for seen, pod in zip(status.pods, pods, strict=True)
                       for fix in pod_fixes(seen, pod, status.name, api.namespace, api.flags)]
    return status
