"""A long recording of real speech with known sentence times: the test and benchmark input of long-form
transcription.

Sentences from the synthetic dataset's English templates are spoken by the flite voices (a real Whisper
transcribes flite speech well) and joined with short pauses of seeded lengths, so that several sentences
straddle the 30 s window boundaries. The sentence start and end times are kept, so timestamps can be checked.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_k8s.dataset.sentences import deal_sentences
from whisper_k8s.dataset.speech import VOICES, Voice, check_engines, speak

SAMPLE_RATE = 16_000
FLITE_VOICES = tuple(v for v in VOICES["en"] if v.engine == "flite" and v.name != "kal16")  # kal16: a diphone voice


@dataclass
class Recording:
    """16 kHz mono audio and, per sentence, its text and (start, end) in seconds."""

    audio: np.ndarray
    sentences: list[str]
    spans: list[tuple[float, float]]

    @property
    def duration_s(self) -> float:
        return self.audio.size / SAMPLE_RATE

    @property
    def text(self) -> str:
        return " ".join(self.sentences)

    def clips(self) -> list[np.ndarray]:
        """Each sentence's audio alone (the per-sentence baseline of long-form transcription)."""
        return [self.audio[round(a * SAMPLE_RATE): round(b * SAMPLE_RATE)] for a, b in self.spans]


def build_recording(sentences: int = 39, *, seed: int = 0, pause_s: tuple[float, float] = (0.8, 2.6),
                    stretch: float = 1.15, voices: tuple[Voice, ...] = FLITE_VOICES) -> Recording:
    """``sentences`` sentences, voices taken in turn, each followed by a pause drawn from ``pause_s``."""
    import soxr

    check_engines(voices)
    rng = random.Random(seed)
    texts = deal_sentences("en", sentences, rng)
    pieces, spans, cursor = [], [], 0
    with tempfile.TemporaryDirectory(prefix="recording-") as workdir:
        for i, text in enumerate(texts):
            samples, rate = speak(voices[i % len(voices)], stretch, text, Path(workdir), f"s{i}")
            speech = soxr.resample(samples, rate, SAMPLE_RATE).astype(np.float32)
            pause = np.zeros(round(rng.uniform(*pause_s) * SAMPLE_RATE), np.float32)
            spans.append((cursor / SAMPLE_RATE, (cursor + speech.size) / SAMPLE_RATE))
            pieces += [speech, pause]
            cursor += speech.size + pause.size
    return Recording(np.concatenate(pieces), texts, spans)
