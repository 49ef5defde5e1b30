"""Turn the pods an operator would create into local process steps (pure: nothing is written or started).

For each replica (from :mod:`whisper_k8s.operators`) the plan holds its steps: the pod's init containers in
order, then the trainer container, each as argv + env + working directory. How a pod maps to this machine:

* **Volumes** become local folders: ``hostPath`` -> that path; ``persistentVolumeClaim`` ->
  ``<job>/volumes/<claimName>`` (one folder per claim, shared by every replica, like a ReadWriteMany
  volume); ``emptyDir`` -> ``<job>/volumes/<pod>/<volume>`` (one per pod), except scratch mounts at
  ``/dev/shm`` and ``/tmp`` (there only because the pod's root filesystem is read-only), which stay the
  host's own, so host paths under /tmp given in values keep working; ``configMap`` -> ``<job>/volumes/configmap-
  <name>`` holding the ConfigMap's files. ``subPath`` mounts map to the sub-folder.
* **Paths**: every occurrence of a mount path (``/outputs``, ``/config/model.json``...) in a container's
  command, args, env values and working directory, and in the ConfigMap's file contents, is rewritten to
  the local folder. A mount path only matches as a whole path component (``/data`` is not rewritten inside
  ``/dataset`` or ``/x/data``).
* **Executables**: ``torchrun`` and ``python``/``python3`` as the first word of the command run this
  environment's executables; the environment's ``bin`` folder is first on ``PATH`` for everything else.
* **Environment**, in Kubernetes order (later entries win): the container's own ``env`` (``fieldRef`` and
  ``configMapKeyRef`` resolved), then what the operator injects (trainer containers only; init containers
  get none, as with the real operator); ``$(VAR)`` references expand as the kubelet expands them. The
  master address variables become ``127.0.0.1``; the master port variables become :data:`PORT_PLACEHOLDER`,
  which the supervisor replaces (in env and argv) by a free local port at each (re)start.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

from whisper_k8s.errors import UserError
from whisper_k8s.operators import OperatorJob, Replica, RestartRule

LOCAL_HOST = "127.0.0.1"
LOCAL_NODE = "localhost"
PORT_PLACEHOLDER = "{local-master-port}"
DEFAULT_GRACE_SECONDS = 30
# Used when the job sets no restart limit (the operator would then restart forever).
DEFAULT_LOCAL_BACKOFF = 3
_HOST_MOUNTS = ("/dev/shm", "/tmp")
KEEP_ANNOTATION = "helm.sh/resource-policy"  # on the chart's claims when storage.keepClaims (helm uninstall keeps them)
_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


# ------------------------------------------------------------------------------------------------ volumes
def config_maps(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents if doc and doc.get("kind") == "ConfigMap"}


def volume_folder(volume: dict[str, Any], pod: str, job_path: Path) -> Path | None:
    """The local folder standing in for one pod volume (None: keep the host's own path)."""
    name = volume.get("name", "")
    if "hostPath" in volume:
        host = volume["hostPath"]
        must_exist = {"Directory": Path.is_dir, "File": Path.is_file}.get(host.get("type", ""))
        if must_exist and not must_exist(Path(host["path"])):
            raise UserError(f"volume {name!r} of pod {pod}: hostPath {host['path']} is not an existing "
                            f"{host['type'].lower()} (create it or fix the value that sets it)")
        return Path(host["path"])
    if "persistentVolumeClaim" in volume:
        return job_path / "volumes" / volume["persistentVolumeClaim"]["claimName"]
    if "emptyDir" in volume:
        return job_path / "volumes" / pod / name
    if "configMap" in volume:
        return job_path / "volumes" / f"configmap-{volume['configMap']['name']}"
    kinds = sorted(set(volume) - {"name"})
    raise UserError(
        f"volume {name!r} of pod {pod} is a {', '.join(kinds) or 'volume of unknown kind'}: the local backend "
        "maps hostPath, persistentVolumeClaim, emptyDir and configMap volumes only"
    )


def container_mounts(container: dict[str, Any], pod_spec: dict[str, Any], pod: str,
                     job_path: Path) -> dict[str, str]:
    """mountPath -> local folder for one container (host system mounts such as /dev/shm left out)."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    mounts = {}
    for mount in container.get("volumeMounts") or []:
        path = mount["mountPath"].rstrip("/") or "/"
        if path in _HOST_MOUNTS:
            continue
        if mount["name"] not in volumes:
            raise UserError(f"container {container.get('name')} of pod {pod} mounts volume {mount['name']!r}, "
                            "which the pod does not define")
        folder = volume_folder(volumes[mount["name"]], pod, job_path)
        if folder is not None:
            mounts[path] = str(folder / mount.get("subPath", ""))
    return mounts


def rewrite_paths(text: str, mounts: dict[str, str]) -> str:
    """Replace each mount path in ``text`` by its local folder, whole path components only."""
    if not mounts or not text:
        return text
    alternatives = "|".join(re.escape(path) for path in sorted(mounts, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w./-])({alternatives})(?![\w.-])")
    return pattern.sub(lambda m: mounts[m.group(1)], text)


def config_map_files(documents: list[dict[str, Any]], job: OperatorJob, job_path: Path,
                     mounts: dict[str, str]) -> dict[str, str]:
    """local file path -> content for every ConfigMap a replica mounts (paths in contents rewritten)."""
    maps = config_maps(documents)
    files: dict[str, str] = {}
    for replica in job.replicas:
        for volume in replica.pod_spec.get("volumes") or []:
            if "configMap" not in volume:
                continue
            ref = volume["configMap"]
            if ref["name"] not in maps:
                raise UserError(f"pod {replica.pod_name} mounts ConfigMap {ref['name']!r}, which the chart "
                                "did not render")
            data = maps[ref["name"]].get("data") or {}
            items = ref.get("items") or [{"key": key, "path": key} for key in data]
            folder = volume_folder(volume, replica.pod_name, job_path)
            for item in items:
                files[str(folder / item["path"])] = rewrite_paths(data[item["key"]], mounts)
    return files


def claim_volumes(job: OperatorJob, documents: list[dict[str, Any]], job_path: Path) -> list[dict[str, Any]]:
    """Each PersistentVolumeClaim the job's pods mount: its volume (the chart's storage key), the local folder
    standing in for it, whether the chart creates it and whether ``helm uninstall`` would keep it."""
    rendered = {doc["metadata"]["name"]: doc for doc in documents
                if doc and doc.get("kind") == "PersistentVolumeClaim"}
    claims: dict[str, dict[str, Any]] = {}
    for replica in job.replicas:
        for volume in replica.pod_spec.get("volumes") or []:
            name = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if not name or name in claims:
                continue
            created = rendered.get(name)
            annotations = ((created or {}).get("metadata") or {}).get("annotations") or {}
            claims[name] = {"claim": name, "volume": volume["name"],
                            "folder": str(volume_folder(volume, replica.pod_name, job_path)),
                            "created": created is not None,
                            "keep": created is None or annotations.get(KEEP_ANNOTATION) == "keep"}
    return list(claims.values())


# ---------------------------------------------------------------------------------------------- environment
def expand_references(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known names are replaced, unknown ones kept, ``$$`` is ``$``."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(replace, text)


def field_value(path: str, replica: Replica, namespace: str) -> str:
    """The value of a downward-API ``fieldRef`` for a local replica."""
    metadata = {"metadata.name": replica.pod_name, "metadata.namespace": namespace,
                "spec.nodeName": LOCAL_NODE, "status.podIP": LOCAL_HOST, "status.hostIP": LOCAL_HOST}
    if path in metadata:
        return metadata[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        source = replica.labels if match.group(1) == "labels" else (
            (replica.template.get("metadata") or {}).get("annotations") or {})
        return str(source.get(match.group(2), ""))
    raise UserError(f"fieldRef {path!r} in pod {replica.pod_name} has no local value")


def env_value(entry: dict[str, Any], replica: Replica, namespace: str, documents: list[dict]) -> str:
    if "value" in entry or "valueFrom" not in entry:
        return str(entry.get("value", ""))
    source = entry["valueFrom"]
    if "fieldRef" in source:
        return field_value(source["fieldRef"]["fieldPath"], replica, namespace)
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"]
        data = (config_maps(documents).get(ref["name"]) or {}).get("data") or {}
        if ref["key"] not in data:
            raise UserError(f"env {entry['name']} of pod {replica.pod_name}: ConfigMap {ref['name']!r} has no "
                            f"key {ref['key']!r}")
        return data[ref["key"]]
    raise UserError(f"env {entry['name']} of pod {replica.pod_name}: only value, fieldRef and configMapKeyRef "
                    "are supported by the local backend")


def container_env(container: dict[str, Any], injected: dict[str, str], replica: Replica, namespace: str,
                  documents: list[dict], mounts: dict[str, str]) -> dict[str, str]:
    """The container's env then the injected env, expanded in order; the last definition of a name wins."""
    env: dict[str, str] = {}
    entries = [(e["name"], rewrite_paths(env_value(e, replica, namespace, documents), mounts))
               for e in container.get("env") or []]
    for name, value in entries + list(injected.items()):
        env[name] = expand_references(value, env)
    return env


