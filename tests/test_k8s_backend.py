"""The Kubernetes backend against recorded API responses (faked at urllib3, so the real client runs) and the
real helm binary (template mode and an unreachable cluster)."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from k8s_fake import FakeApiServer, changed

from whisper_k8s import chart
from whisper_k8s.backends import AppRequest, JobState, get_scheduler, kubernetes_jobs
from whisper_k8s.backends.kubernetes import KubernetesScheduler
from whisper_k8s.backends.kubernetes_api import Access
from whisper_k8s.errors import ClusterError, UserError
from whisper_k8s.operators import get_contract

JOBS = "/apis/kubeflow.org/v1/namespaces/default/pytorchjobs"
PODS = "/api/v1/namespaces/default/pods"
EVENTS = "/api/v1/namespaces/default/events"
DISCOVERY = "/apis/kubeflow.org/v1"
TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/default/trainjobs"
# What the server answers for the API path of a CRD it does not serve (recorded for kubeflow.org/v1).
NOT_SERVED = "discovery_get_apis_kubeflow.org_v1_without_crd_404"

# The pods of section 5 belong to job whisper-train; its recorded body is the create answer.
TRAIN_JOB = {("GET", f"{JOBS}/whisper-train"): "pods_owner_pytorchjob_create_201",
             ("GET", PODS): "pods_list_by_label_selector_200",
             ("GET", f"{EVENTS}?fieldSelector=involvedObject.name=whisper-train-worker-0"):
                 "events_list_pending_pod_200"}


def scheduler(routes, namespace="default", **kwargs):
    fake = FakeApiServer(routes)
    return KubernetesScheduler(namespace, api_client=fake.client(), poll_seconds=0.01, **kwargs), fake


def test_factory_builds_the_kubernetes_backend_without_touching_a_cluster():
    backend = get_scheduler("kubernetes", namespace="team-a", kubeconfig="/nonexistent")
    assert isinstance(backend, KubernetesScheduler) and backend.namespace == "team-a"
    with pytest.raises(UserError, match="unknown backend 'nomad'"):
        get_scheduler("nomad")


def test_status_explains_a_pod_pending_for_lack_of_ascend_npus():
    backend, fake = scheduler(TRAIN_JOB)
    status = backend.describe("whisper-train")

    assert [(p.role, p.rank, p.phase, p.node) for p in status.pods] == [
        ("master", 0, "Running", "hollow-node-0"), ("worker", 1, "Pending", "")]
    worker = status.pods[1]
    assert worker.reason == "FailedScheduling"
    assert "1 Insufficient huawei.com/Ascend910" in worker.message
    text = str(status)
    assert "worker-0 cannot be scheduled: no node has enough free huawei.com/Ascend910" in text
    assert "! worker-0: 0/1 nodes are available: 1 Insufficient" in text  # the scheduler's message, same name
    assert "whisper-train-worker-0  worker  1     Pending" in text
    # one GET of the job, one namespaced pod list by the operator's label, events only for the pending pod
    assert fake.requests == [
        ("GET", f"{JOBS}/whisper-train", {}),
        ("GET", PODS, {"labelSelector": "training.kubeflow.org/job-name=whisper-train"}),
        ("GET", EVENTS, {"fieldSelector": "involvedObject.name=whisper-train-worker-0"}),
    ]


def test_status_shows_conditions_and_the_final_state():
    backend, _ = scheduler({("GET", f"{JOBS}/whisper-ft"): "pytorchjob_get_with_conditions_200",
                            ("GET", PODS): "pods_list_by_label_selector_after_deletes_200"})
    status = backend.describe("whisper-ft")
    assert status.state == JobState.SUCCEEDED and status.nodes == 2
    assert [(c.type, c.status, c.reason) for c in status.conditions] == [
        ("Created", "True", "PyTorchJobCreated"), ("Running", "False", "PyTorchJobRunning"),
        ("Succeeded", "True", "PyTorchJobSucceeded")]
    assert "PyTorchJob default/whisper-ft successfully completed." in str(status)
    assert "no pods yet" in str(status)


def test_a_missing_job_is_none_and_a_missing_crd_names_what_to_install():
    # no PyTorchJob of that name, and no Trainer v2 in the cluster: no such job
    backend, fake = scheduler({("GET", f"{JOBS}/whisper-ft"): "pytorchjob_get_after_delete_404",
                               ("GET", f"{TRAINJOBS}/whisper-ft"): NOT_SERVED})
    assert backend.describe("whisper-ft") is None
    assert [r[1] for r in fake.requests] == [f"{JOBS}/whisper-ft", f"{TRAINJOBS}/whisper-ft"]

    # neither kind served: the message names both operators and how to install them
    backend, _ = scheduler({("GET", f"{JOBS}/whisper-ft"): NOT_SERVED, ("GET", f"{TRAINJOBS}/whisper-ft"): NOT_SERVED})
    with pytest.raises(ClusterError, match="serves neither PyTorchJob .* nor TrainJob .*training operator \\(v1.9\\)"
                                           ".*--server-side.*Kubeflow Trainer \\(v2.3\\)"):
        backend.describe("whisper-ft")
    # asked for one kind explicitly: only that kind's hint
    with pytest.raises(ClusterError, match="CRD not installed.*training operator.*--server-side"):
        backend.describe("whisper-ft", operator="pytorchjob")


def test_discovery_finds_or_misses_the_pytorchjob_crd():
    backend, fake = scheduler({("GET", DISCOVERY): "discovery_get_apis_kubeflow.org_v1_200"})
    assert backend.require_operator("pytorchjob").kind == "PyTorchJob"
    assert fake.requests == [("GET", DISCOVERY, {})]

    backend, _ = scheduler({("GET", DISCOVERY): "discovery_get_apis_kubeflow.org_v1_without_crd_404"})
    with pytest.raises(ClusterError) as err:
        backend.require_operator("pytorchjob")
    assert "pytorchjobs.kubeflow.org) is not installed" in str(err.value)
    assert "kubectl apply --server-side" in str(err.value)


def test_api_errors_name_the_verb_resource_and_fix():
    contract = get_contract("pytorchjob")
    cases = {
        "rbac_sa_create_pytorchjob_in_default_403":
            r"forbidden \(403 Forbidden\): you may not create pytorchjobs.kubeflow.org in namespace default: .*"
            r"cannot create resource.*manifests/rbac/role.yaml",
        "pytorchjob_create_already_exists_409":
            r"whisper-ft already exists in namespace default: submit again .* to upgrade it, or "
            r"`python -m whisper_k8s delete whisper-ft`",
        "pytorchjob_create_replicas_string_422": r"refused create .*Invalid value: \"string\"",
        "pytorchjob_create_without_crd_404": r"CRD not installed.*training operator",
    }
    for fixture, expected in cases.items():
        backend, _ = scheduler({("POST", JOBS): fixture})
        with pytest.raises(ClusterError, match=expected) as raised:
            backend.api.call(Access(contract.group, contract.plural, "create", "whisper-ft"),
                             backend.api.custom().create_namespaced_custom_object, contract.group,
                             contract.version, "default", contract.plural, {"metadata": {"name": "whisper-ft"}})
        message = str(raised.value)
        assert message.startswith("cluster https://k8s.test: ") and "\n" not in message


def test_bad_credentials_say_so_and_list_selects_this_kit():
    backend, _ = scheduler({("GET", "/apis/kubeflow.org/v1/namespaces/team-a/pytorchjobs"): "auth_bad_token_401"},
                           namespace="team-a")
    with pytest.raises(ClusterError, match=r"401 Unauthorized\) for list pytorchjobs.*kubeconfig"):
        backend.list()

    backend, fake = scheduler({("GET", JOBS): "pytorchjob_list_200", ("GET", TRAINJOBS): NOT_SERVED})
    jobs = backend.list()
    assert [(j.name, j.nodes) for j in jobs] == [("whisper-ft", 2)]
    kit = {"labelSelector": "app.kubernetes.io/part-of=whisper-k8s"}
    assert fake.requests == [("GET", JOBS, kit), ("GET", TRAINJOBS, kit)]


def test_logs_request_the_trainer_container_with_timestamps_and_report_unreadable_logs():
    backend, fake = scheduler({
        **TRAIN_JOB,
        ("GET", f"{PODS}/whisper-train-master-0/log"): "pod_log_running_pod",
        ("GET", f"{PODS}/whisper-train-worker-0/log"): "pod_log_pending_pod",
    })
    lines = list(backend.log_iter("whisper-train"))
    # the worker has no node yet, so its log is not requested; the master's kubelet was unreachable (500)
    assert len(lines) == 1 and lines[0].startswith("[master-0] (no log: ")
    assert "no such host" in lines[0]
    log_requests = [r for r in fake.requests if r[1].endswith("/log")]
    assert log_requests == [("GET", f"{PODS}/whisper-train-master-0/log",
                             {"container": "pytorch", "timestamps": "true"})]
    assert list(backend.log_iter("whisper-train", role="worker")) == []


def test_follow_watches_pods_until_the_job_is_gone():
    backend, fake = scheduler({
        ("GET", f"{JOBS}/whisper-train"): ["pods_owner_pytorchjob_create_201", "pods_owner_pytorchjob_create_201",
                                          "pytorchjob_get_after_delete_404"],
        ("GET", PODS): "pods_list_by_label_selector_200",
        ("GET", f"{PODS}?watch=true"): "pods_watch_label_selector_with_deletes.jsonl",
        ("GET", f"{PODS}/whisper-train-master-0/log"): "pod_log_running_pod",
    })
    lines = list(backend.log_iter("whisper-train", follow=True))
    # the master's log is opened once, although the watch reported it modified four times
    assert len(lines) == 1 and lines[0].startswith("[master-0] (no log:")
    # the first watch ended (server timeout) while the job still existed: re-list, watch again; then it was gone
    watch = [r[2] for r in fake.requests if r[2].get("watch")]
    assert watch == 2 * [{"labelSelector": "training.kubeflow.org/job-name=whisper-train",
                          "resourceVersion": "353", "timeoutSeconds": "60", "watch": "true"}]
    follow = [r for r in fake.requests if r[1].endswith("/log")]
    assert follow[0][2] == {"container": "pytorch", "follow": "true", "timestamps": "true"}


def test_delete_of_a_job_without_release_deletes_it_and_verifies():
    backend, fake = scheduler({
        ("GET", f"{JOBS}/whisper-ft"): ["pytorchjob_get_200", "pytorchjob_get_after_delete_404"],
        ("DELETE", f"{JOBS}/whisper-ft"): "pytorchjob_delete_200",
    })
    kubernetes_jobs.delete_job(backend.api, get_contract("pytorchjob"), "whisper-ft", timeout=5, poll_seconds=0.01)
    assert [r[0] for r in fake.requests] == ["GET", "DELETE", "GET"]


def test_submit_refuses_to_upgrade_a_finished_job():
    backend, _ = scheduler({("GET", DISCOVERY): "discovery_get_apis_kubeflow.org_v1_200",
                            ("GET", f"{JOBS}/whisper-ft"): "pytorchjob_get_with_conditions_200"})
    request = AppRequest("whisper-ft", values_file="values.yaml")
    with pytest.raises(UserError, match="already finished \\(Succeeded\\).*delete whisper-ft"):
        backend.schedule(backend.dryrun(request))


@pytest.fixture(scope="module")
def cpu_request(tmp_path_factory):
    from whisper_k8s import values

    user = {"nodes": 2, "accelerator": {"type": "cpu"}, "fullnameOverride": "demo"}
    values_file = values.write_values(user, tmp_path_factory.mktemp("v") / "values.yaml")
    return AppRequest("demo", values=user, documents=chart.render(user, "demo"), values_file=values_file)


def test_the_printed_helm_command_renders_exactly_the_printed_documents(cpu_request, helm_bin):
    backend = KubernetesScheduler(helm=helm_bin)
    info = backend.dryrun(cpu_request)
    args = info.extra["helm_args"]
    assert args[1:3] == ["upgrade", "--install"] and str(cpu_request.values_file) in args
    template = [helm_bin, "template", *args[3:]]
    rendered = subprocess.run(template, capture_output=True, text=True, check=True).stdout
    assert [d for d in yaml.safe_load_all(rendered) if d] == info.documents
    assert [d for d in yaml.safe_load_all(str(info)) if d] == info.documents
    assert str(info).startswith("# " + " ".join(args[:3]))


def test_helm_failures_against_an_unreachable_cluster_are_cluster_errors(cpu_request, helm_bin, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:9"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
        "users": [{"name": "x", "user": {"token": "t"}}]}))
    backend = KubernetesScheduler(helm=helm_bin, kubeconfig=str(kubeconfig))
    with pytest.raises(ClusterError, match="connection refused|connect") as raised:
        backend._helm_run(backend.dryrun(cpu_request).extra["helm_args"], "demo")
    assert str(raised.value).startswith("cluster https://127.0.0.1:9 (context x): helm upgrade --install demo failed")
    assert "\n" not in str(raised.value) and "kubectl cluster-info" in str(raised.value)


@pytest.mark.cluster
def test_real_cluster_lists_and_discovers():
    backend = KubernetesScheduler()
    assert isinstance(kubernetes_jobs.operator_served(backend.api, get_contract("pytorchjob")), bool)
    assert isinstance(backend.list(), list)


def claim_answer(name: str, *, release: str | None, deleting: bool = False) -> dict:
    """A GET persistentvolumeclaims answer (no recording holds one): the client's own V1PersistentVolumeClaim,
    labelled by the chart's release when it created the claim, being deleted when helm removes it."""
    from datetime import datetime, timezone

    from kubernetes import client

    labels = {"app.kubernetes.io/instance": release, "app.kubernetes.io/managed-by": "Helm"} if release else None
    claim = client.V1PersistentVolumeClaim(
        api_version="v1", kind="PersistentVolumeClaim",
        metadata=client.V1ObjectMeta(name=name, namespace="default", labels=labels,
                                     deletion_timestamp=datetime.now(timezone.utc) if deleting else None),
        spec=client.V1PersistentVolumeClaimSpec(access_modes=["ReadWriteMany"]),
        status=client.V1PersistentVolumeClaimStatus(phase="Bound"))
    return {"status": 200, "body": client.ApiClient().sanitize_for_serialization(claim)}


