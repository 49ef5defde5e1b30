"""The operator contract against the reference facts: pod names, node ranks, injected env, labels."""

from __future__ import annotations

import copy
import json

import pytest

from whisper_k8s.errors import UserError
from whisper_k8s.operators import get_contract


def recorded(reference, name):
    return json.loads((reference / "k8s-api-responses" / f"{name}.json").read_text())


@pytest.fixture
def job_document(reference):
    """The PyTorchJob the API server accepted (Master 1 + Worker 1, port 23456), as it was sent."""
    return recorded(reference, "pytorchjob_create_201")["request"]["body"]


def with_workers(document, workers, nproc=None):
    doc = copy.deepcopy(document)
    doc["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = workers
    if nproc is not None:
        doc["spec"]["nprocPerNode"] = nproc
    return doc


def test_readme_states_the_facts_this_contract_encodes(reference):
    """If the reference README changes these facts, this contract must be revisited."""
    facts = (reference / "README.md").read_text()
    for phrase in ('`PYTHONUNBUFFERED` = `"0"`', "`MASTER_ADDR`=`PET_MASTER_ADDR`=`<job>-master-0`",
                   "`MASTER_PORT`=`PET_MASTER_PORT`", "master 0, worker i -> i+1", "`PET_NNODES` = total replicas",
                   "`PET_NPROC_PER_NODE` = spec.nprocPerNode verbatim", "(default 23456)",
                   "container port named `pytorchjob-port`",
                   "`training.kubeflow.org/{job-name,replica-type,replica-index,job-role,operator-name}`"):
        assert phrase in facts, phrase


def test_env_per_replica_matches_operator(job_document):
    job = get_contract("pytorchjob").read_job([{"kind": "ConfigMap"}, with_workers(job_document, 3, "8")])
    assert [r.pod_name for r in job.replicas] == [
        "whisper-ft-master-0", "whisper-ft-worker-0", "whisper-ft-worker-1", "whisper-ft-worker-2"]
    assert [r.node_rank for r in job.replicas] == [0, 1, 2, 3]
    assert [r.name for r in job.replicas] == ["master-0", "worker-0", "worker-1", "worker-2"]
    worker = job.replica("worker-1")
    assert worker.env == {
        "PYTHONUNBUFFERED": "0",
        "MASTER_PORT": "23456", "MASTER_ADDR": "whisper-ft-master-0",
        "PET_MASTER_PORT": "23456", "PET_MASTER_ADDR": "whisper-ft-master-0",
        "WORLD_SIZE": "32", "RANK": "2", "PET_NPROC_PER_NODE": "8", "PET_NODE_RANK": "2", "PET_NNODES": "4",
    }
    # the operator's append order (later entries win over a container's own variables of the same name)
    assert list(worker.env) == ["PYTHONUNBUFFERED", "MASTER_PORT", "MASTER_ADDR", "PET_MASTER_PORT",
                                "PET_MASTER_ADDR", "WORLD_SIZE", "RANK", "PET_NPROC_PER_NODE",
                                "PET_NODE_RANK", "PET_NNODES"]
    assert job.master_host == "whisper-ft-master-0" and job.master_port == 23456
    assert all(r.container == "pytorch" and r.restart_policy == "OnFailure" for r in job.replicas)


def test_default_nproc_auto_counts_one_process_per_pod(job_document):
    job = get_contract("pytorchjob").read_job([job_document])
    master = job.replica("master-0")
    assert master.env["PET_NPROC_PER_NODE"] == "auto"
    assert master.env["WORLD_SIZE"] == "2" and master.env["RANK"] == "0"


def test_port_from_named_container_port_else_default(job_document):
    doc = copy.deepcopy(job_document)
    doc["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["ports"] = [
        {"name": "pytorchjob-port", "containerPort": 29400}]
    assert get_contract("pytorchjob").read_job([doc]).replica("worker-0").env["MASTER_PORT"] == "29400"
    del doc["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["ports"]
    assert get_contract("pytorchjob").read_job([doc]).master_port == 23456


def test_labels_equal_the_recorded_operator_pods(reference, job_document):
    doc = copy.deepcopy(job_document)
    doc["metadata"]["name"] = "whisper-train"
    job = get_contract("pytorchjob").read_job([doc])
    for label, fixture in (("master-0", "pod_create_master_8_ascend_201"),
                           ("worker-0", "pod_create_worker_9_ascend_201")):
        pod = recorded(reference, fixture)["request"]["body"]["metadata"]
        replica = job.replica(label)
        assert replica.pod_name == pod["name"]
        assert replica.labels == pod["labels"]
        # read back from the live pod's labels: the same replica, the same node rank
        read = get_contract("pytorchjob").read_pod({"metadata": pod})
        assert (read.role, read.index, read.node_rank, read.name) == (replica.role, replica.index,
                                                                      replica.node_rank, label)
    assert get_contract("pytorchjob").pod_selector("j") == "training.kubeflow.org/job-name=j"


def test_success_policy_is_master_success():
    contract = get_contract("pytorchjob")
    assert contract.succeeded({"master-0": "Succeeded", "worker-0": "Running"})
    assert not contract.succeeded({"master-0": "Running", "worker-0": "Succeeded"})


def test_bad_documents_are_refused_by_field(job_document):
    contract = get_contract("pytorchjob")
    with pytest.raises(UserError, match="exactly one PyTorchJob"):
        contract.read_job([{"kind": "ConfigMap"}])
    with pytest.raises(UserError, match=r"Worker\.replicas must be an integer"):
        contract.read_job([with_workers(job_document, "two")])
    with pytest.raises(UserError, match="unknown operator"):
        get_contract("mpijob")


# ------------------------------------------------------------------------------------- Trainer v2 (TrainJob)
@pytest.fixture
def trainjob_documents(reference):
    """The TrainingRuntime and TrainJob the API server accepted (2 nodes, Ascend, numProcPerNode 8)."""
    return [recorded(reference, "trainingruntime_create_201")["request"]["body"],
            recorded(reference, "trainjob_create_201")["request"]["body"]]


def test_readme_states_the_trainer_v2_facts(reference):
    facts = (reference / "README.md").read_text()
    for phrase in ("`PET_NODE_RANK` from the pod annotation `batch.kubernetes.io/job-completion-index`",
                   "`PET_MASTER_ADDR` = `<trainjob>-node-0-0.<trainjob>`", "`PET_MASTER_PORT` = 29500",
                   "These five names are reserved", 'the count of a resource whose name contains "gpu", else the '
                   "CPU count", "`jobset.sigs.k8s.io/jobset-name=<trainjob>`"):
        assert phrase in facts, phrase


def test_trainjob_env_names_and_overrides(trainjob_documents):
    job = get_contract("trainjob").read_job(trainjob_documents)
    assert [r.pod_name for r in job.replicas] == ["whisper-ft-v2-node-0-0", "whisper-ft-v2-node-0-1"]
    node = job.replica("node-1")
    assert node.env == {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "8", "PET_NODE_RANK": "1",
                        "PET_MASTER_ADDR": "whisper-ft-v2-node-0-0.whisper-ft-v2", "PET_MASTER_PORT": "29500"}
    assert node.container == "node" and node.node_rank == 1
    container = node.pod_spec["containers"][0]
    assert container["command"] == ["bash", "examples/whisper/pretrain_whisper.sh"]  # the TrainJob's override
    assert node.labels["jobset.sigs.k8s.io/jobset-name"] == "whisper-ft-v2"
    assert node.labels["jobset.sigs.k8s.io/replicatedjob-name"] == "node"
    assert job.restart.limit == 0  # no failurePolicy: the JobSet does not restart
    assert job.restart.scope == "whole-job" and job.restart.limit_reached(1) and not job.restart.limit_reached(0)
    contract = get_contract("trainjob")
    assert contract.succeeded({"node-0": "Succeeded", "node-1": "Succeeded"})
    assert not contract.succeeded({"node-0": "Succeeded", "node-1": "Running"})


def test_trainjob_procs_per_node_pitfall_and_reserved_env(trainjob_documents):
    runtime, trainjob = copy.deepcopy(trainjob_documents)
    del runtime["spec"]["mlPolicy"]["torch"]["numProcPerNode"]
    trainjob["spec"]["trainer"]["resourcesPerNode"] = {"limits": {"huawei.com/Ascend910": 8, "cpu": "16"}}
    # no "gpu" in huawei.com/Ascend910: one process per CPU core, not per NPU
    assert get_contract("trainjob").read_job([runtime, trainjob]).replicas[0].env["PET_NPROC_PER_NODE"] == "16"
    trainjob["spec"]["trainer"]["resourcesPerNode"] = {"limits": {"nvidia.com/gpu": 4, "cpu": "16"}}
    assert get_contract("trainjob").read_job([runtime, trainjob]).replicas[0].env["PET_NPROC_PER_NODE"] == "4"
    trainjob["spec"]["trainer"]["env"] = [{"name": "PET_NODE_RANK", "value": "3"}]
    with pytest.raises(UserError, match="PET_NODE_RANK, which the trainer reserves"):
        get_contract("trainjob").read_job([runtime, trainjob])
    del trainjob["spec"]["trainer"]["env"]
    with pytest.raises(UserError, match="not among the rendered documents"):
        get_contract("trainjob").read_job([trainjob])


def test_restart_rules_are_the_operators(job_document, trainjob_documents):
    """PyTorchJob: in place, the job fails once all pods' restarts reach backoffLimit (any restart when 0,
    never when unset), each restart after the kubelet's back-off; TrainJob: every node, up to maxRestarts."""
    doc = copy.deepcopy(job_document)
    doc["spec"].setdefault("runPolicy", {})["backoffLimit"] = 3
    rule = get_contract("pytorchjob").read_job([doc]).restart
    assert (rule.scope, rule.limit) == ("in-place", 3)
    assert [rule.limit_reached(n) for n in (1, 2, 3)] == [False, False, True]
    assert [rule.delay(n) for n in (1, 2, 3, 6, 9)] == [10, 20, 40, 300, 300]
    doc["spec"]["runPolicy"]["backoffLimit"] = 0
    assert get_contract("pytorchjob").read_job([doc]).restart.limit_reached(1)
    del doc["spec"]["runPolicy"]["backoffLimit"]
    assert not get_contract("pytorchjob").read_job([doc]).restart.limit_reached(100)

    runtime, trainjob = copy.deepcopy(trainjob_documents)
    runtime["spec"]["template"]["spec"]["failurePolicy"] = {"maxRestarts": 2}
    rule = get_contract("trainjob").read_job([runtime, trainjob]).restart
    assert (rule.scope, rule.limit, rule.delay(1)) == ("whole-job", 2, 0)
    assert [rule.limit_reached(n) for n in (1, 2, 3)] == [False, False, True]
