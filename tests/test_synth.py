"""The synthetic Common Voice 11 generator: layout, real decodable speech, determinism, broken kinds, CLI."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whisper_k8s.dataset import common_voice_layout as cv
from whisper_k8s.dataset import synth
from whisper_k8s.dataset.speech import decode_mp3
from whisper_k8s.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def shard_members(shard: Path) -> dict[str, tarfile.TarInfo]:
    """Members of a shard that can be listed (a truncated shard stops listing with ReadError at its end)."""
    found = {}
    with tarfile.open(shard) as tar:
        try:
            for info in tar:
                found[info.name] = info
        except tarfile.ReadError:
            pass
    return found


def read_member(shard: Path, name: str) -> bytes:
    """One member's bytes, found by walking the shard (so members before a truncation stay readable)."""
    with tarfile.open(shard) as tar:
        for info in tar:
            if info.name == name:
                return tar.extractfile(info).read()
    raise KeyError(name)


def all_member_bytes(root: Path, lang: str, split: str) -> dict[str, bytes]:
    audio = {}
    for shard in cv.shard_paths(root, lang, split):
        with tarfile.open(shard) as tar:
            for info in tar:
                audio[info.name] = tar.extractfile(info).read()
    return audio


def test_layout_matches_common_voice_11(cv_dataset):
    assert cv.read_n_shards(cv_dataset) == {
        "en": {"train": 1, "dev": 0, "test": 1, "other": 0, "invalidated": 0}
    }
    assert (cv_dataset / "audio/en/train/en_train_0.tar").is_file()
    assert (cv_dataset / "audio/en/test/en_test_0.tar").is_file()
    for split, expected_rows in {"train": 16, "test": 4, "dev": 0, "other": 0, "invalidated": 0}.items():
        tsv = cv.transcript_path(cv_dataset, "en", split)
        assert tsv.read_text(encoding="utf-8").splitlines()[0].split("\t") == list(cv.TSV_COLUMNS)
        rows = cv.read_transcript(tsv)
        assert len(rows) == expected_rows
        if not rows:
            continue
        (shard,) = cv.shard_paths(cv_dataset, "en", split)
        members = list(shard_members(shard))
        # Real CV 11: member = "<shard name>/<TSV path>", in TSV order.
        assert members == [f"en_{split}_0/{row['path']}" for row in rows]
        for row in rows:
            assert row["path"].startswith("common_voice_en_") and row["path"].endswith(".mp3")
            assert len(row["client_id"]) == 128 and int(row["client_id"], 16) >= 0
            assert row["locale"] == "en" and row["gender"] in {"male", "female"}
            assert int(row["up_votes"]) >= 0 and int(row["down_votes"]) >= 0
            assert row["sentence"].strip() and row["sentence"][0].isupper()


def test_clips_are_48k_mono_speech_of_sane_length(cv_dataset):
    for split in ("train", "test"):
        clips = all_member_bytes(cv_dataset, "en", split)
        assert clips
        for name, data in clips.items():
            info = sf.info(io.BytesIO(data))
            assert (info.samplerate, info.channels, info.format) == (48_000, 1, "MP3"), name
            samples, _ = decode_mp3(data)
            duration = len(samples) / 48_000
            assert 0.5 <= duration <= 15, (name, duration)
            voiced = np.abs(samples) > 0.02
            assert samples.std() > 0.01 and voiced.mean() > 0.2, name  # speech, not silence or a click


def test_sentences_and_voices_vary(cv_dataset):
    rows = cv.read_transcript(cv.transcript_path(cv_dataset, "en", "train"))
    assert len({r["sentence"] for r in rows}) >= 12
    test_rows = cv.read_transcript(cv.transcript_path(cv_dataset, "en", "test"))
    assert not {r["sentence"] for r in rows} & {r["sentence"] for r in test_rows}  # as in CV: one split each
    assert len({r["client_id"] for r in rows}) >= 4  # one client_id per synthetic voice
    assert {r["gender"] for r in rows} == {"male", "female"}
    durations = [len(decode_mp3(d)[0]) for d in all_member_bytes(cv_dataset, "en", "train").values()]
    assert len(set(durations)) >= 12


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    kwargs = dict(lang="en", train=3, test=1, shard_size=2)
    a = synth.synthesize(tmp_path / "a", seed=7, **kwargs)
    b = synth.synthesize(tmp_path / "b", seed=7, **kwargs)
    c = synth.synthesize(tmp_path / "c", seed=8, **kwargs)
    assert a.n_shards["en"]["train"] == 2  # 3 clips, 2 per shard
    assert list(shard_members(cv.shard_path(a.root, "en", "train", 1))) == [
        f"en_train_1/{cv.read_transcript(cv.transcript_path(a.root, 'en', 'train'))[2]['path']}"
    ]
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    for rel in files:
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes(), rel
    train_tsv = Path("transcript/en/train.tsv")
    assert (a.root / train_tsv).read_bytes() != (c.root / train_tsv).read_bytes()


