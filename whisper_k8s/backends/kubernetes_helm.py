"""The helm binary as the Kubernetes backend runs it: install/upgrade and uninstall of a job's release.

Helm talks to the cluster itself, so its failures get the same treatment as the client's
(:mod:`whisper_k8s.backends.kubernetes_api`): one line naming the cluster, what failed and the fix.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from whisper_k8s.backends.kubernetes_api import REACH_FIX
from whisper_k8s.backends.kubernetes_rbac import RBAC_ROLE
from whisper_k8s.errors import ClusterError, UserError
from whisper_k8s.places import command

HELM_TIMEOUT_SECONDS = 600


class ReleaseNotFound(UserError):
    """helm has no release of that name in the namespace."""


def cluster_flags(kubeconfig: str | None, context: str | None) -> list[str]:
    flags = ["--kubeconfig", kubeconfig] if kubeconfig else []
    return flags + (["--kube-context", context] if context else [])


def helm_error(stderr: str) -> str:
    """helm's own error on one line (its ``Error: ...`` line, else its last line)."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    chosen = next((line for line in reversed(lines) if line.startswith("Error:")), lines[-1] if lines else "")
    return " ".join(chosen.removeprefix("Error:").split())


def run_helm(args: list[str], *, release: str, namespace: str, cluster: str, flags: Sequence[str] = ()) -> str:
    """Run ``args`` (a helm command line); its stdout, or one-line errors as ClusterError/UserError."""
    action = " ".join(args[1:3]) if args[1:2] == ["upgrade"] else args[1]
    try:
        result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=HELM_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"cluster {cluster}: helm {action} {release} did not finish in "
                           f"{HELM_TIMEOUT_SECONDS}s: check `kubectl cluster-info` and the release with "
                           f"`helm status {release} -n {namespace}`") from None
    if result.returncode == 0:
        return result.stdout
    error = helm_error(result.stderr)
    where = f"cluster {cluster}: helm {action} {release} failed"
    lowered = error.lower()
    if "release: not found" in lowered or "release not loaded" in lowered:
        raise ReleaseNotFound(f"no release {release} in namespace {namespace}: not found")
    if "unreachable" in lowered or "connection refused" in lowered or "no such host" in lowered:
        raise ClusterError(f"{where}, the API server cannot be reached ({error}). To fix, {REACH_FIX}")
    if "x509" in lowered or "certificate" in lowered or "tls" in lowered:
        raise ClusterError(f"{where}, TLS with the API server failed ({error}): check the cluster's "
                           "certificate-authority-data in your kubeconfig")
    if "unauthorized" in lowered or "credentials" in lowered:
        raise ClusterError(f"{where}: the cluster rejected your credentials ({error}): renew the token or "
                           "certificate in your kubeconfig (log in again)")
    if "forbidden" in lowered:
        raise ClusterError(f"{where}: refused by RBAC ({error}). Ask an admin to bind {RBAC_ROLE} to you in "
                           f"namespace {namespace}")
    if "exists and cannot be imported" in lowered or "already exists" in lowered:
        raise ClusterError(f"{where}: an object of job {release} exists outside this release ({error}): "
                           f"`{command('delete', release, flags=flags)}` or choose another --name")
    if "timeout" in lowered or "deadline exceeded" in lowered:
        raise ClusterError(f"{where}: the API server did not answer in time ({error}): check the network to "
                           "the cluster, then retry")
    raise ClusterError(f"{where}: {error}")
