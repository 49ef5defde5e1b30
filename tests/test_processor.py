"""The offline Whisper processor: real ids, real BPE, loads with no network, written atomically."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import regex

from whisper_k8s.assets import processor as proc
from whisper_k8s.errors import UserError

# Whisper's pre-tokenisation pattern (openai-whisper's tiktoken encoding) and the sentences it is checked on.
WHISPER_SPLIT = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
SENTENCES = [
    " hello world",
    "The quick brown fox jumps over the lazy dog.",
    "It's 42 degrees; isn't that   hot?!",
    "नमस्ते दुनिया, आज मौसम अच्छा है।",
    "Größe, façade, naïve — 東京 2024",
]


def tiktoken_reference_encode(ranks: dict[bytes, int], text: str) -> list[int]:
    """What openai-whisper's tiktoken does: split, then merge the lowest-ranked adjacent pair until none is left."""
    ids = []
    for piece in WHISPER_SPLIT.findall(text):
        parts = [bytes([b]) for b in piece.encode("utf-8")]
        while len(parts) > 1:
            ranked = [(ranks.get(a + b), i) for i, (a, b) in enumerate(zip(parts, parts[1:], strict=False))]
            ranked = [(rank, i) for rank, i in ranked if rank is not None]
            if not ranked:
                break
            _, i = min(ranked)
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        ids.extend(ranks[p] for p in parts)
    return ids


@pytest.fixture(scope="module")
def tokenizer(processor_dir):
    from transformers import WhisperTokenizer

    return WhisperTokenizer.from_pretrained(processor_dir)


def test_large_v3_special_ids_are_whispers(tokenizer):
    expected = {
        "<|endoftext|>": 50257,
        "<|startoftranscript|>": 50258,
        "<|en|>": 50259,
        "<|hi|>": 50276,
        "<|yue|>": 50358,
        "<|translate|>": 50359,
        "<|transcribe|>": 50360,
        "<|startoflm|>": 50361,
        "<|startofprev|>": 50362,
        "<|nospeech|>": 50363,
        "<|notimestamps|>": 50364,
        "<|0.00|>": 50365,
        "<|30.00|>": 51865,
    }
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in expected} == expected
    assert len(tokenizer) == 51866 == proc.vocab_size("large-v3")
    assert tokenizer.all_special_ids[-1] == 50364  # timestamp decoding relies on this being <|notimestamps|>
    # OpenAI's published tokenizers pad, start and end with <|endoftext|>
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) == (50257, 50257, 50257)


def test_language_order_matches_transformers():
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    assert list(proc.LANGUAGE_CODES) == list(LANGUAGES)
    ids = proc.lang_to_id("large-v3")
    assert len(ids) == 100 and ids["<|en|>"] == 50259 and ids["<|yue|>"] == 50358
    assert len(proc.lang_to_id("v2")) == 99 and "<|yue|>" not in proc.lang_to_id("v2")


def test_other_variants_ids_without_building():
    v2, en = proc.token_ids("v2"), proc.token_ids("en")
    assert (v2["<|endoftext|>"], v2["<|notimestamps|>"], proc.vocab_size("v2")) == (50257, 50363, 51865)
    assert (en["<|endoftext|>"], en["<|startoftranscript|>"], en["<|en|>"]) == (50256, 50257, 50258)
    assert (en["<|notimestamps|>"], proc.vocab_size("en")) == (50362, 51864)
    named = proc.special_ids("large-v3")
    assert named["decoder_start_token_id"] == 50258 and named["no_timestamps_token_id"] == 50364
    assert named["timestamp_begin"] == 50365 and named["vocab_size"] == 51866


def test_encoding_matches_tiktoken_bpe_and_round_trips(tokenizer):
    ranks = proc.read_bpe_ranks(proc.whisper_assets_dir() / "multilingual.tiktoken")
    assert tokenizer(" hello world", add_special_tokens=False).input_ids == [7751, 1002]
    for sentence in SENTENCES:
        ids = tokenizer(sentence, add_special_tokens=False).input_ids
        assert ids == tiktoken_reference_encode(ranks, sentence), sentence
        assert tokenizer.decode(ids) == sentence


def test_folder_has_the_files_hugging_face_repos_have(processor_dir):
    config = json.loads((processor_dir / "tokenizer_config.json").read_text())
    # transformers 4.x (MindSpeed-MM's stack) reads these two spellings; 5.x reads both.
    assert config["additional_special_tokens"][:2] == ["<|endoftext|>", "<|startoftranscript|>"]
    assert "extra_special_tokens" not in config
    assert json.loads((processor_dir / "preprocessor_config.json").read_text())["feature_size"] == 128


def test_english_spelling_normalizer_travels_with_the_folder(processor_dir, tokenizer):
    assert (processor_dir / "normalizer.json").is_file()
    assert tokenizer.normalize("The colour of the Theatre!") == "the color of the theater"


def test_generation_config_fields():
    fields = proc.generation_config_fields("large-v3")
    assert fields["decoder_start_token_id"] == 50258 and fields["no_timestamps_token_id"] == 50364
    assert fields["task_to_id"] == {"translate": 50359, "transcribe": 50360}
    assert fields["lang_to_id"]["<|hi|>"] == 50276 and fields["is_multilingual"] is True
    english = proc.generation_config_fields("en")
    assert english["is_multilingual"] is False and "lang_to_id" not in english
    assert english["decoder_start_token_id"] == 50257