def test_delete_reports_the_claims_that_stay_and_purges_only_the_outputs_the_job_created():
    from whisper_k8s.backends.kubernetes import claims_of

    user = {"nodes": 2, "accelerator": {"type": "cpu"}, "fullnameOverride": "demo",
            "storage": {"dataset": {"type": "existingClaim", "existingClaim": "cv11"}}}
    contract = get_contract("pytorchjob")
    documents = [contract.job_document(chart.render(user, "demo"))]
    mounted = claims_of(contract, documents)
    assert mounted == [("dataset", "cv11"), ("outputs", "demo-outputs")]
    claims = "/api/v1/namespaces/default/persistentvolumeclaims"
    routes = {("GET", f"{claims}/cv11"): claim_answer("cv11", release=None),
              ("GET", f"{claims}/demo-outputs"): claim_answer("demo-outputs", release="demo")}
    backend, fake = scheduler(routes)
    deleted = kubernetes_jobs.kept_claims(backend.api, mounted, release="demo", purge_outputs=False)
    assert deleted.kept == ["dataset (claim cv11 in namespace default, yours)",
                            "outputs (claim demo-outputs in namespace default, created by the job: "
                            "storage.keepClaims keeps it)"] and deleted.purged == []
    assert [r[0] for r in fake.requests] == ["GET", "GET"]

    routes[("DELETE", f"{claims}/demo-outputs")] = claim_answer("demo-outputs", release="demo", deleting=True)
    backend, fake = scheduler(routes)
    deleted = kubernetes_jobs.kept_claims(backend.api, mounted, release="demo", purge_outputs=True)
    assert deleted.purged == ["outputs (claim demo-outputs)"] and len(deleted.kept) == 1  # never the user's cv11
    assert ("DELETE", f"{claims}/demo-outputs", {}) in fake.requests

    # storage.keepClaims=false: helm is deleting the claim, so it does not stay
    routes[("GET", f"{claims}/demo-outputs")] = claim_answer("demo-outputs", release="demo", deleting=True)
    backend, _ = scheduler(routes)
    assert kubernetes_jobs.kept_claims(backend.api, mounted[1:], release="demo", purge_outputs=False).kept == []