def localize_injected(env: dict[str, str], address_variables: tuple[str, ...],
                      port_variables: tuple[str, ...]) -> dict[str, str]:
    """The operator's env with the master address on this machine and the port left to the supervisor."""
    local = {name: LOCAL_HOST for name in address_variables}
    local.update({name: PORT_PLACEHOLDER for name in port_variables})
    return {name: local.get(name, value) for name, value in env.items()}


# ------------------------------------------------------------------------------------------------ commands
def resolve_executable(argv: list[str], python: str) -> list[str]:
    """``torchrun``/``python`` as the program run this environment's executables (see the module doc)."""
    if not argv:
        return argv
    program = argv[0]
    bin_dir = Path(python).parent
    if program == "torchrun":
        return [str(bin_dir / "torchrun"), *argv[1:]]
    if re.fullmatch(r"python(3(\.\d+)?)?", program):
        return [python, *argv[1:]]
    return argv


def container_step(container: dict[str, Any], replica: Replica, job: OperatorJob, documents: list[dict],
                   job_path: Path, injected: dict[str, str], python: str) -> dict[str, Any]:
    """One process to run: the container's argv, env and working directory mapped to this machine."""
    name = container.get("name", "")
    pod = replica.pod_name
    if not container.get("command"):
        raise UserError(f"container {name} of pod {pod} has no command: the local backend cannot know the "
                        "image's entrypoint (set command in the chart)")
    mounts = container_mounts(container, replica.pod_spec, pod, job_path)
    env = container_env(container, injected, replica, job.namespace, documents, mounts)
    argv = [expand_references(rewrite_paths(str(part), mounts), env)
            for part in [*container["command"], *(container.get("args") or [])]]
    work = container.get("workingDir")
    cwd = rewrite_paths(work, mounts) if work else ""
    if not cwd or cwd == work:
        cwd = str(job_path / "work" / pod)
    return {"container": name, "argv": resolve_executable(argv, python), "env": env, "cwd": cwd,
            "mounts": mounts}


