"""Inference and evaluation: real speech (flite), real tar shards, tiny Whisper models trained in-test.

The prompt convention is proven with a tiny model (the chart's preset) overfit in-test on ONE Common Voice clip
with the trainer's own labels and shift: greedy decoding from our prompt must give that sentence back (WER 0),
which a prompt differing from the training labels in any token would not. That model never saw a timestamp,
so it also proves the plain-window path (and the automatic choice of it). Whisper's token rules, segment
splitting and batching are tested on their own; everything else (formats, windows, detection, CLIs, results
files) runs on that model or a random one, from a Hugging Face folder, a MindSpeed-MM .pth and a Megatron
folder. Real pretrained weights (long-form with timestamps, English-only models) are tests/test_real_whisper.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from whisper_k8s.cli.main import main as cli_main
from whisper_k8s.errors import UserError
from whisper_k8s.inference.audio import SAMPLE_RATE, load_audio
from whisper_k8s.inference.evaluate import evaluate_dataset, iter_samples
from whisper_k8s.inference.metrics import text_normalizer, wer_cer
from whisper_k8s.inference.tokens import label_encoder, vocabulary
from whisper_k8s.inference.transcribe import (
    load_processor,
    transcribe_audio,
    transcribe_files,
    window_encoder,
)

SENTENCE = "The quick brown fox jumps over the lazy dog."


def tiny_fields() -> dict:
    from whisper_k8s.chart import preset_path

    return json.loads(preset_path("tiny").read_text())


def tiny_model(seed: int):
    from whisper_trainer.config import validate_model_fields
    from whisper_trainer.model import build_model

    return build_model(validate_model_fields(tiny_fields()), seed=seed).eval()


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[np.ndarray, int]:
    from whisper_k8s.dataset.speech import Voice, speak

    return speak(Voice("flite", "slt", "female"), 1.0, SENTENCE, tmp_path_factory.mktemp("speech"), "s")


@pytest.fixture(scope="module")
def processor(processor_dir):
    return load_processor(None, processor_dir)


# --- (a) audio ----------------------------------------------------------------------------------------------


def test_mp3_wav_flac_load_as_16k_mono_float32(tmp_path, speech):
    import soxr

    samples, rate = speech
    reference = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ")
    stereo = np.stack([samples, 0.5 * samples], axis=1)  # mono must be their mean: 0.75 x
    sf.write(tmp_path / "clip.wav", samples, rate)
    sf.write(tmp_path / "clip.flac", stereo, rate)
    sf.write(tmp_path / "clip.mp3", soxr.resample(samples, rate, 48_000), 48_000, format="MP3")

    wav, flac, mp3 = (load_audio(tmp_path / f"clip.{ext}") for ext in ("wav", "flac", "mp3"))
    for audio in (wav, flac, mp3):
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert abs(audio.size / SAMPLE_RATE - samples.size / rate) < 0.1  # MP3 adds < 0.1 s of codec delay
    assert np.abs(wav - reference).max() < 1e-3  # 16-bit WAV quantisation only
    assert np.abs(flac - 0.75 * reference).max() < 1e-3
    assert 0.8 < np.sqrt(np.mean(mp3**2)) / np.sqrt(np.mean(reference**2)) < 1.2


def test_unreadable_audio_is_a_user_error_naming_the_file(tmp_path):
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(b"not audio at all" * 100)
    with pytest.raises(UserError, match="broken.mp3"):
        load_audio(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_audio(tmp_path / "absent.wav")


def write_long_file(path: Path, speech, seconds: int) -> Path:
    """Speech clips with pauses, repeated to exactly ``seconds`` at 16 kHz."""
    import soxr

    samples, rate = speech
    clip = np.concatenate([soxr.resample(samples, rate, SAMPLE_RATE), np.zeros(SAMPLE_RATE, np.float32)])
    audio = np.tile(clip, seconds * SAMPLE_RATE // clip.size + 1)[: seconds * SAMPLE_RATE]
    sf.write(path, audio, SAMPLE_RATE)
    return path


def test_windows_follow_the_models_encoder_length(tmp_path, speech, processor):
    """A model built with max_source_positions 250 sees 5 s: a 12 s file is three plain windows, each fed as the
    500 frames its encoder demands (Hugging Face refuses any other length, so decoding at all proves the
    features), the segments' times are the windows' bounds."""
    from whisper_trainer.config import validate_model_fields
    from whisper_trainer.model import build_model

    assert window_encoder(tiny_model(seed=0), processor)[1] == 3000  # every real preset keeps 30 s
    fields = {**tiny_fields(), "max_source_positions": 250}
    short = build_model(validate_model_fields(fields), seed=0).eval()
    audio = load_audio(write_long_file(tmp_path / "long.wav", speech, 12))
    [result] = transcribe_audio(short, processor, [audio], language="en", max_new_tokens=2, timestamps=False)
    assert result.windows == 3 and result.duration_s == 12 and not result.timestamps
    assert all((s.start, s.end) in {(0, 5), (5, 10), (10, 12)} for s in result.segments)


# --- (b) metrics --------------------------------------------------------------------------------------------


def test_wer_cer_after_whisper_normalisation():
    assert wer_cer(["Hello, World!"], ["hello world"], "en") == (0.0, 0.0)
    assert wer_cer(["The colour is grey."], ["the color is gray"], "en") == (0.0, 0.0)  # English spellings
    assert wer_cer(["It costs twenty five dollars"], ["it costs $25"], "en") == (0.0, 0.0)
    assert wer_cer(["a b c d"], ["a x c"], "en")[0] == pytest.approx(2 / 4)  # one substitution, one deletion
    assert wer_cer(["abcd"], ["abed"], "fr") == (pytest.approx(1.0), pytest.approx(0.25))
    # Corpus rates weigh by length: 1 error in 5 reference words, not the mean of 0 and 1.
    assert wer_cer(["a b c d", "e"], ["a b c d", "f"], "en")[0] == pytest.approx(1 / 5)
    assert wer_cer(["नमस्ते दुनिया"], ["नमस्ते, दुनिया!"], "hi") == (0.0, 0.0)  # Basic normaliser
    assert type(text_normalizer("hi")).__name__ == "BasicTextNormalizer"
    assert type(text_normalizer("en-GB")).__name__ == "EnglishTextNormalizer"
    assert wer_cer(["Hello world"], ["hello world"], "de")[0] == 0.0  # Basic normaliser lower-cases


# --- (d) a model that learned one sentence ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(cv_dataset, processor_dir, processor, tmp_path_factory):
    """The tiny preset overfit on the first test clip of the synthetic Common Voice set.

    Labels come from the trainer's LabelEncoder and the decoder inputs from its shift (causal_lm_inputs): the
    training convention itself. Only the decoder's layers and final norm learn (the encoder output is computed
    once), which is enough to memorise one sentence in a few seconds on 2 cores; training stops once every
    teacher-forced token is the arg-max and the loss is below 0.1, so the model is confident (an average
    log-probability far above Whisper's -1 fallback threshold, as a really trained model's).
    """
    from whisper_trainer.data.features import LogMel, mel_filters
    from whisper_trainer.data.labels import LabelEncoder
    from whisper_trainer.model import causal_lm_inputs

    sample = next(iter_samples(cv_dataset, "en", "test", limit=1))
    model = tiny_model(seed=0)
    encoder = LabelEncoder(str(processor_dir))
    labels = torch.tensor([encoder.encode(sample.sentence, encoder.language_id("en"))])
    inputs, targets = causal_lm_inputs(labels, model.config.decoder_start_token_id, model.config.pad_token_id)
    features = LogMel(mel_filters(str(processor_dir), model.config.num_mel_bins))([sample.audio])
    with torch.no_grad():
        memory = model.model.encoder(features).last_hidden_state
    final_norm = model.model.decoder.layer_norm.weight  # scales every logit: learns fast, so the model is sure
    layers = [p for n, p in model.named_parameters() if n.startswith("model.decoder.layers.")]
    optimizer = torch.optim.Adam([{"params": layers}, {"params": [final_norm], "lr": 0.2}], lr=1e-2)
    model.train()
    for _ in range(300):
        logits = model(encoder_outputs=(memory,), decoder_input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits[0], targets[0])
        if loss.item() < 0.1 and bool((logits[0].argmax(-1) == targets[0]).all()):
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1, f"the tiny model did not memorise one sentence in 300 steps (loss {loss.item()})"
    model.eval()

    hf_dir = tmp_path_factory.mktemp("models") / "hf"
    model.save_pretrained(hf_dir)
    processor.save_pretrained(hf_dir)
    return SimpleNamespace(model=model, sample=sample, hf_dir=hf_dir)


def test_overfit_model_transcribes_its_sentence_with_our_prompt(trained, processor):
    sample = trained.sample
    forced, detected = (
        transcribe_audio(trained.model, processor, [sample.audio], language=lang)[0] for lang in ("en", None)
    )
    assert wer_cer([sample.sentence], [forced.text], "en") == (0.0, 0.0), forced.text
    assert (forced.language, forced.language_detected) == ("en", False)
    assert (detected.language, detected.language_detected) == ("en", True)  # it learned <|en|> after SOT
    assert detected.text == forced.text
    # It never saw a timestamp, so "auto" reads it in plain windows; beam search finds the same sentence.
    assert not forced.timestamps and [(s.start, s.end) for s in forced.segments] == [(0, forced.duration_s)]
    [beam] = transcribe_audio(trained.model, processor, [sample.audio], language="en", num_beams=3)
    assert beam.text == forced.text


def test_multilingual_prompts_are_the_label_prefix(processor):
    vocab = vocabulary(processor, tiny_model(seed=0))
    assert not vocab.english_only
    assert vocab.prompt("hi", timestamps=False) == [50258, 50276, 50360, 50364]  # sot hi transcribe notimestamps
    assert vocab.prompt("hi", timestamps=True) == [50258, 50276, 50360]
    label = vocab.encoder.encode("namaste", vocab.encoder.language_id("hi"))
    assert label[:3] == vocab.prompt("hi", timestamps=False)[1:]
    # Previous text: <|startofprev|>, then at most max_previous of the latest tokens, then the prompt.
    assert vocab.prompt("en", timestamps=True, previous=[1, 2, 3], max_previous=2) == [50362, 2, 3, 50258, 50259,
                                                                                      50360]
    assert vocab.prompt("en", timestamps=True, previous=[1, 2, 3], max_previous=0) == [50258, 50259, 50360]
    translate = vocabulary(processor, tiny_model(seed=0), task="translate")
    assert translate.prompt("de", timestamps=True) == [50258, 50261, 50359]  # <|de|><|translate|>


def test_detection_of_an_untrained_model_returns_a_language_code(processor, speech):
    samples, rate = speech
    import soxr

    clip = soxr.resample(samples, rate, SAMPLE_RATE)
    results = transcribe_audio(tiny_model(seed=1), processor, [clip, clip], max_new_tokens=3, timestamps=False)
    assert all(r.language_detected and r.language in label_encoder(processor).language_ids for r in results)


# --- (c) end to end: files, checkpoint formats, CLIs, results files -----------------------------------------


def test_transcribe_cli_long_and_short_files(trained, tmp_path, speech, capsys):
    long_file = write_long_file(tmp_path / "long.flac", speech, 70)
    samples, rate = speech
    sf.write(tmp_path / "short.wav", samples, rate)
    code = cli_main(["transcribe", "--model", str(trained.hf_dir), "--device", "cpu", "--format", "json",
                     str(long_file), str(tmp_path / "short.wav")])
    assert code == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["path"]).name for r in results] == ["long.flac", "short.wav"]
    assert [r["windows"] for r in results] == [3, 1]  # plain windows: the model never learned timestamps
    assert [[(s["start"], s["end"]) for s in r["segments"]] for r in results] == [
        [(0, 30), (30, 60), (60, 70)], [(0, round(samples.size / rate, 3))]]
    assert all(r["language"] == "en" and r["language_detected"] for r in results)
    assert all(r["text"].strip() for r in results)
    assert all(isinstance(s["avg_logprob"], float) for r in results for s in r["segments"])

    out = tmp_path / "subtitles"
    code = cli_main(["transcribe", "--model", str(trained.hf_dir), "--device", "cpu", "--format", "srt",
                     "--out", str(out), str(long_file), str(tmp_path / "short.wav")])
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["long.srt", "short.srt"]
    assert (out / "long.srt").read_text().startswith("1\n00:00:00,000 --> 00:00:30,000\n")
    assert "3\n00:01:00,000 --> 00:01:10,000\n" in (out / "long.srt").read_text()

    code = cli_main(["transcribe", "--model", str(trained.hf_dir), "--language", "English", "--batch-size", "1",
                     str(tmp_path / "short.wav")])
    assert code == 0
    assert "[en, given," in capsys.readouterr().out


def test_mindspeed_pth_and_megatron_checkpoints_transcribe_like_the_hf_folder(trained, processor_dir, tmp_path):
    from whisper_k8s.convert import hf_state_to_mm
    from whisper_k8s.formats import megatron

    mm_state = hf_state_to_mm(trained.model.state_dict(), tiny_fields())
    torch.save(mm_state, tmp_path / "whisper.pth")
    save_dir = tmp_path / "checkpoints"
    megatron.save_file({"model": mm_state, "iteration": 5, "checkpoint_version": megatron.CHECKPOINT_VERSION},
                       megatron.model_file(megatron.iteration_dir(save_dir, 5)))
    megatron.write_tracker(save_dir, 5)

    audio = [trained.sample.audio]
    reference = transcribe_audio(trained.model, load_processor(None, processor_dir), audio, language="en")[0].text
    for checkpoint in (tmp_path / "whisper.pth", save_dir):
        wav = tmp_path / "clip.wav"
        sf.write(wav, trained.sample.audio, SAMPLE_RATE)
        result = transcribe_files(str(checkpoint), None, [wav], language="en", device="cpu",
                                  processor_dir=processor_dir)
        assert [r.text for r in result] == [reference]


def test_evaluate_cli_writes_one_result_per_sample_and_a_summary(trained, cv_dataset, tmp_path, capsys):
    out = tmp_path / "results" / "en-test.jsonl"
    code = cli_main(["evaluate", "--model", str(trained.hf_dir), "--dataset", str(cv_dataset), "--language", "en",
                     "--split", "test", "--out", str(out), "--device", "cpu", "--batch-size", "3"])
    assert code == 0
    summary = capsys.readouterr().out.strip()
    assert summary.startswith("WER ") and " CER " in summary and "on 4 en/test samples" in summary
    records = [json.loads(line) for line in out.read_text().splitlines()]
    transcript = (cv_dataset / "transcript" / "en" / "test.tsv").read_text().splitlines()[1:]
    assert [r["path"] for r in records] == [row.split("\t")[1] for row in transcript]
    assert {"reference", "hypothesis", "reference_normalized", "hypothesis_normalized", "wer", "cer"} <= set(
        records[0]
    )
    assert records[0]["wer"] == 0.0  # the clip it was trained on
    assert records[0]["language"] == "en" and records[0]["timestamps"] is False
    [segment] = records[0]["segments"]
    assert segment["start"] == 0 and segment["end"] > 1 and segment["text"] == records[0]["hypothesis"]
    assert not list(out.parent.glob(".*.tmp"))


def test_evaluate_library_limit_and_scores(trained, cv_dataset, processor_dir):
    summary = evaluate_dataset(trained.model, cv_dataset, "en", "test", processor_dir=processor_dir, limit=1)
    assert (summary.n, summary.wer, summary.cer, summary.skipped) == (1, 0.0, 0.0, 0)
    assert "WER 0.00%" in summary.line()


def test_failed_evaluation_leaves_no_results_file(trained, cv_dataset, processor_dir, tmp_path, monkeypatch):
    import whisper_k8s.inference.transcribe as transcribe_module

    calls = []

    def fail_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("device lost")
        return real(*args, **kwargs)

    real = transcribe_module.transcribe_audio
    monkeypatch.setattr(transcribe_module, "transcribe_audio", fail_on_second_batch)
    out = tmp_path / "results.jsonl"
    with pytest.raises(RuntimeError, match="device lost"):
        evaluate_dataset(trained.model, cv_dataset, "en", "test", processor_dir=processor_dir, out_path=out,
                         batch_size=1)
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_are_user_errors(trained, processor, processor_dir, cv_dataset, tmp_path):
    with pytest.raises(UserError, match="--language 'klingon'"):
        transcribe_audio(trained.model, processor, [trained.sample.audio], language="klingon")
    no_processor = tmp_path / "model-only"
    shutil.copytree(trained.hf_dir, no_processor, ignore=shutil.ignore_patterns("tokenizer*", "*processor*"))
    with pytest.raises(UserError, match="--processor"):
        transcribe_files(str(no_processor), None, [tmp_path / "x.wav"], language="en", device="cpu")
    with pytest.raises(UserError, match="'xx'"):
        evaluate_dataset(trained.model, cv_dataset, "xx", "test", processor_dir=processor_dir)
    with pytest.raises(UserError, match="does not exist"):
        transcribe_files(str(tmp_path / "absent"), None, [], device="cpu")
