"""Access to the Kubernetes API: the official client, and the one error path every cluster call goes through.

:class:`ClusterApi` loads the client from the kubeconfig (or the in-cluster account) only when a call is made,
and :meth:`ClusterApi.call` is how the backend makes every call: it names the call's (group, resource, verb)
from :data:`~whisper_k8s.backends.kubernetes_rbac.REQUIRED_PERMISSIONS` and turns every failure -- server
unreachable, TLS, missing or expired credentials, 401/403/404/409/422/429/5xx, timeouts -- into one line that
names the cluster, what failed and the fix (:class:`~whisper_k8s.errors.ClusterError`, exit code 3).
Idempotent GETs are retried on connection errors and 429/5xx with backoff; writes are never retried.

The `kubernetes` package is imported inside functions so that the CLI and the local backend work without it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from whisper_k8s.backends.kubernetes_rbac import RBAC_ROLE, REQUIRED_PERMISSIONS
from whisper_k8s.errors import ClusterError
from whisper_k8s.operators import all_contracts
from whisper_k8s.places import command, namespace_flags

# (connect, read) seconds for ordinary calls; watches and log follows use server-side timeouts instead.
REQUEST_TIMEOUT = (5, 30)
REACH_FIX = ("check that the cluster is up and that KUBECONFIG, --kubeconfig or --context point at it "
             "(`kubectl cluster-info` must work), or run on this machine with --local")


class NotServed(ClusterError):
    """The cluster does not serve the API of a resource (its CRD is not installed)."""


@dataclass(frozen=True)
class Access:
    """One API call's identity: the RBAC (group, resource, verb) it needs and the object it is about."""

    group: str
    resource: str
    verb: str
    name: str = ""

    @property
    def what(self) -> str:
        """``pytorchjobs.kubeflow.org``, ``pods``: the resource as kubectl names it."""
        return f"{self.resource}.{self.group}" if self.group else self.resource

    def __str__(self) -> str:
        return f"{self.verb} {self.what} {self.name}".strip()


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> tuple[Any, str]:
    """An ApiClient from the kubeconfig (``KUBECONFIG``/``~/.kube/config``) or the in-cluster account, and the
    name of the context it uses ("in-cluster" for the pod's service account)."""
    import urllib3
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        used = context or config.list_kube_config_contexts(kubeconfig)[1].get("name", "")
    except (ConfigException, FileNotFoundError, OSError) as kube_error:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException:
            detail = " ".join(str(kube_error).split())
            raise ClusterError(
                f"no Kubernetes cluster configured ({detail}): point KUBECONFIG at a kubeconfig "
                "(`kubectl config current-context` must work), pass --kubeconfig/--context, "
                "or run on this machine with --local"
            ) from None
        used = "in-cluster"
    configuration.retries = urllib3.Retry(
        total=3, connect=3, read=2, backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504), allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
    )
    return client.ApiClient(configuration), used


def api_message(body: Any) -> str:
    """The ``message`` of an API server's Status body (or the body itself), on one line."""
    try:
        text = json.loads(body).get("message", "") or str(body)
    except (TypeError, ValueError, AttributeError):
        text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    return " ".join(text.split())


def is_not_served(err: Any) -> bool:
    """A 404 for the API path itself (plain text ``404 page not found``), not for a missing object."""
    return getattr(err, "status", None) == 404 and "page not found" in api_message(getattr(err, "body", ""))


def load_json(response: Any) -> dict[str, Any]:
    """The JSON body of a raw (``_preload_content=False``) response; empty for 204."""
    data = response.data
    return json.loads(data) if data else {}


