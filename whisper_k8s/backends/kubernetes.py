"""The Kubernetes backend: installs the chart with Helm and reads jobs back through the official client.

* Submitting is ``helm upgrade --install`` of the chart with the user's values file (the chart is the one
  source of manifests); before it, API discovery checks that the operator's CRD is served.
* ``status``/``logs``/``list``/``delete`` read the job object, its pods (found by the operator's pod
  labels), their events and logs. Everything is read back from the cluster; nothing is kept locally.
* Operator specifics (API group, pod labels, role/rank, conditions, container name, install hint) live in
  :data:`OPERATORS`: :class:`PyTorchJobOperator` (training-operator v1) and :class:`TrainJobOperator`
  (Kubeflow Trainer v2); label names come from the contracts in :mod:`whisper_k8s.operators`.
* ``submit`` without ``--operator`` asks API discovery which of the two the cluster serves
  (:meth:`KubernetesScheduler.choose_operator`); the other commands find a job under either kind by name.
* ``collect`` reads the job (and a TrainJob's runtime) and lets :mod:`kubernetes_fetch` copy its outputs.
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
from pathlib import Path
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
from whisper_k8s.operators import pytorchjob, trainjob

RBAC_ROLE = "manifests/rbac/role.yaml"
INSTANCE_LABEL = "app.kubernetes.io/instance"  # the chart's release label on every object it renders
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
    ("trainer.kubeflow.org", "trainjobs", "get"): "status, delete verification, re-submit check (Trainer v2)",
    ("trainer.kubeflow.org", "trainjobs", "list"): "list jobs of this kit (Trainer v2)",
    ("trainer.kubeflow.org", "trainjobs", "create"): "helm: install the TrainJob",
    ("trainer.kubeflow.org", "trainjobs", "patch"): "helm: server-side apply on upgrade",
    ("trainer.kubeflow.org", "trainjobs", "update"): "helm: upgrade",
    ("trainer.kubeflow.org", "trainjobs", "delete"): "delete (helm uninstall, or directly when not helm-managed)",
    ("trainer.kubeflow.org", "trainingruntimes", "get"): "collect: the TrainJob's pod spec; delete: is it ours",
    ("trainer.kubeflow.org", "trainingruntimes", "create"): "helm: the job's own runtime (a pre-install hook)",
    ("trainer.kubeflow.org", "trainingruntimes", "patch"): "helm",
    ("trainer.kubeflow.org", "trainingruntimes", "update"): "helm",
    ("trainer.kubeflow.org", "trainingruntimes", "delete"): "helm: before-hook-creation; delete: uninstall "
                                                            "leaves hooks behind",
    ("", "pods", "list"): "status/logs: the job's pods by label",
    ("", "pods", "get"): "collect: wait until the helper pod runs",
    ("", "pods", "create"): "collect: the helper pod that mounts the outputs volume",
    ("", "pods", "delete"): "collect: remove the helper pod",
    ("", "pods/exec", "create"): "collect: stream the outputs tar from the helper pod",
    ("", "pods/exec", "get"): "collect: the same exec on clusters before 1.31, which authorize its websocket as get",
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
def job_conditions(job: dict[str, Any]) -> list[JobCondition]:
    """The ``status.conditions`` of a job object (PyTorchJob and TrainJob share the metav1 shape)."""
    return [JobCondition(type=c.get("type", ""), status=c.get("status", ""), reason=c.get("reason", ""),
                         message=c.get("message", ""), last_transition=_parse_time(c.get("lastTransitionTime")))
            for c in job.get("status", {}).get("conditions", []) or []]


class JobOperator:
    """What the backend needs to know about one operator's job objects; subclasses fill in the facts.

    ``final_states`` maps condition types to states, most final first: the first True one decides.
    """

    name = kind = group = version = plural = container = crd = install_hint = ""
    final_states: dict[str, str] = {}

    def pod_selector(self, job: str) -> str:
        raise NotImplementedError

    def role_rank(self, pod: dict[str, Any]) -> tuple[str, int]:
        raise NotImplementedError

    def nodes(self, job: dict[str, Any]) -> int | None:
        raise NotImplementedError

    def runtime_name(self, job: dict[str, Any]) -> str | None:
        """The namespaced TrainingRuntime the job runs on (None: the job document is complete by itself)."""
        return None

    def state(self, job: dict[str, Any]) -> str:
        true_types = {c.type for c in job_conditions(job) if c.status == "True"}
        for condition_type, state in self.final_states.items():
            if condition_type in true_types:
                return state
        return self.unfinished_state(job)

    def unfinished_state(self, job: dict[str, Any]) -> str:
        return JobState.PENDING


class PyTorchJobOperator(JobOperator):
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
    final_states = {"Failed": JobState.FAILED, "Succeeded": JobState.SUCCEEDED, "Suspended": JobState.SUSPENDED,
                    "Restarting": JobState.RUNNING, "Running": JobState.RUNNING, "Created": JobState.PENDING}

    def pod_selector(self, job: str) -> str:
        return f"{pytorchjob.JOB_NAME_LABEL}={job}"

    def role_rank(self, pod: dict[str, Any]) -> tuple[str, int]:
        """Master is node rank 0; worker index i is node rank i + 1 (the operator's RANK/PET_NODE_RANK)."""
        labels = pod.get("metadata", {}).get("labels", {})
        role = labels.get(pytorchjob.REPLICA_TYPE_LABEL, "unknown").lower()
        index = int(labels.get(pytorchjob.REPLICA_INDEX_LABEL, "0"))
        return role, index + 1 if role == "worker" else index

    def nodes(self, job: dict[str, Any]) -> int | None:
        specs = job.get("spec", {}).get("pytorchReplicaSpecs", {})
        return sum(int(spec.get("replicas", 1)) for spec in specs.values())


class TrainJobOperator(JobOperator):
    """Kubeflow Trainer v2: ``trainer.kubeflow.org/v1alpha1`` TrainJob on a TrainingRuntime, ``node`` pods.

    Its pods belong to a JobSet named like the job; a pod's node rank is its Indexed Job completion index.
    There is no Running condition: a job whose child Jobs have active or ready pods is Running.
    """

    name = "trainjob"
    group, version, plural, kind = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
    runtime_plural = "trainingruntimes"
    container = trainjob.CONTAINER
    crd = "trainjobs.trainer.kubeflow.org"
    install_hint = (
        "install Kubeflow Trainer (v2.3): kubectl apply --server-side "
        '-k "github.com/kubeflow/trainer.git/manifests/overlays/manager?ref=v2.3.0" '
        "(or helm install kubeflow-trainer oci://ghcr.io/kubeflow/charts/kubeflow-trainer --version 2.3.0 "
        "--namespace kubeflow-system --create-namespace); the chart brings its own TrainingRuntime"
    )
    final_states = {"Failed": JobState.FAILED, "Complete": JobState.SUCCEEDED, "Suspended": JobState.SUSPENDED}

    def pod_selector(self, job: str) -> str:
        return f"{trainjob.JOBSET_NAME_LABEL}={job},{trainjob.REPLICATED_JOB_LABEL}={trainjob.ROLE}"

    def role_rank(self, pod: dict[str, Any]) -> tuple[str, int]:
        """The completion index (label since Kubernetes 1.28, annotation always) is the node rank."""
        metadata = pod.get("metadata", {})
        index = (metadata.get("labels") or {}).get(trainjob.COMPLETION_INDEX) \
            or (metadata.get("annotations") or {}).get(trainjob.COMPLETION_INDEX, "0")
        return trainjob.ROLE, int(index)

    def nodes(self, job: dict[str, Any]) -> int | None:
        return job.get("spec", {}).get("trainer", {}).get("numNodes")

    def runtime_name(self, job: dict[str, Any]) -> str | None:
        ref = job.get("spec", {}).get("runtimeRef") or {}
        return ref.get("name") if ref.get("kind") == "TrainingRuntime" else None

    def unfinished_state(self, job: dict[str, Any]) -> str:
        children = job.get("status", {}).get("jobsStatus") or []
        return JobState.RUNNING if any(c.get("active") or c.get("ready") for c in children) else JobState.PENDING


OPERATORS: dict[str, JobOperator] = {"pytorchjob": PyTorchJobOperator(), "trainjob": TrainJobOperator()}


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


def _not_served(err: Any) -> bool:
    """A 404 for the API path itself (plain text ``404 page not found``), not for a missing object."""
    return "page not found" in _api_message(err.body)


class _NotServed(Exception):
    """The cluster does not serve an operator's API; ``error`` is the ClusterError that says what to install."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def no_operator_message() -> str:
    """What to install when the cluster serves neither job kind."""
    kinds = " nor ".join(f"{o.kind} ({o.crd})" for o in OPERATORS.values())
    hints = "; or ".join(o.install_hint for o in OPERATORS.values())
    return f"this cluster serves neither {kinds}: no training operator is installed. To fix, {hints}"


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

        # non-resource URLs (discovery, "/apis") are open to every authenticated user: no Role rule
        assert access.resource.startswith("/") or \
            (access.group, access.resource, access.verb) in REQUIRED_PERMISSIONS, access
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

    def _operator(self, name: str) -> JobOperator:
        try:
            return OPERATORS[name]
        except KeyError:
            raise UserError(f"operator {name!r} is not supported by the kubernetes backend yet: "
                            f"use one of {', '.join(OPERATORS)}") from None

    # -- discovery
    def operator_served(self, operator: JobOperator) -> bool:
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

    def require_operator(self, name: str) -> JobOperator:
        operator = self._operator(name)
        if not self.operator_served(operator):
            raise ClusterError(f"the {operator.kind} CRD ({operator.crd}) is not installed in this cluster: "
                               f"{operator.install_hint}")
        return operator

    def served_operators(self) -> list[str]:
        """The operators whose job resource the cluster serves: GET /apis, then each listed group version."""
        from kubernetes import client

        response = self._call(_Access("", "/apis", "get"), client.ApisApi(self.api_client).get_api_versions,
                              _preload_content=False)
        listed = {(group["name"], version["version"]) for group in _load(response).get("groups", [])
                  for version in group.get("versions", [])}
        return [name for name, operator in OPERATORS.items()
                if (operator.group, operator.version) in listed and self.operator_served(operator)]

    def choose_operator(self, requested: str | None = None) -> str:
        """``requested`` when given; else the one the cluster serves (PyTorchJob when it serves both).

        Both served usually means a cluster in migration; the chart's default keeps its behaviour, and
        ``--operator trainjob`` picks the other one.
        """
        if requested:
            return self._operator(requested).name
        served = self.served_operators()
        if not served:
            raise ClusterError(no_operator_message())
        return served[0]

    # -- reading objects
    def _read_job(self, operator: JobOperator, name: str) -> dict[str, Any] | None:
        """The job object; None when there is none. Raises _NotServed when the cluster lacks the CRD."""
        from kubernetes.client.exceptions import ApiException

        access = _Access(operator.group, operator.plural, "get", name)
        try:
            response = self._custom().get_namespaced_custom_object(
                operator.group, operator.version, self.namespace, operator.plural, name,
                _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as err:
            if err.status == 404 and _not_served(err):
                raise _NotServed(self._explain(err, access)) from None
            if err.status == 404:
                return None
            raise self._explain(err, access) from None
        return _load(response)

    def _get_job(self, operator: JobOperator, name: str) -> dict[str, Any] | None:
        try:
            return self._read_job(operator, name)
        except _NotServed as missing:
            raise missing.error from None

    def find_job(self, name: str, operator_name: str | None = None) -> tuple[JobOperator, dict[str, Any]] | None:
        """The job called ``name`` under the given operator, else under whichever kind holds it (PyTorchJob
        first); None when no kind holds it. ClusterError names what to install when no kind is served."""
        candidates = [self._operator(operator_name)] if operator_name else list(OPERATORS.values())
        unserved = []
        for operator in candidates:
            try:
                job = self._read_job(operator, name)
            except _NotServed as missing:
                unserved.append(missing)
                continue
            if job is not None:
                return operator, job
        if len(unserved) == len(candidates):
            raise unserved[0].error if operator_name else ClusterError(no_operator_message())
        return None

    def _require_job(self, name: str, operator_name: str | None = None) -> tuple[JobOperator, dict[str, Any]]:
        found = self.find_job(name, operator_name)
        if found is None:
            raise UserError(f"no job {name} in namespace {self.namespace} (see `python -m whisper_k8s list`)")
        return found

    def _get_runtime(self, operator: JobOperator, job: dict[str, Any]) -> dict[str, Any] | None:
        """A TrainJob's namespaced TrainingRuntime (None for a PyTorchJob, or when it is gone)."""
        from kubernetes.client.exceptions import ApiException

        name = operator.runtime_name(job)
        if name is None:
            return None
        access = _Access(operator.group, TrainJobOperator.runtime_plural, "get", name)
        try:
            return _load(self._custom().get_namespaced_custom_object(
                operator.group, operator.version, self.namespace, access.resource, name,
                _preload_content=False, _request_timeout=REQUEST_TIMEOUT))
        except ApiException as err:
            if err.status == 404 and not _not_served(err):
                return None
            raise self._explain(err, access) from None

    def _pods(self, operator: JobOperator, name: str) -> dict[str, Any]:
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

    def _refuse_finished_job(self, operator: JobOperator, name: str) -> None:
        """An upgrade cannot restart a finished job (the operator ignores it): say so instead."""
        job = self._get_job(operator, name)
        if job is None:
            return
        state = operator.state(job)
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

    def _job_status(self, operator: JobOperator, job: dict[str, Any]) -> JobStatus:
        metadata = job.get("metadata", {})
        return JobStatus(name=metadata.get("name", ""), namespace=self.namespace, backend=self.name,
                         state=operator.state(job), conditions=job_conditions(job),
                         created=_parse_time(metadata.get("creationTimestamp")), operator=operator.name,
                         nodes=operator.nodes(job))

    def describe(self, name: str, operator_name: str | None = None) -> JobStatus | None:
        found = self.find_job(name, operator_name)
        if found is None:
            return None
        operator, job = found
        status = self._job_status(operator, job)
        pods = sorted(self._pods(operator, name).get("items", []), key=lambda p: operator.role_rank(p)[1])
        status.pods = [self._pod_status(operator, pod) for pod in pods]
        status.problems = [hint for pod in status.pods if (hint := self._hint(pod))]
        return status

    def _pod_status(self, operator: JobOperator, pod: dict[str, Any]) -> PodStatus:
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

    def list(self, operator_name: str | None = None) -> list[JobStatus]:
        """This kit's jobs of every kind the cluster serves (or of ``operator_name``), by name."""
        from kubernetes.client.exceptions import ApiException

        candidates = [self._operator(operator_name)] if operator_name else list(OPERATORS.values())
        statuses, unserved = [], []
        for operator in candidates:
            access = _Access(operator.group, operator.plural, "list")
            try:
                response = self._custom().list_namespaced_custom_object(
                    operator.group, operator.version, self.namespace, operator.plural,
                    label_selector=KIT_SELECTOR, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
            except ApiException as err:
                if err.status == 404 and _not_served(err):
                    unserved.append(self._explain(err, access))
                    continue
                raise self._explain(err, access) from None
            statuses += [self._job_status(operator, job) for job in _load(response).get("items", [])]
        if len(unserved) == len(candidates):
            raise unserved[0] if operator_name else ClusterError(no_operator_message())
        return sorted(statuses, key=lambda s: (s.name, s.operator))

    def cancel(self, name: str, operator_name: str | None = None, timeout: float = 120.0) -> None:
        """helm uninstall; a job applied without helm (manifests/) is deleted directly; then verify it is gone.

        A TrainJob's runtime is a helm hook (created before the job), which `helm uninstall` leaves behind:
        it is deleted here too when it is this job's own.
        """
        found = self.find_job(name, operator_name)
        uninstalled = self._helm_uninstall(name)
        if found is None:
            if not uninstalled:
                raise UserError(f"no job {name} in namespace {self.namespace} (see `python -m whisper_k8s list`)")
            return
        operator, job = found
        runtime = self._get_runtime(operator, job)
        self.delete_job(operator, name, timeout)
        if runtime is not None and (runtime["metadata"].get("labels") or {}).get(INSTANCE_LABEL) == name:
            self._delete_runtime(operator, runtime["metadata"]["name"])

    def _delete_runtime(self, operator: JobOperator, runtime: str) -> None:
        from kubernetes.client.exceptions import ApiException

        access = _Access(operator.group, TrainJobOperator.runtime_plural, "delete", runtime)
        try:
            self._custom().delete_namespaced_custom_object(
                operator.group, operator.version, self.namespace, access.resource, runtime,
                _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as err:
            if err.status != 404:
                raise self._explain(err, access) from None

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

    def delete_job(self, operator: JobOperator, name: str, timeout: float = 120.0) -> None:
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

    # -- collect
    def fetch_outputs(self, name: str, dest: Path) -> Path:
        """Copy the job's outputs through a short-lived pod that mounts its outputs volume (kubernetes_fetch)."""
        from kubernetes.client.exceptions import ApiException

        from whisper_k8s.backends import kubernetes_fetch

        operator, job = self._require_job(name)
        documents = [job]
        if operator.runtime_name(job) is not None:
            runtime = self._get_runtime(operator, job)
            if runtime is None:
                raise UserError(f"the {operator.kind} {name} runs on TrainingRuntime {operator.runtime_name(job)}, "
                                f"which is gone from namespace {self.namespace}: its pod spec (the outputs volume) "
                                "cannot be read")
            documents.append(runtime)
        try:
            return kubernetes_fetch.fetch_outputs(self.api_client, documents, Path(dest), operator=operator.name)
        except ApiException as err:
            raise self._explain(err, _Access("", "pods", "create", f"{name}-collect")) from None

    def _helm_cluster_flags(self) -> list[str]:
        flags = ["--kubeconfig", self.kubeconfig] if self.kubeconfig else []
        return flags + (["--kube-context", self.context] if self.context else [])

    # -- logs
    def log_iter(self, name: str, *, follow: bool = False, since: float | None = None,
                 role: str | None = None, rank: int | None = None,
                 operator_name: str | None = None) -> Iterator[str]:
        operator, _ = self._require_job(name, operator_name)
        snapshots = self._watch_replicas(operator, name) if follow else iter([self._replicas(operator, name)])

        def open_stream(replica: ReplicaRef, following: bool) -> Iterator[tuple[datetime | None, str]]:
            return self._log_lines(operator, replica, following, since)

        for line in merge_logs(snapshots, open_stream, follow=follow, role=role, rank=rank):
            yield str(line)

    def _replica(self, operator: JobOperator, pod: dict[str, Any]) -> ReplicaRef:
        role, rank = operator.role_rank(pod)
        containers = [c for c in pod.get("status", {}).get("containerStatuses") or []
                      if c.get("name") == operator.container]
        restarts = containers[0].get("restartCount", 0) if containers else 0
        state = containers[0].get("state", {}) if containers else {}
        ready = "running" in state or "terminated" in state
        return ReplicaRef(role=role, rank=rank, name=pod["metadata"]["name"],
                          instance=f"{pod['metadata'].get('uid', '')}/{restarts}", ready=ready)

    def _replicas(self, operator: JobOperator, name: str) -> list[ReplicaRef]:
        return [self._replica(operator, pod) for pod in self._pods(operator, name).get("items", [])]

    def _watch_replicas(self, operator: JobOperator, name: str) -> Iterator[list[ReplicaRef]]:
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

    def _job_ended(self, operator: JobOperator, name: str) -> bool:
        job = self._get_job(operator, name)
        return job is None or operator.state(job) in JobState.TERMINAL

    def _pod_events(self, operator: JobOperator, name: str,
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

    def _log_lines(self, operator: JobOperator, replica: ReplicaRef, follow: bool,
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
