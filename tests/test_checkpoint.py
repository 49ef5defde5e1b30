"""Checkpoints: MindSpeed-MM keys, atomic verified writes, exact restore, fallback from corrupt ones, init sources.

Single process (no process group): the same CheckpointManager code paths the distributed run uses with
world size 1; the 2-process runs are in test_trainer.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from whisper_trainer import parallel
from whisper_trainer.checkpoint import EXTRAS_DIR, CheckpointManager
from whisper_trainer.config import TrainingConfig, validate_model_fields
from whisper_trainer.model import build_model, load_mm_state, mm_state_dict, read_pretrained_mm_state
from whisper_trainer.optim import LRSchedule, build_optimizer

from whisper_k8s.errors import UserError
from whisper_k8s.formats import megatron
from whisper_k8s.formats.mindspeed import LM_HEAD, TIED_EMBEDDING, expected_mm_shapes

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "fixtures" / "reference" / "mindspeed-mm"
# Smaller than the tiny preset's vocabulary so that each save takes milliseconds.
SMALL = {**json.loads((ROOT / "helm/files/model-presets/tiny.json").read_text()), "vocab_size": 512,
         "d_model": 32, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_source_positions": 30,
         "max_target_positions": 16, "num_mel_bins": 8, "encoder_layers": 1, "decoder_layers": 1,
         "num_hidden_layers": 1,
         "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 1, "decoder_start_token_id": 2,
         "begin_suppress_tokens": [1]}
ENV = parallel.DistEnv(rank=0, world_size=1, local_rank=0, node_rank=0, device=torch.device("cpu"))


def test_large_v3_state_has_exactly_mindspeed_mm_keys_and_shapes():
    """Built on the meta device: the saved key list equals upstream's, in order, with the untied head."""
    reference = [line.split(None, 1) for line in (REFERENCE / "whisper-large-v3.state_dict_keys.txt").read_text()
                 .splitlines() if line.strip() and not line.startswith("#")]
    config = validate_model_fields(json.loads((REFERENCE / "model.json").read_text()))
    model = build_model(config, seed=0, device="meta")
    state = mm_state_dict(model.state_dict(), config.fields)
    assert [(k, str(tuple(v.shape))) for k, v in state.items()] == [(k, s.strip()) for k, s in reference]
    assert state[LM_HEAD] is not state[TIED_EMBEDDING]


class CountingLoader:
    """Stand-in data position: the checkpoint must carry whatever the loader reports."""

    def __init__(self):
        self.position = 0

    def state_dict(self):
        return {"position": self.position, "epoch": 1}

    def load_state_dict(self, state):
        self.position = state["position"]


class Setup:
    def __init__(self, seed: int = 0):
        self.config = validate_model_fields(dict(SMALL))
        self.model = build_model(self.config, seed=seed)
        self.training = TrainingConfig(lr=1e-2, train_iters=10)
        self.optimizer = build_optimizer(self.model, self.training)
        self.scheduler = LRSchedule(self.optimizer, self.training)
        self.loader = CountingLoader()

    def step(self) -> None:
        g = torch.Generator().manual_seed(self.loader.position)
        features = torch.randn(2, SMALL["num_mel_bins"], 2 * SMALL["max_source_positions"], generator=g)
        out = self.model(input_features=features, decoder_input_ids=torch.tensor([[1, 2, 3], [4, 5, 6]]))
        out.logits.float().square().mean().backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.scheduler.step()
        self.loader.position += 1

    def manager(self, root: Path, keep: int = 3, env=ENV) -> CheckpointManager:
        return CheckpointManager(str(root), str(root), keep, env, self.config.fields, "ddp")

    def save(self, root: Path, iteration: int, keep: int = 3) -> Path:
        return self.manager(root, keep).save(iteration, self.model, self.optimizer, self.scheduler, self.loader,
                                             None, {"consumed_samples": 2 * iteration})

    def resume(self, root: Path):
        return self.manager(root).resume(self.model, self.optimizer, self.scheduler, self.loader)


def test_save_then_resume_restores_everything_exactly(tmp_path):
    a = Setup()
    a.step()
    a.step()
    a.save(tmp_path, 2)
    expected_draw = torch.rand(3)  # what the RNG gives right after the save

    b = Setup(seed=1)  # different weights until resumed
    resumed = b.resume(tmp_path)
    assert torch.equal(torch.rand(3), expected_draw)  # RNG restored
    assert resumed.iteration == 2 and resumed.trainer_state["consumed_samples"] == 4
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    for key in sa["state"]:
        for field in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa["state"][key][field], sb["state"][key][field])
    assert b.scheduler.num_steps == 2 and b.loader.position == 2
    a.step(), b.step()
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_layout_is_megatron_with_tracker_moved_last(tmp_path):
    s = Setup()
    s.step()
    final = s.save(tmp_path, 1)
    assert final == megatron.iteration_dir(tmp_path, 1)
    assert megatron.read_tracker(tmp_path) == 1
    ckpt = megatron.load_file(megatron.model_file(final))
    assert set(ckpt) >= {"model", "iteration", "args", "checkpoint_version", "optimizer", "opt_param_scheduler",
                         "rng_state"}
    assert list(ckpt["model"]) == list(expected_mm_shapes(SMALL))
    manifest = json.loads((final / EXTRAS_DIR / "manifest.json").read_text())
    assert set(manifest["files"]) == {"mp_rank_00/model_optim_rng.pt", f"{EXTRAS_DIR}/rank_0.pt", "model.json"}
    assert json.loads((final / "model.json").read_text()) == s.config.fields
    from whisper_k8s.convert.sources import open_source

    source = open_source(tmp_path)  # what `convert mm-to-hf` opens: finds the weights and the model.json
    assert source.key_style == "mm" and json.loads(source.config_path.read_text()) == s.config.fields
    assert not list(tmp_path.glob(".*tmp*"))


