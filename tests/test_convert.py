"""Checkpoint conversion HF <-> MindSpeed-MM: exact key sets, the materialised LM head, bit-identical round
trips with identical logits, strict errors that leave nothing behind, idempotency, every input layout.

Real transformers models of the chart's tiny preset (vocab 51866, so the real token table applies); large-v3
only as a meta-device model (key/shape tables, no memory).
"""

from __future__ import annotations

import argparse
import json
import os
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors

from whisper_k8s.assets.processor import read_bpe_ranks, whisper_assets_dir
from whisper_k8s.chart import preset_path
from whisper_k8s.cli.main import main as cli_main
from whisper_k8s.convert import (
    convert_hf_to_mm,
    convert_mm_to_hf,
    head_is_tied,
    hf_state_to_mm,
    inspect_checkpoint,
    load_hf_model,
    marker,
    mm_state_to_hf,
)
from whisper_k8s.convert.hf_config import MUSICAL_SYMBOLS, NON_SPEECH_SYMBOLS, bpe_encode
from whisper_k8s.convert.pages import MappedRegion
from whisper_k8s.errors import UserError
from whisper_k8s.formats import megatron
from whisper_k8s.formats.mindspeed import LM_HEAD, expected_mm_shapes


def tiny_preset() -> dict:
    return json.loads(preset_path("tiny").read_text())


def build_model(config: dict, seed: int, *, tied: bool = True):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    fields = {k: v for k, v in config.items() if k not in ("model_id", "ckpt_path", "torch_dtype")}
    torch.manual_seed(seed)
    return WhisperForConditionalGeneration(WhisperConfig(**fields, tie_word_embeddings=tied)).eval()


def logits(model, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(1, model.config.num_mel_bins, 2 * model.config.max_source_positions,
                           generator=generator)
    tokens = torch.tensor([[50258, 50259, 50360, 50364, 400, 1000, 50257]])
    with torch.no_grad():
        return model(input_features=features, decoder_input_ids=tokens).logits


@pytest.fixture(scope="module")
def hf_tiny(tmp_path_factory) -> tuple[Path, object]:
    """A Hugging Face folder as transformers writes it (no proj_out.weight: tied) and its model."""
    model = build_model(tiny_preset(), seed=1)
    folder = tmp_path_factory.mktemp("hf") / "whisper-tiny-random"
    model.save_pretrained(folder)
    return folder, model


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name or ".staging" in p.name)


