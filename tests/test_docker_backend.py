"""The docker backend: the chart's pods as containers on this host (`submit --backend docker`).

The generated engine arguments (names, network, security context, volumes, GPU/NPU passthrough) are checked
as text everywhere; the whole path (submit -> both replicas train -> status, logs, collect -> a loadable
Hugging Face folder -> delete) runs for real where a container engine runs (marked ``docker``).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import container_engine as ce
import pytest

from whisper_k8s import chart
from whisper_k8s.backends import AppRequest
from whisper_k8s.backends.docker import DockerScheduler, job_status
from whisper_k8s.errors import UserError


def request(name: str, values: dict) -> AppRequest:
    values = {"fullnameOverride": name, **values}
    return AppRequest(name=name, values=values, documents=chart.render(values, name),
                      operator=values.get("operator", "pytorchjob"))


def engine_runs(info) -> dict[str, list[str]]:
    """container name -> its `docker run` argv, from a dry run's plan."""
    return {run["name"]: run["argv"] for run in info.extra["plan"]["runs"]}


def test_cpu_job_becomes_named_containers_on_the_jobs_network(tmp_path):
    info = DockerScheduler(state_dir=tmp_path, runtimes={"runc"}).dryrun(
        request("demo", {"nodes": 2, "accelerator": {"type": "cpu"}, "model": {"preset": "tiny"}}))
    runs = engine_runs(info)
    assert list(runs) == ["demo-master-0-init-processor", "demo-worker-0-init-processor", "demo-master-0",
                          "demo-worker-0"]
    master = shlex.join(runs["demo-master-0"])
    for expected in ["--name demo-master-0 --hostname demo-master-0 --network whisper-k8s-demo",
                     "--user 1000:1000 --group-add 1000 --read-only --cap-drop ALL --security-opt no-new-privileges",
                     f"-v {tmp_path}/demo/volumes/demo-outputs:/outputs ",
                     "--restart on-failure:", "-e MASTER_ADDR=demo-master-0 ", "-e PET_NODE_RANK=0 ",
                     "--label io.whisper-k8s.step=main", "--shm-size "]:
        assert expected in master, expected
    worker = runs["demo-worker-0"]
    assert "PET_NODE_RANK=1" in worker and "MASTER_ADDR=demo-master-0" in worker and "--gpus" not in worker
    assert "--restart" not in runs["demo-master-0-init-processor"]  # init containers run once, to the end
    # the dry run prints the engine commands above the documents
    assert str(info).startswith("# docker network create whisper-k8s-demo\n# docker run --detach --name demo-master-0-init")


def test_restarts_follow_the_operator(tmp_path):
    """PyTorchJob: the engine restarts a failed trainer in place (as the kubelet), and the operator's limit on
    all pods' restarts together fails the job when it is read; TrainJob: no engine restart (nothing here could
    recreate every container), so a failed node fails the job."""
    values = {"nodes": 2, "accelerator": {"type": "cpu"}, "runPolicy": {"backoffLimit": 2}}
    runs = engine_runs(DockerScheduler(state_dir=tmp_path, runtimes={"runc"}).dryrun(request("pt", values)))
    assert "--restart on-failure:2" in shlex.join(runs["pt-worker-0"])
    v2 = engine_runs(DockerScheduler(state_dir=tmp_path, runtimes={"runc"}).dryrun(
        request("v2", {**values, "operator": "trainjob"})))
    assert [name for name, argv in v2.items() if "--restart" in argv] == []

    label = next(a for a in runs["pt-worker-0"] if a.startswith("io.whisper-k8s.restart="))
    labels = {f"io.whisper-k8s.{k}": v for k, v in {"job": "pt", "operator": "pytorchjob", "step": "main",
                                                  "role": "worker", "index": "0", "node-rank": "1"}.items()}
    labels.update(dict([label.split("=", 1)]), **{"io.whisper-k8s.pod": "pt-worker-0"})

    def container(role, index, rank, restarts, status="running"):
        named = dict(labels, **{"io.whisper-k8s.role": role, "io.whisper-k8s.index": str(index),
                                "io.whisper-k8s.node-rank": str(rank), "io.whisper-k8s.pod": f"pt-{role}-{index}"})
        return {"Config": {"Labels": named}, "RestartCount": restarts, "Created": "2026-11-25T21:25:40Z",
                "State": {"Status": status, "ExitCode": 0, "StartedAt": "2026-11-25T21:25:41Z"}}

    one = job_status("pt", "default", [container("master", 0, 0, 0), container("worker", 0, 1, 1)])
    assert one.state == "Running" and not one.problems
    two = job_status("pt", "default", [container("master", 0, 0, 1), container("worker", 0, 1, 1)])
    assert two.state == "Failed" and "2 restart(s) of the job: restart limit 2 reached" in two.problems[0]