def test_keeps_only_the_last_k(tmp_path):
    s = Setup()
    for it in (1, 2, 3, 4):
        s.save(tmp_path, it, keep=2)
    assert megatron.iterations_on_disk(tmp_path) == [3, 4]


def test_corrupt_newest_falls_back_to_previous_and_says_so(tmp_path, caplog):
    s = Setup()
    s.step()
    s.save(tmp_path, 1)
    weights_at_1 = {k: v.clone() for k, v in s.model.state_dict().items()}
    s.step()
    s.save(tmp_path, 2)
    newest = megatron.model_file(megatron.iteration_dir(tmp_path, 2))
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the tensors
    newest.write_bytes(bytes(data))

    fresh = Setup(seed=3)
    with caplog.at_level(logging.WARNING):
        resumed = fresh.resume(tmp_path)
    assert resumed.iteration == 1
    assert "skipping checkpoint iteration 2" in caplog.text and "corrupt" in caplog.text
    for k, v in fresh.model.state_dict().items():
        assert torch.equal(v, weights_at_1[k]), k
    assert megatron.read_tracker(tmp_path) == 1  # the pointer now names what was resumed


def test_interrupted_write_leaves_previous_checkpoint_latest(tmp_path):
    """A crash mid-save leaves a staging folder or an iteration without manifest: both are ignored."""
    s = Setup()
    s.save(tmp_path, 1)
    (tmp_path / ".iter_0000002.tmp" / "mp_rank_00").mkdir(parents=True)  # killed while writing
    half = megatron.iteration_dir(tmp_path, 3)
    megatron.model_file(half).parent.mkdir(parents=True)
    megatron.model_file(half).write_bytes(b"PK\x03\x04 truncated")
    assert megatron.read_tracker(tmp_path) == 1
    assert Setup(seed=2).resume(tmp_path).iteration == 1
    s.save(tmp_path, 2)  # the next save replaces the stale staging folder
    assert megatron.read_tracker(tmp_path) == 2 and not (tmp_path / ".iter_0000002.tmp").exists()


def test_no_checkpoint_means_fresh_start(tmp_path):
    assert Setup().resume(tmp_path / "empty") is None


def test_resume_with_another_world_size_is_refused(tmp_path):
    s = Setup()
    s.save(tmp_path, 1)
    two = parallel.DistEnv(rank=0, world_size=2, local_rank=0, node_rank=0, device=torch.device("cpu"))
    with pytest.raises(UserError, match="written by 1 processes, this run has 2"):
        s.manager(tmp_path, env=two).find_resumable()


def test_init_from_mindspeed_pth_megatron_folder_and_hf_folder(tmp_path):
    from transformers import WhisperForConditionalGeneration

    source = Setup(seed=5)
    mm = mm_state_dict(source.model.state_dict(), SMALL)
    torch.save(mm, tmp_path / "whisper.pth")  # what the seed's conversion script writes
    source.save(tmp_path / "megatron", 7)
    for path in (tmp_path / "whisper.pth", tmp_path / "megatron", megatron.iteration_dir(tmp_path / "megatron", 7)):
        state = read_pretrained_mm_state(str(path), SMALL)
        target = Setup(seed=6)
        load_mm_state(target.model, state, SMALL, source=str(path))
        assert all(torch.equal(a, b) for a, b in zip(target.model.state_dict().values(),
                                                      source.model.state_dict().values(), strict=True))
    # A Hugging Face folder has a tied head and no proj_out.weight: it is materialised from the embedding.
    from transformers import WhisperConfig

    hf = WhisperForConditionalGeneration(WhisperConfig(**{k: v for k, v in SMALL.items()
                                                          if k not in ("model_id", "ckpt_path", "torch_dtype")}))
    hf.save_pretrained(tmp_path / "hf")
    state = read_pretrained_mm_state(str(tmp_path / "hf"), SMALL)
    assert torch.equal(state[LM_HEAD], state[TIED_EMBEDDING])
    target = Setup(seed=6)
    load_mm_state(target.model, state, SMALL, source="hf")
    assert torch.equal(target.model.proj_out.weight, hf.model.decoder.embed_tokens.weight)


def test_wrong_shapes_in_ckpt_path_are_named(tmp_path):
    state = mm_state_dict(Setup().model.state_dict(), SMALL)
    state["model.encoder.conv1.weight"] = torch.zeros(1, 2, 3)
    del state[LM_HEAD]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(UserError, match=r"missing: proj_out.weight.*wrong shape: model.encoder.conv1.weight"):
        load_mm_state(Setup().model, read_pretrained_mm_state(str(tmp_path / "bad.pth"), SMALL), SMALL, source="bad.pth")


def test_resume_into_another_model_size_is_refused_with_the_key(tmp_path):
    Setup().save(tmp_path, 1)
    bigger = Setup()
    bigger.config = validate_model_fields({**SMALL, "d_model": 64})
    bigger.model = build_model(bigger.config, seed=0)
    with pytest.raises(UserError, match="does not fit model.json .*wrong shape: model.encoder.conv1.weight"):
        bigger.resume(tmp_path)
