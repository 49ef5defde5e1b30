"""``logs`` on Kubernetes: the job's pods as replicas (list + watch) and each pod's log stream.

:func:`whisper_k8s.logs.merge_logs` does the merging; this module only says which replicas exist (a pod
list, then a watch of the operator's label selector while following) and how to read one (the trainer
container's log, with timestamps, following across container restarts).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from whisper_k8s.backends.kubernetes_api import Access, ClusterApi, api_message
from whisper_k8s.backends.kubernetes_jobs import job_ended
from whisper_k8s.errors import ClusterError
from whisper_k8s.logs import ReplicaRef, merge_logs, parse_timestamped
from whisper_k8s.operators import OperatorContract

WATCH_SECONDS = 60
_TERMINAL_PHASES = ("Succeeded", "Failed")


def replica_ref(contract: OperatorContract, pod: dict[str, Any]) -> ReplicaRef:
    """A pod as a log source: which replica, and which run of its trainer container (uid + restarts)."""
    replica = contract.read_pod(pod)
    containers = [c for c in (pod.get("status") or {}).get("containerStatuses") or []
                  if c.get("name") == contract.container]
    restarts = containers[0].get("restartCount", 0) if containers else 0
    state = containers[0].get("state") or {} if containers else {}
    return ReplicaRef(role=replica.role, index=replica.index, rank=replica.node_rank, name=pod["metadata"]["name"],
                      instance=f"{pod['metadata'].get('uid', '')}/{restarts}",
                      ready="running" in state or "terminated" in state)


def _list(api: ClusterApi, contract: OperatorContract, name: str) -> dict[str, Any]:
    return api.call(Access("", "pods", "list"), api.core().list_namespaced_pod, api.namespace,
                    label_selector=contract.pod_selector(name))


def _pod_events(api: ClusterApi, contract: OperatorContract, name: str,
                resource_version: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    access = Access("", "pods", "watch")
    response = api.call(access, api.core().list_namespaced_pod, api.namespace,
                        label_selector=contract.pod_selector(name), watch=True, resource_version=resource_version,
                        timeout_seconds=WATCH_SECONDS, raw=True, _request_timeout=(5, WATCH_SECONDS + 10))
    for raw in api.lines(access, response):
        if not raw.strip():
            continue
        event = json.loads(raw)
        if event.get("type") == "ERROR":  # e.g. 410 Gone: the caller re-lists
            return
        yield event["type"], event["object"]


def watch_replicas(api: ClusterApi, contract: OperatorContract, name: str) -> Iterator[list[ReplicaRef]]:
    """Snapshots of the job's pods from list + watch, until the job has ended (or is gone)."""
    while True:
        listing = _list(api, contract, name)
        pods = {p["metadata"]["name"]: p for p in listing.get("items", [])}
        yield [replica_ref(contract, p) for p in pods.values()]
        for event_type, pod in _pod_events(api, contract, name, listing["metadata"].get("resourceVersion")):
            if event_type == "DELETED":
                pods.pop(pod["metadata"]["name"], None)
            else:
                pods[pod["metadata"]["name"]] = pod
            yield [replica_ref(contract, p) for p in pods.values()]
            if pods and all((p.get("status") or {}).get("phase") in _TERMINAL_PHASES for p in pods.values()):
                break  # every pod has stopped: ask the job whether that was the end
        if job_ended(api, contract, name):
            return


def log_lines(api: ClusterApi, contract: OperatorContract, replica: ReplicaRef, follow: bool,
              since: float | None) -> Iterator[tuple[datetime | None, str]]:
    """One pod's trainer log; a log the kubelet cannot serve becomes one ``(no log: ...)`` line."""
    from kubernetes.client.exceptions import ApiException

    access = Access("", "pods/log", "get", replica.name)
    options: dict[str, Any] = {"container": contract.container, "timestamps": True}
    if follow:
        options.update(follow=True, _request_timeout=None)  # a quiet trainer must not end the follow
    if since is not None:
        options["since_seconds"] = max(1, int(since))
    try:
        response = api.call(access, api.core().read_namespaced_pod_log, replica.name, api.namespace, raw=True,
                            **options)
    except ClusterError as error:  # the API's answers about this one pod's log become a line
        answer = error.__cause__
        if not isinstance(answer, ApiException) or answer.status in (401, 403):
            raise
        yield None, f"(no log: {answer.status} {answer.reason}: {api_message(answer.body)})"
        return
    for raw in api.lines(access, response):
        yield parse_timestamped(raw.decode("utf-8", errors="replace").rstrip("\r\n"))


def log_iter(api: ClusterApi, contract: OperatorContract, name: str, *, follow: bool, since: float | None,
             role: str | None, rank: int | None) -> Iterator[str]:
    snapshots = watch_replicas(api, contract, name) if follow else iter([[
        replica_ref(contract, pod) for pod in _list(api, contract, name).get("items", [])]])

    def open_stream(replica: ReplicaRef, following: bool) -> Iterator[tuple[datetime | None, str]]:
        return log_lines(api, contract, replica, following, since)

    for line in merge_logs(snapshots, open_stream, follow=follow, role=role, rank=rank):
        yield str(line)
