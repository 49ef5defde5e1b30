"""Kubeflow Trainer v2 (TrainJob) end to end: the local run under the v2 contract, the Kubernetes backend's
TrainJob paths against recorded API responses, and the chart's v2 rules as the contract reads them."""

from __future__ import annotations

import copy

import pytest
from k8s_fake import FakeApiServer, recorded
from test_collect import cli, local_env, tiny_values_file

from whisper_k8s import chart
from whisper_k8s.backends import JobState
from whisper_k8s.backends.base import format_status
from whisper_k8s.backends.kubernetes import KubernetesScheduler
from whisper_k8s.backends.kubernetes_api import Access
from whisper_k8s.backends.kubernetes_jobs import served_operators
from whisper_k8s.backends.kubernetes_pods import job_status
from whisper_k8s.backends.kubernetes_rbac import REQUIRED_PERMISSIONS
from whisper_k8s.cli import _jobs
from whisper_k8s.errors import ClusterError, UserError
from whisper_k8s.operators import get_contract
from whisper_k8s.operators import trainjob as v2

V1 = "/apis/kubeflow.org/v1"
V2 = "/apis/trainer.kubeflow.org/v1alpha1"
PYTORCHJOBS = f"{V1}/namespaces/default/pytorchjobs"
TRAINJOBS = f"{V2}/namespaces/default/trainjobs"
RUNTIMES = f"{V2}/namespaces/default/trainingruntimes"
PODS = "/api/v1/namespaces/default/pods"
NOT_SERVED = "discovery_get_apis_kubeflow.org_v1_without_crd_404"  # the server's answer for an unserved API path
JOB = "whisper-ft-v2"  # the recorded TrainJob


def scheduler(routes):
    fake = FakeApiServer(routes)
    return KubernetesScheduler("default", api_client=fake.client(), poll_seconds=0.01), fake


# ------------------------------------------------------------------------------ local: the Done-when run
@pytest.mark.e2e
@pytest.mark.slow
def test_local_two_node_trainjob_trains_and_collects_a_loadable_model(tmp_path, cv_dataset, processor_dir):
    """submit --local --nodes 2 --operator trainjob --follow -> both nodes log -> Succeeded -> collect."""
    env = local_env(tmp_path)
    submitted = cli("submit", "--name", "v2", "--local", "--nodes", "2", "--accelerator", "cpu", "--operator",
                    "trainjob", "--dataset", str(cv_dataset), "-f", str(tiny_values_file(tmp_path, processor_dir)),
                    "--values-out", str(tmp_path / "v.yaml"), "--follow", env=env)
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    # only rank 0 logs below WARNING; the world it reports spans both nodes (rendezvous through PET_MASTER_*)
    assert "[node-0] " in submitted.stdout and "micro 2 x world 2 x accumulation 1" in submitted.stdout
    assert "iteration       2/2" in submitted.stdout and "job local://default/v2 Succeeded" in submitted.stderr

    status = cli("status", "v2", "--local", env=env).stdout
    assert "operator trainjob  state Succeeded" in status
    pods = [line.split()[:4] for line in status.splitlines() if line.startswith("v2-node-0-")]
    assert pods == [["v2-node-0-0", "node", "0", "Succeeded"], ["v2-node-0-1", "node", "1", "Succeeded"]]

    collected = cli("collect", "v2", "--local", "--to", str(tmp_path / "model"), env=env)
    assert collected.returncode == 0, collected.stderr[-3000:]
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(tmp_path / "model")
    assert model.config.d_model == 64 and model.config.decoder_layers == 2
    WhisperProcessor.from_pretrained(tmp_path / "model")
    assert "checkpoint: iteration 2" in (tmp_path / "model" / "report.md").read_text()


# --------------------------------------------------------------------- Kubernetes: which kind to submit
def discovery(v1="discovery_get_apis_kubeflow.org_v1_200", v2="discovery_get_apis_trainer.kubeflow.org_v1alpha1_200"):
    return {("GET", "/apis/"): "discovery_get_apis_200", ("GET", V1): v1, ("GET", V2): v2}


def test_submit_picks_the_kind_the_cluster_serves():
    assert {g["name"] for g in recorded("discovery_get_apis_200")["body"]["groups"]} >= {
        "kubeflow.org", "trainer.kubeflow.org"}
    backend, fake = scheduler(discovery())
    assert served_operators(backend.api) == ["pytorchjob", "trainjob"]
    assert [r[1] for r in fake.requests] == ["/apis/", V1, V2]
    assert backend.choose_operator() == "pytorchjob"  # both served: the chart's default

    backend, _ = scheduler(discovery(v1=NOT_SERVED))  # only Kubeflow Trainer v2 installed
    values = {"nodes": 2}
    _jobs.choose_operator(backend, values)
    assert values["operator"] == "trainjob"

    backend, fake = scheduler({})  # --operator (or a values file) decides: no discovery at all
    values = {"operator": "pytorchjob"}
    _jobs.choose_operator(backend, values)
    assert values == {"operator": "pytorchjob"} and fake.requests == []
    assert backend.choose_operator("trainjob") == "trainjob"