def test_hindi_speaks_devanagari_beside_english(tmp_path):
    result = synth.synthesize(tmp_path / "cv", lang="hi,en", train=3, test=1, seed=1)
    counts = cv.read_n_shards(result.root)
    assert sorted(counts) == ["en", "hi"] and counts["hi"]["train"] == counts["en"]["train"] == 1
    rows = cv.read_transcript(cv.transcript_path(result.root, "hi", "train"))
    assert all(any("\u0900" <= ch <= "\u097f" for ch in r["sentence"]) for r in rows)
    assert all(r["locale"] == "hi" and r["path"].startswith("common_voice_hi_") for r in rows)
    for name, data in all_member_bytes(result.root, "hi", "train").items():
        samples, rate = decode_mp3(data)
        assert name.startswith("hi_train_0/common_voice_hi_") and rate == 48_000
        assert 0.5 <= len(samples) / rate <= 15


@pytest.fixture(scope="module")
def broken_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("broken") / "cv"
    return synth.synthesize(out, lang="en", train=2, test=0, seed=3, broken=list(synth.BROKEN_KINDS))


def _row(result, kind):
    sample = result.broken_sample(kind)
    tsv = cv.transcript_path(result.root, "en", sample["split"])
    rows = [r for r in cv.read_transcript(tsv, strict=False) if r["path"] == sample["path"]]
    return sample, rows


def _shard(result, sample):
    return cv.shard_path(result.root, sample["lang"], sample["split"], sample["shard"])


def test_broken_kinds_are_what_they_claim(broken_dataset):
    result = broken_dataset
    assert [s["kind"] for s in result.broken] == list(synth.BROKEN_KINDS)
    manifest = json.loads((result.root / synth.MANIFEST_FILE).read_text())
    assert manifest["broken"] == result.broken

    sample, _ = _row(result, "corrupt_mp3")
    with pytest.raises(sf.LibsndfileError):
        decode_mp3(read_member(_shard(result, sample), cv.member_name("en", "train", 0, sample["path"])))

    sample, _ = _row(result, "empty_audio")
    assert shard_members(_shard(result, sample))[f"en_train_0/{sample['path']}"].size == 0

    assert [r["sentence"] for r in _row(result, "empty_sentence")[1]] == [""]
    (blank,) = [r["sentence"] for r in _row(result, "whitespace_sentence")[1]]
    assert blank and not blank.strip()

    sample, rows = _row(result, "missing_audio")
    assert len(rows) == 1 and sample["shard"] is None
    listed = {
        cv.clip_file_of_member(n)
        for s in cv.shard_paths(result.root, "en", "train")
        for n in shard_members(s)
    }
    assert sample["path"] not in listed

    sample, _ = _row(result, "too_long")
    samples, rate = decode_mp3(read_member(_shard(result, sample), f"en_train_0/{sample['path']}"))
    assert len(samples) / rate > 30


