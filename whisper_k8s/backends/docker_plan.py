"""The docker backend's plan: every container of a rendered job as ``docker run`` arguments (pure).

The operator contract (:mod:`whisper_k8s.operators`) says which pods the job becomes, their names, node ranks
and environment; every pod becomes a container of that name (``<job>-master-0``, ``<job>-worker-0``) on one
user-defined network of the job, so the master's address resolves by DNS exactly as the operator's headless
service does in a cluster. The pods' init containers run first, one after the other, to completion.

Volumes become host folders as in the local backend (:func:`whisper_k8s.backends.local_plan.volume_folder`:
hostPath as is, each PersistentVolumeClaim one folder under ``<state>/<job>/volumes`` shared by all
containers, each emptyDir one per pod, each ConfigMap a folder of its files), bind-mounted at the pod's mount
paths, so no path inside the containers changes. ``/dev/shm`` memory volumes become ``--shm-size``. The pod
security context becomes ``--user``, ``--group-add``, ``--read-only``, ``--cap-drop`` and
``no-new-privileges``; the host folders are handed to the pod's user when we run as root (fsGroup's job).

Accelerators: a container asking for ``nvidia.com/gpu`` gets ``--gpus device=...`` (the NVIDIA container
runtime), one asking for ``huawei.com/Ascend910`` gets ``--runtime ascend`` with ``ASCEND_VISIBLE_DEVICES``
(the Ascend docker runtime); replicas get consecutive, disjoint device indices. A job that asks for a device
the host's engine has no runtime for is refused before anything starts. CPU and memory requests and limits
are not applied: they size pods for cluster nodes, not for one host.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from whisper_k8s.backends.local_plan import (
    claim_volumes,
    config_map_files,
    container_env,
    expand_references,
    main_container,
    volume_folder,
)
from whisper_k8s.errors import UserError
from whisper_k8s.operators import OperatorJob, Replica, RestartRule

OUTPUTS_MOUNT = "/outputs"
CONFIG_MOUNT = "/config"
LABEL = "io.whisper-k8s."  # container labels: io.whisper-k8s.job=<name>, ...
DEFAULT_SHM = "1g"
NVIDIA_GPU = "nvidia.com/gpu"
ASCEND_NPU = "huawei.com/Ascend910"
_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")


def network_name(job: str) -> str:
    return f"whisper-k8s-{job}"


def shm_size(quantity: str | None) -> str:
    """A Kubernetes quantity (``32Gi``) as the engine's size (``32g``); the default when absent."""
    if not quantity:
        return DEFAULT_SHM
    match = _QUANTITY.match(str(quantity))
    if not match:
        raise UserError(f"emptyDir sizeLimit {quantity!r} of /dev/shm is not a size like 8Gi")
    number, unit = int(match.group(1)), match.group(2) or ""
    if unit in ("Ti", "T"):
        return f"{number * 1024}g"
    return f"{number}{ {'': 'b', 'Ki': 'k', 'k': 'k', 'Mi': 'm', 'M': 'm', 'Gi': 'g', 'G': 'g'}[unit]}"


# -------------------------------------------------------------------------------------------- accelerators
def device_requests(container: dict[str, Any]) -> dict[str, int]:
    """The accelerators a container asks for (limits, else requests): {resource name: count}."""
    resources = container.get("resources") or {}
    wanted = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
    return {name: int(wanted[name]) for name in (NVIDIA_GPU, ASCEND_NPU) if int(wanted.get(name) or 0) > 0}


