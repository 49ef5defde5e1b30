"""Audio in: any MP3/WAV/FLAC file (or file object) -> 16 kHz mono float32.

Whisper's encoder sees one window at a time (2 x max_source_positions mel frames of 10 ms: 30 s for every
Whisper; a model built with fewer positions, such as the demo preset, sees less); ``longform`` moves that
window through audio of any length.
"""

from __future__ import annotations

import os
from typing import IO

import numpy as np

from whisper_k8s.errors import UserError

SAMPLE_RATE = 16_000
HOP_LENGTH = 160  # samples per mel frame (10 ms)


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
