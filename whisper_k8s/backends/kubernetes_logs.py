"""``logs`` on Kubernetes: the job's pods as replicas (list + watch) and each pod's log stream.

:func:`whisper_k8s.logs.merge_logs` does the merging; this module only says which replicas exist (a pod
list, then a watch of the operator's label selector while following) and how to read one (the trainer
container's log, with timestamps, following across container restarts; after a restart the run before it is
read too, with ``previous=true``, and the restart is marked with why that run ended).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

from whisper_k8s.backends.kubernetes_api import Access, ClusterApi, api_message
from whisper_k8s.backends.kubernetes_jobs import job_ended
from whisper_k8s.backends.kubernetes_pods import parse_time
from whisper_k8s.errors import ClusterError
from whisper_k8s.logs import ReplicaRef, ended_because, merge_logs, parse_timestamped
from whisper_k8s.operators import OperatorContract

WATCH_SECONDS = 60
_TERMINAL_PHASES = ("Succeeded", "Failed")


def replica_refs(contract: OperatorContract, pod: dict[str, Any]) -> list[ReplicaRef]:
    """A pod as log sources: its trainer container's current run (pod uid + restart count), and after a restart
    the run before it, whose log the kubelet keeps (``previous=true``; earlier runs' logs are gone)."""
    replica = contract.read_pod(pod)
    containers = [c for c in (pod.get("status") or {}).get("containerStatuses") or []
                  if c.get("name") == contract.container]
    status = containers[0] if containers else {}
    restarts, state = status.get("restartCount", 0), status.get("state") or {}
    ended = (status.get("lastState") or {}).get("terminated") or {}
    run = state.get("running") or state.get("terminated") or {}
    uid = pod["metadata"].get("uid", "")
    current = ReplicaRef(role=replica.role, index=replica.index, rank=replica.node_rank, name=pod["metadata"]["name"],
                         instance=f"{uid}/{restarts}", ready="running" in state or "terminated" in state,
                         attempt=restarts, started=parse_time(run.get("startedAt")),
                         previous_end=ended_because(ended.get("exitCode"), ended.get("reason", "")) if ended else "")
    if not restarts or not ended:
        return [current]
    before = replace(current, instance=f"{uid}/{restarts - 1}", ready=True, attempt=restarts - 1, previous_end="",
                     started=parse_time(ended.get("startedAt")), previous=True)
    return [before, current]


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


def _refs(contract: OperatorContract, pods: Iterable[dict[str, Any]]) -> list[ReplicaRef]:
    return [ref for pod in pods for ref in replica_refs(contract, pod)]


def watch_replicas(api: ClusterApi, contract: OperatorContract, name: str) -> Iterator[list[ReplicaRef]]:
    """Snapshots of the job's pods from list + watch, until the job has ended (or is gone)."""
    while True:
        listing = _list(api, contract, name)
        pods = {p["metadata"]["name"]: p for p in listing.get("items", [])}
        yield _refs(contract, pods.values())
        for event_type, pod in _pod_events(api, contract, name, listing["metadata"].get("resourceVersion")):
            if event_type == "DELETED":
                pods.pop(pod["metadata"]["name"], None)
            else:
                pods[pod["metadata"]["name"]] = pod
            yield _refs(contract, pods.values())
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
    if replica.previous:
        options["previous"] = True
    elif follow:
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
    snapshots = watch_replicas(api, contract, name) if follow else iter([
        _refs(contract, _list(api, contract, name).get("items", []))])

    def open_stream(replica: ReplicaRef, following: bool) -> Iterator[tuple[datetime | None, str]]:
        return log_lines(api, contract, replica, following, since)

    for line in merge_logs(snapshots, open_stream, follow=follow, role=role, rank=rank):
        yield str(line)
