"""Per-layer torch.compile and the attention backend switch (whisper_trainer.kernels), on CPU.

The compiled trainer must train exactly like the eager one: same loss, same weights after a step, same state
dict keys (checkpoints unchanged), one graph per layer kind however deep the model, and it must work under
FSDP2, whose per-layer hooks stay outside the compiled code. Code generation itself (Inductor) is PyTorch's;
these tests capture with the ``aot_eager`` backend, which traces forward and backward the same way without
compiling kernels, so they run in seconds. The GPU benchmark (bench/train_throughput.py) runs Inductor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch._dynamo.utils import counters
from whisper_trainer import kernels, parallel
from whisper_trainer.config import parse_args
from whisper_trainer.train import Trainer

from whisper_k8s.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
# The tiny preset with 3 layers each side and a small vocabulary: several layers share one graph.
FIELDS = {**json.loads((ROOT / "helm/files/model-presets/tiny.json").read_text()), "encoder_layers": 3,
          "decoder_layers": 3, "num_hidden_layers": 3, "max_source_positions": 150}
CPU = parallel.DistEnv(rank=0, world_size=1, local_rank=0, node_rank=0, device=torch.device("cpu"))


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Compiled code is cached on the layer classes' code objects: each test starts from none."""
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


class FixedBatches:
    """The same batches in turn, forever (the step is under test, not the data); label lengths as given."""

    def __init__(self, lengths=(24,)):
        g = torch.Generator().manual_seed(3)
        self.batches = []
        for length in lengths:
            labels = torch.randint(220, 50000, (2, length), generator=g)
            labels[:, 0] = FIELDS["decoder_start_token_id"]
            self.batches.append({"input_features": torch.randn(2, FIELDS["num_mel_bins"], 300, generator=g),
                                 "labels": labels, "num_samples": 2})

    def __iter__(self):
        while True:
            yield from self.batches

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def trainer(tmp_path: Path, name: str, *flags: str, env=CPU, lengths=(24,)) -> Trainer:
    (tmp_path / "model.json").write_text(json.dumps(FIELDS))
    (tmp_path / "data.json").write_text(json.dumps({"dataset_param": {
        "basic_parameters": {"dataset_name_or_path": str(tmp_path), "language": "en"},
        "preprocess_parameters": {"processor_name_or_path": str(tmp_path)}}}))
    cfg = parse_args(["--mm-model", str(tmp_path / "model.json"), "--mm-data", str(tmp_path / "data.json"),
                      "--save", str(tmp_path / name / "ckpt"), "--micro-batch-size", "2", "--lr", "1e-3",
                      "--device", "cpu", "--seed", "5", *flags], check_files=False)
    run = Trainer(cfg, env, loader_factory=lambda c, e: FixedBatches(lengths))
    run.compile_backend = "aot_eager"
    run.setup()
    return run


def steps(run: Trainer, count: int = 2) -> list[float]:
    batches = iter(run.loader)
    return [run.train_step(batches)["loss"] for _ in range(count)]


def test_compiled_layers_train_exactly_like_eager_with_one_graph_per_layer_kind(tmp_path):
    eager = trainer(tmp_path, "eager", "--compile", "off")
    eager_losses = steps(eager)
    counters.clear()
    compiled = trainer(tmp_path, "compiled", "--compile", "on")
    compiled_losses = steps(compiled)

    assert compiled_losses == pytest.approx(eager_losses, rel=1e-5)
    assert eager_losses[1] < eager_losses[0]  # the step did train
    # 3 encoder + 3 decoder layers and the loss: one graph for each kind, however many layers share it.
    assert counters["stats"]["unique_graphs"] == 3
    assert list(compiled.model.state_dict()) == list(eager.model.state_dict())  # checkpoint keys unchanged
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name


def test_label_lengths_that_change_every_batch_compile_twice_not_once_per_length(tmp_path):
    """Real batches are padded to their longest label: the decoder and loss go symbolic after one recompile."""
    lengths = (24, 20, 17, 31, 9)
    eager = trainer(tmp_path, "eager", "--compile", "off", lengths=lengths)
    eager_losses = steps(eager, len(lengths))
    counters.clear()
    compiled = trainer(tmp_path, "compiled", "--compile", "on", lengths=lengths)
    assert steps(compiled, len(lengths)) == pytest.approx(eager_losses, rel=1e-5)
    # encoder 1, decoder static + dynamic 2, loss static + dynamic 2
    assert counters["stats"]["unique_graphs"] == 5


