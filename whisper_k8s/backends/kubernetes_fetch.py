"""``collect`` on Kubernetes: a short-lived helper pod reads the outputs volume and streams a tar back.

The outputs live on a volume only pods can mount, so collect starts one pod that mounts the job's outputs
volume (read-only) and its ConfigMap exactly as the job's master pod does (same image, security context,
node selector and tolerations, so a hostPath volume is found on the same node), runs
``python -m whisper_k8s.collect`` there (the image holds this package: the file selection is the same code
as the local backend's), receives the tar over the exec API's binary channel with a progress bar, unpacks
it safely and deletes the pod. ``activeDeadlineSeconds`` ends the pod even if this process dies.

Permissions this needs beyond `status`: pods create/get/delete and pods/exec create. Every call, the exec
stream included, goes through :class:`~whisper_k8s.backends.kubernetes_api.ClusterApi`'s error path.
"""

from __future__ import annotations

import tarfile
import tempfile
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from whisper_k8s.backends.kubernetes_api import Access, ClusterApi
from whisper_k8s.collect import CONFIG, finish_fetch, transfer_bar
from whisper_k8s.errors import ClusterError, UserError
from whisper_k8s.operators import DEFAULT_OPERATOR, get_contract

OUTPUTS_MOUNT = "/outputs"
CONFIG_MOUNT = "/config"
POD_DEADLINE_SECONDS = 3600
START_TIMEOUT_SECONDS = 300
HELPER_LABEL = "whisper-k8s/collect-for"
_REMOTE = ["python", "-c", "from whisper_k8s.collect import write_outputs_tar; write_outputs_tar()"]


def _mounted(container: dict[str, Any], volumes: dict[str, dict], path: str) -> dict[str, Any] | None:
    for mount in container.get("volumeMounts") or []:
        if mount["mountPath"].rstrip("/") == path and not mount.get("subPath"):
            return volumes[mount["name"]]
    return None


def helper_pod(documents: list[dict[str, Any]], operator: str = DEFAULT_OPERATOR) -> dict[str, Any]:
    """The collect pod for a job: its first pod's image, security and placement, outputs mounted read-only.

    ``documents``: the job object as the cluster returns it (plus, for a TrainJob, its TrainingRuntime).
    """
    job = get_contract(operator).read_job(documents)
    master = job.replicas[0]
    spec = master.pod_spec
    container = next(c for c in spec.get("containers") or [] if c.get("name") == master.container)
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    outputs = _mounted(container, volumes, OUTPUTS_MOUNT)
    if outputs is None:
        raise UserError(f"job {job.name} mounts no volume at {OUTPUTS_MOUNT}: nothing to collect")
    chosen = [(outputs, OUTPUTS_MOUNT)]
    config = _mounted(container, volumes, CONFIG_MOUNT)
    if config is not None:
        chosen.append((config, CONFIG_MOUNT))
    pod_spec = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": POD_DEADLINE_SECONDS,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containers": [{
            "name": "collect",
            "image": container["image"],
            "imagePullPolicy": container.get("imagePullPolicy", "IfNotPresent"),
            "command": ["sleep", str(POD_DEADLINE_SECONDS)],
            "env": [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                          "limits": {"cpu": "1", "memory": "2Gi"}},
            "volumeMounts": [{"name": v["name"], "mountPath": path, "readOnly": True} for v, path in chosen]
            + [{"name": "tmp", "mountPath": "/tmp"}],
        }],
        "volumes": [v for v, _ in chosen] + [{"name": "tmp", "emptyDir": {}}],
    }
    for key in ("securityContext", "nodeSelector", "tolerations", "imagePullSecrets", "affinity"):
        if spec.get(key):
            pod_spec[key] = spec[key]
    if container.get("securityContext"):
        pod_spec["containers"][0]["securityContext"] = container["securityContext"]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{job.name}-collect-{uuid.uuid4().hex[:5]}", "namespace": job.namespace,
                     "labels": {HELPER_LABEL: job.name, "app.kubernetes.io/part-of": "whisper-k8s"}},
        "spec": pod_spec,
    }


