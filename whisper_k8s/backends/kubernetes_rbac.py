"""The permissions the CLI needs in a namespace: ``manifests/rbac/role.yaml`` grants exactly these, and a test
holds the two equal and checks that every request the backend makes is in the table. The rows of the job
kinds come from the operator contracts."""

from whisper_k8s.operators import all_contracts

RBAC_ROLE = "manifests/rbac/role.yaml"

# What the CLI and helm do with each operator's job objects, and with a job's own runtime (a TrainJob's).
JOB_VERBS = {
    "get": "status, delete verification, re-submit check",
    "list": "list jobs of this kit",
    "create": "helm: install the job",
    "patch": "helm: server-side apply on upgrade",
    "update": "helm: upgrade",
    "delete": "delete (helm uninstall, or directly when not helm-managed)",
}
RUNTIME_VERBS = {
    "get": "collect: the job's pod spec; delete: is it ours",
    "create": "helm: the job's own runtime (a pre-install hook)",
    "patch": "helm",
    "update": "helm",
    "delete": "helm: before-hook-creation; delete: uninstall leaves hooks behind",
}

# (API group, resource, verb) -> why the CLI needs it. manifests/rbac/role.yaml grants exactly these.
# Rows marked "helm" are requests the helm binary makes for the chart's objects and its release records.
REQUIRED_PERMISSIONS: dict[tuple[str, str, str], str] = {
    **{(c.group, c.plural, verb): why for c in all_contracts() for verb, why in JOB_VERBS.items()},
    **{(c.group, c.runtime_plural, verb): why for c in all_contracts() if c.runtime_plural
       for verb, why in RUNTIME_VERBS.items()},
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
    ("", "persistentvolumeclaims", "get"): "helm: dataset/models/outputs claims the chart creates; delete: which stay",
    ("", "persistentvolumeclaims", "create"): "helm",
    ("", "persistentvolumeclaims", "patch"): "helm",
    ("", "persistentvolumeclaims", "update"): "helm",
    ("", "persistentvolumeclaims", "delete"): "helm; delete --purge-outputs: the outputs claim",
    **{(group, "podgroups", verb): "helm: the gang-scheduling PodGroup (scheduling.gang volcano/coscheduling)"
       for group in ("scheduling.volcano.sh", "scheduling.x-k8s.io")
       for verb in ("get", "create", "patch", "update", "delete")},
}
