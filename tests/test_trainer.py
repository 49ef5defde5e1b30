"""The trainer end to end: 2 processes over gloo with torchrun on CPU, the tiny preset.

Scenarios (each torchrun launch runs once per module and its results are shared by the tests):
- ``full``: an uninterrupted run of ITERS iterations over a small set in the bf16 arrangement (bf16 parameters,
  fp32 master weights, fp32 gradients accumulated over 2 micro steps and all-reduced in buckets by
  ``precision.MainGradDataParallel``): the loss must fall below a fifth of the first iteration's (overfitting),
  checkpoints land in the Megatron layout with MindSpeed-MM keys and the fp32 masters.
- ``interrupted``: the same run told to stop by SIGTERM (what Kubernetes sends) after a few iterations: it
  saves and exits; started again with the same command (plus ``--exit-interval 12``) it resumes by itself, and
  its weights at iteration 12 are bitwise equal to the uninterrupted run's.
The data is a 4-clip generated Common Voice set read by the real loader (whisper_trainer.data).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from whisper_k8s.formats import megatron
from whisper_k8s.formats.mindspeed import expected_mm_shapes

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "helm" / "files" / "model-presets" / "tiny.json"
PYTHON = sys.executable
ITERS = 30
RESUMED_TO = 12  # the interrupted run is compared with the uninterrupted one at this checkpoint
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


# ------------------------------------------------------------------------------------------------- launching
def write_configs(tmp: Path, processor_dir: Path, dataset_root: Path) -> tuple[Path, Path]:
    model_json, data_json = tmp / "model.json", tmp / "data.json"
    model_json.write_text(PRESET.read_text())
    data_json.write_text(json.dumps({
        "dataset_param": {
            "dataset_type": "audio",
            "basic_parameters": {"dataset_name_or_path": str(dataset_root), "language": "en"},
            "preprocess_parameters": {"processor_name_or_path": str(processor_dir), "language": "English",
                                      "task": "transcribe"},
        },
        "dataloader_param": {"dataloader_mode": "sampler", "shuffle": True, "drop_last": False,
                             "pin_memory": False},
    }))
    return model_json, data_json


def trainer_command(model_json: Path, data_json: Path, save: Path, *extra: str) -> list[str]:
    return [
        PYTHON, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", "2",
        "--module", "whisper_trainer", "--mm-model", str(model_json), "--mm-data", str(data_json), "--save", str(save),
        "--micro-batch-size", "1", "--global-batch-size", "4", "--lr", "1e-2", "--min-lr", "1e-3",
        "--lr-warmup-iters", "2", "--lr-decay-style", "cosine", "--train-iters", str(ITERS),
        "--save-interval", "12", "--log-interval", "1", "--num-workers", "1", "--seed", "7",
        "--keep-checkpoints", "3", "--device", "cpu", "--metrics-file", str(save.parent / "metrics.jsonl"),
        "--precision", "bf16", *extra,
    ]


def run_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{ROOT}:{ROOT / 'trainer'}")
    env.pop("WORLD_SIZE", None)
    return env


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def configs(tmp_path_factory, processor_dir):
    """A 4-clip Common Voice set (real synthetic speech) that 2 ranks x 2 micro steps see whole each iteration."""
    from whisper_k8s.dataset.synth import synthesize

    tmp = tmp_path_factory.mktemp("trainer-configs")
    synthesize(tmp / "cv", lang="en", train=4, test=0, seed=1)
    return write_configs(tmp, processor_dir, tmp / "cv")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, configs):
    save = tmp_path_factory.mktemp("full") / "checkpoints"
    proc = subprocess.run(trainer_command(*configs, save), env=run_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return save, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory, configs):
    """Stopped by SIGTERM after iteration 3 or later, then started again with the same command."""
    save = tmp_path_factory.mktemp("interrupted") / "checkpoints"
    command = trainer_command(*configs, save)
    proc = subprocess.Popen(command, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    metrics_file = save.parent / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics_file.is_file() and len([r for r in metrics(metrics_file) if "loss" in r]) >= 3:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)  # what the kubelet does: SIGTERM to the pod's processes
    first_log, _ = proc.communicate(timeout=120)
    stopped_at = megatron.read_tracker(save)
    second = subprocess.run(command + ["--exit-interval", str(RESUMED_TO)], env=run_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return save, first_log, stopped_at, second.stdout + second.stderr


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory, configs):
    """The same run sharded with FSDP2 (fully_shard per layer), stopped by --exit-interval after 2 iterations."""
    save = tmp_path_factory.mktemp("fsdp") / "checkpoints"
    command = trainer_command(*configs, save, "--parallel", "fsdp", "--exit-interval", "2")
    proc = subprocess.run(command, env=run_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return save


@pytest.fixture(scope="module")
def single_fsdp_bf16_run(tmp_path_factory, configs):
    """One process (no torchrun), --parallel fsdp in bf16: stopped at 2 by --exit-interval, then resumed to 4."""
    save = tmp_path_factory.mktemp("single-fsdp") / "checkpoints"
    command = trainer_command(*configs, save, "--parallel", "fsdp", "--exit-interval", "2")
    command = [PYTHON, "-m", "whisper_trainer"] + command[command.index("--module") + 2:]  # no torchrun
    logs = []
    for _ in range(2):
        proc = subprocess.run(command, env=run_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        logs.append(proc.stdout + proc.stderr)
    return save, logs


def final_model(save: Path) -> dict:
    return megatron.load_file(megatron.resolve_model_file(save))["model"]


# ------------------------------------------------------------------------------------------------------ tests
def test_loss_falls_below_a_fifth_when_overfitting(full_run):
    save, _ = full_run
    losses = [r["loss"] for r in metrics(save.parent / "metrics.jsonl") if "loss" in r]
    assert len(losses) == ITERS
    assert losses[-1] < losses[0] / 5, losses


def test_log_lines_and_headline(full_run):
    _, output = full_run
    line = next(x for x in output.splitlines() if f"iteration {ITERS:>7d}/{ITERS}" in x)
    for field in ("loss", "lr", "grad norm", "iteration time", "samples/s", "data wait", "skipped"):
        assert field in line
    assert "Average Samples per Second:" in output


def test_checkpoints_are_megatron_layout_with_mindspeed_keys(full_run):
    save, _ = full_run
    assert megatron.read_tracker(save) == ITERS
    assert megatron.iterations_on_disk(save) == [12, 24, ITERS]  # every 12 and at the end
    ckpt = megatron.load_file(megatron.resolve_model_file(save))
    preset = json.loads(PRESET.read_text())
    assert [(k, tuple(v.shape)) for k, v in ckpt["model"].items()] == list(expected_mm_shapes(preset).items())
    assert ckpt["iteration"] == ITERS and ckpt["checkpoint_version"] == 3.0
    assert ckpt["args"].global_batch_size == 4 and ckpt["args"].micro_batch_size == 1
    assert len(ckpt["rng_state"]) == 2 and {"random_rng_state", "np_rng_state", "torch_rng_state"} <= set(
        ckpt["rng_state"][0])
    assert ckpt["opt_param_scheduler"]["num_steps"] == ITERS
    assert ckpt["optimizer"]["state"], "optimizer state saved"
    assert {v.dtype for v in ckpt["model"].values()} == {torch.float32}  # fp32 masters, not the bf16 copies
    assert not list(save.glob(".iter_*")), "no staging folder left behind"


def test_sigterm_saves_and_exits_cleanly(interrupted_run):
    save, first_log, stopped_at, _ = interrupted_run
    assert "received SIGTERM" in first_log
    assert isinstance(stopped_at, int) and 3 <= stopped_at < RESUMED_TO, first_log[-2000:]
    assert "training stopped at iteration" in first_log and "(signal)" in first_log


def test_resumed_run_is_bitwise_equal_to_uninterrupted(full_run, interrupted_run):
    save_full, _ = full_run
    save_resumed, _, stopped_at, second_log = interrupted_run
    assert f"(iteration {stopped_at})" in second_log  # it resumed, not restarted
    assert megatron.read_tracker(save_resumed) == RESUMED_TO
    a = final_model(megatron.iteration_dir(save_full, RESUMED_TO))
    b = final_model(save_resumed)
    assert list(a) == list(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"



def test_fsdp_matches_ddp_and_saves_sharded_optimizer_beside_full_model(full_run, fsdp_run):
    ddp_losses = [r["loss"] for r in metrics(full_run[0].parent / "metrics.jsonl") if "loss" in r]
    fsdp_losses = [r["loss"] for r in metrics(fsdp_run.parent / "metrics.jsonl") if "loss" in r]
    assert fsdp_losses == pytest.approx(ddp_losses[:2], rel=1e-4)
    iter_dir = megatron.iteration_dir(fsdp_run, 2)
    ckpt = megatron.load_file(megatron.model_file(iter_dir))
    assert list(ckpt["model"]) == list(expected_mm_shapes(json.loads(PRESET.read_text())))
    assert ckpt["optimizer"]["format"] == "torch.distributed.checkpoint"
    assert (iter_dir / "whisper_k8s" / "optimizer" / ".metadata").is_file()


def test_single_process_fsdp_trains_in_bf16_with_fp32_master_weights(full_run, single_fsdp_bf16_run):
    """FSDP2 needs a process group: one process gets a group of one, so bf16 applies (it used to train in fp32)."""
    save, (first, second) = single_fsdp_bf16_run
    assert "fsdp on cpu x1" in first and "bf16 parameters and activations, fp32 master weights" in first
    assert "(iteration 2)" in second and megatron.read_tracker(save) == 4  # resumed from the sharded state
    ddp_first = [r["loss"] for r in metrics(full_run[0].parent / "metrics.jsonl") if "loss" in r][0]
    fsdp_first = [r["loss"] for r in metrics(save.parent / "metrics.jsonl") if "loss" in r][0]
    assert fsdp_first == pytest.approx(ddp_first, rel=1e-5)  # the same 4 clips and weights, both in bf16
    ckpt = megatron.load_file(megatron.resolve_model_file(save))
    assert {v.dtype for v in ckpt["model"].values()} == {torch.float32}  # the master weights are saved
    assert ckpt["optimizer"]["format"] == "torch.distributed.checkpoint"