def test_gpus_and_npus_are_split_between_replicas_by_runtime(tmp_path):
    gpus = DockerScheduler(state_dir=tmp_path, runtimes={"runc", "nvidia"}).dryrun(
        request("g", {"nodes": 2, "accelerator": {"type": "nvidia", "perNode": 2}}))
    runs = engine_runs(gpus)
    assert '--gpus \'"device=0,1"\'' in shlex.join(runs["g-master-0"])
    assert '--gpus \'"device=2,3"\'' in shlex.join(runs["g-worker-0"])
    npus = DockerScheduler(state_dir=tmp_path, runtimes={"runc", "ascend"}).dryrun(
        request("npu", {"nodes": 1, "accelerator": {"type": "ascend", "perNode": 8}}))
    assert "--runtime ascend -e ASCEND_VISIBLE_DEVICES=0,1,2,3,4,5,6,7" in shlex.join(engine_runs(npus)["npu-master-0"])
    with pytest.raises(UserError, match="no NVIDIA runtime"):
        DockerScheduler(state_dir=tmp_path, runtimes={"runc"}).dryrun(
            request("g", {"nodes": 1, "accelerator": {"type": "nvidia", "perNode": 1}}))


def cli(*args, env, timeout=600):
    return subprocess.run([sys.executable, "-m", "whisper_k8s", *args], capture_output=True, text=True,
                          cwd=env["WORK"], env=env, timeout=timeout)


@pytest.mark.docker
@pytest.mark.e2e
@pytest.mark.slow
def test_submit_backend_docker_trains_and_collects(tmp_path, cv_dataset):
    engine = ce.session_engine()
    if isinstance(engine, str):
        pytest.skip(engine)
    image, _ = ce.session_image(engine)
    env = dict(engine.env, WHISPER_K8S_DOCKER_STATE=str(tmp_path / "state"), WORK=str(tmp_path),
               WHISPER_K8S_CONTAINER_ENGINE=engine.cli)
    values = tmp_path / "tiny.yaml"
    values.write_text(json.dumps({
        "model": {"preset": "tiny"}, "data": {"language": "en", "whisperLanguage": "English"},
        "training": {"trainIters": 2, "microBatchSize": 2, "numWorkers": 0, "bf16": False, "saveInterval": 1,
                     "logInterval": 1},
    }))
    try:
        submitted = cli("submit", "--name", "dk", "--backend", "docker", "--nodes", "2", "--accelerator", "cpu",
                        "--image", image, "--dataset", str(cv_dataset), "-f", str(values),
                        "--values-out", str(tmp_path / "v.yaml"), "--follow", env=env)
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        assert "[master-0] " in submitted.stdout and "[worker-0] " in submitted.stdout
        assert "iteration       2/2" in submitted.stdout and "job docker://default/dk Succeeded" in submitted.stderr

        status = cli("status", "dk", "--backend", "docker", env=env)
        assert "state Succeeded" in status.stdout and "dk-worker-0" in status.stdout, status.stdout
        logs = cli("logs", "dk", "--backend", "docker", "--role", "master", env=env)
        assert "training stopped at iteration 2 (finished)" in logs.stdout and "[worker-0]" not in logs.stdout
        assert re.search(r"^dk\s+pytorchjob\s+Succeeded\s+2\s", cli("list", "--backend", "docker", env=env).stdout,
                         re.MULTILINE)

        collected = cli("collect", "dk", "--backend", "docker", "--to", str(tmp_path / "model"), env=env)
        assert collected.returncode == 0, collected.stderr[-3000:]
        from transformers import WhisperForConditionalGeneration

        model = WhisperForConditionalGeneration.from_pretrained(tmp_path / "model")
        assert model.config.d_model == 64 and model.config.decoder_layers == 2
        assert "checkpoint: iteration 2" in (tmp_path / "model" / "report.md").read_text()
    finally:
        deleted = cli("delete", "dk", "--backend", "docker", env=env)
    assert deleted.returncode == 0, deleted.stderr
    left = engine.run("ps", "--all", "--quiet", "--filter", "label=io.whisper-k8s.job=dk").stdout.split()
    assert left == [] and engine.run("network", "inspect", "whisper-k8s-dk", check=False).returncode != 0
    kept = tmp_path / "state" / "dk" / "volumes" / "dk-outputs"  # the outputs claim stays (storage.keepClaims)
    assert f"kept: outputs (claim dk-outputs): {kept}" in deleted.stdout and (kept / "checkpoints").is_dir()
    assert cli("status", "dk", "--backend", "docker", env=env).returncode == 2
    again = cli("collect", "dk", "--backend", "docker", "--to", str(tmp_path / "again"), env=env)
    assert again.returncode == 0 and "(Deleted, iteration 2)" in again.stdout, again.stderr[-3000:]
    purged = cli("delete", "dk", "--backend", "docker", "--purge-outputs", env=env)
    assert purged.returncode == 0 and not (tmp_path / "state" / "dk").exists(), purged.stderr