def test_neither_operator_served_names_both_installs():
    backend, _ = scheduler(discovery(v1=NOT_SERVED, v2=NOT_SERVED))
    with pytest.raises(ClusterError) as err:
        backend.choose_operator()
    message = str(err.value)
    assert "serves neither PyTorchJob (pytorchjobs.kubeflow.org) nor TrainJob (trainjobs.trainer.kubeflow.org)" \
        in message
    assert "training-operator.git/manifests/overlays/standalone?ref=v1.9.0" in message
    assert "kubeflow/trainer.git/manifests/overlays/manager?ref=v2.3.0" in message

    backend, _ = scheduler({("GET", V2): NOT_SERVED})
    with pytest.raises(ClusterError, match=r"TrainJob CRD \(trainjobs.trainer.kubeflow.org\) is not installed.*v2.3"):
        backend.require_operator("trainjob")


def test_the_api_servers_refusal_of_a_trainjob_names_the_field():
    contract = get_contract("trainjob")
    backend, _ = scheduler({("POST", TRAINJOBS): "trainjob_create_numnodes_string_422"})
    with pytest.raises(ClusterError, match=r"refused create trainjobs.trainer.kubeflow.org bad in namespace default "
                                           r"\(422 Unprocessable Entity\): .*spec.trainer.numNodes"):
        backend.api.call(Access(contract.group, contract.plural, "create", "bad"),
                         backend.api.custom().create_namespaced_custom_object, contract.group, contract.version,
                         "default", contract.plural, {"metadata": {"name": "bad"}})


# ----------------------------------------------------------------- Kubernetes: status, logs, collect, delete
TRAINJOB_FOUND = {("GET", f"{PYTORCHJOBS}/{JOB}"): "pytorchjob_get_after_delete_404",
                  ("GET", f"{TRAINJOBS}/{JOB}"): "trainjob_get_200",
                  ("GET", PODS): "pods_list_by_label_selector_after_deletes_200"}


def test_status_finds_a_trainjob_by_name_and_its_pods_by_the_jobset_labels():
    backend, fake = scheduler(TRAINJOB_FOUND)
    status = backend.describe(JOB)
    assert (status.operator, status.state, status.nodes) == ("trainjob", JobState.PENDING, 2)
    assert fake.requests[-1] == ("GET", PODS, {"labelSelector": "jobset.sigs.k8s.io/jobset-name=whisper-ft-v2,"
                                                                "jobset.sigs.k8s.io/replicatedjob-name=node"})
    assert "operator trainjob  state Pending" in str(status) and "no pods yet" in str(status)
    assert list(backend.log_iter(JOB)) == []  # no pods: nothing to read, and no error


@pytest.mark.parametrize(("condition", "state"), [
    ("Complete", JobState.SUCCEEDED), ("Failed", JobState.FAILED), ("Suspended", JobState.SUSPENDED)])
def test_trainjob_conditions_map_to_states_and_show_their_reasons(condition, state):
    job = copy.deepcopy(recorded("trainjob_get_200")["body"])
    job["status"] = {"conditions": [{"type": condition, "status": "True", "reason": f"{condition}Reason",
                                     "message": f"TrainJob is {condition.lower()}",
                                     "lastTransitionTime": "2026-11-25T21:30:00Z"}]}
    status = job_status(get_contract("trainjob"), job, "default")
    assert status.state == state
    row = format_status(status).splitlines()[3].split()
    assert row == [condition, "True", f"{condition}Reason", "TrainJob", "is", condition.lower()]


def test_a_trainjob_with_active_child_jobs_is_running():
    job = copy.deepcopy(recorded("trainjob_get_200")["body"])
    job["status"] = {"jobsStatus": [{"name": "node", "active": 1, "ready": 0, "succeeded": 0, "failed": 0,
                                     "suspended": 0}]}
    assert get_contract("trainjob").state(job) == JobState.RUNNING


