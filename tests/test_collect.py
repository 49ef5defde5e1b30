"""collect: checkpoint choice, metrics report, and the whole path chart -> local pods -> trainer -> HF folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from whisper_k8s.collect import latest_complete_iteration
from whisper_k8s.errors import UserError
from whisper_k8s.formats import megatron
from whisper_k8s.report import summarize, write_report

ROOT = Path(__file__).resolve().parents[1]


def save_iteration(root: Path, iteration: int) -> Path:
    import torch

    path = megatron.model_file(megatron.iteration_dir(root, iteration))
    megatron.save_file({"model": {"w": torch.full((2,), float(iteration))}, "iteration": iteration}, path)
    return path


def test_latest_complete_checkpoint_skips_damaged_and_unannounced(tmp_path):
    root = tmp_path / "checkpoints"
    save_iteration(root, 2)
    save_iteration(root, 4).write_bytes(b"torn write")  # damaged: falls back to 2
    save_iteration(root, 6)  # beyond the tracker: may still be in the making
    megatron.write_tracker(root, 4)
    assert latest_complete_iteration(root) == 2
    megatron.write_tracker(root, 6)
    assert latest_complete_iteration(root) == 6
    with pytest.raises(UserError, match="no complete checkpoint"):
        latest_complete_iteration(tmp_path / "empty")


def test_report_summarizes_metrics_of_a_restarted_run(tmp_path):
    rows = [{"iteration": i, "loss": loss, "samples_per_second": sps, "skipped_samples": skipped}
            for i, loss, sps, skipped in [(1, 9.0, 1.0, {}), (2, 8.0, 3.0, {}), (3, 7.5, 3.0, {"corrupt_mp3": 1}),
                                          (3, 7.0, 5.0, {"corrupt_mp3": 1}), (4, 6.0, 5.0, {"corrupt_mp3": 2})]]
    lines = [json.dumps(r) for r in rows] + ['{"summary": {"average_samples_per_second": 4.5}}', '{"iterat']
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(lines))
    summary = summarize(metrics)
    assert (summary.iterations, summary.first_loss, summary.last_loss, summary.min_loss) == (4, 9.0, 6.0, 6.0)
    assert summary.curve == [(1, 9.0), (2, 8.0), (3, 7.0), (4, 6.0)]  # the resumed run's iteration 3
    assert summary.samples_per_second == 4.5 and summary.skipped == {"corrupt_mp3": 2}
    assert summary.repeated_iterations == 1
    write_report(tmp_path, job="demo", state="Succeeded", checkpoint="iteration 4", metrics=metrics)
    report = (tmp_path / "report.md").read_text()
    assert "iterations: 4" in report and "first 9.0000, last 6.0000" in report and "corrupt_mp3 2" in report
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def cli(*args, env, timeout=240):
    return subprocess.run([sys.executable, "-m", "whisper_k8s", *args], capture_output=True, text=True,
                          cwd=env["WORK"], env=env, timeout=timeout)


def local_env(tmp_path: Path) -> dict:
    """The environment of CLI runs whose local jobs live under ``tmp_path`` (shared with test_trainjob)."""
    return dict(os.environ, WHISPER_K8S_STATE=str(tmp_path / "state"), WORK=str(tmp_path))


def tiny_values_file(tmp_path: Path, processor_dir: Path) -> Path:
    """Values of a 2-iteration CPU job of the tiny preset on the synthetic English set."""
    values = tmp_path / "tiny.yaml"
    values.write_text(json.dumps({
        "model": {"preset": "tiny"},
        "data": {"language": "en", "whisperLanguage": "English", "processor": str(processor_dir)},
        "training": {"trainIters": 2, "microBatchSize": 2, "numWorkers": 0, "bf16": False, "saveInterval": 1,
                     "logInterval": 1},
    }))
    return values


@pytest.mark.e2e
@pytest.mark.slow
def test_local_two_node_job_trains_and_collects_a_loadable_model(tmp_path, cv_dataset, processor_dir):
    """submit --local --nodes 2 --follow -> both ranks log -> Succeeded -> collect -> from_pretrained."""
    env = local_env(tmp_path)
    values = tiny_values_file(tmp_path, processor_dir)
    submitted = cli("submit", "--name", "e2e", "--local", "--nodes", "2", "--accelerator", "cpu",
                    "--dataset", str(cv_dataset), "-f", str(values), "--values-out", str(tmp_path / "v.yaml"),
                    "--follow", env=env)
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    assert "[master-0] " in submitted.stdout and "[worker-0] " in submitted.stdout
    assert "iteration       2/2" in submitted.stdout and "job local://default/e2e Succeeded" in submitted.stderr

    status = cli("status", "e2e", "--local", env=env)
    assert "state Succeeded" in status.stdout and "e2e-worker-0" in status.stdout

    collected = cli("collect", "e2e", "--local", "--to", str(tmp_path / "model"), env=env)
    assert collected.returncode == 0, collected.stderr[-3000:]
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(tmp_path / "model")
    assert model.config.d_model == 64 and model.config.encoder_layers == 2
    WhisperProcessor.from_pretrained(tmp_path / "model")
    report = (tmp_path / "model" / "report.md").read_text()
    assert "iterations: 2" in report and "checkpoint: iteration 2" in report
    assert (tmp_path / "model" / "loss.png").is_file()

    assert "e2e" in cli("list", "--local", env=env).stdout
    deleted = cli("delete", "e2e", "--local", env=env)
    assert deleted.returncode == 0, deleted.stderr
    kept = tmp_path / "state" / "e2e" / "volumes" / "e2e-outputs"  # the outputs claim stays (storage.keepClaims)
    assert f"kept: outputs (claim e2e-outputs): {kept}" in deleted.stdout
    assert megatron.read_tracker(kept / "checkpoints") == 2 and not (tmp_path / "state" / "e2e" / "logs").exists()
    gone = cli("status", "e2e", "--local", env=env)
    assert gone.returncode == 2 and "job e2e was deleted; its outputs are kept" in gone.stderr


# ------------------------------------------------------------------------------- Kubernetes: helper pod
def rendered_job(name="whisper-hi"):
    from whisper_k8s.chart import render

    documents = render({"fullnameOverride": name, "nodes": 2, "accelerator": {"type": "cpu"}}, name)
    return next(doc for doc in documents if doc["kind"] == "PyTorchJob")


def test_helper_pod_mounts_the_jobs_outputs_read_only_like_its_master():
    from whisper_k8s.backends.kubernetes_fetch import helper_pod

    job = rendered_job()
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    pod = helper_pod([job])
    assert pod["metadata"]["name"].startswith("whisper-hi-collect-")
    assert pod["metadata"]["labels"]["whisper-k8s/collect-for"] == "whisper-hi"
    spec, container = pod["spec"], pod["spec"]["containers"][0]
    assert spec["restartPolicy"] == "Never" and spec["activeDeadlineSeconds"] > 0
    assert container["image"] == master["containers"][0]["image"]
    assert spec["securityContext"] == master["securityContext"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/outputs"]["readOnly"] and mounts["/config"]["readOnly"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/outputs"]["name"]]["persistentVolumeClaim"]["claimName"] == "whisper-hi-outputs"
    assert volumes[mounts["/config"]["name"]]["configMap"]["name"] == "whisper-hi-config"


def test_tar_from_the_pod_side_unpacks_to_the_local_layout(tmp_path):
    """What the helper pod runs (write_outputs_tar) + what collect does with it == copy_outputs."""
    from whisper_k8s.backends.kubernetes_fetch import safe_extract
    from whisper_k8s.collect import copy_outputs, finish_fetch

    outputs, config = tmp_path / "outputs", tmp_path / "config"
    save_iteration(outputs / "checkpoints", 3)
    save_iteration(outputs / "checkpoints", 5)
    megatron.write_tracker(outputs / "checkpoints", 5)
    (outputs / "metrics.jsonl").write_text('{"iteration": 1, "loss": 1.0}\n')
    (outputs / "processor").mkdir()
    (outputs / "processor" / "tokenizer.json").write_text("{}")
    config.mkdir()
    (config / "model.json").write_text("{}")
    code = f"from whisper_k8s.collect import write_outputs_tar; write_outputs_tar({str(outputs)!r}, {str(config)!r})"
    archive = tmp_path / "outputs.tar"
    with open(archive, "wb") as out:
        done = subprocess.run([sys.executable, "-c", code], stdout=out, stderr=subprocess.PIPE, cwd=ROOT, check=True)
    assert done.stderr.decode().split()[:2] == ["iteration", "5"]
    safe_extract(archive, tmp_path / "remote")
    finish_fetch(tmp_path / "remote", 5)
    copy_outputs(outputs, tmp_path / "local", config=config)
    listing = {d: sorted(str(p.relative_to(tmp_path / d)) for p in (tmp_path / d).rglob("*") if p.is_file())
               for d in ("remote", "local")}
    assert listing["remote"] == listing["local"]
    assert "checkpoints/iter_0000005/mp_rank_00/model_optim_rng.pt" in listing["local"]
    assert not any("iter_0000003" in p for p in listing["local"]) and "config/model.json" in listing["local"]


def test_unsafe_tar_members_are_refused(tmp_path):
    import io
    import tarfile

    from whisper_k8s.backends.kubernetes_fetch import safe_extract
    from whisper_k8s.errors import ClusterError

    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ClusterError, match="refusing tar member"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.cluster
def test_collect_from_a_cluster_job(tmp_path):
    """Needs KUBECONFIG and WHISPER_K8S_COLLECT_JOB naming a job that saved a checkpoint (PVC outputs)."""
    job = os.environ.get("WHISPER_K8S_COLLECT_JOB")
    if not job:
        pytest.skip("set WHISPER_K8S_COLLECT_JOB to a job with a checkpoint in its outputs volume")
    from transformers import WhisperForConditionalGeneration

    from whisper_k8s.backends import get_scheduler
    from whisper_k8s.collect import collect

    namespace = os.environ.get("WHISPER_K8S_NAMESPACE", "default")
    result = collect(get_scheduler("kubernetes", namespace=namespace), job, tmp_path / "model")
    WhisperForConditionalGeneration.from_pretrained(result.folder)
    assert (result.folder / "report.md").is_file()