def test_prefix_tokens_for_hindi_transcription(tokenizer):
    tokenizer.set_prefix_tokens(language="hindi", task="transcribe")
    ids = tokenizer("नमस्ते").input_ids
    assert ids[:4] == [50258, 50276, 50360, 50364] and ids[-1] == 50257
    assert tokenizer.decode(ids, skip_special_tokens=True) == "नमस्ते"
    tokenizer.set_prefix_tokens(language="english", task="translate", predict_timestamps=True)
    assert tokenizer("hi").input_ids[:3] == [50258, 50259, 50359]


def test_processor_loads_offline_in_a_fresh_process(processor_dir):
    # A fresh interpreter with the Hub switched off and every proxy pointing at a closed port: any
    # download attempt would fail.
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        HF_HOME=str(processor_dir.parent / "empty-hf-home"),
    )
    script = (
        "import json, sys\n"
        "from transformers import WhisperProcessor\n"
        "p = WhisperProcessor.from_pretrained(sys.argv[1])\n"
        "print(json.dumps([p.feature_extractor.feature_size, len(p.tokenizer),"
        " p.tokenizer.convert_tokens_to_ids('<|notimestamps|>'), type(p.tokenizer).__name__]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(processor_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [128, 51866, 50364, "WhisperTokenizer"]


def test_english_only_variant_replaces_our_large_v3_folder(processor_dir, tmp_path):
    from transformers import WhisperProcessor

    # A folder this function wrote for another variant is rebuilt in place, not refused.
    out = tmp_path / "processor"
    shutil.copytree(processor_dir, out)
    proc.write_processor(out, variant="en")
    loaded = WhisperProcessor.from_pretrained(out)
    assert loaded.feature_extractor.feature_size == 80
    assert len(loaded.tokenizer) == 51864
    assert loaded.tokenizer(" hello world", add_special_tokens=False).input_ids == [23748, 995]
    assert loaded.tokenizer.convert_tokens_to_ids("<|startoftranscript|>") == 50257
    assert json.loads((out / proc.MARKER_FILE).read_text())["variant"] == "en"


def test_english_only_labels_carry_no_language_or_task(processor_dir, tmp_path):
    """Labels continue the prompt each model was trained on: <|lang|><|transcribe|><|notimestamps|> text for a
    multilingual vocabulary, <|notimestamps|> text for an English-only (.en) one, which takes no other language
    and no translate task."""
    from whisper_trainer.data.labels import LabelEncoder

    from whisper_k8s.errors import UserError

    english = tmp_path / "processor-en"
    proc.write_processor(english, variant="en")
    en = LabelEncoder(str(english))
    multi = LabelEncoder(str(processor_dir))
    assert en.english_only and not multi.english_only
    assert en.encode(" hello world", en.language_id("en")) == [50362, 23748, 995, 50256]
    assert multi.encode(" hello world", multi.language_id("en")) == [50259, 50360, 50364, 7751, 1002, 50257]
    with pytest.raises(UserError, match="English-only"):
        en.language_id("hi")
    with pytest.raises(UserError, match="English-only"):
        LabelEncoder(str(english), task="translate")


def test_features_from_a_synthetic_common_voice_clip(processor_dir, cv_dataset):
    import tarfile

    import soxr
    from transformers import WhisperProcessor

    from whisper_k8s.dataset import common_voice_layout as cv
    from whisper_k8s.dataset.speech import decode_mp3

    with tarfile.open(cv.shard_paths(cv_dataset, "en", "test")[0]) as tar:
        first = tar.next()
        samples, rate = decode_mp3(tar.extractfile(first).read())
    processor = WhisperProcessor.from_pretrained(processor_dir)
    audio = soxr.resample(samples, rate, 16_000)
    features = processor.feature_extractor(audio, sampling_rate=16_000, return_tensors="np").input_features
    assert features.shape == (1, 128, 3000)  # large-v3: 128 mel bins x 30 s of 10 ms frames
    voiced_frames = int(len(audio) / 160)
    assert features[0, :, :voiced_frames].std() > features[0, :, voiced_frames + 50 :].std()


def test_write_is_idempotent_and_refuses_foreign_folders(processor_dir, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in processor_dir.iterdir()}
    assert proc.write_processor(processor_dir, variant="large-v3") == processor_dir
    assert {p.name: p.stat().st_mtime_ns for p in processor_dir.iterdir()} == before

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="foreign.*not empty.*--force"):
        proc.write_processor(foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken_build(variant):
        raise RuntimeError("disk full")

    monkeypatch.setattr(proc, "build_processor", broken_build)
    with pytest.raises(RuntimeError, match="disk full"):
        proc.write_processor(tmp_path / "p")
    assert list(tmp_path.iterdir()) == []


def test_unknown_variant_is_named():
    with pytest.raises(UserError, match="'large-v9'.*large-v3, v2, en"):
        proc.write_processor("/nonexistent/x", variant="large-v9")
