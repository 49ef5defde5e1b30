"""Every cluster call goes through one error path: each job command, against a cluster that cannot be reached,
speaks no TLS, does not answer, or answers with an error, prints one line naming the cluster, what failed and
the fix, and exits 3.

The unreachable, TLS and timeout cases use the real client (and the real helm) against sockets on this
machine; the API's answers are the recorded ones (tests/fixtures/reference/k8s-api-responses); where no
recording exists (429, 5xx, an anonymous 403) the body is the API's own Status object, built with the
client's model ``V1Status``.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading

import pytest
import yaml
from k8s_fake import HOST, FakeApiServer, response_for

from whisper_k8s.cli.main import main

JOBS = "/apis/kubeflow.org/v1/namespaces/default/pytorchjobs"
# One invocation per job command; each must contact the cluster before it writes anything.
COMMANDS = {
    "submit": ["submit", "--name", "demo", "--nodes", "2"],
    "status": ["status", "demo"],
    "logs": ["logs", "demo"],
    "list": ["list"],
    "collect": ["collect", "demo", "--to", "{tmp}/model"],
    "delete": ["delete", "demo"],
}


def kubeconfig(tmp_path, server: str) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": server, "insecure-skip-tls-verify": False}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "me"}}],
        "users": [{"name": "me", "user": {"token": "t0ken"}}]}))
    return str(path)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(command: str, tmp_path, capsys, *extra: str) -> tuple[int, str]:
    argv = [part.format(tmp=tmp_path) for part in COMMANDS[command]]
    if command == "submit":
        argv += ["--values-out", str(tmp_path / "kept.yaml")]
    code = main([*argv, *extra])
    captured = capsys.readouterr()
    assert not (tmp_path / "kept.yaml").exists() and not (tmp_path / "model").exists()
    return code, captured.err


def assert_one_line(err: str, *phrases: str) -> None:
    assert err.startswith("error: cluster ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in err, (phrase, err)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_unreachable_api_server_is_one_line_and_exit_3(command, tmp_path, capsys):
    port = closed_port()
    code, err = run(command, tmp_path, capsys, "--kubeconfig", kubeconfig(tmp_path, f"https://127.0.0.1:{port}"))
    assert code == 3
    assert_one_line(err, f"cluster https://127.0.0.1:{port} (context lab): cannot reach the API server (",
                    "Connection refused", "`kubectl cluster-info` must work", "--local")


def test_the_real_cli_prints_only_that_line(tmp_path):
    """In a fresh process, with the CLI's own logging: no retry warnings, no traceback, just the line."""
    import os
    import subprocess
    import sys

    port = closed_port()
    result = subprocess.run([sys.executable, "-m", "whisper_k8s", "status", "demo", "--kubeconfig",
                             kubeconfig(tmp_path, f"https://127.0.0.1:{port}")], capture_output=True, text=True,
                            env=dict(os.environ), timeout=120)
    assert result.returncode == 3 and result.stdout == ""
    assert_one_line(result.stderr, f"cluster https://127.0.0.1:{port} (context lab): cannot reach the API server")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_recorded_401_is_one_line_and_exit_3(command, tmp_path, capsys, monkeypatch):
    from kubernetes import client as k8s

    client = k8s.ApiClient(k8s.Configuration(host=HOST))  # every request is answered 401, as recorded
    client.rest_client.pool_manager.request = lambda *args, **kwargs: response_for("auth_bad_token_401")
    monkeypatch.setattr("whisper_k8s.backends.kubernetes_api.load_api_client", lambda *a, **k: (client, "lab"))
    code, err = run(command, tmp_path, capsys)
    assert code == 3
    assert_one_line(err, "cluster https://k8s.test (context lab): the cluster rejected your credentials "
                         "(401 Unauthorized) for ", "missing or expired", "kubeconfig", "(Unauthorized)")


def test_recorded_403_names_the_verb_the_namespace_and_the_role(tmp_path, capsys, monkeypatch):
    """The recorded refusal of a service account's cluster-wide pod list, answered to `status`'s pod list."""
    fake = FakeApiServer({("GET", f"{JOBS}/demo"): "pods_owner_pytorchjob_create_201",
                          ("GET", "/api/v1/namespaces/default/pods"): "rbac_sa_list_pods_all_namespaces_403"})
    monkeypatch.setattr("whisper_k8s.backends.kubernetes_api.load_api_client", lambda *a, **k: (fake.client(), ""))
    assert main(["status", "demo"]) == 3
    assert_one_line(capsys.readouterr().err, "forbidden (403 Forbidden): you may not list pods in namespace "
                                             "default", "cannot list resource", "manifests/rbac/role.yaml")


class QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_a_server_that_speaks_no_tls_is_a_tls_error(tmp_path, capsys):
    server = http.server.HTTPServer(("127.0.0.1", 0), QuietHandler)  # plain HTTP where HTTPS is expected
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}"
        code, err = run("status", tmp_path, capsys, "--kubeconfig", kubeconfig(tmp_path, url))
    finally:
        server.shutdown()
    assert code == 3
    assert_one_line(err, f"cluster {url} (context lab): TLS with the API server failed (get "
                         "pytorchjobs.kubeflow.org demo)", "certificate-authority-data")


def test_a_server_that_never_answers_times_out(tmp_path, capsys, monkeypatch):
    listener = socket.create_server(("127.0.0.1", 0))  # accepts connections, never says a word
    monkeypatch.setattr("whisper_k8s.backends.kubernetes_api.REQUEST_TIMEOUT", (1, 0.5))
    try:
        url = f"https://127.0.0.1:{listener.getsockname()[1]}"
        code, err = run("list", tmp_path, capsys, "--kubeconfig", kubeconfig(tmp_path, url))
    finally:
        listener.close()
    assert code == 3
    assert_one_line(err, f"cluster {url} (context lab): the API server did not answer in time (list "
                         "pytorchjobs.kubeflow.org)", "check the network")


def status_body(code: int, reason: str, message: str) -> dict:
    from kubernetes import client

    status = client.V1Status(api_version="v1", kind="Status", status="Failure", code=code, reason=reason,
                             message=message, metadata=client.V1ListMeta())
    return {"status": code, "body": client.ApiClient().sanitize_for_serialization(status)}


@pytest.mark.parametrize(("status", "reason", "message", "expected"), [
    (429, "TooManyRequests", "Too many requests, please try again later.",
     "the API server is throttling requests (429 Too Many Requests); retry in a minute"),
    (500, "InternalError", "Internal error occurred: etcdserver: request timed out",
     "the API server had an error (500 Internal Server Error); retry, and if it persists check the control "
     "plane (`kubectl get --raw /readyz`)"),
    (503, "ServiceUnavailable", "the server is currently unable to handle the request",
     "the API server had an error (503 Service Unavailable)"),
    (403, "Forbidden", 'pytorchjobs.kubeflow.org is forbidden: User "system:anonymous" cannot list resource',
     "no credentials were sent (403 Forbidden) for list pytorchjobs.kubeflow.org: add a user"),
    (404, "NotFound", 'pytorchjobs.kubeflow.org "demo" not found',
     "get pytorchjobs.kubeflow.org demo in namespace default failed: not found (404 Not Found)"),
])
def test_api_answers_without_a_recording_are_explained(status, reason, message, expected, tmp_path, monkeypatch):
    import k8s_fake

    from whisper_k8s.backends.kubernetes import KubernetesScheduler
    from whisper_k8s.backends.kubernetes_api import Access
    from whisper_k8s.errors import ClusterError

    (tmp_path / "answer.json").write_text(json.dumps(status_body(status, reason, message)))
    monkeypatch.setattr(k8s_fake, "FIXTURES", tmp_path)
    monkeypatch.setitem(k8s_fake._REASONS, 429, "Too Many Requests")
    monkeypatch.setitem(k8s_fake._REASONS, 503, "Service Unavailable")
    fake = FakeApiServer({("GET", JOBS): "answer", ("GET", f"{JOBS}/demo"): "answer"})
    api = KubernetesScheduler(api_client=fake.client()).api
    verb, name = ("list", "") if status != 404 else ("get", "demo")
    method = api.custom().list_namespaced_custom_object if verb == "list" else api.custom().get_namespaced_custom_object
    args = ("kubeflow.org", "v1", "default", "pytorchjobs") + ((name,) if name else ())
    with pytest.raises(ClusterError) as raised:
        api.call(Access("kubeflow.org", "pytorchjobs", verb, name), method, *args)
    assert str(raised.value).startswith("cluster https://k8s.test: ") and expected in str(raised.value)
    assert "\n" not in str(raised.value) and message.split(":")[0] in str(raised.value)
