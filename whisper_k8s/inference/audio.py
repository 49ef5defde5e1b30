"""Audio in: any MP3/WAV/FLAC file (or file object) -> 16 kHz mono float32, cut into the model's windows.

Whisper's encoder sees exactly 30 s at a time (2 x max_source_positions = 3000 frames of 10 ms; a model built
with fewer positions, such as the demo preset, sees less), so audio of any length is transcribed window by
window. The windows here are plain consecutive slices (no overlap, no timestamp-driven seeking): simple,
deterministic, and good enough for read speech such as Common Voice, where a sentence rarely straddles a
boundary.
"""

from __future__ import annotations

import os
from typing import IO

import numpy as np

from whisper_k8s.errors import UserError

SAMPLE_RATE = 16_000
WINDOW_SECONDS = 30
WINDOW_SAMPLES = SAMPLE_RATE * WINDOW_SECONDS
HOP_LENGTH = 160  # samples per mel frame


def window_samples(model_config) -> int:
    """Samples in one window of a model: its encoder takes 2 x max_source_positions frames (conv stride 2)."""
    return 2 * int(model_config.max_source_positions) * HOP_LENGTH


def load_audio(source: str | os.PathLike | IO[bytes], name: str | None = None) -> np.ndarray:
    """Decode ``source`` (a path or a binary file object) to a 16 kHz mono float32 array.

    soundfile (libsndfile >= 1.1) reads MP3, WAV and FLAC; several channels are averaged; the resampling is
    the trainer's (soxr HQ, librosa's output length), so inference features equal training features.
    ``name`` labels error messages when ``source`` is a file object.
    """
    import soundfile
    from whisper_trainer.data.audio import resample_16k

    label = name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else repr(source))
    if isinstance(source, (str, os.PathLike)) and not os.path.isfile(source):
        raise UserError(f"audio file {label} does not exist: check the path")
    try:
        samples, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as err:
        raise UserError(
            f"cannot decode audio {label}: {err}. Give an MP3, WAV or FLAC file (libsndfile >= 1.1 reads MP3)"
        ) from err
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return resample_16k(mono, rate) if mono.size else mono


def split_windows(audio: np.ndarray, window_samples: int = WINDOW_SAMPLES) -> list[np.ndarray]:
    """Consecutive ``window_samples`` slices of ``audio``; the last one may be shorter.

    Empty audio still gives one (empty) window, so every file yields a transcript, even an empty one. The
    feature extractor pads each window to the full window length.
    """
    if audio.size == 0:
        return [audio]
    return [audio[start : start + window_samples] for start in range(0, audio.size, window_samples)]
