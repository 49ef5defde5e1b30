"""The bf16 arrangement (whisper_trainer.precision) is sound: shown on real speech, not assumed.

One process on CPU, the demo preset, batches of generated speech read once by the real loader (the conftest's
Common Voice set and processor) and then replayed, so that every run sees the same data:

- 200 iterations with ``--precision bf16`` (bf16 parameters and activations, fp32 master weights and gradients)
  follow the ``--precision fp32`` run's loss curve. The measure (``precision.loss_curve_gap``) is the relative
  gap between the two curves' means over windows of 20 iterations; the tolerance is bf16's machine epsilon,
  2^-8 = 0.39 %. Measured with this test's settings (lr 1e-4: AdamW's updates are about one bf16 step of a
  typical weight, 1.2e-4 near 0.02, which bf16 weights alone round away or distort): bf16 vs fp32 at most
  0.041 % per window (0.040 % with another seed); two fp32 runs with different seeds, the spread between
  equally good runs, 0.40 % in the first window (different initial weights) and up to 0.13 % after it; bf16
  with its master weights rounded to bf16 after every step (updates lost to rounding) 0.47 % in the second
  window, growing to 3.6 %. So the tolerance passes what trains as fp32 does, with a margin of ten, and fails
  what trains worse; the test runs that failing control too, so the check is seen to fail where it should.
- A run stopped and resumed from its checkpoint ends bitwise equal to one that was not stopped (the fp32
  masters are what the checkpoint holds, under MindSpeed-MM's keys and shapes).
- With a process group, FSDP2's mixed-precision policy (the same arrangement, PyTorch's implementation) and
  ours train alike; two gloo ranks reduce their fp32 gradients in many small buckets to the mean over ranks.
- The training state takes the bytes per parameter the memory model says (``precision.STATE_BYTES``).
"""

from __future__ import annotations

import copy
import json
import types
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from whisper_trainer import parallel, precision
from whisper_trainer.config import parse_args
from whisper_trainer.precision import MainGradDataParallel
from whisper_trainer.train import Trainer, default_loader_factory

from whisper_k8s.errors import UserError
from whisper_k8s.formats import megatron
from whisper_k8s.formats.mindspeed import expected_mm_shapes

ROOT = Path(__file__).resolve().parents[1]
PRESET = json.loads((ROOT / "helm/files/model-presets/demo.json").read_text())
CPU = parallel.DistEnv(rank=0, world_size=1, local_rank=0, node_rank=0, device=torch.device("cpu"))
ITERATIONS, WINDOW, TOLERANCE = 200, precision.SOUND_WINDOW, precision.SOUND_TOLERANCE  # 20 iterations, 2^-8


class Replay:
    """The loader's first batches, replayed in turn with a resumable position (exact resume needs one)."""

    def __init__(self, batches: list[dict]):
        self.batches = batches
        self.position = 0

    def __iter__(self):
        while True:
            self.position += 1  # before the yield: the state saved after an iteration names the next batch
            yield self.batches[(self.position - 1) % len(self.batches)]

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


@pytest.fixture(scope="module")
def configs(tmp_path_factory, cv_dataset, processor_dir) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("precision")
    (tmp / "model.json").write_text(json.dumps(PRESET))
    (tmp / "data.json").write_text(json.dumps({"dataset_param": {
        "dataset_type": "audio", "basic_parameters": {"dataset_name_or_path": str(cv_dataset), "language": "en"},
        "preprocess_parameters": {"processor_name_or_path": str(processor_dir), "language": "English",
                                  "task": "transcribe"}}}))
    return tmp / "model.json", tmp / "data.json"


def config(configs, save: Path, *flags: str):
    model_json, data_json = configs
    return parse_args(["--mm-model", str(model_json), "--mm-data", str(data_json), "--save", str(save),
                       "--micro-batch-size", "2", "--lr", "1e-4", "--lr-warmup-iters", "10",
                       "--train-iters", str(ITERATIONS), "--device", "cpu", "--num-workers", "0", "--seed", "11",
                       "--compile", "off", "--metrics-file", str(save.parent / "metrics.jsonl"), *flags])


@pytest.fixture(scope="module")
def speech_batches(configs, tmp_path_factory) -> list[dict]:
    """Eight batches of two generated clips each, read through the trainer's own loader."""
    cfg = config(configs, tmp_path_factory.mktemp("loader") / "ckpt")
    batches = iter(default_loader_factory(cfg, CPU))
    return [next(batches) for _ in range(8)]