def accelerator_arguments(devices: dict[str, int], first: dict[str, int], runtimes: set[str],
                          pod: str) -> list[str]:
    """Engine arguments passing ``devices`` through, starting at device index ``first[resource]``.

    NVIDIA: the NVIDIA container runtime's ``--gpus device=i,j``. Ascend: the Ascend docker runtime
    (``--runtime ascend``) with ``ASCEND_VISIBLE_DEVICES=i,j``. UserError when the runtime is missing.
    """
    arguments: list[str] = []
    for resource, count in sorted(devices.items()):
        indices = ",".join(str(first.get(resource, 0) + k) for k in range(count))
        if resource == NVIDIA_GPU:
            if "nvidia" not in runtimes:
                raise UserError(f"pod {pod} asks for {count} {resource} but this host's container engine has "
                                "no NVIDIA runtime (install the NVIDIA container toolkit, or submit with "
                                "--accelerator cpu)")
            arguments += ["--gpus", f'"device={indices}"']
        elif resource == ASCEND_NPU:
            if "ascend" not in runtimes:
                raise UserError(f"pod {pod} asks for {count} {resource} but this host's container engine has "
                                "no Ascend runtime (install Ascend Docker Runtime, or submit with "
                                "--accelerator cpu)")
            arguments += ["--runtime", "ascend", "-e", f"ASCEND_VISIBLE_DEVICES={indices}"]
    return arguments