class ClusterApi:
    """The cluster as the backend sees it: a lazily loaded client, the namespace, and :meth:`call`."""

    def __init__(self, namespace: str, *, api_client: Any = None, kubeconfig: str | None = None,
                 context: str | None = None) -> None:
        self.namespace = namespace
        self.kubeconfig, self.context = kubeconfig, context
        self.flags = namespace_flags(namespace, kubeconfig, context)  # what a printed command needs to get here
        self._client = api_client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client, self.context = load_api_client(self.kubeconfig, self.context)
        return self._client

    @property
    def cluster(self) -> str:
        """``https://10.0.0.1:6443 (context prod)``: the cluster named in every error."""
        host = getattr(getattr(self.client, "configuration", None), "host", "") or "the API server"
        return f"{host} (context {self.context})" if self.context else host

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.client)

    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.client)

    def discovery(self) -> Any:
        from kubernetes import client

        return client.ApisApi(self.client)

    # ------------------------------------------------------------------------------------------ calls
    def call(self, access: Access, method: Any, *args: Any, missing_ok: bool = False, raw: bool = False,
             **kwargs: Any) -> Any:
        """``method(*args, **kwargs)`` with every failure explained; the JSON body (the raw response with
        ``raw``); None for a missing object (404) when ``missing_ok``."""
        from kubernetes.client.exceptions import ApiException

        # non-resource URLs (discovery, "/apis") are open to every authenticated user: no Role rule
        assert access.resource.startswith("/") or \
            (access.group, access.resource, access.verb) in REQUIRED_PERMISSIONS, access
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        kwargs["_preload_content"] = False
        try:
            with self.errors(access):
                response = method(*args, **kwargs)
        except ClusterError as error:
            cause = error.__cause__
            if missing_ok and isinstance(cause, ApiException) and cause.status == 404 and not is_not_served(cause):
                return None
            raise
        return response if raw else load_json(response)

    def lines(self, access: Access, response: Any) -> Iterator[bytes]:
        """The lines of a streamed response (a watch, a log follow), with a broken stream explained."""
        try:
            with self.errors(access):
                yield from response
        finally:
            response.release_conn()

    @contextmanager
    def errors(self, access: Access) -> Iterator[None]:
        """Turn whatever the client, urllib3 or the socket raise inside into one ClusterError."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        transport = (HTTPError, ConnectionError, TimeoutError, _websocket_error())
        try:
            yield
        except ApiException as err:
            raise self.explain(err, access) from err
        except transport as err:
            raise ClusterError(self.transport_failure(err, access)) from err

    def explain(self, err: Any, access: Access) -> ClusterError:
        """One line for an API server's error answer: the cluster, the call, the status and the fix."""
        where = f"cluster {self.cluster}: "
        target = f"{access} in namespace {self.namespace}"
        message = api_message(err.body)
        status = f"({err.status} {err.reason})"
        if err.status == 401:
            return ClusterError(f"{where}the cluster rejected your credentials {status} for {access.verb} "
                                f"{access.what}: they are missing or expired; renew the token or certificate "
                                f"in your kubeconfig (log in again) ({message})")
        if err.status == 403 and "system:anonymous" in message:
            return ClusterError(f"{where}no credentials were sent {status} for {access.verb} {access.what}: "
                                f"add a user with a token or client certificate to the kubeconfig context "
                                f"({message})")
        if err.status == 403:
            return ClusterError(f"{where}forbidden {status}: you may not {access.verb} {access.what} in "
                                f"namespace {self.namespace}: {message}. Ask an admin to bind {RBAC_ROLE} to you "
                                f"in that namespace (see manifests/rbac/)")
        if is_not_served(err):
            contract = next((c for c in all_contracts() if c.group == access.group), None)
            hint = contract.install_hint if contract else "install the CRD that serves it"
            return NotServed(f"{where}the API for {access.what} is not served by this cluster (CRD not "
                             f"installed): {hint}")
        if err.status == 404:
            return ClusterError(f"{where}{target} failed: not found {status}; see "
                                f"`{command('list', flags=self.flags)}` ({message})")
        if err.status == 409:
            return ClusterError(f"{where}{access.what} {access.name} already exists in namespace "
                                f"{self.namespace}: submit again with the same --name to upgrade it, or "
                                f"`{command('delete', access.name, flags=self.flags)}` first ({message})")
        if err.status in (400, 422):
            return ClusterError(f"{where}the API server refused {target} {status}: {message}. Fix the field "
                                "it names (in the values or the chart)")
        if err.status == 429:
            return ClusterError(f"{where}{target} failed: the API server is throttling requests {status}; "
                                f"retry in a minute ({message})")
        if err.status >= 500:
            return ClusterError(f"{where}{target} failed: the API server had an error {status}; retry, and if "
                                f"it persists check the control plane (`kubectl get --raw /readyz`) ({message})")
        return ClusterError(f"{where}{target} failed {status}: {message}")

    def transport_failure(self, err: BaseException, access: Access) -> str:
        """One line for a call that got no answer: unreachable, TLS, timeout."""
        from urllib3.exceptions import MaxRetryError, NewConnectionError, SSLError
        from urllib3.exceptions import TimeoutError as Urllib3Timeout

        reason = err.reason if isinstance(err, MaxRetryError) and err.reason is not None else err
        # without urllib3's "HTTPSConnection(host=..., port=...): " prefix: the cluster is named already
        detail = re.sub(r"^<?\w*Connection\w*[( ].*?[)>]: ", "", " ".join(str(reason).split()))
        if isinstance(reason, SSLError) or "SSL" in type(reason).__name__ or "CERTIFICATE" in detail:
            return (f"cluster {self.cluster}: TLS with the API server failed ({access}): {detail}. Check the "
                    "cluster's certificate-authority-data in your kubeconfig and that the server URL is the "
                    "cluster's")
        if isinstance(reason, Urllib3Timeout | TimeoutError) and not isinstance(reason, NewConnectionError):
            return (f"cluster {self.cluster}: the API server did not answer in time ({access}): check the "
                    f"network to the cluster and `kubectl cluster-info`, then retry ({detail})")
        return f"cluster {self.cluster}: cannot reach the API server ({access}): {detail}. To fix, {REACH_FIX}"


def _websocket_error() -> type[BaseException]:
    """The websocket client's base error (the exec stream of ``collect``), when it is installed."""
    try:
        from websocket import WebSocketException
    except ImportError:
        return ConnectionError
    return WebSocketException