@pytest.fixture
def one_thread():
    """One intra-op thread: the runs are small, and a 2-core CI machine runs other work beside them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def trainer(cfg, batches: list[dict], env=CPU) -> Trainer:
    run = Trainer(cfg, env, loader_factory=lambda c, e: Replay(batches))
    run.setup()
    return run


def loss_curve(cfg, batches: list[dict]) -> list[float]:
    run = trainer(cfg, batches)
    stream = iter(run.loader)
    return [run.train_step(stream)["loss"] for _ in range(ITERATIONS)]


@pytest.mark.slow  # 3 x 200 iterations: about 50 s on a 2-core machine
def test_bf16_follows_the_fp32_loss_curve_over_200_iterations_of_speech(configs, speech_batches, tmp_path,
                                                                        one_thread):
    reference = loss_curve(config(configs, tmp_path / "fp32" / "ckpt", "--precision", "fp32"), speech_batches)
    bf16 = loss_curve(config(configs, tmp_path / "bf16" / "ckpt", "--precision", "bf16"), speech_batches)
    assert sum(reference[-WINDOW:]) < 0.9 * sum(reference[:WINDOW])  # it trained: the comparison means something
    gaps = precision.loss_curve_gap(bf16, reference, WINDOW)
    assert len(gaps) == ITERATIONS // WINDOW
    assert max(gaps) <= TOLERANCE, [round(g, 5) for g in gaps]
    assert bf16 != reference  # the arithmetic did differ (bf16 ran), the curve did not

    # The control: the same bf16 run without fp32 master weights (rounded to bf16 after each step) fails.
    control = trainer(config(configs, tmp_path / "rounded" / "ckpt", "--precision", "bf16"), speech_batches)
    precision.round_master_weights_after_each_step(control.model)
    stream = iter(control.loader)
    no_masters = [control.train_step(stream)["loss"] for _ in range(ITERATIONS)]
    assert max(precision.loss_curve_gap(no_masters, reference, WINDOW)) > TOLERANCE


def test_bf16_parameters_compute_while_fp32_masters_and_gradients_are_kept(configs, speech_batches, tmp_path):
    run = trainer(config(configs, tmp_path / "ckpt", "--bf16"), speech_batches)  # Megatron's flag, also on CPU
    assert isinstance(run.model, MainGradDataParallel) and run.cfg.training.precision == "bf16"
    assert {p.dtype for p in run.model.module.parameters()} == {torch.bfloat16}
    masters = dict(run.model.named_master_parameters())
    assert {m.dtype for m in masters.values()} == {torch.float32}
    optimized = [p for group in run.optimizer.param_groups for p in group["params"]]
    assert {id(p) for p in optimized} == {id(m) for m in masters.values()}  # AdamW steps the masters
    run.train_step(iter(run.loader))
    for name, p in run.model.module.named_parameters():
        assert torch.equal(p, run.model.masters[name].to(torch.bfloat16)), name  # rounded from the masters
        if p.requires_grad:
            assert p.grad is None and masters[name].grad.data_ptr() == p.main_grad.data_ptr()
    assert run.model.grad_buffer.abs().sum() > 0


@pytest.mark.parametrize("arrangement", ["bf16", "bf16-autocast", "fp32"])
def test_training_state_takes_the_modelled_bytes_per_parameter(configs, speech_batches, tmp_path, arrangement):
    """The memory model the benchmark reports (precision.STATE_BYTES) against the tensors a trainer really holds."""
    run = trainer(config(configs, tmp_path / "ckpt", "--precision", arrangement), speech_batches)
    run.train_step(iter(run.loader))  # AdamW's moments exist from the first step
    params = list(run.model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    frozen = sum(p.numel() for p in params if not p.requires_grad)
    assert precision.training_state_bytes(run.model, run.optimizer) == precision.state_bytes(arrangement, trainable,
                                                                                             frozen)


def test_resumed_bf16_run_is_bitwise_equal_to_an_uninterrupted_one(configs, speech_batches, tmp_path):
    flags = ("--precision", "bf16", "--train-iters", "8", "--save-interval", "8", "--lr-warmup-iters", "2")
    trainer(config(configs, tmp_path / "whole" / "ckpt", *flags), speech_batches).train()
    trainer(config(configs, tmp_path / "split" / "ckpt", *flags, "--exit-interval", "4"), speech_batches).train()
    resumed = trainer(config(configs, tmp_path / "split" / "ckpt", *flags), speech_batches)
    assert resumed.iteration == 4
    resumed.train()
    whole = megatron.load_file(megatron.resolve_model_file(tmp_path / "whole" / "ckpt"))
    split = megatron.load_file(megatron.resolve_model_file(tmp_path / "split" / "ckpt"))
    assert whole["iteration"] == split["iteration"] == 8
    assert [(k, tuple(v.shape)) for k, v in whole["model"].items()] == list(expected_mm_shapes(PRESET).items())
    assert {v.dtype for v in whole["model"].values()} == {torch.float32}  # the masters, not the bf16 copies
    different = [k for k in whole["model"] if not torch.equal(whole["model"][k], split["model"][k])]
    assert not different, different[:3]
    assert whole["args"].precision == "bf16" and whole["args"].bf16 is True


def test_fsdp2_mixed_precision_and_main_grad_ddp_train_alike(configs, speech_batches, tmp_path):
    """A process group of one: FSDP2's MixedPrecisionPolicy (PyTorch's implementation of the arrangement) and ours."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        group = parallel.DistEnv(rank=0, world_size=1, local_rank=0, node_rank=0, device=torch.device("cpu"))
        losses = {}
        for strategy in ("ddp", "fsdp"):
            run = trainer(config(configs, tmp_path / strategy / "ckpt", "--precision", "bf16", "--parallel",
                                 strategy), speech_batches, env=group)
            stream = iter(run.loader)
            losses[strategy] = [run.train_step(stream)["loss"] for _ in range(6)]
        assert isinstance(run.model, torch.nn.Module) and not isinstance(run.model, MainGradDataParallel)
        # Measured: the first two iterations equal, then within 1.3e-5 (the norm for clipping is summed in
        # another order): the same arithmetic, not merely a similar result.
        assert losses["fsdp"] == pytest.approx(losses["ddp"], rel=1e-4)
    finally:
        dist.destroy_process_group()