def test_pods_the_contract_labels_are_selected_and_ranked_by_completion_index():
    documents = chart.render({"operator": "trainjob", "nodes": 3, "accelerator": {"type": "nvidia"}}, "v2")
    contract = get_contract("trainjob")
    job = contract.read_job(documents)
    assert len(job.replicas) == 3
    for replica in job.replicas:
        read = contract.read_pod({"metadata": {"labels": replica.labels}})
        assert (read.role, read.index, read.node_rank, read.name) == ("node", replica.index, replica.node_rank,
                                                                      replica.name)
        selector = dict(term.split("=") for term in contract.pod_selector(job.name).split(","))
        assert selector.items() <= replica.labels.items()
    # before Kubernetes 1.28 the index is only an annotation
    read = contract.read_pod({"metadata": {"labels": {}, "annotations": {v2.COMPLETION_INDEX: "2"}}})
    assert (read.role, read.node_rank, read.name) == ("node", 2, "node-2")


def test_collect_reads_the_trainjob_and_its_runtime_for_the_pod_spec():
    runtime = recorded("trainingruntime_create_201")["body"]["metadata"]["name"]
    backend, fake = scheduler({**TRAINJOB_FOUND, ("GET", f"{RUNTIMES}/{runtime}"): "trainingruntime_create_201"})
    # the recorded runtime mounts nothing at /outputs: said plainly, before any pod is created
    with pytest.raises(UserError, match="whisper-ft-v2 mounts no volume at /outputs"):
        backend.fetch_outputs(JOB, "unused")
    assert [r[1] for r in fake.requests] == [f"{PYTORCHJOBS}/{JOB}", f"{TRAINJOBS}/{JOB}", f"{RUNTIMES}/{runtime}"]


def test_the_collect_pod_of_a_rendered_trainjob_mounts_its_outputs_read_only():
    from whisper_k8s.backends.kubernetes_fetch import helper_pod

    documents = chart.render({"operator": "trainjob", "nodes": 2, "accelerator": {"type": "cpu"},
                              "fullnameOverride": "v2"}, "v2")
    job = [d for d in documents if d["kind"] in ("TrainJob", "TrainingRuntime")]
    pod = helper_pod(job, "trainjob")
    (container,) = pod["spec"]["containers"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/outputs"]["readOnly"] and mounts["/config"]["readOnly"]
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["spec"]["volumes"]}
    assert claims[mounts["/outputs"]["name"]] == "v2-outputs"


def test_every_trainjob_request_is_namespaced_and_granted():
    from test_rbac import permission_of

    runtime = recorded("trainingruntime_create_201")["body"]["metadata"]["name"]
    backend, fake = scheduler({**TRAINJOB_FOUND, **discovery(),
                               ("GET", f"{RUNTIMES}/{runtime}"): "trainingruntime_create_201"})
    backend.require_operator("trainjob")
    backend.choose_operator()
    backend.describe(JOB)
    list(backend.log_iter(JOB))
    with pytest.raises(UserError):
        backend.fetch_outputs(JOB, "unused")
    used = {permission_of(method, path, query) for method, path, query in fake.requests} - {None}
    assert {("trainer.kubeflow.org", "trainjobs", "get"), ("trainer.kubeflow.org", "trainingruntimes", "get"),
            ("", "pods", "list")} <= used <= set(REQUIRED_PERMISSIONS)


# ------------------------------------------------------------------------ the chart's v2 rules, as read back
def test_reserved_env_is_refused_by_the_chart_and_by_the_contract():
    for name in v2.RESERVED_ENV:
        with pytest.raises(UserError, match="extraEnv"):
            chart.render({"operator": "trainjob", "extraEnv": [{"name": name, "value": "1"}]}, "v2")
    documents = chart.render({"operator": "trainjob", "nodes": 2}, "v2")
    trainjob = next(d for d in documents if d["kind"] == "TrainJob")
    trainjob["spec"]["trainer"]["env"] = [{"name": "PET_MASTER_PORT", "value": "1234"}]
    with pytest.raises(UserError, match="PET_MASTER_PORT, which the trainer reserves"):
        get_contract("trainjob").read_job(documents)


def test_ascend_trainjob_starts_one_process_per_npu_not_per_cpu():
    documents = chart.render({"operator": "trainjob", "nodes": 2, "accelerator": {"type": "ascend"}}, "v2")
    job = get_contract("trainjob").read_job(documents)
    resources = job.replicas[0].pod_spec["containers"][0]["resources"]
    assert "huawei.com/Ascend910" in resources["limits"] and int(str(resources["limits"]["cpu"])) > 8
    assert [r.env["PET_NPROC_PER_NODE"] for r in job.replicas] == ["8", "8"]
    # without the chart's explicit numProcPerNode the operator would count CPUs
    trainjob = next(d for d in documents if d["kind"] == "TrainJob")
    del trainjob["spec"]["trainer"]["numProcPerNode"]
    nproc = get_contract("trainjob").read_job(documents).replicas[0].env["PET_NPROC_PER_NODE"]
    assert nproc == str(resources["limits"]["cpu"]) != "8"