def safe_extract(archive: Path, dest: Path) -> None:
    """Unpack regular files and folders only, each inside ``dest`` (no links, no absolute or ``..`` paths)."""
    with tarfile.open(archive, mode="r:") as tar:
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts
            if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                raise ClusterError(f"refusing tar member {member.name!r} from the collect pod")
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: the standard safe filter too
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)


def _wait_running(api: ClusterApi, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    where = f"cluster {api.cluster}: collect pod {api.namespace}/{name}"
    while True:
        pod = api.call(Access("", "pods", "get", name), api.core().read_namespaced_pod, name, api.namespace)
        status = pod.get("status") or {}
        phase = status.get("phase")
        if phase == "Running":
            return
        if phase in ("Failed", "Succeeded"):
            raise ClusterError(f"{where} ended ({phase}) before it could be used")
        waiting = [s["state"]["waiting"] for s in status.get("containerStatuses") or []
                   if (s.get("state") or {}).get("waiting")]
        if waiting and waiting[0].get("reason") in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
            raise ClusterError(f"{where}: {waiting[0]['reason']}: {waiting[0].get('message', '')}")
        if time.monotonic() >= deadline:
            conditions = [" ".join(f"{c.get('type')}={c.get('status')} {c.get('reason') or ''} "
                                   f"{c.get('message') or ''}".split()) for c in status.get("conditions") or []]
            raise ClusterError(f"{where} is still {phase} after {timeout:.0f}s: " + "; ".join(conditions))
        time.sleep(2)


def _stream_tar(api: ClusterApi, name: str, archive: Path) -> int | str:
    """Run the selection in the pod and write its tar stdout to ``archive``; return the iteration."""
    from kubernetes.stream import stream

    access = Access("", "pods/exec", "create", name)
    with api.errors(access):
        response = stream(api.core().connect_get_namespaced_pod_exec, name, api.namespace, command=_REMOTE,
                          container="collect", stderr=True, stdin=False, stdout=True, tty=False,
                          _preload_content=False, binary=True)
    errors, iteration, bar = b"", None, None
    try:
        with open(archive, "wb") as out:
            while response.is_open():
                with api.errors(access):
                    response.update(timeout=5)
                if response.peek_stderr():
                    errors += response.read_stderr()
                    if iteration is None and b"\n" in errors:
                        first, _, errors = errors.partition(b"\n")
                        words = first.decode(errors="replace").split()
                        if len(words) == 4 and words[0] == "iteration":
                            iteration = int(words[1]) if words[1].isdigit() else words[1]
                            bar = transfer_bar(int(words[3]), "fetch outputs")
                if response.peek_stdout():
                    chunk = response.read_stdout()
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        code = response.returncode
    finally:
        if bar is not None:
            bar.close()
        response.close()
    if code not in (0, None) or iteration is None:
        message = errors.decode(errors="replace").strip().splitlines()[-3:]
        raise ClusterError(f"cluster {api.cluster}: collect pod {api.namespace}/{name} could not read the "
                           f"outputs: {' | '.join(message)}")
    return iteration


def fetch_outputs(api: ClusterApi, documents: list[dict[str, Any]], dest: Path, *,
                  operator: str = DEFAULT_OPERATOR, start_timeout: float = START_TIMEOUT_SECONDS) -> Path:
    """Start the helper pod, stream the selected outputs into ``dest``, delete the pod; return ``dest``."""
    pod = helper_pod(documents, operator)
    name = pod["metadata"]["name"]
    api.call(Access("", "pods", "create", name), api.core().create_namespaced_pod, api.namespace, pod)
    try:
        _wait_running(api, name, start_timeout)
        with tempfile.TemporaryDirectory(prefix="whisper-collect-", dir=dest.parent) as tmp:
            archive = Path(tmp) / "outputs.tar"
            iteration = _stream_tar(api, name, archive)
            safe_extract(archive, dest)
    finally:
        api.call(Access("", "pods", "delete", name), api.core().delete_namespaced_pod, name, api.namespace,
                 grace_period_seconds=0, missing_ok=True)
    (dest / CONFIG).mkdir(exist_ok=True)
    finish_fetch(dest, iteration)
    return dest
