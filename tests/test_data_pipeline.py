"""The trainer's data pipeline on real generated Common Voice shards: features, labels, sharding, resume, bad input.

References are the real Hugging Face parts (librosa.load + WhisperFeatureExtractor, WhisperTokenizer and
WhisperForConditionalGeneration's own label shift), never hard-coded numbers.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from whisper_trainer.data import build_dataloader
from whisper_trainer.data.audio import decode_16k
from whisper_trainer.data.features import LogMel, mel_filters
from whisper_trainer.data.stream import consumer_share

from whisper_k8s.errors import UserError

# synth's broken kinds -> the skip counter each must land in
EXPECTED_REASON = {
    "corrupt_mp3": "corrupt_audio",
    "empty_audio": "empty_audio",
    "empty_sentence": "empty_text",
    "whitespace_sentence": "empty_text",
    "missing_audio": "missing_file",
    "too_long": "too_long",
    "non_utf8_text": "bad_text_encoding",
    "truncated_shard": "truncated_tar",
}


@pytest.fixture(scope="module")
def broken_dataset(tmp_path_factory):
    """3 good clips followed by one sample of every broken kind synth can write."""
    from whisper_k8s.dataset.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("cv-broken") / "cv", lang="en", train=3, test=0, seed=3,
                      broken=list(EXPECTED_REASON))


def loader(dataset, processor_dir, **overrides):
    options = dict(n_mels=128, rank=0, world_size=1, micro_batch_size=2, num_workers=0, seed=7, return_paths=True)
    options.update(overrides)
    return build_dataloader(os.fspath(dataset), ["en"], "train", str(processor_dir), **options)


def train_clips(dataset) -> dict[str, bytes]:
    """TSV path -> MP3 bytes of every train member, read with tarfile as an independent reference."""
    clips = {}
    for shard in sorted((Path(dataset) / "audio" / "en" / "train").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                clips[Path(member.name).name] = tar.extractfile(member).read()
    return clips


def test_features_equal_whisper_feature_extractor(cv_dataset, processor_dir):
    import librosa
    from transformers import WhisperFeatureExtractor

    clips = list(train_clips(cv_dataset).values())[:3]
    references = [librosa.load(io.BytesIO(clip), sr=16000)[0] for clip in clips]
    ours = [decode_16k(clip) for clip in clips]
    for waveform, reference in zip(ours, references, strict=True):
        assert np.array_equal(waveform, reference)  # decode + soxr resample exactly as librosa does
    noise = np.random.default_rng(0).standard_normal(480_000).astype(np.float32) * 0.05
    # edge lengths: shorter than the STFT window, just under and exactly 30 s (full-length path)
    edge_cases = [noise[:150], noise[:479_650], noise]
    for n_mels, batches in ((128, (ours, edge_cases)), (80, (edge_cases,))):
        extractor = WhisperFeatureExtractor.from_pretrained(str(processor_dir), feature_size=n_mels)
        log_mel = LogMel(mel_filters(str(processor_dir), n_mels))
        for batch in batches:
            expected = np.stack([
                extractor(w, sampling_rate=16000, return_tensors="np").input_features[0] for w in batch
            ])
            got = log_mel(batch).numpy()
            assert got.shape == (len(batch), n_mels, 3000)
            assert np.abs(got - expected).max() < 1e-4


def test_shorter_window_features_equal_extractor_of_that_length(cv_dataset, processor_dir):
    """A model with max_source_positions 250 takes 500 frames: WhisperFeatureExtractor(chunk_length=5)."""
    from transformers import WhisperFeatureExtractor

    clips = [decode_16k(clip) for clip in list(train_clips(cv_dataset).values())[:2]]
    noise = np.random.default_rng(1).standard_normal(80_000).astype(np.float32) * 0.05
    batch = [*clips, noise[:150], noise[:79_650], noise]  # speech, tiny, just under and exactly 5 s
    extractor = WhisperFeatureExtractor.from_pretrained(str(processor_dir), chunk_length=5)
    expected = np.stack([extractor(w, sampling_rate=16000, return_tensors="np").input_features[0] for w in batch])
    got = LogMel(mel_filters(str(processor_dir), 128), n_frames=500)(batch).numpy()
    assert expected.shape == got.shape == (len(batch), 128, 500)
    assert np.abs(got - expected).max() < 1e-4


def test_loader_window_follows_frame_count_and_skips_longer_clips(cv_dataset, processor_dir):
    import soundfile

    window_s = 2.0  # n_frames 200: the synthetic clips last ~1.4-3 s, so some are longer than the window
    durations = {path: soundfile.info(io.BytesIO(data)).duration for path, data in train_clips(cv_dataset).items()}
    too_long = {path for path, seconds in durations.items() if seconds > window_s}
    assert 0 < len(too_long) < len(durations)
    data = loader(cv_dataset, processor_dir, micro_batch_size=1, shuffle=False, n_frames=200)
    batches = iter(data)
    seen = []
    while data.state_dict()["epoch"] == 0:
        batch = next(batches)
        assert batch["input_features"].shape == (1, 128, 200)
        seen.extend(batch["paths"])
    assert set(seen[:-1]) == set(durations) - too_long  # the last one already belongs to epoch 1
    assert data.stats()["too_long"] == len(too_long)


def test_labels_follow_hf_recipe_and_model_shift(cv_dataset, processor_dir, tmp_path):
    from transformers import WhisperTokenizer
    from transformers.models.whisper.modeling_whisper import shift_tokens_right

    # A second language made from the same clips: labels must carry its own language token.
    two_langs = _copy_as_second_language(cv_dataset, tmp_path / "cv", "zh-CN")
    data = build_dataloader(str(two_langs), ["en", "zh-CN"], "train", str(processor_dir), n_mels=128, rank=0,
                            world_size=1, micro_batch_size=32, num_workers=0, seed=0, return_paths=True)
    batch = next(iter(data))
    texts = _sentences(two_langs, "en") | _sentences(two_langs, "zh-CN")
    tokenizers = {lang: WhisperTokenizer.from_pretrained(str(processor_dir), language=lang, task="transcribe")
                  for lang in ("en", "zh")}
    seen_langs = Counter()
    for row, path in enumerate(batch["paths"]):
        lang = "zh" if "_zh_" in path else "en"
        seen_langs[lang] += 1
        expected = tokenizers[lang](texts[path]).input_ids[1:]  # the HF recipe drops the leading start token
        row_labels = batch["labels"][row]
        assert row_labels[row_labels != -100].tolist() == expected
    assert seen_langs == {"en": 16, "zh": 16}
    start = tokenizers["en"].convert_tokens_to_ids("<|startoftranscript|>")
    end = tokenizers["en"].convert_tokens_to_ids("<|endoftext|>")
    decoder_input_ids = shift_tokens_right(batch["labels"], end, start)  # what WhisperForConditionalGeneration does
    # What the decoder sees first is exactly the prompt generate() forces: SOT, language, task, no timestamps.
    for row, path in enumerate(batch["paths"]):
        lang = "zh" if "_zh_" in path else "en"
        assert decoder_input_ids[row, :4].tolist() == tokenizers[lang].prefix_tokens
    assert batch["num_samples"] == 32 and batch["input_features"].dtype == torch.float32


def test_unknown_language_is_refused_by_name(cv_dataset, processor_dir):
    with pytest.raises(UserError, match="'ga-IE'"):
        build_dataloader(str(cv_dataset), ["ga-IE"], "train", str(processor_dir), n_mels=128, rank=0,
                         world_size=1, micro_batch_size=2, num_workers=0, seed=0)


@pytest.mark.parametrize("num_samples", [1, 7, 16, 33])
def test_epoch_shares_partition_the_samples(num_samples):
    for consumers in {1, 2, 3, 8, num_samples}:
        for epoch in range(3):
            shares = [consumer_share(num_samples, 5, epoch, True, c, consumers) for c in range(consumers)]
            assert sorted(np.concatenate(shares).tolist()) == list(range(num_samples))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
    if num_samples >= 7:
        first, second = (consumer_share(num_samples, 5, e, True, 0, 1).tolist() for e in (0, 1))
        assert first != second and sorted(first) == sorted(second)  # reshuffled each epoch, same samples


def test_ranks_and_workers_read_every_sample_exactly_once_per_epoch(cv_dataset, processor_dir):
    seen = []
    for rank in range(2):
        data = loader(cv_dataset, processor_dir, rank=rank, world_size=2, num_workers=2, micro_batch_size=2)
        batches = iter(data)
        for _ in range(4):  # 2 streams x 2 batches x 2 samples = this rank's 8 samples of epoch 0
            seen.extend(next(batches)["paths"])
        state = data.state_dict()
        assert [s["epoch"] for s in state["streams"]] == [0, 0] and state["samples_consumed"] == 8
        del batches
    assert sorted(seen) == sorted(train_clips(cv_dataset))


def test_resume_continues_bitwise_identically(broken_dataset, processor_dir):
    options = dict(num_workers=2, micro_batch_size=3)
    first = loader(broken_dataset, processor_dir, **options)
    batches = iter(first)
    for _ in range(3):
        next(batches)
    state = json.loads(json.dumps(first.state_dict()))  # it must survive a checkpoint round trip
    stats_at_save = first.stats()
    expected = [next(batches) for _ in range(2)]  # the uninterrupted run goes on (across epoch boundaries)
    del batches

    resumed = loader(broken_dataset, processor_dir, **options)
    resumed.load_state_dict(state)
    assert resumed.stats() == stats_at_save and sum(stats_at_save.values()) > 0
    assert state["next_stream"] == 1  # the resumed DataLoader must start with the second worker's stream
    batches = iter(resumed)
    for want in expected:
        got = next(batches)
        assert got["paths"] == want["paths"]
        for key in ("input_features", "labels"):
            assert torch.equal(got[key], want[key])
    del batches


def test_bad_samples_are_skipped_counted_and_named(broken_dataset, processor_dir, caplog):
    data = loader(broken_dataset, processor_dir, micro_batch_size=1, shuffle=False)
    batches = iter(data)
    good = []
    with caplog.at_level(logging.WARNING, logger="whisper_trainer.data"):
        while data.state_dict()["epoch"] == 0:  # broken rows come after the good ones in TSV order
            good.extend(next(batches)["paths"])
    broken = {sample["path"]: sample["kind"] for sample in broken_dataset.broken}
    assert not set(good) & set(broken) and len(good) == 4  # 3 good clips, then the first of epoch 1
    stats = data.stats()
    assert {reason: count for reason, count in stats.items() if count} == Counter(EXPECTED_REASON[k] for k in broken.values())
    assert stats["too_many_tokens"] == 0  # every reason is reported, zeros included
    for path, kind in broken.items():
        assert any(path in r.getMessage() and EXPECTED_REASON[kind] in r.getMessage() for r in caplog.records)


def test_a_rank_with_only_bad_samples_fails_clearly(broken_dataset, processor_dir, tmp_path):
    only_bad = tmp_path / "cv"
    shutil.copytree(broken_dataset.root, only_bad)
    tsv = only_bad / "transcript" / "en" / "train.tsv"
    lines = tsv.read_bytes().split(b"\n")
    decodable_but_bad = {s["path"].encode() for s in broken_dataset.broken if s["kind"] in ("corrupt_mp3", "too_long")}
    rows = [line for line in lines[1:] if line.count(b"\t") and line.split(b"\t")[1] in decodable_but_bad]
    assert len(rows) == 2
    tsv.write_bytes(b"\n".join([lines[0], *rows]) + b"\n")
    data = loader(only_bad, processor_dir, num_workers=1)
    with pytest.raises(UserError, match="no usable sample"):
        next(iter(data))


def test_too_few_samples_for_the_readers_is_refused(cv_dataset, processor_dir):
    with pytest.raises(UserError, match="lower --num-workers"):
        loader(cv_dataset, processor_dir, world_size=8, rank=3, num_workers=4)


def test_changed_topology_restarts_at_the_next_epoch(cv_dataset, processor_dir):
    saved = loader(cv_dataset, processor_dir).state_dict()
    saved["streams"][0].update(epoch=2, cursor=5, skipped={"corrupt_audio": 1})
    other = loader(cv_dataset, processor_dir, seed=8)
    other.load_state_dict(saved)
    state = other.state_dict()
    assert state["streams"] == [{"epoch": 3, "cursor": 0, "skipped": {"corrupt_audio": 1}}]


def _sentences(dataset, lang: str) -> dict[str, str]:
    from whisper_k8s.dataset.common_voice_layout import read_transcript, transcript_path

    return {row["path"]: row["sentence"] for row in read_transcript(transcript_path(dataset, lang, "train"))}


def _copy_as_second_language(dataset, root: Path, lang: str) -> Path:
    """The train split of ``dataset`` plus the same clips as ``lang`` (renamed files, same audio)."""
    (root / "transcript" / "en").mkdir(parents=True)
    shutil.copy(Path(dataset) / "transcript" / "en" / "train.tsv", root / "transcript" / "en")
    shutil.copytree(Path(dataset) / "audio" / "en" / "train", root / "audio" / "en" / "train")
    rename = {path: path.replace("_en_", "_zh_") for path in train_clips(dataset)}
    tsv = (Path(dataset) / "transcript" / "en" / "train.tsv").read_text()
    for old, new in rename.items():
        tsv = tsv.replace(old, new)
    (root / "transcript" / lang).mkdir(parents=True)
    (root / "transcript" / lang / "train.tsv").write_text(tsv)
    shard = root / "audio" / lang / "train" / f"{lang}_train_0.tar"
    shard.parent.mkdir(parents=True)
    with tarfile.open(shard, "w") as tar:
        for old, clip in train_clips(dataset).items():
            info = tarfile.TarInfo(f"{lang}_train_0/{rename[old]}")
            info.size = len(clip)
            tar.addfile(info, io.BytesIO(clip))
    (root / "n_shards.json").write_text(json.dumps({"en": {"train": 1}, lang: {"train": 1}}))
    return root