class Toy(torch.nn.Module):
    """Layers of uneven sizes, and a parameter the forward pass never uses (its bucket must still be reduced)."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(*(torch.nn.Linear(24 + 8 * i, 32 + 8 * i) for i in range(0, 12, 2)))
        self.unused = torch.nn.Parameter(torch.ones(40))

    def forward(self, x):
        for layer in self.layers:
            x = torch.tanh(layer(torch.nn.functional.pad(x, (0, layer.in_features - x.shape[-1]))))
        return x.float().square().mean()


def _reduce_in_buckets(rank: int, rendezvous: str, results: str) -> None:
    """One of two ranks: two micro batches (the first without communication), buckets of ~600 elements."""
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    torch.manual_seed(rank)  # different weights on each rank: the wrapper starts every rank from rank 0's
    toy = Toy()
    wrapped = MainGradDataParallel(toy, distributed=True, world_size=2, bucket_numel=600)
    local = MainGradDataParallel(copy.deepcopy(toy), distributed=False)  # rank 0's weights, no communication
    inputs = torch.randn(2, 2, 3, 24, generator=torch.Generator().manual_seed(rank))  # each rank its own data
    for model in (wrapped, local):
        model.zero_grad_buffer()
        with model.no_sync():
            model(inputs[0]).backward()
        model(inputs[1]).backward()
        model.finish_gradient_sync()
    expected = local.grad_buffer.clone()
    dist.all_reduce(expected)  # the mean over ranks, reduced once at the end
    torch.save({"buckets": len(wrapped.buckets), "masters": wrapped.master_state_dict(), "reduced": wrapped.grad_buffer, "expected": expected / 2,
                "master_grads": [m.grad.data_ptr() for _, m in wrapped.named_master_parameters()],
                "main_grads": [p.main_grad.data_ptr() for p in wrapped.module.parameters()]},
               f"{results}.{rank}")
    dist.destroy_process_group()


def test_main_grad_buckets_all_reduce_to_the_mean_over_ranks(tmp_path):
    """Two gloo processes, many small buckets completed in backward order, one bucket whose parameter got no
    gradient: every rank ends with the mean of the ranks' fp32 gradients accumulated over both micro batches."""
    torch.multiprocessing.start_processes(_reduce_in_buckets, args=(str(tmp_path / "rendezvous"),
                                                                   str(tmp_path / "result")),
                                          nprocs=2, start_method="spawn")  # fork can hang on inherited threads
    first, second = (torch.load(tmp_path / f"result.{rank}") for rank in range(2))
    assert first["buckets"] > 5
    torch.testing.assert_close(first["reduced"], first["expected"], rtol=1e-6, atol=1e-9)
    assert torch.equal(first["reduced"], second["reduced"])  # every rank holds the same gradients
    for name, master in first["masters"].items():  # ... and started from the same (rank 0's) weights
        assert torch.equal(master, second["masters"][name]), name
    assert first["reduced"].abs().sum() > 0
    assert first["master_grads"] == first["main_grads"]  # AdamW reads the reduced buffer itself, no copy


def test_auto_is_bf16_on_an_accelerator_and_fp32_on_a_cpu_unless_bf16_is_asked_for(configs, tmp_path):
    cpu, gpu, npu = torch.device("cpu"), torch.device("cuda", 0), types.SimpleNamespace(type="npu")
    assert [precision.resolve("auto", False, device) for device in (cpu, gpu, npu)] == ["fp32", "bf16", "bf16"]
    assert precision.resolve("auto", True, cpu) == "bf16"  # Megatron's --bf16
    assert precision.resolve("bf16-autocast", True, gpu) == "bf16-autocast"  # an explicit choice stands
    with pytest.raises(UserError, match="--bf16 contradicts --precision fp32"):
        config(configs, tmp_path / "ckpt", "--bf16", "--precision", "fp32")
    with pytest.raises(SystemExit):  # argparse names the choices
        config(configs, tmp_path / "ckpt", "--precision", "fp16")
