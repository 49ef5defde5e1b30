"""The CPU image, built for real as docker/README.md's air-gapped section says, and run as the operator runs pods.

Needs a container engine (tests/container_engine.py finds or starts one; the tests skip with the reason where
none can start). The build runs the README's `make wheelhouse` and `make image` in a copy of the repository,
offline: no registry, no package index inside the build, no build argument of the tests' own.
"""

from __future__ import annotations

import json
import os
import shutil

import container_engine as ce
import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="session")
def engine() -> ce.Engine:
    found = ce.session_engine()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture(scope="session")
def cpu_image(engine) -> str:
    image, seconds = ce.session_image(engine)
    size = int(engine.run("image", "inspect", "--format", "{{.Size}}", image).stdout)
    print(f"\ncpu image {image}: built in {seconds:.0f}s, {size / 1e9:.2f} GB")
    return image


def test_image_runs_the_cli_and_the_trainer_as_a_non_root_user(engine, cpu_image):
    config = json.loads(engine.run("image", "inspect", "--format", "{{json .Config}}", cpu_image).stdout)
    assert config["User"] == "1000:1000" and config["Entrypoint"] == ["/usr/local/bin/whisper-entrypoint"]
    script = ("id -u; echo \"NODE_RANK=$NODE_RANK\"; python3 -m whisper_k8s --help | head -n 1; "
              "python3 -m whisper_trainer --help | head -n 1; torchrun --help | head -n 1; "
              "python3 -c 'import sys, torch; print(\"%d.%d\" % sys.version_info[:2], torch.__version__)'")
    out = engine.run("run", "--rm", "--network", "none", "-e", "PET_NODE_RANK=1", cpu_image,
                     "sh", "-c", script).stdout.splitlines()
    assert out[0] == "1000"  # the image's user, not root
    assert out[1] == "NODE_RANK=1"  # the entrypoint derives it from the operator's PET_NODE_RANK
    assert out[2].startswith("usage: python -m whisper_k8s") and out[3].startswith("usage: whisper_trainer")
    build = ce.readme_build()  # the image holds the Python and torch the README's wheelhouse was made for
    assert out[4].startswith("usage: torchrun")
    assert out[5] == f"{build.make_variable('WHEEL_PYTHON')} {build.make_variable('WHEEL_TORCH')}+cpu"


def test_two_containers_named_like_the_operators_pods_train_over_dns(engine, cpu_image, cv_dataset, tmp_path):
    """A 2-node PyTorchJob of the tiny preset: the chart's pod specs and the operator's env, one container
    per pod on a user-defined network; the master's address is its pod name, resolved by the engine's DNS."""
    from whisper_k8s import chart
    from whisper_k8s.formats.megatron import load_file, read_tracker, resolve_model_file
    from whisper_k8s.formats.mindspeed import check_mm_state
    from whisper_k8s.operators import get_contract

    job = "imgtest"
    values = {"fullnameOverride": job, "nodes": 2, "image": {"repository": cpu_image.rsplit(":", 1)[0], "tag": cpu_image.rsplit(":", 1)[1]},
              "accelerator": {"type": "cpu"}, "model": {"preset": "tiny"},
              "data": {"language": "en", "whisperLanguage": "English"},
              "training": {"trainIters": 1, "microBatchSize": 2, "numWorkers": 0, "bf16": False,
                           "saveInterval": 1, "logInterval": 1}}
    documents = chart.render(values, job)
    replicas = get_contract("pytorchjob").read_job(documents).replicas
    assert [r.pod_name for r in replicas] == [f"{job}-master-0", f"{job}-worker-0"]
    config_map = chart.find(documents, "ConfigMap")[0]["data"]
    (tmp_path / "config").mkdir()
    for name in ("model.json", "data.json"):
        (tmp_path / "config" / name).write_text(config_map[name])
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    os.chown(outputs, 1000, 1000) if os.geteuid() == 0 else outputs.chmod(0o777)
    mounts = ["-v", f"{tmp_path / 'config'}:/config:ro", "-v", f"{cv_dataset}:/data:ro", "-v", f"{outputs}:/outputs",
              "--tmpfs", "/tmp", "--tmpfs", "/home/whisper", "--read-only"]

    network = f"whisper-k8s-test-{job}"
    engine.run("network", "create", network)
    names = []
    try:
        master_spec = replicas[0].pod_spec
        processor = master_spec["initContainers"][0]  # the chart's init container writes /outputs/processor
        engine.run("run", "--rm", "--network", network, *mounts, "--entrypoint", processor["command"][0],
                   cpu_image, *processor["command"][1:])
        for replica in replicas:
            container = next(c for c in replica.pod_spec["containers"] if c["name"] == replica.container)
            env = {e["name"]: e["value"] for e in container["env"] if "value" in e} | replica.env
            assert env["MASTER_ADDR"] == f"{job}-master-0" and env["PET_NODE_RANK"] == str(replica.node_rank)
            argv = ["run", "--detach", "--name", replica.pod_name, "--hostname", replica.pod_name,
                    "--network", network, *mounts]
            argv += [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
            argv += ["--entrypoint", container["command"][0], cpu_image, *container["command"][1:],
                     *container["args"]]
            engine.run(*argv)
            names.append(replica.pod_name)
        codes = [engine.run("wait", name, timeout=600).stdout.strip() for name in names]
        logs = {name: engine.run("logs", name).stdout + engine.run("logs", name).stderr for name in names}
        assert codes == ["0", "0"], "\n".join(f"== {n}\n{log[-3000:]}" for n, log in logs.items())
    finally:
        if names:
            engine.run("rm", "--force", *names, check=False)
        engine.run("network", "rm", network, check=False)

    assert "training stopped at iteration 1 (finished)" in logs[f"{job}-master-0"]
    assert read_tracker(outputs / "checkpoints") == 1
    state = load_file(resolve_model_file(outputs / "checkpoints"))
    shapes = {key: tuple(value.shape) for key, value in state["model"].items()}
    preset = json.loads(chart.preset_path("tiny").read_text())
    assert check_mm_state(shapes, preset) == []
    summary = json.loads((outputs / "metrics.jsonl").read_text().splitlines()[-1])["summary"]
    assert summary["iteration"] == 1 and summary["stopped_by"] == "finished" and summary["global_batch"] == 4
    shutil.rmtree(outputs, ignore_errors=True)