def test_hf_to_mm_writes_exactly_mindspeed_keys_with_a_materialised_head(hf_tiny, tmp_path):
    folder, model = hf_tiny
    assert LM_HEAD not in load_safetensors(folder / "model.safetensors")  # what makes the seed script wrong
    out = tmp_path / "whisper.pth"
    convert_hf_to_mm(folder, out, quiet=True)
    state = megatron.load_file(out)
    expected = expected_mm_shapes(tiny_preset())
    assert list(state) == list(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert torch.equal(state[LM_HEAD], model.proj_out.weight.detach())
    # The head is its own record in the file, as in a checkpoint MindSpeed-MM saves (no storage sharing).
    records = [n for n in zipfile.ZipFile(out).namelist() if "/data/" in n]
    assert len(records) == len(expected)
    assert leftovers(tmp_path) == []


def test_round_trip_is_bit_identical_and_gives_identical_logits(hf_tiny, tmp_path):
    from transformers import WhisperForConditionalGeneration

    folder, model = hf_tiny
    convert_hf_to_mm(folder, tmp_path / "whisper.pth", quiet=True)
    back = tmp_path / "hf"
    result = convert_mm_to_hf(tmp_path / "whisper.pth", back, config=folder / "config.json", quiet=True)
    assert result.details["tie_word_embeddings"] is True
    before, after = load_safetensors(folder / "model.safetensors"), load_safetensors(back / "model.safetensors")
    assert sorted(before) == sorted(after)
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    assert json.loads((back / "config.json").read_text())["tie_word_embeddings"] is True
    reloaded = WhisperForConditionalGeneration.from_pretrained(back).eval()
    assert torch.equal(logits(reloaded), logits(model))


def test_a_trained_head_survives_mm_to_hf_untied(tmp_path):
    from transformers import WhisperForConditionalGeneration

    untied = build_model(tiny_preset(), seed=2, tied=False)  # MindSpeed-MM's model: its own head
    assert not head_is_tied(untied.state_dict())
    mm_state = hf_state_to_mm(untied.state_dict(), tiny_preset())
    torch.save(mm_state, tmp_path / "trained.pth")
    result = convert_mm_to_hf(tmp_path / "trained.pth", tmp_path / "hf", config=preset_path("tiny"), quiet=True)
    assert result.details["tie_word_embeddings"] is False
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["tie_word_embeddings"] is False
    reloaded = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    assert torch.equal(reloaded.proj_out.weight, untied.proj_out.weight)
    assert not torch.equal(reloaded.proj_out.weight, reloaded.model.decoder.embed_tokens.weight)
    assert torch.equal(logits(reloaded), logits(untied))


def test_large_v3_key_set_equals_the_reference_list(reference):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    model_json = json.loads((reference / "mindspeed-mm" / "model.json").read_text())
    fields = {k: v for k, v in model_json.items() if k not in ("model_id", "ckpt_path", "torch_dtype")}
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(WhisperConfig(**fields))
    hf_state = {k: v for k, v in model.state_dict().items() if k != LM_HEAD}  # as on the Hub
    mm_state = hf_state_to_mm(hf_state, model_json)
    lines = (reference / "mindspeed-mm" / "whisper-large-v3.state_dict_keys.txt").read_text().splitlines()
    want = [(name, shape) for name, shape in (line.split(" ", 1) for line in lines if not line.startswith("#"))]
    assert [(k, str(tuple(v.shape))) for k, v in mm_state.items()] == want
    assert sum(v.numel() for k, v in mm_state.items() if k != LM_HEAD) == pytest.approx(1.55e9, rel=0.01)
    assert list(mm_state_to_hf(mm_state, model_json)) == [k for k in mm_state_to_hf(mm_state)]


def test_wrong_keys_are_listed_and_nothing_is_written(hf_tiny, tmp_path):
    folder, _ = hf_tiny
    state = load_safetensors(folder / "model.safetensors")
    del state["model.encoder.layers.1.fc2.bias"]
    state["model.encoder.layers.0.fc1.weight"] = torch.zeros(255, 64)
    state["model.encoder.extra.weight"] = torch.zeros(3)
    broken = tmp_path / "broken"
    broken.mkdir()
    save_safetensors(state, broken / "model.safetensors", metadata={"format": "pt"})
    (broken / "config.json").write_text((folder / "config.json").read_text())
    out = tmp_path / "out"
    out.mkdir()
    for convert in (lambda: convert_hf_to_mm(broken, out / "whisper.pth", quiet=True),
                    lambda: convert_hf_to_mm(broken, out / "megatron", megatron_layout=True, quiet=True)):
        with pytest.raises(UserError) as err:
            convert()
        message = str(err.value)
        assert "missing: model.encoder.layers.1.fc2.bias" in message
        assert "unexpected: model.encoder.extra.weight" in message
        assert "wrong shape: model.encoder.layers.0.fc1.weight is (255, 64), expected (256, 64)" in message
    assert list(out.iterdir()) == []


def test_rerun_is_a_no_op_and_a_changed_source_reconverts(hf_tiny, tmp_path):
    folder, _ = hf_tiny
    source = tmp_path / "src"
    source.mkdir()
    for name in ("model.safetensors", "config.json"):
        (source / name).write_bytes((folder / name).read_bytes())
    out = tmp_path / "pretrained" / "whisper.pth"
    assert not convert_hf_to_mm(source, out, quiet=True).skipped
    first = out.stat().st_mtime_ns
    assert convert_hf_to_mm(source, out, quiet=True).skipped
    assert out.stat().st_mtime_ns == first
    state = load_safetensors(source / "model.safetensors")
    state["model.encoder.conv1.bias"] = state["model.encoder.conv1.bias"] + 1
    save_safetensors(state, source / "model.safetensors", metadata={"format": "pt"})
    assert not convert_hf_to_mm(source, out, quiet=True).skipped
    assert torch.equal(megatron.load_file(out)["model.encoder.conv1.bias"], state["model.encoder.conv1.bias"])
    out.write_bytes(out.read_bytes()[:-10])  # a damaged output is not "current"
    assert not convert_hf_to_mm(source, out, quiet=True).skipped
    stat = out.stat()  # same size, other mtime: e.g. the old file left by a crash before the rename
    os.utime(out, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**9))
    assert not convert_hf_to_mm(source, out, quiet=True).skipped
    assert marker.is_current(out, marker.read(out)["fingerprint"])


