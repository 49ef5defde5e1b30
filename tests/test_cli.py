"""The job subcommands (submit, status, logs, delete, list) through the real CLI entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from k8s_fake import FakeApiServer

from whisper_k8s.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
JOB_COMMANDS = ("submit", "status", "logs", "delete", "list")
JOBS = "/apis/kubeflow.org/v1/namespaces/default/pytorchjobs"
TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/default/trainjobs"
NOT_SERVED = "discovery_get_apis_kubeflow.org_v1_without_crd_404"  # an unserved API path's answer


def test_job_commands_need_neither_kubernetes_nor_torch_to_start():
    """Block the heavy packages outright: importing the CLI and backend and printing --help must still work."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("kubernetes", "torch", "transformers"):
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
import whisper_k8s.backends.kubernetes, whisper_k8s.backends, whisper_k8s.logs, whisper_k8s.values
from whisper_k8s.cli import submit, status, logs, delete, list_jobs
from whisper_k8s.cli.main import main
for command in {JOB_COMMANDS!r}:
    try:
        main([command, "--help"])
    except SystemExit as done:
        assert done.code == 0, command
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
    assert result.stdout.count("examples:") == len(JOB_COMMANDS)


@pytest.mark.parametrize("command", JOB_COMMANDS)
def test_help_shows_examples(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"python -m whisper_k8s {command}" in out


def test_submit_dry_run_prints_crd_valid_manifests_and_keeps_the_values(tmp_path, capsys, reference):
    values_out = tmp_path / "kept.yaml"
    extra = tmp_path / "extra.yaml"
    extra.write_text("training:\n  trainIters: 7\n")
    rc = main(["submit", "--name", "whisper-hi", "--nodes", "3", "--npus-per-node", "8", "--language", "hi",
               "-f", str(extra), "--set", "training.microBatchSize=4", "--values-out", str(values_out),
               "--dry-run"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.startswith("# helm upgrade --install whisper-hi ")
    documents = [d for d in yaml.safe_load_all(out) if d]
    job = next(d for d in documents if d["kind"] == "PyTorchJob")
    crd = yaml.safe_load((reference / "crds" / "kubeflow.org_pytorchjobs.v1.9.0.yaml").read_text())
    jsonschema.validate(job, crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    assert job["metadata"]["name"] == "whisper-hi"
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 2
    kept = yaml.safe_load(values_out.read_text())
    assert kept == {"training": {"trainIters": 7, "microBatchSize": 4}, "nodes": 3,
                    "accelerator": {"perNode": 8}, "data": {"language": "hi"}, "fullnameOverride": "whisper-hi"}


def test_bad_values_are_refused_before_anything_is_written(tmp_path, capsys):
    values_out = tmp_path / "kept.yaml"
    rc = main(["submit", "--name", "bad", "--nodes", "0", "--set", "ascendEnv.HCCL_CONNECT_TIMEOUT=5",
               "--values-out", str(values_out), "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and "nodes: 0 is less than the minimum of 1" in err
    assert "ascendEnv.HCCL_CONNECT_TIMEOUT: 5 is less than the minimum of 120" in err
    assert not values_out.exists()
    with pytest.raises(SystemExit):
        main(["status", "Bad_Name"])
    assert "must be lower-case letters" in capsys.readouterr().err


@pytest.fixture
def fake_cluster(monkeypatch):
    """Point the CLI's Kubernetes backend at recorded responses instead of a kubeconfig."""
    def install(routes):
        fake = FakeApiServer(routes)
        monkeypatch.setattr("whisper_k8s.backends.kubernetes_api.load_api_client",
                            lambda *a, **k: (fake.client(), ""))
        return fake
    return install


def test_status_prints_the_pods_table_and_the_reason(fake_cluster, capsys):
    fake_cluster({
        ("GET", f"{JOBS}/whisper-train"): "pods_owner_pytorchjob_create_201",
        ("GET", "/api/v1/namespaces/default/pods"): "pods_list_by_label_selector_200",
        ("GET", "/api/v1/namespaces/default/events"): "events_list_pending_pod_200",
    })
    assert main(["status", "whisper-train"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "job kubernetes://default/whisper-train  operator pytorchjob  state Pending"
    assert "POD                     ROLE    RANK  PHASE    RESTARTS  NODE           AGE" in out
    assert "no node has enough free huawei.com/Ascend910" in out


def test_status_of_a_missing_job_and_list(fake_cluster, capsys):
    fake_cluster({("GET", f"{JOBS}/gone"): "pytorchjob_get_after_delete_404", ("GET", JOBS): "pytorchjob_list_200",
                  ("GET", f"{TRAINJOBS}/gone"): NOT_SERVED, ("GET", TRAINJOBS): NOT_SERVED})
    assert main(["status", "gone"]) == 2
    assert "no job gone in namespace default" in capsys.readouterr().err
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "STATE", "NODES", "AGE"]
    assert lines[1].split()[:4] == ["whisper-ft", "pytorchjob", "Pending", "2"]


def test_status_finds_a_trainjob_without_being_told_its_kind(fake_cluster, capsys):
    fake_cluster({("GET", f"{JOBS}/whisper-ft-v2"): "pytorchjob_get_after_delete_404",
                  ("GET", f"{TRAINJOBS}/whisper-ft-v2"): "trainjob_get_200",
                  ("GET", "/api/v1/namespaces/default/pods"): "pods_list_by_label_selector_after_deletes_200"})
    assert main(["status", "whisper-ft-v2"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == \
        "job kubernetes://default/whisper-ft-v2  operator trainjob  state Pending"


def test_status_without_any_operator_names_what_to_install(fake_cluster, capsys):
    fake_cluster({("GET", f"{JOBS}/demo"): NOT_SERVED, ("GET", f"{TRAINJOBS}/demo"): NOT_SERVED})
    assert main(["status", "demo"]) == 3
    err = capsys.readouterr().err
    assert "training operator (v1.9)" in err and "Kubeflow Trainer (v2.3)" in err


def test_logs_ctrl_c_exits_130_without_traceback(monkeypatch, capsys):
    def interrupted(self, name, **options):
        yield "[master-0] iteration 1"
        raise KeyboardInterrupt

    monkeypatch.setattr("whisper_k8s.backends.kubernetes.KubernetesScheduler.log_iter", interrupted)
    monkeypatch.setattr("whisper_k8s.backends.kubernetes.KubernetesScheduler.describe", lambda self, name: None)
    assert main(["logs", "demo", "-f"]) == 130
    captured = capsys.readouterr()
    assert captured.out == "[master-0] iteration 1\n" and "Traceback" not in captured.err


def test_logs_since_takes_kubectl_durations(capsys):
    from whisper_k8s.cli.logs import duration

    assert duration("45s") == 45 and duration("1h30m") == 5400
    with pytest.raises(SystemExit):
        main(["logs", "demo", "--since", "yesterday"])
    assert "must look like 30s, 10m, 2h" in capsys.readouterr().err


def test_no_cluster_configured_is_a_cluster_error_with_the_fix(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(KUBECONFIG=str(tmp_path / "missing"), HOME=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "whisper_k8s", "status", "demo"], capture_output=True,
                            text=True, cwd=ROOT, env=env, timeout=60)
    assert result.returncode == 3
    assert result.stderr.startswith("error: no Kubernetes cluster configured")
    assert "KUBECONFIG" in result.stderr and "--local" in result.stderr and "Traceback" not in result.stderr


def test_submitted_values_can_be_resubmitted(tmp_path, capsys):
    first = tmp_path / "first.yaml"
    assert main(["submit", "--name", "again", "--accelerator", "cpu", "--values-out", str(first), "--dry-run"]) == 0
    once = capsys.readouterr().out
    assert main(["submit", "--name", "again", "-f", str(first), "--values-out", str(tmp_path / "b.yaml"),
                 "--dry-run"]) == 0
    assert capsys.readouterr().out.split("\n", 1)[1] == once.split("\n", 1)[1]
    assert yaml.safe_load(first.read_text()) == yaml.safe_load((tmp_path / "b.yaml").read_text())
