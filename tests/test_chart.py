"""The Helm chart, rendered by the real helm binary and checked against the real schemas.

PyTorchJobs are validated against the training-operator v1.9 CRD, ConfigMaps/PVCs and every pod template
against the Kubernetes OpenAPI models (see k8s_validation.py for exactly what is and is not checked).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from k8s_validation import CRDS, core_errors, document_errors, pod_templates

from whisper_k8s import chart
from whisper_k8s.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm"
# Set by Trainer v2's torch plugin; a TrainJob that sets them is rejected.
RESERVED_V2_ENV = {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}

# The seed's table of Ascend environment variables: default (the seed's launch script or the table's stated
# default) and the values just outside the allowed range or set.
SEED_ENV = {
    "ASCEND_SLOG_PRINT_TO_STDOUT": ("0", [2, -1]),
    "ASCEND_GLOBAL_LOG_LEVEL": ("3", [5]),
    "TASK_QUEUE_ENABLE": ("2", [3]),
    "COMBINED_ENABLE": ("1", [2]),
    "CPU_AFFINITY_CONF": ("1", [3]),
    "HCCL_CONNECT_TIMEOUT": ("1200", [119, 7201]),
    "PYTORCH_NPU_ALLOC_CONF": ("expandable_segments:True", ["max_split_size_mb:64"]),
    "HCCL_EXEC_TIMEOUT": ("1800", [67, 17341]),
    "ACLNN_CACHE_LIMIT": ("10000", [0, 10000001]),
    "TOKENIZERS_PARALLELISM": ("False", ["yes"]),
    "MULTI_STREAM_MEMORY_REUSE": ("1", [2]),
    "NPU_ASD_ENABLE": ("0", [4]),
    "ASCEND_LAUNCH_BLOCKING": ("0", [2]),
}
RANGE_EDGES = {"HCCL_CONNECT_TIMEOUT": (120, 7200), "HCCL_EXEC_TIMEOUT": (68, 17340), "ACLNN_CACHE_LIMIT": (1, 10000000)}


def render(values: dict | None = None, release: str = "whisper-test") -> list[dict]:
    return chart.render(values or {}, release, namespace="speech")


def the(documents: list[dict], kind: str) -> dict:
    (doc,) = chart.find(documents, kind)
    return doc


def main_container(job: dict, role: str = "Master") -> dict:
    (container,) = job["spec"]["pytorchReplicaSpecs"][role]["template"]["spec"]["containers"]
    return container


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def all_pod_specs(documents: list[dict]) -> list[dict]:
    return [template["spec"] for doc in documents for template in pod_templates(doc)]


def test_lint_strict_default_and_ci_scenarios(helm_bin):
    scenarios = sorted((CHART / "ci").glob("*-values.yaml"))
    assert len(scenarios) >= 4
    for values in [None, *scenarios]:
        cmd = [helm_bin, "lint", "--strict", str(CHART)] + (["-f", str(values)] if values else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{values}: {proc.stdout}{proc.stderr}"
        assert "[ERROR]" not in proc.stdout and "[WARNING]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("accelerator", ["ascend", "nvidia", "cpu"])
@pytest.mark.parametrize("nodes", [1, 2, 16])
def test_pytorchjob_matches_crd_and_operator_contract(nodes, accelerator):
    documents = render({"nodes": nodes, "accelerator": {"type": accelerator}})
    for doc in documents:
        assert document_errors(doc, CRDS) == [], doc["kind"]
    job = the(documents, "PyTorchJob")
    for template in pod_templates(job):
        assert core_errors(template, "V1PodTemplateSpec") == []

    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1
    if nodes == 1:
        assert "Worker" not in replicas
    else:
        assert replicas["Worker"]["replicas"] == nodes - 1
    per_node = {"ascend": 8, "nvidia": 8, "cpu": 1}[accelerator]
    assert job["spec"]["nprocPerNode"] == str(per_node)
    for role, spec in replicas.items():
        assert spec["restartPolicy"] == "OnFailure"
        container = main_container(job, role)
        assert container["name"] == "pytorch"
        assert {"name": "pytorchjob-port", "containerPort": 29501, "protocol": "TCP"} in container["ports"]
        assert container["args"][:3] == ["torchrun", "-m", "whisper_trainer"]
        device = {"ascend": "npu", "nvidia": "cuda", "cpu": "cpu"}[accelerator]
        assert container["args"][container["args"].index("--device") + 1] == device
        limits = container["resources"]["limits"]
        resource = {"ascend": "huawei.com/Ascend910", "nvidia": "nvidia.com/gpu"}.get(accelerator)
        if resource:
            assert limits[resource] == str(per_node) == container["resources"]["requests"][resource]
        else:
            assert set(limits) == {"cpu", "memory"}
        backend = {"ascend": "hccl", "nvidia": "nccl", "cpu": "gloo"}[accelerator]
        assert env_of(container)["WHISPER_DIST_BACKEND"] == backend


def test_trainer_flags_follow_values():
    values = {
        "accelerator": {"type": "nvidia", "perNode": 4},
        "training": {"microBatchSize": 2, "globalBatchSize": 64, "lr": 3.0e-4, "minLr": 1.0e-6, "warmupIters": 10,
                     "decayStyle": "cosine", "trainIters": 50, "weightDecay": 0.01, "clipGrad": None,
                     "bf16": False, "saveInterval": 5, "numWorkers": 2, "seed": 7, "keepCheckpoints": 2,
                     "parallel": "fsdp", "extraArgs": ["--foo", "bar"]},
        "data": {"split": "validated"},
    }
    args = main_container(the(render(values), "PyTorchJob"))["args"]
    flags = dict(zip(args[3::1], args[4::1], strict=False))
    expected = {"--mm-model": "/config/model.json", "--mm-data": "/config/data.json",
                "--save": "/outputs/checkpoints", "--load": "/outputs/checkpoints", "--micro-batch-size": "2",
                "--global-batch-size": "64", "--lr": "0.0003", "--min-lr": "1e-06", "--lr-warmup-iters": "10",
                "--lr-decay-style": "cosine", "--train-iters": "50", "--weight-decay": "0.01",
                "--save-interval": "5", "--num-workers": "2", "--seed": "7", "--keep-checkpoints": "2",
                "--parallel": "fsdp", "--metrics-file": "/outputs/metrics.jsonl", "--split": "validated",
                "--foo": "bar"}
    assert {k: flags[k] for k in expected} == expected
    assert "--bf16" not in args and args[args.index("--clip-grad") + 1] == "0"  # null: clipping off
    assert all(isinstance(a, str) for a in args)


def test_launch_wrapper_exports_node_rank_from_the_operator(tmp_path):
    """Run the rendered command for real: NODE_RANK comes from PET_NODE_RANK, then the argv is exec'd."""
    container = main_container(the(render({"nodes": 3, "accelerator": {"type": "cpu"}}), "PyTorchJob"), "Worker")
    command = container["command"]
    assert command[:2] == ["/bin/sh", "-c"]
    env = {"PATH": os.environ["PATH"], "PET_NODE_RANK": "2", "MASTER_ADDR": "job-master-0", "MASTER_PORT": "29501"}
    probe = ["sh", "-c", 'echo "$NODE_RANK $MASTER_ADDR:$MASTER_PORT $1"', "probe", "arg-one"]
    out = subprocess.run(command + probe, env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "2 job-master-0:29501 arg-one"


def test_mindspeed_mm_engine_runs_upstream_script_with_seed_arguments():
    values = {"engine": "mindspeed-mm", "mindspeedMM": {"extraArgs": ["--num-layers", "1"]}}
    container = main_container(the(render(values), "PyTorchJob"))
    args = container["args"]
    assert args[:2] == ["torchrun", "/opt/MindSpeed-MM/pretrain_whisper.py"]
    for flag in ["--use-distributed-optimizer", "--overlap-grad-reduce", "--overlap-param-gather", "--bf16"]:
        assert flag in args
    assert args[args.index("--seq-length") + 1] == "448"
    assert args[args.index("--max-position-embeddings") + 1] == "1500"
    assert args[-2:] == ["--num-layers", "1"]
    assert "--parallel" not in args and "--device" not in args  # native-only flags
    env = env_of(container)
    assert env["CUDA_DEVICE_MAX_CONNECTIONS"] == "1" and env["PYTHONPATH"] == "/opt/MindSpeed-MM"
    # The lengths Megatron checks against model.json follow the preset (the demo's encoder is shorter).
    demo = main_container(the(render({**values, "model": {"preset": "demo"}}), "PyTorchJob"))["args"]
    assert demo[demo.index("--max-position-embeddings") + 1] == "250"
    assert demo[demo.index("--seq-length") + 1] == "448"


def test_seed_environment_defaults_on_ascend_only():
    ascend = env_of(main_container(the(render({"accelerator": {"type": "ascend", "perNode": 4}}), "PyTorchJob")))
    assert {name: ascend[name] for name in SEED_ENV} == {name: d for name, (d, _) in SEED_ENV.items()}
    assert ascend["NPUS_PER_NODE"] == "4"
    nvidia = env_of(main_container(the(render({"accelerator": {"type": "nvidia"}}), "PyTorchJob")))
    assert "HCCL_CONNECT_TIMEOUT" not in nvidia and "NPUS_PER_NODE" not in nvidia
    assert nvidia["TOKENIZERS_PARALLELISM"] == "False"


def test_seed_environment_ranges_enforced_by_schema():
    for name, (_, bad_values) in SEED_ENV.items():
        for bad in bad_values:
            with pytest.raises(UserError, match=f"ascendEnv.{name}"):
                chart.validate_values({"ascendEnv": {name: bad}})
    for name, edges in RANGE_EDGES.items():
        for edge in edges:
            chart.validate_values({"ascendEnv": {name: edge}})
    env = env_of(main_container(the(render({"ascendEnv": {"ACLNN_CACHE_LIMIT": 10000000}}), "PyTorchJob")))
    assert env["ACLNN_CACHE_LIMIT"] == "10000000"  # not 1e+07


@pytest.mark.parametrize(
    ("flag", "field"),
    [("nodes=0", "/nodes"), ("ascendEnv.HCCL_CONNECT_TIMEOUT=100", "/ascendEnv/HCCL_CONNECT_TIMEOUT"),
     ("ascendEnv.HCCL_CONNECT_TIMEOUT=8000", "/ascendEnv/HCCL_CONNECT_TIMEOUT"),
     ("accelerator.type=tpu", "/accelerator/type"), ("nodez=2", "nodez")],
)
def test_bad_values_fail_at_template_time_naming_the_field(helm_bin, flag, field):
    proc = subprocess.run([helm_bin, "template", "x", str(CHART), "--set", flag], capture_output=True, text=True)
    assert proc.returncode != 0
    assert field in proc.stderr, proc.stderr
    with pytest.raises(UserError, match=field.strip("/").replace("/", ".")):
        render(yaml.safe_load(_as_yaml(flag)))


def _as_yaml(flag: str) -> str:
    key, value = flag.split("=")
    *parents, leaf = key.split(".")
    text = f"{leaf}: {value}"
    for depth, parent in enumerate(reversed(parents)):
        text = f"{parent}:\n" + "  " * (depth + 1) + text.replace("\n", "\n  ")
    return text


def test_config_map_holds_preset_merged_model_and_mindspeed_data(reference):
    documents = render({"model": {"overrides": {"dropout": 0.1}}, "data": {"language": "en",
                        "whisperLanguage": "English", "processor": "/models/whisper-large-v3"}})
    config = the(documents, "ConfigMap")["data"]
    model = json.loads(config["model.json"])
    upstream = json.loads((reference / "mindspeed-mm/model.json").read_text())
    assert model == {**upstream, "ckpt_path": "", "dropout": 0.1}
    data = json.loads(config["data.json"])
    upstream_data = json.loads((reference / "mindspeed-mm/data.json").read_text())
    assert _shape(data) == _shape(upstream_data)
    assert data["dataset_param"]["basic_parameters"] == {"dataset_name_or_path": "/data", "language": "en"}
    assert data["dataset_param"]["preprocess_parameters"]["processor_name_or_path"] == "/models/whisper-large-v3"
    assert data["dataloader_param"]["collate_param"]["language"] == "English"
    # no processor init container when one is given, no conversion without a pretrained model
    spec = all_pod_specs(documents)[0]
    assert "initContainers" not in spec


def _shape(node):
    return {k: _shape(v) for k, v in node.items()} if isinstance(node, dict) else type(node).__name__


def test_presets_match_the_contract(reference):
    large = json.loads(chart.preset_path("large-v3").read_text())
    upstream = json.loads((reference / "mindspeed-mm/model.json").read_text())
    assert list(large) == list(upstream) and large == {**upstream, "ckpt_path": ""}
    tiny = json.loads(chart.preset_path("tiny").read_text())
    assert list(tiny) == list(large)
    assert {k: tiny[k] for k in ["d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                                 "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim",
                                 "num_mel_bins", "vocab_size", "max_source_positions",
                                 "max_target_positions"]} == {
        "d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
        "decoder_attention_heads": 4, "encoder_ffn_dim": 256, "decoder_ffn_dim": 256, "num_mel_bins": 128,
        "vocab_size": 51866, "max_source_positions": 1500, "max_target_positions": 448}
    demo = json.loads(chart.preset_path("demo").read_text())  # tiny with a 5 s window (max_source_positions 250)
    assert list(demo) == list(tiny) and demo == {**tiny, "max_source_positions": 250}
    with pytest.raises(UserError, match="demo, large-v3, tiny"):
        chart.preset_path("huge")
    model = json.loads(the(render({"model": {"preset": "tiny"}}), "ConfigMap")["data"]["model.json"])
    assert model == tiny


def test_pretrained_conversion_and_processor_init_containers():
    documents = render({"model": {"pretrained": {"enabled": True, "path": "openai/whisper-large-v3/"}}})
    model = json.loads(the(documents, "ConfigMap")["data"]["model.json"])
    assert model["ckpt_path"] == "/outputs/pretrained/whisper.pth"
    for spec in all_pod_specs(documents):
        init = {c["name"]: c for c in spec["initContainers"]}
        assert list(init) == ["processor", "convert-pretrained"]
        assert init["processor"]["command"][-1] == "python -m whisper_k8s assets processor --out /outputs/processor"
        convert = init["convert-pretrained"]["command"][-1]
        assert convert == ("test -s /outputs/pretrained/whisper.pth || python -m whisper_k8s convert hf-to-mm "
                           "/models/openai/whisper-large-v3 /outputs/pretrained/whisper.pth")
        mounts = {m["mountPath"]: m for m in init["convert-pretrained"]["volumeMounts"]}
        assert mounts["/models"]["readOnly"] is True and "readOnly" not in mounts["/outputs"]
        assert "accelerator" not in str(init["processor"]["resources"]) and "Ascend" not in str(init["processor"]["resources"])
        assert {v["name"] for v in spec["volumes"]} >= {"models", "dataset", "outputs", "config", "shm"}


def test_storage_new_existing_and_host_path():
    new = render()
    claims = {c["metadata"]["name"]: c for c in chart.find(new, "PersistentVolumeClaim")}
    assert set(claims) == {"whisper-test-dataset", "whisper-test-outputs"}
    assert claims["whisper-test-outputs"]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claims["whisper-test-dataset"]["spec"]["accessModes"] == ["ReadWriteMany"]
    volumes = {v["name"]: v for v in all_pod_specs(new)[0]["volumes"]}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    assert volumes["outputs"]["persistentVolumeClaim"]["claimName"] == "whisper-test-outputs"

    labs = render({"storage": {"dataset": {"type": "hostPath", "hostPath": "/srv/cv"},
                               "outputs": {"type": "existingClaim", "existingClaim": "runs"}}})
    assert chart.find(labs, "PersistentVolumeClaim") == []
    volumes = {v["name"]: v for v in all_pod_specs(labs)[0]["volumes"]}
    assert volumes["dataset"]["hostPath"] == {"path": "/srv/cv", "type": "Directory"}
    assert volumes["outputs"]["persistentVolumeClaim"] == {"claimName": "runs"}
    with pytest.raises(UserError, match="storage.dataset"):
        chart.validate_values({"storage": {"dataset": {"type": "hostPath"}}})
    with pytest.raises(UserError, match="storage.outputs"):
        chart.validate_values({"storage": {"outputs": {"type": "existingClaim", "existingClaim": ""}}})


def test_ascend_host_driver_mounts_and_scheduling():
    documents = render({"accelerator": {"type": "ascend", "hostDriver": {"enabled": True},
                                        "nodeSelector": {"accelerator": "huawei-Ascend910"},
                                        "tolerations": [{"key": "npu", "operator": "Exists"}]}})
    spec = all_pod_specs(documents)[0]
    container = spec["containers"][0]
    driver_mounts = {m["mountPath"] for m in container["volumeMounts"] if m["name"].startswith("ascend-driver")}
    assert driver_mounts == {"/usr/local/Ascend/driver", "/usr/local/dcmi", "/usr/local/bin/npu-smi",
                             "/etc/ascend_install.info"}
    assert all(m.get("readOnly") for m in container["volumeMounts"] if m["name"].startswith("ascend-driver"))
    assert env_of(container)["LD_LIBRARY_PATH"].startswith("/usr/local/Ascend/driver/lib64")
    assert spec["nodeSelector"] == {"accelerator": "huawei-Ascend910"}
    assert spec["tolerations"] == [{"key": "npu", "operator": "Exists"}]
    assert spec["securityContext"]["supplementalGroups"] == [1000]  # HwHiAiUser: device files and driver
    without = all_pod_specs(render({"accelerator": {"type": "ascend"}}))[0]
    assert not any(v["name"].startswith("ascend-driver") for v in without["volumes"])


@pytest.mark.parametrize("gang", ["volcano", "coscheduling"])
def test_gang_scheduling_pod_group(gang):
    documents = render({"nodes": 16, "scheduling": {"gang": gang, "queue": "q"}})
    for doc in documents:
        assert document_errors(doc, CRDS) == [], doc["kind"]
    group = the(documents, "PodGroup")
    assert group["spec"]["minMember"] == 16
    job = the(documents, "PyTorchJob")
    assert job["spec"]["runPolicy"]["schedulingPolicy"]["minAvailable"] == 16
    for template in pod_templates(job):
        if gang == "volcano":
            assert group["apiVersion"] == "scheduling.volcano.sh/v1beta1" and group["spec"]["queue"] == "q"
            assert template["spec"]["schedulerName"] == "volcano"
            assert template["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == group["metadata"]["name"]
        else:
            assert group["apiVersion"] == "scheduling.x-k8s.io/v1alpha1"
            assert template["spec"]["schedulerName"] == "scheduler-plugins-scheduler"
            assert template["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == group["metadata"]["name"]
    operator_made = render({"scheduling": {"gang": "volcano", "createPodGroup": False}})
    assert chart.find(operator_made, "PodGroup") == []


def test_run_policy_and_labels():
    documents = render({"runPolicy": {"backoffLimit": 5, "cleanPodPolicy": "Running",
                                      "ttlSecondsAfterFinished": 3600}, "terminationGracePeriodSeconds": 600})
    job = the(documents, "PyTorchJob")
    assert job["spec"]["runPolicy"] == {"backoffLimit": 5, "cleanPodPolicy": "Running",
                                        "ttlSecondsAfterFinished": 3600}
    assert job["metadata"]["name"] == "whisper-test"  # the release name contains the chart name
    assert render(release="demo")[0]["metadata"]["name"].startswith("demo-whisper")
    assert the(render({"fullnameOverride": "exact"}), "PyTorchJob")["metadata"]["name"] == "exact"
    for doc in documents:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "whisper" and labels["app.kubernetes.io/instance"] == "whisper-test"
        assert labels["helm.sh/chart"] == "whisper-0.1.0" and doc["metadata"]["namespace"] == "speech"
    for template in pod_templates(job):
        assert template["spec"]["terminationGracePeriodSeconds"] == 600


def test_config_checksum_rolls_with_the_config():
    def checksum(values):
        return pod_templates(the(render(values), "PyTorchJob"))[0]["metadata"]["annotations"]["checksum/config"]

    assert checksum({}) == checksum({"nodes": 3})
    assert checksum({}) != checksum({"data": {"language": "en"}})


def test_security_review_of_every_pod_spec():
    """No privileged containers, no host namespaces unless asked, every capability dropped, non-root."""
    scenarios = [{}, {"accelerator": {"type": "ascend", "hostDriver": {"enabled": True}}},
                 {"accelerator": {"type": "nvidia"}, "model": {"pretrained": {"enabled": True}}},
                 {"accelerator": {"type": "cpu"}}, {"accelerator": {"type": "nvidia"}, "engine": "mindspeed-mm"},
                 {"image": {"pullSecrets": ["regcred"]}, "extraEnvFrom": [{"secretRef": {"name": "s3"}}]}]
    for values in scenarios:
        for spec in all_pod_specs(render(values)):
            assert not any(spec.get(k) for k in ["hostNetwork", "hostPID", "hostIPC"]), values
            assert spec["automountServiceAccountToken"] is False
            pod_security = spec["securityContext"]
            assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
            assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
            for container in spec["containers"] + spec.get("initContainers", []):
                security = container["securityContext"]
                assert security["privileged"] is False and security["allowPrivilegeEscalation"] is False
                assert security["capabilities"] == {"drop": ["ALL"]} and security["readOnlyRootFilesystem"]
                writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
                assert {"/tmp", "/dev/shm", "/home/whisper", "/outputs"} <= writable
                assert not any("password" in str(e).lower() and "valueFrom" not in e for e in container["env"])
            host_paths = [v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v]
            assert all(p.startswith(("/usr/local/", "/etc/ascend_install.info")) for p in host_paths), host_paths
    secrets = all_pod_specs(render(scenarios[-1]))[0]
    assert secrets["imagePullSecrets"] == [{"name": "regcred"}]
    assert secrets["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3"}}]
    network = all_pod_specs(render({"security": {"hostNetwork": True}}))[0]
    assert network["hostNetwork"] is True and network["dnsPolicy"] == "ClusterFirstWithHostNet"
    with pytest.raises(UserError, match="security.runAsUser"):
        chart.validate_values({"security": {"runAsUser": 0}})
    with pytest.raises(UserError, match="extraEnv.0.name"):
        chart.validate_values({"extraEnv": [{"name": "PET_NODE_RANK", "value": "1"}]})
    for name in ["HF_TOKEN", "WANDB_API_KEY", "S3_SECRET_ACCESS_KEY", "DB_PASSWORD"]:
        with pytest.raises(UserError, match="extraEnv.0"):
            chart.validate_values({"extraEnv": [{"name": name, "value": "plain-text"}]})
        chart.validate_values({"extraEnv": [{"name": name, "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]})
    chart.validate_values({"extraEnv": [{"name": "LOG_LEVEL", "value": "debug"}]})


def test_render_errors_name_the_problem(monkeypatch, tmp_path):
    with pytest.raises(UserError, match="accelerator.type"):
        render({"accelerator": {"type": "tpu"}})
    monkeypatch.setenv(chart.CHART_ENV, str(tmp_path))
    with pytest.raises(UserError, match="Chart.yaml missing"):
        chart.chart_dir()


@pytest.mark.parametrize("values", [
    {},
    {"accelerator": {"type": "cpu"}, "model": {"preset": "tiny"}, "training": {"bf16": False, "clipGrad": None}},
    {"accelerator": {"type": "nvidia", "perNode": 4}, "training": {"parallel": "fsdp", "globalBatchSize": 64,
     "microBatchSize": 2, "decayStyle": "cosine", "warmupIters": 10, "minLr": 1.0e-6}},
])
def test_rendered_command_and_config_parse_with_the_trainer(values, tmp_path):
    """The chart's trainer flags, model.json and data.json are accepted by the real trainer's parser."""
    pytest.importorskip("torch")
    from whisper_trainer.config import parse_args

    documents = render(values)
    for name, text in the(documents, "ConfigMap")["data"].items():
        (tmp_path / name).write_text(text)
    args = main_container(the(documents, "PyTorchJob"))["args"]
    assert args[:3] == ["torchrun", "-m", "whisper_trainer"]
    argv = [str(tmp_path / a[len("/config/"):]) if a.startswith("/config/") else a for a in args[3:]]
    config = parse_args(argv, check_files=False)
    training = {**chart.default_values()["training"], **values.get("training", {})}
    assert config.training.micro_batch_size == training["microBatchSize"]
    assert config.training.bf16 is training["bf16"]
    assert config.parallel.strategy == training["parallel"]
    assert config.checkpoint.save == config.checkpoint.load == "/outputs/checkpoints"
    assert config.metrics.metrics_file == "/outputs/metrics.jsonl"
    per_node = int(the(documents, "PyTorchJob")["spec"]["nprocPerNode"])
    world = chart.default_values()["nodes"] * per_node
    assert config.global_batch_size(world) == (training["globalBatchSize"] or training["microBatchSize"] * world)


@pytest.mark.parametrize(("values", "message"), [
    ({"training": {"globalBatchSize": 100}}, "training.globalBatchSize 100 must be a multiple of .* = 128"),
    ({"engine": "mindspeed-mm", "accelerator": {"type": "cpu"}}, "engine mindspeed-mm needs accelerator.type"),
    ({"engine": "mindspeed-mm", "training": {"parallel": "fsdp"}}, "training.parallel fsdp is for engine native"),
])
def test_cross_field_checks_fail_at_template_time(values, message):
    with pytest.raises(UserError, match=message):
        render(values)


def _leaf_paths(node, prefix=""):
    """Dotted paths of the values' leaves (scalars, lists, and maps that are empty by default)."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaf_paths(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip(".")


def test_every_value_is_documented_and_in_the_schema():
    text = (CHART / "values.yaml").read_text()
    documented = set(re.findall(r"^\s*## @param (\S+) \S", text, re.M))
    leaves = set(_leaf_paths(chart.default_values()))
    free_form = {"model.overrides", "accelerator.nodeSelector", "scheduling.affinity", "podAnnotations", "podLabels"}
    assert leaves == documented, (leaves - documented, documented - leaves)
    schema = json.loads((CHART / "values.schema.json").read_text())

    def schema_node(path):
        node = schema
        for key in path.split("."):
            node = node["properties"][key]
        return node

    for path in leaves:
        node = schema_node(path)
        if path not in free_form:
            assert node.get("type") or node.get("enum"), path
    assert chart.schema_errors({}) == []


@pytest.mark.parametrize("accelerator", ["ascend", "nvidia", "cpu"])
@pytest.mark.parametrize("nodes", [1, 2, 16])
def test_trainjob_matches_v2_crds_and_contract(nodes, accelerator):
    values = {"operator": "trainjob", "nodes": nodes, "accelerator": {"type": accelerator}}
    documents = render(values)
    assert chart.find(documents, "PyTorchJob") == [] and chart.find(documents, "PodGroup") == []
    for doc in documents:
        assert document_errors(doc, CRDS) == [], doc["kind"]
    runtime, job = the(documents, "TrainingRuntime"), the(documents, "TrainJob")
    (template,) = pod_templates(runtime)
    assert core_errors(template, "V1PodTemplateSpec") == []
    assert runtime["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert runtime["spec"]["mlPolicy"] == {"numNodes": nodes, "torch": {}}
    (replicated,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == "node"
    (container,) = template["spec"]["containers"]
    assert container["name"] == "node" and "command" not in container and "ports" not in container
    assert job["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime",
                                         "name": runtime["metadata"]["name"]}
    trainer = job["spec"]["trainer"]
    per_node = {"ascend": 8, "nvidia": 8, "cpu": 1}[accelerator]
    # Always explicit and an integer: Ascend's resource name has no "gpu" in it, so `auto` would count CPUs.
    assert trainer["numNodes"] == nodes and trainer["numProcPerNode"] == per_node
    assert trainer["args"][:3] == ["torchrun", "-m", "whisper_trainer"] and trainer["command"][:2] == ["/bin/sh", "-c"]
    for spec in [template["spec"]]:
        for c in spec["containers"] + spec.get("initContainers", []):
            assert not RESERVED_V2_ENV & {e["name"] for e in c["env"]}


def test_trainjob_reuses_the_pytorchjob_pod_template():
    """One set of pod templates: the runtime's pod equals the PyTorchJob's but for name, port and command."""
    values = {"nodes": 2, "accelerator": {"type": "ascend", "hostDriver": {"enabled": True}},
              "model": {"pretrained": {"enabled": True}}, "scheduling": {"gang": "coscheduling"}}
    pytorch = pod_templates(the(render(values), "PyTorchJob"))[0]
    trainjob_docs = render({**values, "operator": "trainjob"})
    runtime = pod_templates(the(trainjob_docs, "TrainingRuntime"))[0]
    (pytorch_container,), (node_container,) = pytorch["spec"]["containers"], runtime["spec"]["containers"]
    assert {k: v for k, v in pytorch_container.items() if k not in ("name", "ports", "command", "args")} == \
        {k: v for k, v in node_container.items() if k != "name"}
    assert {k: v for k, v in pytorch["spec"].items() if k != "containers"} == \
        {k: v for k, v in runtime["spec"].items() if k != "containers"}
    trainer = the(trainjob_docs, "TrainJob")["spec"]["trainer"]
    assert trainer["command"] == pytorch_container["command"] and trainer["args"] == pytorch_container["args"]
    # gang scheduling: Trainer v2 makes the PodGroup from podGroupPolicy; no label pointing at our own
    assert the(render({**values, "operator": "trainjob"}), "TrainingRuntime")["spec"]["podGroupPolicy"] == {
        "coscheduling": {"scheduleTimeoutSeconds": 600}}
    assert "scheduling.x-k8s.io/pod-group" not in runtime["metadata"]["labels"]
    assert pytorch["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "whisper-test"


def test_trainjob_rejects_reserved_env_in_values():
    for name in sorted(RESERVED_V2_ENV):
        with pytest.raises(UserError, match="extraEnv.0.name"):
            chart.validate_values({"operator": "trainjob", "extraEnv": [{"name": name, "value": "1"}]})