def restarted_master() -> dict:
    """The recorded pod list with the running master restarted once after an OOM kill: its container status as
    the kubelet writes it (lastState.terminated with exitCode, reason and times, restartCount 1; the fields of
    the client's V1ContainerStateTerminated), the pending worker dropped."""
    def restarted(body):
        master = body["items"][0]
        status = master["status"]["containerStatuses"][0]
        status.update(restartCount=1, state={"running": {"startedAt": "2026-11-25T21:30:05Z"}}, lastState={
            "terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": "2026-11-25T21:25:41Z",
                           "finishedAt": "2026-11-25T21:29:50Z", "containerID": status["containerID"]}})
        body["items"] = [master]

    return changed("pods_list_by_label_selector_200", restarted)


def log_answer(*lines: str) -> dict:
    """A pods/log answer (the recorded ones are a 500 and a 204): text, one `--timestamps` line each."""
    return {"status": 200, "body": "".join(f"{line}\n" for line in lines)}


def test_logs_mark_a_restart_with_why_the_previous_run_ended_and_read_its_log():
    log = f"{PODS}/whisper-train-master-0/log"
    backend, fake = scheduler({
        ("GET", f"{JOBS}/whisper-train"): "pods_owner_pytorchjob_create_201",
        ("GET", PODS): restarted_master(),
        ("GET", f"{log}?previous=true"): log_answer("2026-11-25T21:29:40.5Z iteration 7", "2026-11-25T21:29:49Z saving"),
        ("GET", log): log_answer("2026-11-25T21:30:06Z resuming from iteration 5", "2026-11-25T21:30:09Z iteration 6"),
    })
    assert list(backend.log_iter("whisper-train")) == [
        "[master-0] iteration 7", "[master-0] saving",
        "[master-0] --- restart 1 (previous attempt ended: exit code 137, OOMKilled) ---",
        "[master-0] resuming from iteration 5", "[master-0] iteration 6"]
    asked = [r[2] for r in fake.requests if r[1] == log]
    assert asked == [{"container": "pytorch", "timestamps": "true", "previous": "true"},
                     {"container": "pytorch", "timestamps": "true"}]
