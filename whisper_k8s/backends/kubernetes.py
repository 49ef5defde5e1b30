"""The Kubernetes backend: installs the chart with Helm and reads jobs back through the official client.

* Submitting is ``helm upgrade --install`` of the chart with the user's values file (the chart is the one
  source of manifests); before it, API discovery checks that the operator's CRD is served.
* ``status``/``logs``/``list``/``delete`` read the job object, its pods (found by the operator's pod
  labels), their events and logs. Everything is read back from the cluster; nothing is kept locally.
* Operator specifics (API group, pod labels, role/rank, conditions, container name, install hint) live in
  :class:`PyTorchJobOperator`; a TrainJob class with the same methods slots into ``OPERATORS``.
* Every API call goes through :meth:`KubernetesScheduler._call`, which names its (group, resource, verb)
  from :data:`REQUIRED_PERMISSIONS` (the table ``manifests/rbac/role.yaml`` grants, and a test holds them
  equal) and turns API errors into messages that say what to do.

The `kubernetes` package is imported inside functions so that ``python -m whisper_k8s --help`` and the local
backend work without it.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from whisper_k8s.backends.base import (
    AppRequest,
    DryRunInfo,
    JobCondition,
    JobState,
    JobStatus,
    PodStatus,
    Scheduler,
    make_handle,
)
from whisper_k8s.chart import chart_dir, helm_binary
from whisper_k8s.errors import ClusterError, UserError
from whisper_k8s.logs import ReplicaRef, merge_logs, parse_timestamped
from whisper_k8s.operators import pytorchjob

RBAC_ROLE = "manifests/rbac/role.yaml"
# Objects of this kit carry the chart's standard name label; `list` selects on it.
KIT_SELECTOR = "app.kubernetes.io/part-of=whisper-k8s"
# (connect, read) seconds for ordinary calls; watches and log follows use server-side timeouts instead.
REQUEST_TIMEOUT = (5, 30)
WATCH_SECONDS = 60

# (API group, resource, verb) -> why the CLI needs it. manifests/rbac/role.yaml grants exactly these.
# Rows marked "helm" are requests the helm binary makes for the chart's objects and its release records.
REQUIRED_PERMISSIONS: dict[tuple[str, str, str], str] = {
    ("kubeflow.org", "pytorchjobs", "get"): "status, delete verification, re-submit check",
    ("kubeflow.org", "pytorchjobs", "list"): "list jobs of this kit",
    ("kubeflow.org", "pytorchjobs", "create"): "helm: install the PyTorchJob",
    ("kubeflow.org", "pytorchjobs", "patch"): "helm: server-side apply on upgrade",
    ("kubeflow.org", "pytorchjobs", "update"): "helm: upgrade",
    ("kubeflow.org", "pytorchjobs", "delete"): "delete (helm uninstall, or directly when not helm-managed)",
    ("", "pods", "list"): "status/logs: the job's pods by label",
    ("", "pods", "watch"): "logs --follow: restarts and new pods",
    ("", "pods/log", "get"): "logs",
    ("", "events", "list"): "status: why a pod is pending (FailedScheduling, image pulls)",
    ("", "configmaps", "get"): "helm: model.json/data.json ConfigMap",
    ("", "configmaps", "create"): "helm",
    ("", "configmaps", "patch"): "helm",
    ("", "configmaps", "update"): "helm",
    ("", "configmaps", "delete"): "helm",
    ("", "secrets", "get"): "helm: release records (sh.helm.release.v1.*)",
    ("", "secrets", "list"): "helm: release history",
    ("", "secrets", "create"): "helm: release records",
    ("", "secrets", "update"): "helm: release records",
    ("", "secrets", "delete"): "helm: uninstall removes release records",
    ("", "persistentvolumeclaims", "get"): "helm: dataset/models/outputs claims the chart creates",
    ("", "persistentvolumeclaims", "create"): "helm",
    ("", "persistentvolumeclaims", "patch"): "helm",
    ("", "persistentvolumeclaims", "update"): "helm",
    ("", "persistentvolumeclaims", "delete"): "helm",
    **{(group, "podgroups", verb): "helm: the gang-scheduling PodGroup (scheduling.gang volcano/coscheduling)"
       for group in ("scheduling.volcano.sh", "scheduling.x-k8s.io")
       for verb in ("get", "create", "patch", "update", "delete")},
}


# ------------------------------------------------------------------------------------------- operators
class PyTorchJobOperator:
    """Kubeflow training-operator v1: ``kubeflow.org/v1`` PyTorchJob, Master + Worker pods."""

    name = "pytorchjob"
    group, version, plural, kind = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
    container = pytorchjob.CONTAINER
    crd = "pytorchjobs.kubeflow.org"
    install_hint = (
        "install the Kubeflow training operator (v1.9): kubectl apply --server-side "
        '-k "github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=v1.9.0" '
        "(the CRD is too large for a client-side apply)"
    )
    _states = {"Failed": JobState.FAILED, "Succeeded": JobState.SUCCEEDED, "Suspended": JobState.SUSPENDED,
               "Restarting": JobState.RUNNING, "Running": JobState.RUNNING, "Created": JobState.PENDING}

    def pod_selector(self, job: str) -> str:
        return f"{pytorchjob.JOB_NAME_LABEL}={job}"

    def role_rank(self, pod: dict[str, Any]) -> tuple[str, int]:
        """Master is node rank 0; worker index i is node rank i + 1 (the operator's RANK/PET_NODE_RANK)."""
        labels = pod.get("metadata", {}).get("labels", {})
        role = labels.get(pytorchjob.REPLICA_TYPE_LABEL, "unknown").lower()
        index = int(labels.get(pytorchjob.REPLICA_INDEX_LABEL, "0"))
        return role, index + 1 if role == "worker" else index

    def state(self, conditions: list[JobCondition]) -> str:
        """The first condition that is True, in order of finality (Failed beats Succeeded beats Running)."""
        true_types = {c.type for c in conditions if c.status == "True"}
        for condition_type, state in self._states.items():
            if condition_type in true_types:
                return state
        return JobState.PENDING

    def nodes(self, job: dict[str, Any]) -> int:
        specs = job.get("spec", {}).get("pytorchReplicaSpecs", {})
        return sum(int(spec.get("replicas", 1)) for spec in specs.values())


OPERATORS = {"pytorchjob": PyTorchJobOperator()}


# ---------------------------------------------------------------------------------------------- client
def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ApiClient from the kubeconfig (``KUBECONFIG``/``~/.kube/config``) or the in-cluster account.

    Idempotent GETs are retried on connection errors and 429/5xx with backoff; writes are never retried.
    """
    import urllib3
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    except (ConfigException, FileNotFoundError, OSError) as kube_error:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException:
            raise ClusterError(
                f"no Kubernetes cluster configured ({kube_error}): point KUBECONFIG at a kubeconfig "
                "(`kubectl config current-context` must work), pass --kubeconfig/--context, "
                "or run on this machine with --local"
            ) from None
    configuration.retries = urllib3.Retry(
        total=3, connect=3, read=2, backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504), allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
    )
    return client.ApiClient(configuration)


def _api_message(body: Any) -> str:
    try:
        return json.loads(body).get("message", "") or str(body)
    except (TypeError, ValueError, AttributeError):
        return (body.decode() if isinstance(body, bytes) else str(body or "")).strip()


def _load(response: Any) -> dict[str, Any]:
    """The JSON body of a raw (``_preload_content=False``) response; empty for 204."""
    data = response.data
    return json.loads(data) if data else {}


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# ------------------------------------------------------------------------------------------- scheduler
@dataclass
class _Access:
    """One API call's identity, for error messages and the RBAC table."""

    group: str
    resource: str
    verb: str
    name: str = ""


class KubernetesScheduler(Scheduler):
    """Runs jobs as Helm releases of the chart on a cluster. ``api_client``/``helm`` are injectable."""

    name = "kubernetes"

    def __init__(
        self,
        namespace: str = "default",
        *,
        api_client: Any = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        helm: str | None = None,
        poll_seconds: float = 2.0,
    ) -> None:
        super().__init__(namespace)
        self._api_client = api_client
        self.kubeconfig, self.context = kubeconfig, context
        self._helm = helm
        self.poll_seconds = poll_seconds

    # -- plumbing
    @property
    def api_client(self) -> Any:
        if self._api_client is None:
            self._api_client = load_api_client(self.kubeconfig, self.context)
        return self._api_client

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    def _custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api_client)

    def _call(self, access: _Access, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the API; map failures to errors that name the verb/resource and the fix."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        assert (access.group, access.resource, access.verb) in REQUIRED_PERMISSIONS, access
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        try:
            return method(*args, **kwargs)
        except ApiException as err:
            raise self._explain(err, access) from None
        except HTTPError as err:
            host = getattr(getattr(self.api_client, "configuration", None), "host", "the API server")
            raise ClusterError(f"cannot reach the Kubernetes API at {host}: {err}") from None

    def _explain(self, err: Any, access: _Access) -> Exception:
        what = f"{access.resource}.{access.group}" if access.group else access.resource
        target = f"{what} {access.name}".strip()
        message = _api_message(err.body)
        if err.status == 401:
            return ClusterError(f"the cluster rejected your credentials (401 Unauthorized) for {access.verb} "
                                f"{what}: renew the token or certificate in your kubeconfig ({message})")
        if err.status == 403:
            return ClusterError(f"forbidden (403): you may not {access.verb} {what} in namespace "
                                f"{self.namespace}: {message}. Ask an admin to bind {RBAC_ROLE} to you "
                                f"in that namespace (see manifests/rbac/)")
        if err.status == 404 and "page not found" in message:
            operator = next((o for o in OPERATORS.values() if o.group == access.group), None)
            hint = operator.install_hint if operator else "install the CRD that serves it"
            return ClusterError(f"the API for {what} is not served by this cluster (CRD not installed): {hint}")
        if err.status == 409:
            return UserError(f"{target} already exists in namespace {self.namespace}: submit again with the "
                             f"same --name to upgrade it, or `python -m whisper_k8s delete {access.name}` first")
        if err.status in (400, 422):
            return UserError(f"the API server refused {access.verb} {target}: {message}")
        return ClusterError(f"{access.verb} {target} failed ({err.status} {err.reason}): {message}")

    def _operator(self, name: str) -> PyTorchJobOperator:
        try:
            return OPERATORS[name]
        except KeyError:
            raise UserError(f"operator {name!r} is not supported by the kubernetes backend yet: "
                            f"use one of {', '.join(OPERATORS)}") from None

    # -- discovery
    def operator_served(self, operator: PyTorchJobOperator) -> bool:
        """Whether API discovery lists the operator's resource (GET /apis/<group>/<version>)."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = self._custom().get_api_resources(
                operator.group, operator.version, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as err:
            if err.status == 404:
                return False
            raise self._explain(err, _Access(operator.group, operator.plural, "get")) from None
        return any(r.get("name") == operator.plural for r in _load(response).get("resources", []))

    def require_operator(self, name: str) -> PyTorchJobOperator:
        operator = self._operator(name)
        if not self.operator_served(operator):
            raise ClusterError(f"the {operator.kind} CRD ({operator.crd}) is not installed in this cluster: "
                               f"{operator.install_hint}")
        return operator

    # -- reading objects
    def _get_job(self, operator: PyTorchJobOperator, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        access = _Access(operator.group, operator.plural, "get", name)
        try:
            response = self._custom().get_namespaced_custom_object(
                operator.group, operator.version, self.namespace, operator.plural, name,
                _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as err:
            if err.status == 404 and "page not found" not in _api_message(err.body):
                return None
            raise self._explain(err, access) from None
        return _load(response)

    def _pods(self, operator: PyTorchJobOperator, name: str) -> dict[str, Any]:
        return _load(self._call(_Access("", "pods", "list"), self._core().list_namespaced_pod, self.namespace,
                                label_selector=operator.pod_selector(name), _preload_content=False))

    def _warning_events(self, pod_name: str) -> list[dict[str, Any]]:
        events = _load(self._call(_Access("", "events", "list"), self._core().list_namespaced_event,
                                  self.namespace, field_selector=f"involvedObject.name={pod_name}",
                                  _preload_content=False)).get("items", [])
        warnings = [e for e in events if e.get("type") == "Warning"]
        # events.k8s.io events have null lastTimestamp and carry eventTime instead
        return sorted(warnings, key=lambda e: e.get("lastTimestamp") or e.get("eventTime")
                      or e["metadata"].get("creationTimestamp") or "")

    # -- Scheduler
    def dryrun(self, request: AppRequest) -> DryRunInfo:
        args = self.helm_install_args(request)
        return DryRunInfo(backend=self.name, request=request, documents=list(request.documents),
                          actions=[shlex.join(args)], extra={"helm_args": args})

    def helm_install_args(self, request: AppRequest) -> list[str]:
        """``helm upgrade --install`` for the request; the values come from the kept values file."""
        chart = request.chart or chart_dir()
        args = [self._helm or "helm", "upgrade", "--install", request.name, str(chart),
                "--namespace", request.namespace]
        if request.values_file:
            args += ["--values", str(request.values_file)]
        return args + self._helm_cluster_flags()

    def schedule(self, info: DryRunInfo) -> str:
        request = info.request
        if request.values_file is None:
            raise UserError("the request has no values file: write the values first (whisper_k8s.values)")
        operator = self.require_operator(request.operator)
        self._refuse_finished_job(operator, request.name)
        args = list(info.extra["helm_args"])
        args[0] = self._helm or helm_binary()
        self._run_helm(args, request.name)
        return make_handle(self.name, request.namespace, request.name)

    def _refuse_finished_job(self, operator: PyTorchJobOperator, name: str) -> None:
        """An upgrade cannot restart a finished job (the operator ignores it): say so instead."""
        job = self._get_job(operator, name)
        if job is None:
            return
        state = operator.state(self._conditions(job))
        if state in JobState.TERMINAL:
            raise UserError(f"job {self.namespace}/{name} already finished ({state}): collect its outputs, "
                            f"then `python -m whisper_k8s delete {name}` or submit with another --name")

    def _run_helm(self, args: list[str], name: str) -> str:
        result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=600)
        if result.returncode == 0:
            return result.stdout
        stderr = result.stderr.strip()
        if "cluster unreachable" in stderr:
            raise ClusterError(f"helm cannot reach the cluster: {stderr}. Check KUBECONFIG/--kubeconfig/--context "
                               "(`kubectl cluster-info` must work), or run on this machine with --local")
        if "forbidden" in stderr.lower():
            raise ClusterError(f"helm was refused by the cluster (RBAC): {stderr}. Ask an admin to bind "
                               f"{RBAC_ROLE} to you in namespace {self.namespace}")
        if "exists and cannot be imported" in stderr or "already exists" in stderr:
            raise UserError(f"{stderr}. An object of job {name} exists outside this release: "
                            f"`python -m whisper_k8s delete {name}` or choose another --name")
        if "release: not found" in stderr or "Release not loaded" in stderr:
            raise UserError(f"no release {name} in namespace {self.namespace}: not found")
        raise ClusterError(f"`{shlex.join(args[:4])} ...` failed: {stderr}")

    @staticmethod
    def _conditions(job: dict[str, Any]) -> list[JobCondition]:
        return [JobCondition(type=c.get("type", ""), status=c.get("status", ""), reason=c.get("reason", ""),
                             message=c.get("message", ""),
                             last_transition=_parse_time(c.get("lastTransitionTime")))
                for c in job.get("status", {}).get("conditions", []) or []]

    def _job_status(self, operator: PyTorchJobOperator, job: dict[str, Any]) -> JobStatus:
        conditions = self._conditions(job)
        metadata = job.get("metadata", {})
        return JobStatus(name=metadata.get("name", ""), namespace=self.namespace, backend=self.name,
                         state=operator.state(conditions), conditions=conditions,
                         created=_parse_time(metadata.get("creationTimestamp")), operator=operator.name,
                         nodes=operator.nodes(job))

    def describe(self, name: str, operator_name: str = "pytorchjob") -> JobStatus | None:
        operator = self._operator(operator_name)
        job = self._get_job(operator, name)
        if job is None:
            return None
        status = self._job_status(operator, job)
        pods = sorted(self._pods(operator, name).get("items", []), key=lambda p: operator.role_rank(p)[1])
        status.pods = [self._pod_status(operator, pod) for pod in pods]
        status.problems = [hint for pod in status.pods if (hint := self._hint(pod))]
        return status

    def _pod_status(self, operator: PyTorchJobOperator, pod: dict[str, Any]) -> PodStatus:
        role, rank = operator.role_rank(pod)
        metadata, spec, state = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
        containers = state.get("containerStatuses") or []
        phase = "Terminating" if metadata.get("deletionTimestamp") else state.get("phase", "Unknown")
        reason, message = self._pod_trouble(pod)
        return PodStatus(name=metadata.get("name", ""), role=role, rank=rank, phase=phase,
                         restarts=sum(c.get("restartCount", 0) for c in containers),
                         node=spec.get("nodeName", ""),
                         started=_parse_time(state.get("startTime") or metadata.get("creationTimestamp")),
                         reason=reason, message=message)

    def _pod_trouble(self, pod: dict[str, Any]) -> tuple[str, str]:
        """Why a pod is not running: a waiting/failed container, else the scheduler's latest warning."""
        state = pod.get("status", {})
        for container in (state.get("initContainerStatuses") or []) + (state.get("containerStatuses") or []):
            waiting = container.get("state", {}).get("waiting")
            if waiting and waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
                return waiting["reason"], waiting.get("message", "")
            terminated = container.get("state", {}).get("terminated")
            if terminated and terminated.get("exitCode", 0) != 0:
                return terminated.get("reason", "Error"), f"container {container.get('name')} exited " \
                                                           f"with code {terminated.get('exitCode')}"
        if state.get("phase") != "Pending":
            return "", ""
        events = self._warning_events(pod["metadata"]["name"])
        if events:
            return events[-1].get("reason", ""), events[-1].get("message", "")
        unscheduled = [c for c in state.get("conditions", []) or []
                       if c.get("type") == "PodScheduled" and c.get("status") == "False"]
        if unscheduled:
            return unscheduled[0].get("reason", ""), unscheduled[0].get("message", "")
        return "", ""

    @staticmethod
    def _hint(pod: PodStatus) -> str:
        """The fix for the common ways a replica gets stuck."""
        if "Insufficient" in pod.message:
            resource = pod.message.split("Insufficient", 1)[1].split()[0].rstrip(".,")
            return (f"{pod.label} cannot be scheduled: no node has enough free {resource}. Lower "
                    f"--npus-per-node, free devices, or check `kubectl describe nodes` for {resource}")
        if pod.reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName"):
            return (f"{pod.label} cannot pull its image ({pod.reason}): check --image / image.* values, the "
                    f"registry, and imagePullSecrets")
        if pod.reason == "CrashLoopBackOff":
            return f"{pod.label} keeps crashing: see `python -m whisper_k8s logs <job> --role {pod.role}`"
        return ""

    def list(self, operator_name: str = "pytorchjob") -> list[JobStatus]:
        operator = self._operator(operator_name)
        response = self._call(_Access(operator.group, operator.plural, "list"),
                              self._custom().list_namespaced_custom_object, operator.group, operator.version,
                              self.namespace, operator.plural, label_selector=KIT_SELECTOR,
                              _preload_content=False)
        jobs = _load(response).get("items", [])
        return sorted((self._job_status(operator, job) for job in jobs), key=lambda s: s.name)

    def cancel(self, name: str, operator_name: str = "pytorchjob", timeout: float = 120.0) -> None:
        """helm uninstall; a job applied without helm (manifests/) is deleted directly; then verify it is gone."""
        operator = self._operator(operator_name)
        uninstalled = self._helm_uninstall(name)
        if not uninstalled and self._get_job(operator, name) is None:
            raise UserError(f"no job {name} in namespace {self.namespace} (see `python -m whisper_k8s list`)")
        self.delete_job(operator, name, timeout)

    def _helm_uninstall(self, name: str) -> bool:
        """Uninstall the release; False when helm has no release of that name."""
        try:
            self._run_helm([self._helm or helm_binary(), "uninstall", name, "--namespace", self.namespace,
                            *self._helm_cluster_flags()], name)
        except UserError as err:
            if "not found" in str(err):
                return False
            raise
        return True

    def delete_job(self, operator: PyTorchJobOperator, name: str, timeout: float = 120.0) -> None:
        """Delete the job object if it is still there (its pods go with it) and wait until GET says 404."""
        from kubernetes.client.exceptions import ApiException

        if self._get_job(operator, name) is not None:
            try:
                self._custom().delete_namespaced_custom_object(
                    operator.group, operator.version, self.namespace, operator.plural, name,
                    propagation_policy="Foreground", _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
            except ApiException as err:
                if err.status != 404:  # already gone between our GET and DELETE: fine
                    raise self._explain(err, _Access(operator.group, operator.plural, "delete", name)) from None
        deadline = time.monotonic() + timeout
        while self._get_job(operator, name) is not None:
            if time.monotonic() > deadline:
                raise ClusterError(f"job {self.namespace}/{name} is still there {timeout:.0f}s after delete: "
                                   f"check finalizers with `kubectl get {operator.plural} {name} -o yaml`")
            time.sleep(self.poll_seconds)

    def _helm_cluster_flags(self) -> list[str]:
        flags = ["--kubeconfig", self.kubeconfig] if self.kubeconfig else []
        return flags + (["--kube-context", self.context] if self.context else [])

    # -- logs
    def log_iter(self, name: str, *, follow: bool = False, since: float | None = None,
                 role: str | None = None, rank: int | None = None,
                 operator_name: str = "pytorchjob") -> Iterator[str]:
        operator = self._operator(operator_name)
        if self._get_job(operator, name) is None:
            raise UserError(f"no job {name} in namespace {self.namespace} (see `python -m whisper_k8s list`)")
        snapshots = self._watch_replicas(operator, name) if follow else iter([self._replicas(operator, name)])

        def open_stream(replica: ReplicaRef, following: bool) -> Iterator[tuple[datetime | None, str]]:
            return self._log_lines(operator, replica, following, since)

        for line in merge_logs(snapshots, open_stream, follow=follow, role=role, rank=rank):
            yield str(line)

    def _replica(self, operator: PyTorchJobOperator, pod: dict[str, Any]) -> ReplicaRef:
        role, rank = operator.role_rank(pod)
        containers = [c for c in pod.get("status", {}).get("containerStatuses") or []
                      if c.get("name") == operator.container]
        restarts = containers[0].get("restartCount", 0) if containers else 0
        state = containers[0].get("state", {}) if containers else {}
        ready = "running" in state or "terminated" in state
        return ReplicaRef(role=role, rank=rank, name=pod["metadata"]["name"],
                          instance=f"{pod['metadata'].get('uid', '')}/{restarts}", ready=ready)

    def _replicas(self, operator: PyTorchJobOperator, name: str) -> list[ReplicaRef]:
        return [self._replica(operator, pod) for pod in self._pods(operator, name).get("items", [])]

    def _watch_replicas(self, operator: PyTorchJobOperator, name: str) -> Iterator[list[ReplicaRef]]:
        """Snapshots of the job's pods from list + watch, until the job has ended (or is gone)."""
        while True:
            listing = self._pods(operator, name)
            pods = {p["metadata"]["name"]: p for p in listing.get("items", [])}
            yield [self._replica(operator, p) for p in pods.values()]
            for event_type, pod in self._pod_events(operator, name, listing["metadata"].get("resourceVersion")):
                if event_type == "DELETED":
                    pods.pop(pod["metadata"]["name"], None)
                else:
                    pods[pod["metadata"]["name"]] = pod
                yield [self._replica(operator, p) for p in pods.values()]
                if pods and all(p.get("status", {}).get("phase") in ("Succeeded", "Failed") for p in pods.values()):
                    break  # every pod has stopped: ask the job whether that was the end
            if self._job_ended(operator, name):
                return

    def _job_ended(self, operator: PyTorchJobOperator, name: str) -> bool:
        job = self._get_job(operator, name)
        return job is None or operator.state(self._conditions(job)) in JobState.TERMINAL

    def _pod_events(self, operator: PyTorchJobOperator, name: str,
                    resource_version: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
        response = self._call(_Access("", "pods", "watch"), self._core().list_namespaced_pod, self.namespace,
                              label_selector=operator.pod_selector(name), watch=True,
                              resource_version=resource_version, timeout_seconds=WATCH_SECONDS,
                              _preload_content=False, _request_timeout=(5, WATCH_SECONDS + 10))
        try:
            for raw in response:
                if not raw.strip():
                    continue
                event = json.loads(raw)
                if event.get("type") == "ERROR":  # e.g. 410 Gone: the caller re-lists
                    return
                yield event["type"], event["object"]
        finally:
            response.release_conn()

    def _log_lines(self, operator: PyTorchJobOperator, replica: ReplicaRef, follow: bool,
                   since: float | None) -> Iterator[tuple[datetime | None, str]]:
        from kubernetes.client.exceptions import ApiException

        kwargs: dict[str, Any] = {"container": operator.container, "timestamps": True,
                                  "_preload_content": False, "_request_timeout": REQUEST_TIMEOUT}
        if follow:
            kwargs["follow"] = True
            kwargs["_request_timeout"] = None  # a quiet trainer must not end the follow
        if since is not None:
            kwargs["since_seconds"] = max(1, int(since))
        try:
            response = self._core().read_namespaced_pod_log(replica.name, self.namespace, **kwargs)
        except ApiException as err:
            if err.status in (401, 403):
                raise self._explain(err, _Access("", "pods/log", "get", replica.name)) from None
            yield None, f"(no log: {err.status} {err.reason}: {_api_message(err.body)})"
            return
        try:
            for raw in response:
                yield parse_timestamped(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
        finally:
            response.release_conn()