def test_broken_text_and_truncated_shard(broken_dataset):
    result = broken_dataset
    sample = result.broken_sample("non_utf8_text")
    tsv = cv.transcript_path(result.root, "en", "train")
    with pytest.raises(UserError, match=r"train\.tsv:\d+: unreadable transcript row"):
        cv.read_transcript(tsv)
    assert sample["path"] not in {r["path"] for r in cv.read_transcript(tsv, strict=False)}
    assert sum(b"\xff" in line for line in tsv.read_bytes().splitlines()) == 1

    sample = result.broken_sample("truncated_shard")
    shard = _shard(result, sample)
    member = shard_members(shard)[f"en_train_0/{sample['path']}"]
    assert shard.stat().st_size < member.offset_data + member.size
    with pytest.raises(tarfile.ReadError):
        read_member(shard, member.name)
    # every clip before the cut is intact
    good = cv.read_transcript(tsv, strict=False)[0]
    assert decode_mp3(read_member(shard, f"en_train_0/{good['path']}"))[1] == 48_000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lang": "xx"}, r"unknown language 'xx'.*en, hi"),
        ({"lang": ""}, r"--lang is empty"),
        ({"train": -1}, r"--train must be a whole number of clips >= 0 \(got -1\)"),
        ({"test": 1.5}, r"--test must be a whole number"),
        ({"train": 0, "test": 0}, r"nothing to write"),
        ({"broken": ["corrupt"]}, r"unknown broken-sample kind 'corrupt'.*corrupt_mp3"),
        ({"shard_size": 0}, r"--shard-size must be a whole number of clips >= 1"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        synth.synthesize(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_refuses_to_overwrite_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    existing = tmp_path / "cv"
    existing.mkdir()
    (existing / "keep.txt").write_text("precious")
    with pytest.raises(UserError, match=r"cv already exists and is not empty.*--force"):
        synth.synthesize(existing, train=1, test=0)
    assert (existing / "keep.txt").read_text() == "precious"

    def failing_speak(*args, **kwargs):
        raise RuntimeError("espeak-ng crashed")

    monkeypatch.setattr(synth, "speak", failing_speak)
    with pytest.raises(RuntimeError, match="espeak-ng crashed"):
        synth.synthesize(existing, train=1, test=0, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cv"]  # no staging folder left behind
    assert (existing / "keep.txt").read_text() == "precious"


def test_cli_writes_a_tree_and_reports_errors(tmp_path):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "whisper_k8s", "dataset", "synth", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    out = tmp_path / "cv"
    done = cli("--out", str(out), "--lang", "en", "--train", "2", "--test", "1", "--broken", "missing_audio")
    assert done.returncode == 0, done.stderr
    assert "broken missing_audio" in done.stdout
    assert cv.read_n_shards(out)["en"]["train"] == 1
    assert len(cv.read_transcript(cv.transcript_path(out, "en", "train"))) == 3

    again = cli("--out", str(out), "--train", "1")
    assert again.returncode == 2 and "--force" in again.stderr and "Traceback" not in again.stderr
    forced = cli("--out", str(out), "--train", "1", "--test", "0", "--force")
    assert forced.returncode == 0 and len(cv.read_transcript(cv.transcript_path(out, "en", "train"))) == 1

    bad = cli("--out", str(tmp_path / "fr"), "--lang", "fr")
    assert bad.returncode == 2 and "unknown language 'fr'" in bad.stderr
    negative = cli("--out", str(tmp_path / "n"), "--train", "-3")
    assert negative.returncode == 2 and "--train must be a whole number" in negative.stderr


def test_layout_reader_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match=r"n_shards\.json is missing"):
        cv.read_n_shards(tmp_path)
    (tmp_path / cv.N_SHARDS_FILE).write_text('{"en": {"train": 1}}')
    with pytest.raises(UserError, match=r"language 'hi' is not in .*n_shards\.json \(it has en\)"):
        cv.shard_paths(tmp_path, "hi", "train")
    with pytest.raises(UserError, match=r"transcript .*train\.tsv is missing"):
        cv.read_transcript(cv.transcript_path(tmp_path, "en", "train"))


def test_tsv_rows_cannot_break_columns_and_short_rows_are_named(tmp_path):
    with pytest.raises(ValueError, match="'sentence' may not contain tabs"):
        cv.format_tsv_row({"path": "a.mp3", "sentence": "one\ttwo"})
    tsv = tmp_path / "train.tsv"
    good = cv.format_tsv_row({"path": "a.mp3", "sentence": "Fine."})
    tsv.write_text("\t".join(cv.TSV_COLUMNS) + "\n" + good + "\nc\tb.mp3\tshort\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"train\.tsv:3: .*3 cells where the header has 10"):
        cv.read_transcript(tsv)
    assert [r["path"] for r in cv.read_transcript(tsv, strict=False)] == ["a.mp3"]
