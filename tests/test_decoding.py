"""Whisper's decoding rules, segment splitting, batching and transcript files, each checked on its own.

The rules and the splitting are pure functions of token ids, so their cases are written out; batching is
checked against decoding each row alone (a random tiny model: any tokens will do, they must be the same).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from whisper_k8s.errors import UserError
from whisper_k8s.inference.decoding import Hypothesis, TokenRules, decode
from whisper_k8s.inference.longform import (
    Decoded,
    FileState,
    LongFormDecoder,
    Options,
    Segment,
    compression_ratio,
    split_segments,
)
from whisper_k8s.inference.output import clock, output_paths, render
from whisper_k8s.inference.tokens import vocabulary
from whisper_k8s.inference.transcribe import Result, load_processor, window_encoder

TIMESTAMP_BEGIN = 50365  # <|0.00|> in the large-v3 vocabulary


@pytest.fixture(scope="module")
def processor(processor_dir):
    return load_processor(None, processor_dir)


@pytest.fixture(scope="module")
def model():
    import json as json_module

    from whisper_trainer.config import validate_model_fields
    from whisper_trainer.model import build_model

    from whisper_k8s.chart import preset_path

    fields = json_module.loads(preset_path("tiny").read_text())
    return build_model(validate_model_fields(fields), seed=3).eval()


@pytest.fixture(scope="module")
def vocab(processor, model):
    return vocabulary(processor, model)


def allowed(vocab, generated: list[int], *, timestamps: bool = True, logits=None) -> set[int]:
    rules = TokenRules(vocab, timestamps, "cpu", 51866)
    if logits is None:  # text likelier than all timestamps together, so only the pairing rules decide
        logits = torch.zeros(1, 51866)
        logits[0, :TIMESTAMP_BEGIN] = 10.0
    out = rules.apply(logits, torch.tensor([generated], dtype=torch.long).view(1, -1))
    return set(torch.isfinite(out[0]).nonzero()[:, 0].tolist())


def ts(seconds: float) -> int:
    return TIMESTAMP_BEGIN + round(seconds / 0.02)


def test_first_token_is_a_timestamp_of_at_most_one_second(vocab):
    assert vocab.timestamp_begin == TIMESTAMP_BEGIN and vocab.max_initial_timestamp == 50
    assert allowed(vocab, []) == set(range(ts(0), ts(1.0) + 1))


def test_plain_mode_has_no_timestamps_and_no_blank_start(vocab):
    first = allowed(vocab, [], timestamps=False)
    assert max(first) < vocab.eot and 220 not in first and 400 in first  # " " never opens a transcript
    later = allowed(vocab, [400], timestamps=False)
    assert vocab.eot in later and not any(t >= vocab.eot + 1 for t in later)  # no control token, no timestamp


def test_timestamps_pair_up_and_never_go_back(vocab):
    text = 400
    after_text = allowed(vocab, [ts(0.2), text])  # a segment's end must be later than its start
    assert text in after_text and vocab.eot in after_text
    assert ts(0.2) not in after_text and ts(0.22) in after_text
    closing = allowed(vocab, [ts(0.2), text, ts(1.0)])  # after an end: the next start (>= it) or the end of text
    assert min(closing) == vocab.eot and ts(0.98) not in closing and ts(1.0) in closing and text not in closing
    after_pair = allowed(vocab, [ts(0.2), text, ts(1.0), ts(1.0)])  # after a start: text
    assert text in after_pair and not any(t >= TIMESTAMP_BEGIN for t in after_pair)


def test_timestamps_win_when_together_likelier_than_any_text(vocab):
    logits = torch.zeros(1, 51866)
    logits[0, 400] = 5.0  # the best text token, e^5 = 148 ...
    logits[0, TIMESTAMP_BEGIN:] = 0.0  # ... against 1501 timestamps of e^0 each
    assert not any(t < TIMESTAMP_BEGIN for t in allowed(vocab, [ts(0.0), 401], logits=logits))
    logits[0, 400] = 9.0  # e^9 = 8103 > 1501: text stays possible
    assert 400 in allowed(vocab, [ts(0.0), 401], logits=logits)


def test_segments_end_at_timestamp_pairs_and_the_next_window_starts_after_the_last_complete_one():
    a, b, c = 300, 301, 302
    tokens = [ts(0), a, ts(1.0), ts(1.0), b, ts(2.5), ts(2.6), c]  # the last segment runs past the window
    segments, consumed = split_segments(tokens, TIMESTAMP_BEGIN, 3000)
    assert [(s, e) for s, e, _ in segments] == [(0.0, 1.0), (1.0, 2.5)]
    assert consumed == 250  # frames: the next window starts at 2.50 s, so the cut sentence is read again
    segments, consumed = split_segments([ts(0), a, ts(1.0), ts(1.0), b, ts(2.5)], TIMESTAMP_BEGIN, 3000)
    assert [(s, e) for s, e, _ in segments] == [(0.0, 1.0), (1.0, 2.5)] and consumed == 3000
    segments, consumed = split_segments([ts(0), a, b, ts(1.5)], TIMESTAMP_BEGIN, 1200)  # one segment, no pair
    assert [(s, e) for s, e, _ in segments] == [(0.0, 1.5)] and consumed == 1200
    segments, consumed = split_segments([a, b], TIMESTAMP_BEGIN, 1200)  # no timestamp: the window's length
    assert [(s, e) for s, e, _ in segments] == [(0.0, 12.0)]


def test_silence_is_skipped_unlikely_or_repetitive_text_falls_back_and_cut_segments_are_read_again(model, vocab):
    decoder = LongFormDecoder(model, vocab, encode=None, window_frames=3000, options=Options(timestamps=True),
                              decode_text=lambda ids: " ".join(map(str, ids)))
    file = FileState(np.zeros(16_000 * 70, np.float32), "en")

    def decoded(tokens, avg_logprob, no_speech_prob, ratio=1.2):
        return Decoded(Hypothesis(tokens, avg_logprob * (len(tokens) + 1), no_speech_prob), "text", ratio)

    silence = decoded([ts(0), 400, ts(2.0)], -1.5, 0.9)
    assert not decoder._needs_fallback(silence)  # <|nospeech|> likely and the text unlikely: no retry ...
    decoder._advance(file, silence)
    assert file.seek == 3000 and file.segments == []  # ... and no segment: the window is skipped
    assert decoder._needs_fallback(decoded([ts(0), 400, ts(2.0)], -1.5, 0.1))  # unlikely text, speech
    assert decoder._needs_fallback(decoded([ts(0), 400, ts(2.0)], -0.2, 0.1, ratio=3.0))  # a repetition loop
    assert not decoder._needs_fallback(decoded([ts(0), 400, ts(2.0)], -0.2, 0.1))
    decoder._advance(file, decoded([ts(0), 400, ts(1.0), ts(1.0), 401, ts(2.5), ts(2.6), 402], -0.3, 0.1))
    assert [(s.start, s.end, s.text) for s in file.segments] == [(30.0, 31.0, "400"), (31.0, 32.5, "401")]
    assert file.seek == 3250  # the next window starts at 32.5 s, where sentence "402" begins


def test_repetition_compresses_well():
    assert compression_ratio("the cat sat on the mat " * 20) > 2.4
    assert compression_ratio("Please close the window tomorrow, Anna has five books.") < 2.4


def test_batched_prompts_of_different_lengths_decode_as_each_alone(model, processor, vocab):
    """Left padding, per-row positions and rows leaving the batch when they end change no token."""
    rng = np.random.default_rng(0)
    encode, _ = window_encoder(model, processor)
    states = encode([rng.normal(0, 0.1, 16000 * n).astype(np.float32) for n in (3, 7, 2)])
    prompts = [vocab.prompt("en", timestamps=False),
               vocab.prompt("de", timestamps=False, previous=[400, 401, 402, 403, 404]),
               vocab.prompt("fr", timestamps=False, previous=[500])]
    with torch.inference_mode():
        together = decode(model, states, prompts, vocab, timestamps=False, max_new_tokens=6)
        alone = [decode(model, states[i : i + 1], [p], vocab, timestamps=False, max_new_tokens=6)[0]
                 for i, p in enumerate(prompts)]
        beams = decode(model, states, prompts, vocab, timestamps=False, num_beams=2, max_new_tokens=4)
    assert [h.tokens for h in together] == [h.tokens for h in alone]
    assert [h.sum_logprob for h in together] == pytest.approx([h.sum_logprob for h in alone], abs=1e-4)
    assert [h.no_speech_prob for h in together] == pytest.approx([h.no_speech_prob for h in alone], abs=1e-5)
    assert len(beams) == 3 and all(len(h.tokens) <= 4 for h in beams)


def result_with_segments() -> Result:
    segments = [Segment(0.0, 2.5, " Tom has three cups.", [], -0.25, 0.01, 1.1, 0.0),
                Segment(3722.5, 3725.04, " John has ten hats.", [], -0.5, 0.02, 1.2, 0.2)]
    return Result("talk.wav", "Tom has three cups. John has ten hats.", "en", False, 3726.0, 125, segments,
                  timestamps=True, english_only=True)


def test_subtitles_text_and_json():
    result = result_with_segments()
    assert clock(3725.04, ",") == "01:02:05,040" and clock(0.0005) == "00:00:00.000"
    assert render(result, "srt") == ("1\n00:00:00,000 --> 00:00:02,500\nTom has three cups.\n\n"
                                     "2\n01:02:02,500 --> 01:02:05,040\nJohn has ten hats.\n")
    assert render(result, "vtt") == ("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nTom has three cups.\n\n"
                                     "01:02:02.500 --> 01:02:05.040\nJohn has ten hats.\n")
    assert render(result, "txt") == "Tom has three cups.\nJohn has ten hats.\n"
    data = json.loads(render(result, "json"))
    assert data["language"] == "en" and data["english_only"] and data["timestamps"]
    assert data["segments"][1] == {"start": 3722.5, "end": 3725.04, "text": " John has ten hats.",
                                   "avg_logprob": -0.5, "no_speech_prob": 0.02, "compression_ratio": 1.2,
                                   "temperature": 0.2}


def test_one_output_file_per_input_and_no_clashes(tmp_path):
    assert output_paths(["a/talk.mp3", "b/interview.flac"], "vtt", tmp_path) == [tmp_path / "talk.vtt",
                                                                                 tmp_path / "interview.vtt"]
    with pytest.raises(UserError, match="both be written to"):
        output_paths(["a/talk.mp3", "b/talk.wav"], "srt", tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file"):
        output_paths(["talk.mp3"], "srt", tmp_path / "file")
