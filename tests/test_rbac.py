"""manifests/rbac/role.yaml grants exactly what the CLI uses: the backend's REQUIRED_PERMISSIONS table, which
covers every request the backend makes (recorded at the HTTP boundary) and every object the chart renders."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from k8s_fake import FakeApiServer, recorded

from whisper_k8s import chart
from whisper_k8s.backends.kubernetes import KubernetesScheduler
from whisper_k8s.backends.kubernetes_jobs import delete_job
from whisper_k8s.backends.kubernetes_rbac import REQUIRED_PERMISSIONS
from whisper_k8s.operators import get_contract

ROOT = Path(__file__).resolve().parents[1]
HELM_VERBS = {"get", "create", "patch", "update", "delete"}
# What the Python code itself reads, besides the chart's objects; plus helm's release records.
NON_CHART_RESOURCES = {("", "pods"), ("", "pods/log"), ("", "pods/exec"), ("", "events"), ("", "secrets")}
# Every chart configuration whose objects differ in kind: both operators, both gang schedulers.
CHART_VARIANTS = [{}, {"scheduling": {"gang": "volcano"}}, {"scheduling": {"gang": "coscheduling"}},
                  {"operator": "trainjob"}, {"operator": "trainjob", "scheduling": {"gang": "volcano"}}]


def granted(role: dict) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def permission_of(method: str, url: str, query: dict) -> tuple[str, str, str] | None:
    """The RBAC (group, resource, verb) of a request; None for discovery (non-resource) URLs."""
    parts = urlsplit(url).path.strip("/").split("/")
    if "namespaces" not in parts:
        return None if len(parts) <= 3 else ("cluster-scoped", "/".join(parts), method)
    group = "" if parts[0] == "api" else parts[1]
    rest = parts[parts.index("namespaces") + 2:]
    resource = "/".join([rest[0], *rest[2:]]) if len(rest) > 2 else rest[0]
    if method == "GET":
        verb = "get" if len(rest) > 1 else ("watch" if query.get("watch") == "true" else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    return group, resource, verb


def test_the_role_grants_exactly_the_required_permissions():
    role = yaml.safe_load((ROOT / "manifests" / "rbac" / "role.yaml").read_text())
    assert role["kind"] == "Role" and role["metadata"]["name"] == "whisper-submitter"
    assert granted(role) == set(REQUIRED_PERMISSIONS)


def test_the_binding_and_account_reference_the_role():
    binding = yaml.safe_load((ROOT / "manifests" / "rbac" / "rolebinding.yaml").read_text())
    account = yaml.safe_load((ROOT / "manifests" / "rbac" / "serviceaccount.yaml").read_text())
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "whisper-submitter"}
    assert binding["subjects"][0] == {"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                      "namespace": account["metadata"]["namespace"]}


@pytest.mark.parametrize("values", CHART_VARIANTS, ids=["default", "volcano", "coscheduling", "trainjob",
                                                         "trainjob-volcano"])
def test_helm_may_manage_every_object_the_chart_renders(values):
    for doc in chart.render(values, "rbac-check"):
        group = doc["apiVersion"].rpartition("/")[0]
        resource = doc["kind"].lower() + "s"
        missing = {v for v in HELM_VERBS if (group, resource, v) not in REQUIRED_PERMISSIONS}
        assert not missing, f"helm cannot manage {doc['kind']}: add {sorted(missing)} on {group}/{resource}"


def test_the_table_has_no_resource_that_nothing_uses():
    rendered = set()
    for values in CHART_VARIANTS:
        rendered |= {(d["apiVersion"].rpartition("/")[0], d["kind"].lower() + "s")
                     for d in chart.render(values, "rbac-check")}
    used = {(group, resource) for group, resource, _ in REQUIRED_PERMISSIONS}
    assert ("trainer.kubeflow.org", "trainingruntimes") in rendered
    assert used == rendered | NON_CHART_RESOURCES


def test_every_request_the_backend_makes_is_namespaced_and_granted():
    jobs = "/apis/kubeflow.org/v1/namespaces/default/pytorchjobs"
    pods = "/api/v1/namespaces/default/pods"
    fake = FakeApiServer({
        ("GET", "/apis/kubeflow.org/v1"): "discovery_get_apis_kubeflow.org_v1_200",
        # describe, logs, logs -f (then gone: the follow ends), delete (then gone: verified)
        ("GET", f"{jobs}/whisper-train"): ["pods_owner_pytorchjob_create_201"] * 3
        + ["pytorchjob_get_after_delete_404", "pods_owner_pytorchjob_create_201", "pytorchjob_get_after_delete_404"],
        ("GET", jobs): "pytorchjob_list_200",
        # this cluster serves no Trainer v2 (tests/test_trainjob.py covers that kind's requests)
        ("GET", "/apis/trainer.kubeflow.org/v1alpha1/namespaces/default/trainjobs"):
            "discovery_get_apis_kubeflow.org_v1_without_crd_404",
        ("DELETE", f"{jobs}/whisper-train"): "pytorchjob_delete_200",
        ("GET", pods): "pods_list_by_label_selector_200",
        ("GET", f"{pods}?watch=true"): "pods_watch_label_selector.jsonl",
        ("GET", f"{pods}/whisper-train-master-0/log"): "pod_log_running_pod",
        ("GET", "/api/v1/namespaces/default/events"): "events_list_pending_pod_200",
    })
    backend = KubernetesScheduler(api_client=fake.client(), poll_seconds=0.01)
    backend.require_operator("pytorchjob")
    backend.describe("whisper-train")
    backend.list()
    list(backend.log_iter("whisper-train"))
    list(backend.log_iter("whisper-train", follow=True))
    delete_job(backend.api, get_contract("pytorchjob"), "whisper-train", timeout=5, poll_seconds=0.01)

    used = {permission_of(method, path, query) for method, path, query in fake.requests} - {None}
    # a namespaced Role cannot grant cluster-wide reads (the SA's GET /api/v1/pods was refused with 403)
    assert recorded("rbac_sa_list_pods_all_namespaces_403")["status"] == 403
    assert not [p for p in used if p[0] == "cluster-scoped"]
    assert used <= set(REQUIRED_PERMISSIONS)
    assert {("", "pods", "watch"), ("", "pods/log", "get"), ("", "events", "list"),
            ("kubeflow.org", "pytorchjobs", "delete")} <= used


def test_helm_release_records_need_secrets_which_a_job_only_role_lacks():
    # The recorded submitter Role (pytorchjobs + pods only) was refused listing secrets: helm, which keeps
    # its release records in Secrets, could not have worked with it. Ours grants what helm needs.
    refused = recorded("rbac_sa_list_secrets_in_team-a_403")["body"]
    assert refused["details"]["kind"] == "secrets" and "cannot list resource" in refused["message"]
    recorded_role = recorded("rbac_role_create_201")["body"]
    assert ("", "secrets", "list") not in granted(recorded_role)
    assert {("", "secrets", v) for v in ("get", "list", "create", "update", "delete")} <= set(REQUIRED_PERMISSIONS)
