"""`dataset prepare`: stored features give the streaming path's batches, runs resume, bad input is refused.

Everything runs on real generated Common Voice shards and the real loader; references are the streaming path
and transformers' WhisperFeatureExtractor, never stored numbers.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from whisper_trainer.data import build_dataloader
from whisper_trainer.data.prepared import INDEX_COLUMNS, read_shard_index

from whisper_k8s.cli.main import main
from whisper_k8s.dataset.prepare import prepare
from whisper_k8s.errors import UserError

# synth's broken kinds -> the skip reason they must be recorded with
BROKEN = {"corrupt_mp3": "corrupt_audio", "empty_audio": "empty_audio", "missing_audio": "missing_file",
          "too_long": "too_long", "non_utf8_text": "bad_text_encoding"}


@pytest.fixture(scope="module")
def broken_source(tmp_path_factory):
    from whisper_k8s.dataset.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("cv-prep-broken") / "cv", lang="en", train=4, test=0, seed=5,
                      broken=list(BROKEN)).root


@pytest.fixture(scope="module")
def prepared(broken_source, processor_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "cv-prepared"
    result = prepare(broken_source, out, languages="en", splits="train", processor_dir=processor_dir, n_mels=128,
                     workers=2, shard_size=3)
    return out, result


def loader(root, processor_dir, **overrides):
    options = dict(n_mels=128, rank=0, world_size=1, micro_batch_size=2, num_workers=0, seed=11, return_paths=True)
    options.update(overrides)
    return build_dataloader(os.fspath(root), ["en"], "train", str(processor_dir), **options)


def test_bad_samples_are_recorded_with_their_reason(prepared):
    out, result = prepared
    assert result.samples == 4 + len(BROKEN) and result.usable == 4
    assert dict(result.skipped) == {reason: 1 for reason in BROKEN.values()}
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["languages"]["en"]["train"]
    assert entry["skipped"] == dict(result.skipped) and entry["samples"] == result.samples
    assert len(entry["shards"]) == 3  # 9 rows in shards of 3
    assert (manifest["n_mels"], manifest["n_frames"], manifest["task"]) == (128, 3000, "transcribe")


def test_prepared_batches_equal_streaming_batches_and_resume_alike(broken_source, prepared, processor_dir):
    out, _ = prepared
    streaming, stored = loader(broken_source, processor_dir), loader(out, processor_dir)
    stream_batches, stored_batches = iter(streaming), iter(stored)
    for _ in range(5):  # past the end of the first epoch: the skips and the epoch order must agree too
        expected, got = next(stream_batches), next(stored_batches)
        assert got["paths"] == expected["paths"]
        assert torch.equal(got["labels"], expected["labels"])
        assert (got["input_features"] - expected["input_features"]).abs().max() < 1e-6
    assert stored.state_dict() == streaming.state_dict()
    assert stored.stats() == streaming.stats()
    assert all(stored.stats()[reason] >= 1 for reason in BROKEN.values())

    resumed = loader(out, processor_dir)
    resumed.load_state_dict(streaming.state_dict())  # a position saved while streaming carries over
    assert next(iter(resumed))["paths"] == next(stream_batches)["paths"]


def test_prepared_batches_in_worker_processes_equal_streaming(broken_source, prepared, processor_dir):
    out, _ = prepared
    expected = next(iter(loader(broken_source, processor_dir, num_workers=2, micro_batch_size=3)))
    got = next(iter(loader(out, processor_dir, num_workers=2, micro_batch_size=3)))
    assert got["paths"] == expected["paths"] and torch.equal(got["labels"], expected["labels"])
    assert torch.equal(got["input_features"], expected["input_features"])


def test_compact_batches_expand_to_the_padded_batch(broken_source, prepared, processor_dir):
    """build_dataloader(compact_features=True): signal frames + tail values, expanded where the trainer wants."""
    from whisper_trainer.data.features import expand_features

    out, _ = prepared
    dense = next(iter(loader(broken_source, processor_dir, micro_batch_size=3)))
    for root in (broken_source, out):
        compact = next(iter(loader(root, processor_dir, micro_batch_size=3, compact_features=True)))
        assert "input_features" not in compact
        assert compact["input_frames"].shape == (128, int(compact["frame_lengths"].sum()))
        assert compact["input_frames"].shape[1] < 3 * 3000 / 4  # ~2 s clips: a fraction of the padded window
        expanded = expand_features(compact, 3000, device="cpu")
        assert expanded["paths"] == dense["paths"] and torch.equal(expanded["labels"], dense["labels"])
        assert torch.equal(expanded["input_features"], dense["input_features"])


def test_only_signal_frames_are_stored_and_rebuild_the_extractor_features(broken_source, prepared, processor_dir):
    import librosa
    from transformers import WhisperFeatureExtractor

    out, _ = prepared
    index = read_shard_index(out / "en" / "train" / "shard-00000.wmel")
    assert set(INDEX_COLUMNS) <= set(index)
    extractor = WhisperFeatureExtractor.from_pretrained(str(processor_dir))
    clips = {}
    with tarfile.open(broken_source / "audio" / "en" / "train" / "en_train_0.tar") as tar:
        for member in tar:
            clips[Path(member.name).name] = tar.extractfile(member).read()
    batch = next(iter(loader(out, processor_dir, micro_batch_size=4, shuffle=False)))
    checked_tails = 0
    for row, path in enumerate(batch["paths"]):
        audio = librosa.load(io.BytesIO(clips[path]), sr=16000)[0]
        reference = extractor(audio, sampling_rate=16000, return_tensors="np").input_features[0]
        stored = index["frames"][index["paths"].index(path)] if path in index["paths"] else None
        assert np.abs(batch["input_features"][row].numpy() - reference).max() < 1e-4
        if stored is not None:
            # Whisper's own features past the stored frames are one constant: the tail value kept in the index.
            tail = reference[:, stored:]
            assert stored < 3000 and tail.size and np.all(tail == tail.flat[0])
            assert abs(index["pad_values"][index["paths"].index(path)] - tail.flat[0]) < 1e-6
            checked_tails += 1
    assert checked_tails >= 1


def test_resume_keeps_verified_shards_and_redoes_a_damaged_one(cv_dataset, processor_dir, tmp_path):
    out = tmp_path / "prepared"
    options = dict(languages="en", splits="train", processor_dir=processor_dir, n_mels=128, workers=1, shard_size=6)
    first = prepare(cv_dataset, out, **options)
    assert (first.shards_written, first.shards_kept) == (3, 0)
    shards = sorted((out / "en" / "train").glob("*.wmel"))
    original = {shard.name: shard.read_bytes() for shard in shards}
    untouched = {shard.name: shard.stat().st_mtime_ns for shard in shards}
    with open(shards[1], "r+b") as handle:  # an interrupted copy
        handle.truncate(shards[1].stat().st_size // 2)
    (out / "manifest.json").unlink()

    second = prepare(cv_dataset, out, **options)
    assert (second.shards_written, second.shards_kept) == (1, 2)
    assert {shard.name: shard.read_bytes() for shard in shards} == original  # rebuilt byte for byte
    assert shards[0].stat().st_mtime_ns == untouched[shards[0].name]
    assert not list(out.rglob("*.tmp"))
    assert loader(out, processor_dir).state_dict()["num_samples"] == 16


def test_refuses_another_preparation_or_a_foreign_folder(cv_dataset, processor_dir, tmp_path):
    out = tmp_path / "prepared"
    prepare(cv_dataset, out, languages="en", splits="train", processor_dir=processor_dir, n_mels=128, workers=1,
            shard_size=16)
    before = sorted((path.name, path.stat().st_mtime_ns) for path in out.rglob("*"))
    with pytest.raises(UserError, match=r"holds a preparation of something else \(n_mels.*prepare-plan.json"):
        prepare(cv_dataset, out, languages="en", splits="train", processor_dir=processor_dir, n_mels=80, workers=1,
                shard_size=16)
    assert sorted((path.name, path.stat().st_mtime_ns) for path in out.rglob("*")) == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and holds no prepare-plan.json"):
        prepare(cv_dataset, foreign, languages="en", splits="train", processor_dir=processor_dir, n_mels=128)
    with pytest.raises(UserError, match=r"--split validation is not a Common Voice split"):
        prepare(cv_dataset, tmp_path / "x", languages="en", splits="validation", processor_dir=processor_dir,
                n_mels=128)


def test_trainer_refuses_a_prepared_root_made_for_another_model(cv_dataset, processor_dir, tmp_path):
    out = tmp_path / "prepared"
    prepare(cv_dataset, out, languages="en", splits="train", processor_dir=processor_dir, n_mels=128, workers=1,
            shard_size=16)
    with pytest.raises(UserError, match=r"manifest.json was prepared for another model.*n_mels is 128 there, the "
                                        r"trainer needs 80"):
        loader(out, processor_dir, n_mels=80)
    with pytest.raises(UserError, match=r"n_frames is 3000 there, the trainer needs 500"):
        loader(out, processor_dir, n_frames=500)
    with pytest.raises(UserError, match=r"has no en/test: it holds en/train"):
        build_dataloader(str(out), ["en"], "test", str(processor_dir), n_mels=128, rank=0, world_size=1,
                         micro_batch_size=2, num_workers=0, seed=0)
    shard = out / "en" / "train" / "shard-00000.wmel"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(UserError, match=r"shard-00000.wmel is damaged .*run `python -m whisper_k8s dataset prepare"):
        loader(out, processor_dir)


def test_cli_prepare_end_to_end(cv_dataset, processor_dir, tmp_path, capsys):
    out = tmp_path / "cli-prepared"
    argv = ["dataset", "prepare", "--source", str(cv_dataset), "--out", str(out), "--lang", "en", "--split", "train",
            "--processor", str(processor_dir), "--preset", "tiny", "--workers", "2", "--shard-size", "8"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "prepared 16 of 16 samples (128 mels, 3000 frames)" in printed and "2 shard(s) written" in printed
    assert main(argv) == 0
    assert "0 shard(s) written, 2 kept from an earlier run" in capsys.readouterr().out
    assert main(["dataset", "prepare", "--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"),
                 "--lang", "en", "--processor", str(processor_dir)]) == 2
    assert "--source" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_trainer_trains_on_a_prepared_root(prepared, processor_dir, tmp_path):
    """data.json's dataset_name_or_path points at the prepared folder: the trainer reads it as it is."""
    root = Path(__file__).resolve().parents[1]
    out, _ = prepared
    model_json, data_json = tmp_path / "model.json", tmp_path / "data.json"
    model_json.write_text((root / "helm" / "files" / "model-presets" / "tiny.json").read_text())
    data_json.write_text(json.dumps({"dataset_param": {
        "basic_parameters": {"dataset_name_or_path": str(out), "language": "en"},
        "preprocess_parameters": {"processor_name_or_path": str(processor_dir), "task": "transcribe"}}}))
    command = [sys.executable, "-m", "whisper_trainer", "--mm-model", str(model_json), "--mm-data", str(data_json),
               "--save", str(tmp_path / "save"), "--micro-batch-size", "2", "--lr", "1e-3", "--train-iters", "2",
               "--save-interval", "2", "--log-interval", "1", "--num-workers", "1", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{root}:{root / 'trainer'}")
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "in 3 prepared-feature shard(s)" in log and "Average Samples per Second" in log
    assert (tmp_path / "save" / "iter_0000002").is_dir()