# ------------------------------------------------------------------------------------------------ run args
def security_arguments(pod_spec: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """The pod and container security context as engine arguments (user, groups, read-only root, caps)."""
    pod_context = pod_spec.get("securityContext") or {}
    context = {**pod_context, **(container.get("securityContext") or {})}
    arguments = []
    if "runAsUser" in context:
        arguments += ["--user", f"{context['runAsUser']}:{context.get('runAsGroup', context['runAsUser'])}"]
    if "fsGroup" in pod_context:
        arguments += ["--group-add", str(pod_context["fsGroup"])]
    for group in pod_context.get("supplementalGroups") or []:
        arguments += ["--group-add", str(group)]
    if context.get("readOnlyRootFilesystem"):
        arguments.append("--read-only")
    for capability in (context.get("capabilities") or {}).get("drop") or []:
        arguments += ["--cap-drop", capability]
    if context.get("allowPrivilegeEscalation") is False:
        arguments += ["--security-opt", "no-new-privileges"]
    return arguments


def mount_arguments(container: dict[str, Any], pod_spec: dict[str, Any], pod: str,
                    job_path: Path) -> tuple[list[str], dict[str, str]]:
    """``-v host:path[:ro]`` per volume mount (memory /dev/shm as ``--shm-size``), and path -> host folder."""
    volumes = {volume["name"]: volume for volume in pod_spec.get("volumes") or []}
    arguments: list[str] = []
    mounts: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        path = mount["mountPath"].rstrip("/") or "/"
        volume = volumes.get(mount["name"])
        if volume is None:
            raise UserError(f"container {container.get('name')} of pod {pod} mounts volume {mount['name']!r}, "
                            "which the pod does not define")
        empty_dir = volume.get("emptyDir")
        if empty_dir is not None and empty_dir.get("medium") == "Memory":
            if path == "/dev/shm":
                arguments += ["--shm-size", shm_size(empty_dir.get("sizeLimit"))]
            else:
                arguments += ["--tmpfs", path]
            continue
        host = volume_folder(volume, pod, job_path) / mount.get("subPath", "")
        mounts[path] = str(host)
        arguments += ["-v", f"{host}:{path}" + (":ro" if mount.get("readOnly") else "")]
    return arguments, mounts


def restart_arguments(policy: str, rule: RestartRule) -> list[str]:
    """The operator's restart rule as the engine's restart policy of a trainer container.

    In place (PyTorchJob): the engine restarts a failed container in place like the kubelet, at most
    ``limit`` times each; the operator's limit on the restarts of all pods together is applied when the job is
    read (:func:`whisper_k8s.backends.docker.job_status`). Every replica (TrainJob): no engine restart, as no
    process here could recreate all containers; a failure fails the job. ``ExitCode`` (restart on signals
    only) has no engine equivalent either.
    """
    if rule.scope != RestartRule.IN_PLACE:
        return []
    if policy == "OnFailure" and (rule.limit is None or rule.limit > 0):
        return ["--restart", "on-failure" if rule.limit is None else f"on-failure:{rule.limit}"]
    return ["--restart", "always"] if policy == "Always" else []


def container_labels(job: OperatorJob, replica: Replica, step: str, volumes: dict[str, str],
                     claims: list[dict[str, Any]]) -> dict[str, str]:
    """What ``status``/``logs``/``collect``/``delete`` read back (never process memory); ``claims``: the
    job's claim folders and which of them ``delete`` keeps (whisper_k8s.backends.kept_outputs)."""
    labels = {
        "job": job.name, "namespace": job.namespace, "operator": job.operator, "pod": replica.pod_name,
        "role": replica.role, "index": str(replica.index), "node-rank": str(replica.node_rank), "step": step,
        "restart": json.dumps(dataclasses.asdict(job.restart), separators=(",", ":")),
        "claims": json.dumps(claims, separators=(",", ":")),
    }
    labels.update({name: volumes[path] for name, path in (("outputs", OUTPUTS_MOUNT), ("config", CONFIG_MOUNT))
                   if path in volumes})
    return {LABEL + key: value for key, value in labels.items()}


def run_arguments(container: dict[str, Any], replica: Replica, job: OperatorJob, documents: list[dict[str, Any]],
                  job_path: Path, *, init: bool, devices: list[str]) -> dict[str, Any]:
    """One ``docker run`` of one container of one pod: its name, argv (after ``docker``) and host folders."""
    pod, spec = replica.pod_name, replica.pod_spec
    if not container.get("image"):
        raise UserError(f"container {container.get('name')} of pod {pod} has no image")
    step = "init-" + container["name"] if init else "main"
    name = f"{pod}-init-{container['name']}" if init else pod
    mounts, volumes = mount_arguments(container, spec, pod, job_path)
    env = container_env(container, {} if init else replica.env, replica, job.namespace, documents, {})
    argv = ["run", "--detach", "--name", name, "--hostname", pod, "--network", network_name(job.name),
            "--network-alias", pod]
    claims = claim_volumes(job, documents, job_path)
    for key, value in {**replica.labels, **container_labels(job, replica, step, volumes, claims)}.items():
        argv += ["--label", f"{key}={value}"]
    argv += security_arguments(spec, container) + mounts
    if not init:
        argv += restart_arguments(replica.restart_policy, job.restart) + devices
    for key, value in env.items():
        argv += ["-e", f"{key}={value}"]
    if container.get("workingDir"):
        argv += ["--workdir", container["workingDir"]]
    command = [expand_references(str(part), env) for part in container.get("command") or []]
    args = [expand_references(str(part), env) for part in container.get("args") or []]
    if command:
        argv += ["--entrypoint", command[0], container["image"], *command[1:], *args]
    else:
        argv += [container["image"], *args]
    return {"name": name, "init": init, "argv": argv, "folders": sorted(set(volumes.values()))}


def build_plan(job: OperatorJob, documents: list[dict[str, Any]], job_path: Path,
               runtimes: set[str]) -> dict[str, Any]:
    """Every container of the job in start order (each pod's init containers, then the trainers)."""
    next_device: dict[str, int] = {}
    init_runs, main_runs = [], []
    for replica in job.replicas:
        spec = replica.pod_spec
        for container in spec.get("initContainers") or []:
            init_runs.append(run_arguments(container, replica, job, documents, job_path, init=True, devices=[]))
        main = main_container(replica, job)
        wanted = device_requests(main)
        devices = accelerator_arguments(wanted, next_device, runtimes, replica.pod_name)
        for resource, count in wanted.items():
            next_device[resource] = next_device.get(resource, 0) + count
        main_runs.append(run_arguments(main, replica, job, documents, job_path, init=False, devices=devices))
    owner = next((security_owner(r.pod_spec) for r in job.replicas if security_owner(r.pod_spec)), None)
    return {"name": job.name, "namespace": job.namespace, "network": network_name(job.name),
            "job_path": str(job_path), "owner": owner, "runs": init_runs + main_runs,
            "config_files": config_map_files(documents, job, job_path, {})}


def security_owner(pod_spec: dict[str, Any]) -> list[int] | None:
    """(uid, gid) the host folders are handed to: the pod's runAsUser and fsGroup (or runAsGroup)."""
    context = pod_spec.get("securityContext") or {}
    if "runAsUser" not in context:
        return None
    return [int(context["runAsUser"]), int(context.get("fsGroup", context.get("runAsGroup", 0)))]