def test_a_foreign_destination_needs_force(hf_tiny, tmp_path):
    folder, _ = hf_tiny
    out = tmp_path / "whisper.pth"
    out.write_bytes(b"someone else's file")
    with pytest.raises(UserError, match="--force"):
        convert_hf_to_mm(folder, out, quiet=True)
    assert out.read_bytes() == b"someone else's file"
    convert_hf_to_mm(folder, out, force=True, quiet=True)
    assert LM_HEAD in megatron.load_file(out)


def test_megatron_folders_both_ways_with_a_bf16_cast(hf_tiny, tmp_path):
    folder, model = hf_tiny
    save = tmp_path / "megatron"
    convert_hf_to_mm(folder, save, megatron_layout=True, dtype="bf16", quiet=True)
    assert megatron.read_tracker(save) == megatron.RELEASE
    entry = megatron.load_file(megatron.resolve_model_file(save))
    assert entry["checkpoint_version"] == megatron.CHECKPOINT_VERSION
    assert {v.dtype for v in entry["model"].values()} == {torch.bfloat16}
    original = model.state_dict()
    assert torch.equal(entry["model"]["model.decoder.layers.1.self_attn.proj_q.weight"],
                       original["model.decoder.layers.1.self_attn.q_proj.weight"].to(torch.bfloat16))
    # A trainer-style save folder: several iterations, args as a Namespace, optimizer state beside the model.
    trained = tmp_path / "checkpoints"
    for iteration in (10, 20):
        megatron.save_file({"model": entry["model"], "iteration": iteration, "args": argparse.Namespace(lr=1e-5),
                            "optimizer": {"step": torch.tensor(iteration)}, "checkpoint_version": 3.0},
                           megatron.model_file(megatron.iteration_dir(trained, iteration)))
    megatron.write_tracker(trained, 20)
    result = convert_mm_to_hf(trained, tmp_path / "hf", config=folder / "config.json", dtype="fp32", quiet=True)
    assert result.details["tie_word_embeddings"] is True
    marker_details = marker.read(tmp_path / "hf")
    assert marker_details["iteration"] == 20
    back = load_safetensors(tmp_path / "hf" / "model.safetensors")
    assert all(torch.equal(back[k], v.to(torch.bfloat16).float()) for k, v in original.items() if k != LM_HEAD)
    one_iteration = megatron.iteration_dir(trained, 10)
    assert inspect_checkpoint(one_iteration).details["iteration"] == 10


def test_sharded_safetensors_and_pytorch_bin_sources(hf_tiny, tmp_path):
    folder, model = hf_tiny
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="5MB")
    assert (sharded / "model.safetensors.index.json").is_file()
    binary = tmp_path / "bin"
    binary.mkdir()
    torch.save({k: v for k, v in model.state_dict().items() if k != LM_HEAD}, binary / "pytorch_model.bin")
    (binary / "config.json").write_text((folder / "config.json").read_text())
    convert_hf_to_mm(folder, tmp_path / "reference.pth", quiet=True)
    reference = megatron.load_file(tmp_path / "reference.pth")
    for source in (sharded, binary):
        convert_hf_to_mm(source, tmp_path / f"{source.name}.pth", quiet=True)
        state = megatron.load_file(tmp_path / f"{source.name}.pth")
        assert list(state) == list(reference)
        assert all(torch.equal(state[k], reference[k]) for k in reference)


def test_load_hf_model_from_every_format_gives_the_same_logits(hf_tiny, tmp_path):
    folder, model = hf_tiny
    convert_hf_to_mm(folder, tmp_path / "whisper.pth", quiet=True)
    convert_hf_to_mm(folder, tmp_path / "megatron", megatron_layout=True, quiet=True)
    want = logits(model)
    # No config beside the .pth / in the Megatron folder: the shapes match the chart's tiny preset.
    for path in (folder, tmp_path / "whisper.pth", tmp_path / "megatron", folder / "model.safetensors"):
        loaded = load_hf_model(path)
        assert torch.equal(logits(loaded), want), path
    assert load_hf_model(tmp_path / "whisper.pth", dtype="bf16").proj_out.weight.dtype == torch.bfloat16


