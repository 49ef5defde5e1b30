"""Long-form transcription: Whisper's sequential decoding of audio of any length, batched across files.

Per file, a window of the model's length (30 s) starts at ``seek``. With timestamps, the decoded tokens are
cut into segments at each pair of consecutive timestamps; when the window's last segment ends without its
closing pair (its speech runs past the window), the next window starts where the last complete segment
ended, so no word is cut at a window edge; otherwise the next window starts after this one. Without
timestamps (models that never learned them) the windows follow each other and each is one segment.

Safeguards, as in Whisper: a window whose text compresses too well (gzip ratio above 2.4: repetition loops) or
whose average log-probability is below -1 is decoded again at the next temperature (0.0, 0.2 ... 1.0; when
all fail, the attempt with the highest average log-probability is kept, not the last one); a window whose ``<|nospeech|>`` probability is above 0.6 and whose text is unlikely (log-prob below -1) is
silence and yields no segment. Optionally, the text decoded so far is given as context
(``condition_on_previous_text``), except after a window that needed a temperature above 0.5.

Windows of different files are decoded together in one batch (each file at its own ``seek``); the windows of
one file are sequential by construction, since each starts where the previous one's decode ended.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from whisper_k8s.inference.audio import HOP_LENGTH, SAMPLE_RATE
from whisper_k8s.inference.decoding import Hypothesis, decode, next_token_logits
from whisper_k8s.inference.tokens import TIME_PRECISION, Vocabulary

FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH
FRAMES_PER_TOKEN = 2  # mel frames per encoder position = per timestamp step


@dataclass
class Options:
    """How to decode (the defaults are Whisper's)."""

    task: str = "transcribe"
    timestamps: bool | None = None  # None: use them if the model predicts them (see knows_timestamps)
    condition_on_previous_text: bool = False
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    num_beams: int = 1
    batch_size: int = 8
    max_new_tokens: int | None = None  # default: half the decoder's positions (224), as Whisper
    seed: int = 0  # of the sampling at temperatures above 0


@dataclass
class Segment:
    start: float
    end: float
    text: str
    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float

    def as_dict(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "text": self.text,
                "avg_logprob": round(self.avg_logprob, 4), "no_speech_prob": round(self.no_speech_prob, 4),
                "compression_ratio": round(self.compression_ratio, 3), "temperature": self.temperature}


@dataclass
class FileState:
    audio: np.ndarray
    language: str | None
    seek: int = 0  # in mel frames
    segments: list[Segment] = field(default_factory=list)
    context: list[int] = field(default_factory=list)  # tokens given as previous text
    windows: int = 0

    @property
    def frames(self) -> int:
        return -(-self.audio.size // HOP_LENGTH)

    @property
    def active(self) -> bool:
        return self.seek < self.frames


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


@dataclass
class Decoded:
    hypothesis: Hypothesis
    text: str
    compression_ratio: float


class LongFormDecoder:
    """Decode files with one model: ``encode(windows)`` gives encoder states, ``decode_files`` does the rest."""

    def __init__(self, model, vocab: Vocabulary, encode: Callable[[list[np.ndarray]], torch.Tensor],
                 window_frames: int, options: Options, decode_text: Callable[[list[int]], str]):
        self.model, self.vocab, self.encode, self.options = model, vocab, encode, options
        self.window_frames, self.decode_text = window_frames, decode_text
        self.timestamps = options.timestamps if vocab.timestamp_begin is not None else False
        self.max_new_tokens = options.max_new_tokens or model.config.max_target_positions // 2
        self.generator = None

    def decode_files(self, files: Sequence[FileState]) -> None:
        """Fill every file's segments, batching the windows of different files."""
        while active := [f for f in files if f.active]:
            for start in range(0, len(active), self.options.batch_size):
                self._round(active[start : start + self.options.batch_size])

    def _round(self, batch: list[FileState]) -> None:
        windows = [f.audio[f.seek * HOP_LENGTH : (f.seek + self.window_frames) * HOP_LENGTH] for f in batch]
        states = self.encode(windows)
        undetected = [i for i, f in enumerate(batch) if f.language is None]
        if undetected:
            codes = detect_languages(self.model, self.vocab, states[undetected])
            for i, code in zip(undetected, codes, strict=True):
                batch[i].language = code
        if self.timestamps is None:
            self.timestamps = knows_timestamps(self.model, self.vocab, states, [f.language for f in batch])
        prompts = [self._prompt(f) for f in batch]
        for f, result in zip(batch, self._decode_with_fallback(states, prompts), strict=True):
            f.windows += 1
            self._advance(f, result)

    def _prompt(self, f: FileState) -> list[int]:
        previous = f.context if self.options.condition_on_previous_text else []
        return self.vocab.prompt(f.language, timestamps=self.timestamps, previous=previous,
                                 max_previous=self.model.config.max_target_positions // 2 - 1)

    def _decode_with_fallback(self, states: torch.Tensor, prompts: list[list[int]]) -> list[Decoded]:
        options = self.options
        results: list[Decoded | None] = [None] * len(prompts)
        pending = list(range(len(prompts)))
        for temperature in options.temperatures:
            if temperature > 0 and self.generator is None:
                self.generator = torch.Generator(device=states.device).manual_seed(options.seed)
            hypotheses = decode(self.model, states[pending], [prompts[i] for i in pending], self.vocab,
                                timestamps=self.timestamps, temperature=temperature, num_beams=options.num_beams,
                                max_new_tokens=self.max_new_tokens, generator=self.generator)
            retry = []
            for i, hypothesis in zip(pending, hypotheses, strict=True):
                text = self.decode_text(self.vocab.text_tokens(hypothesis.tokens))
                decoded = Decoded(hypothesis, text, compression_ratio(text))
                # When every temperature fails, the likeliest attempt is kept.
                if results[i] is None or hypothesis.avg_logprob > results[i].hypothesis.avg_logprob:
                    results[i] = decoded
                if self._needs_fallback(decoded):
                    retry.append(i)
                else:
                    results[i] = decoded
            pending = retry
            if not pending:
                break
        return results

    def _needs_fallback(self, result: Decoded) -> bool:
        o, h = self.options, result.hypothesis
        unlikely = o.logprob_threshold is not None and h.avg_logprob < o.logprob_threshold
        if o.no_speech_threshold is not None and h.no_speech_prob > o.no_speech_threshold and unlikely:
            return False  # silence: no better text to look for
        repetitive = o.compression_ratio_threshold is not None and result.compression_ratio > o.compression_ratio_threshold
        return unlikely or repetitive

    def _is_silence(self, h: Hypothesis) -> bool:
        o = self.options
        if o.no_speech_threshold is None or h.no_speech_prob <= o.no_speech_threshold:
            return False
        return o.logprob_threshold is None or h.avg_logprob < o.logprob_threshold

    def _advance(self, f: FileState, result: Decoded) -> None:
        h = result.hypothesis
        size = min(self.window_frames, f.frames - f.seek)
        offset = f.seek / FRAMES_PER_SECOND
        if self._is_silence(h):
            f.seek += size
            return
        seconds = min(size / FRAMES_PER_SECOND, f.audio.size / SAMPLE_RATE - offset)  # of audio in the window
        if self.timestamps:
            pieces, consumed = split_segments(h.tokens, self.vocab.timestamp_begin, size)
        else:
            pieces, consumed = [(0.0, seconds, h.tokens)], size
        for start, end, tokens in pieces:
            text = self.decode_text(self.vocab.text_tokens(tokens)).strip()
            end = min(end, seconds)  # no segment ends after the audio
            if text and end > start:
                f.segments.append(Segment(offset + start, offset + end, text, tokens, h.avg_logprob,
                                          h.no_speech_prob, result.compression_ratio, h.temperature))
                f.context = (f.context + tokens)[-self.model.config.max_target_positions // 2:]
        f.seek += consumed or size  # a window always moves on
        if not self.options.condition_on_previous_text or h.temperature > 0.5:
            f.context = []


def split_segments(tokens: list[int], begin: int, size: int) -> tuple[list[tuple[float, float, list[int]]], int]:
    """The segments (start s, end s, tokens) of one window decoded with timestamps (``begin``: the id of
    <|0.00|>; ``size``: the window's frames) and how many frames it consumed.

    Segments end at each pair of consecutive timestamps. If the tokens end with a single timestamp (the last
    segment closed) or hold no pair at all, the whole window is consumed; otherwise the last segment ran past
    the window and the next window starts at the closing timestamp of the last complete one.
    """
    is_time = [t >= begin for t in tokens]
    ends_single = len(tokens) >= 2 and is_time[-1] and not is_time[-2]
    cuts = [i for i in range(1, len(tokens)) if is_time[i] and is_time[i - 1]]
    if not cuts:
        times = [t - begin for t in tokens if t >= begin]
        end = times[-1] * TIME_PRECISION if times and times[-1] > 0 else size / FRAMES_PER_SECOND
        return [(0.0, end, tokens)], size
    bounds = [0, *cuts, len(tokens)] if ends_single else [0, *cuts]
    pieces = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        piece = tokens[a:b]
        pieces.append(((piece[0] - begin) * TIME_PRECISION, (piece[-1] - begin) * TIME_PRECISION, piece))
    if ends_single:
        return pieces, size
    return pieces, (tokens[cuts[-1] - 1] - begin) * FRAMES_PER_TOKEN


def detect_languages(model, vocab: Vocabulary, states: torch.Tensor) -> list[str]:
    """Whisper's language identification: the most likely language token after <|startoftranscript|>."""
    codes = list(vocab.encoder.language_ids)
    ids = torch.tensor([vocab.encoder.language_ids[c] for c in codes], device=states.device)
    logits = next_token_logits(model, states, [[vocab.sot]] * states.shape[0], vocab.eot)
    return [codes[i] for i in logits[:, ids].argmax(dim=-1).tolist()]


def knows_timestamps(model, vocab: Vocabulary, states: torch.Tensor, languages: list[str],
                     threshold: float = 0.01) -> bool:
    """Whether the model learned Whisper's timestamps: after the prompt without <|notimestamps|>, does it put
    at least ``threshold`` of its probability on timestamp tokens (in any of these windows)? OpenAI's tiny.en
    puts 15-41 % there on speech and 2 % on silence; a model trained only on <|notimestamps|> labels (the
    trainer's) puts almost none, and is then decoded in plain windows."""
    prompts = [vocab.prompt(language, timestamps=True) for language in languages]
    probs = next_token_logits(model, states, prompts, vocab.eot).softmax(dim=-1)
    return float(probs[:, vocab.timestamp_begin:].sum(dim=-1).max()) >= threshold