def main_container(replica: Replica, job: OperatorJob) -> dict[str, Any]:
    """The pod's trainer container: the one the operator names (UserError when the pod has none by that name)."""
    for container in replica.pod_spec.get("containers") or []:
        if container.get("name") == replica.container:
            return container
    raise UserError(f"pod {replica.pod_name} has no container named {replica.container!r}, which the "
                    f"{job.operator} operator requires")


def replica_steps(replica: Replica, job: OperatorJob, documents: list[dict], job_path: Path,
                  address_variables: tuple[str, ...], port_variables: tuple[str, ...], python: str) -> list[dict[str, Any]]:
    spec = replica.pod_spec
    steps = [dict(container_step(c, replica, job, documents, job_path, {}, python), init=True)
             for c in spec.get("initContainers") or []]
    injected = localize_injected(replica.env, address_variables, port_variables)
    steps.append(dict(container_step(main_container(replica, job), replica, job, documents, job_path, injected,
                                     python), init=False))
    return steps


def build_plan(job: OperatorJob, documents: list[dict[str, Any]], job_path: Path, *,
               address_variables: tuple[str, ...], port_variables: tuple[str, ...],
               python: str = sys.executable) -> dict[str, Any]:
    """Everything the supervisor needs to run the job, as plain JSON-able data."""
    replicas = []
    for replica in job.replicas:
        grace = replica.pod_spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        replicas.append({
            "replica": replica.name, "role": replica.role, "index": replica.index,
            "node_rank": replica.node_rank, "pod": replica.pod_name, "restart_policy": replica.restart_policy,
            "grace_seconds": grace,
            "steps": replica_steps(replica, job, documents, job_path, address_variables, port_variables,
                                   python),
        })
    job_mounts = {path: local for step in replicas[0]["steps"] for path, local in step["mounts"].items()}
    folders = {local for replica in replicas for step in replica["steps"] for local in step["mounts"].values()}
    rule = job.restart
    return {
        "name": job.name, "namespace": job.namespace, "operator": job.operator,
        "restart": {"scope": rule.scope, "inclusive": rule.inclusive, "source": rule.source,
                    "limit": DEFAULT_LOCAL_BACKOFF if rule.limit is None else rule.limit},
        "restart_limit_set": rule.limit is not None,
        "grace_seconds": max(r["grace_seconds"] for r in replicas),
        "bin_dir": str(Path(python).parent),
        "mounts": job_mounts,
        "folders": sorted(folders),
        "config_files": config_map_files(documents, job, job_path, job_mounts),
        "claims": claim_volumes(job, documents, job_path),
        "replicas": replicas,
    }


def describe_plan(plan: dict[str, Any]) -> list[str]:
    """One human line per thing the local backend will do (the dry run's header)."""
    restart = plan["restart"]
    lines = [f"local job {plan['name']}: {len(plan['replicas'])} replica(s); a failed replica restarts "
             f"{'in place' if restart['scope'] == RestartRule.IN_PLACE else 'every replica'}, limit "
             f"{restart['limit']}" + ("" if plan["restart_limit_set"] else " (local default)")
             + f" ({restart['source']})"]
    lines += [f"volume {path} -> {local}" for path, local in sorted(plan["mounts"].items())]
    for replica in plan["replicas"]:
        for step in replica["steps"]:
            kind = "init " if step["init"] else ""
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in step["env"].items())
            line = f"{replica['replica']} {kind}{step['container']}: {env} {shlex.join(step['argv'])}"
            lines.append(line.replace("\n", "\\n"))  # one line each: the dry run prints them as comments
    return lines