def test_hf_folder_with_processor_generates_with_whisper_generation_config(hf_tiny, tmp_path, processor_dir):
    from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperProcessor

    folder, _ = hf_tiny
    convert_hf_to_mm(folder, tmp_path / "whisper.pth", quiet=True)
    out = tmp_path / "hf"
    convert_mm_to_hf(tmp_path / "whisper.pth", out, config=preset_path("tiny"), processor=processor_dir, quiet=True)
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["lang_to_id"]["<|en|>"] == 50259 and generation["lang_to_id"]["<|yue|>"] == 50358
    assert generation["task_to_id"] == {"transcribe": 50360, "translate": 50359}
    assert generation["no_timestamps_token_id"] == 50364 and generation["decoder_start_token_id"] == 50258
    assert {50258, 50359, 50360, 50361, 50362, 50363} <= set(generation["suppress_tokens"])
    assert 1 in generation["suppress_tokens"]  # '"' is one of Whisper's non-speech tokens
    processor = WhisperProcessor.from_pretrained(out)
    # Our rank-table BPE of the non-speech symbols equals the real tokenizer's encoding.
    ranks = read_bpe_ranks(whisper_assets_dir() / "multilingual.tiktoken")
    for text in [s for symbol in NON_SPEECH_SYMBOLS + list(MUSICAL_SYMBOLS) for s in (symbol, " " + symbol)]:
        assert bpe_encode(ranks, text) == processor.tokenizer.encode(text, add_special_tokens=False), text
    model = WhisperForConditionalGeneration.from_pretrained(out).eval()
    features = processor(torch.zeros(16000).numpy(), sampling_rate=16000, return_tensors="pt").input_features
    tokens = model.generate(features, language="en", task="transcribe", max_new_tokens=2)
    assert tokens.shape[0] == 1 and 1 <= tokens.shape[-1] <= 2
    model.generation_config = GenerationConfig(decoder_start_token_id=50258)  # what transformers alone writes
    with pytest.raises(ValueError):
        model.generate(features, language="en", task="transcribe", max_new_tokens=2)


def test_inspect_reports_the_seed_scripts_missing_head(hf_tiny, tmp_path, capsys):
    folder, _ = hf_tiny
    seed_output = {k.replace("q_proj", "proj_q").replace("k_proj", "proj_k").replace("v_proj", "proj_v")
                   .replace("out_proj", "proj_out"): v for k, v in load_safetensors(folder / "model.safetensors").items()}
    torch.save(seed_output, tmp_path / "seed.pth")
    assert cli_main(["convert", "inspect", str(tmp_path / "seed.pth")]) == 1
    printed = capsys.readouterr().out
    assert "proj_out.weight is missing" in printed and "preset:     none" not in printed
    assert cli_main(["convert", "mm-to-hf", str(tmp_path / "seed.pth"), str(tmp_path / "hf"), "--quiet"]) == 2
    assert "missing: proj_out.weight" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()
    assert cli_main(["convert", "hf-to-mm", str(folder), str(tmp_path / "ok.pth"), "--quiet"]) == 0
    assert cli_main(["convert", "inspect", str(tmp_path / "ok.pth")]) == 0
    report = capsys.readouterr().out
    assert "preset:     tiny" in report and "parameters: 7,033,856" in report


def test_page_release_refuses_memory_that_is_not_a_file_map(tmp_path):
    anonymous = torch.ones(1 << 20)
    assert MappedRegion.spanning([(anonymous.data_ptr(), anonymous.numel() * 4)], backing_file=tmp_path) is None
    path = tmp_path / "t.safetensors"
    save_safetensors({"a": torch.arange(1 << 20, dtype=torch.float32)}, path)
    from whisper_k8s.convert.safetensors_io import map_file

    tensors, region = map_file(path)
    if os.path.exists("/proc/self/maps"):
        assert region is not None and region.release()
    assert torch.equal(tensors["a"], torch.arange(1 << 20, dtype=torch.float32))  # paged in again, intact