def test_compile_under_fsdp2_keeps_its_hooks_outside_the_graph(tmp_path):
    """A one-process gloo group is enough for fully_shard's pre/post-forward hooks to run around the layers."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        sharded = trainer(tmp_path, "fsdp", "--parallel", "fsdp", "--compile", "on")
        eager = trainer(tmp_path, "fsdp-eager", "--parallel", "fsdp", "--compile", "off")
        assert steps(sharded) == pytest.approx(steps(eager), rel=1e-5)
    finally:
        dist.destroy_process_group()


def test_without_a_compiler_auto_trains_eagerly_and_on_names_what_to_install(monkeypatch, caplog):
    monkeypatch.setenv("PATH", "/nonexistent")
    for variable in ("CC", "CXX"):
        monkeypatch.delenv(variable, raising=False)
    assert kernels.missing_build_tools(torch.device("cuda")).startswith("no C compiler (cc / gcc / clang")
    assert kernels.compile_wanted("auto", torch.device("cuda")) is False
    assert "training eagerly" in caplog.text
    with pytest.raises(UserError, match=r"--compile on: .*no C\+\+ compiler .*use --compile off"):
        kernels.compile_wanted("on", torch.device("cpu"))
    monkeypatch.setenv("CXX", "/usr/bin/g++")  # an explicit compiler counts, as Inductor reads it
    assert "compiler" not in (kernels.missing_build_tools(torch.device("cpu")) or "")


@pytest.mark.parametrize(("files", "cpus"), [
    ({"cpu.max": "2400000 100000\n"}, 24),  # cgroup v2 with a 24-CPU limit
    ({"cpu.max": "max 100000\n"}, None),  # v2 without a limit: the affinity
    ({"cpu/cpu.cfs_quota_us": "800000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 8),  # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),  # no cgroup files at all
])
def test_usable_cpus_follow_the_containers_cpu_limit(tmp_path, monkeypatch, files, cpus):
    monkeypatch.setattr(kernels.os, "sched_getaffinity", lambda pid: set(range(192)), raising=False)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert kernels.usable_cpus(tmp_path) == (cpus or 192)


def test_compile_workers_are_shared_between_the_nodes_processes(tmp_path, monkeypatch):
    """8 ranks in a 24-CPU pod on a 192-core node: 3 workers each, not Inductor's 32 each."""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(kernels.os, "sched_getaffinity", lambda pid: set(range(192)), raising=False)
    monkeypatch.setattr(inductor_config, "compile_threads", inductor_config.compile_threads)  # restored after
    monkeypatch.delenv("TORCHINDUCTOR_COMPILE_THREADS", raising=False)
    (tmp_path / "cpu.max").write_text("2400000 100000\n")
    assert kernels.share_compile_workers(8, tmp_path) == 3 and inductor_config.compile_threads == 3
    assert kernels.share_compile_workers(1, tmp_path) == 24
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "5")  # the user's choice is left alone
    assert kernels.share_compile_workers(8, tmp_path) is None and inductor_config.compile_threads == 24


def test_compile_auto_is_cuda_only_and_bad_choices_name_the_flag(monkeypatch):
    monkeypatch.setattr(kernels, "missing_build_tools", lambda device: None)  # a machine that can build kernels
    assert kernels.compile_wanted("auto", torch.device("cuda")) is True
    assert kernels.compile_wanted("auto", torch.device("cpu")) is False
    assert kernels.compile_wanted("on", torch.device("cpu")) is True
    assert kernels.compile_wanted("off", torch.device("cuda")) is False
    with pytest.raises(UserError, match="--compile"):
        kernels.compile_wanted("yes", torch.device("cpu"))


def test_attention_backend_needs_cuda_except_auto(tmp_path):
    with pytest.raises(UserError, match="--attention-backend flash needs a CUDA device"):
        kernels.choose_attention("flash", torch.device("cpu"))
    assert kernels.choose_attention("auto", torch.device("cuda")) == "auto"  # PyTorch's own choice per call
    kernels.restrict_attention("auto")
    assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
    with pytest.raises(SystemExit):  # argparse refuses an unknown kernel before anything is built
        trainer(tmp_path, "bad", "--attention-backend", "triton")


def saved_activation_bytes(run: Trainer) -> int:
    """Bytes an encoder layer's forward pass keeps for the backward pass (what activation checkpointing cuts)."""
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    layer = parallel.transformer_layers(parallel.unwrap(run.model))[0]
    hidden = torch.randn(2, FIELDS["max_source_positions"], FIELDS["d_model"], requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        layer(hidden, attention_mask=None)
    return sum(saved)


def test_activation_checkpointing_trains_alike_and_keeps_less_for_the_backward_pass(tmp_path):
    plain = trainer(tmp_path, "plain", "--compile", "off")
    recomputed = trainer(tmp_path, "recomputed", "--compile", "off", "--activation-checkpointing")
    assert saved_activation_bytes(recomputed) < 0.1 * saved_activation_bytes(plain)
    assert steps(recomputed, 3) == pytest.approx(steps(plain, 3), rel=1e-6)
    compiled = trainer(tmp_path, "compiled", "--compile", "on", "--activation-checkpointing")  # inside the graph
    assert steps(compiled, 3) == pytest.approx(steps(trainer(tmp_path, "again", "--compile", "off"), 3), rel=1e-5)
    assert list(compiled.model.state_dict()) == list(plain.model.state_dict())  # checkpoint keys unchanged
