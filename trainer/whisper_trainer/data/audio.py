"""MP3 bytes -> 16 kHz mono float32, the same samples ``librosa.load(path, sr=16000)`` returns.

librosa is the reference the Hugging Face recipes use: libsndfile decodes to float32, channels are averaged,
soxr resamples with its HQ filter, and the result is padded/trimmed to ceil(n x 16000 / rate) samples. Doing
exactly that (without librosa's import and per-call overhead) keeps our features equal to the HF baseline.
"""

from __future__ import annotations

import io
import math

import numpy as np

SAMPLE_RATE = 16_000
MAX_SECONDS = 30
MAX_SAMPLES = SAMPLE_RATE * MAX_SECONDS

CORRUPT_AUDIO = "corrupt_audio"
EMPTY_AUDIO = "empty_audio"
TOO_LONG = "too_long"


class BadAudio(ValueError):
    """The bytes are not usable speech; ``reason`` is the skip counter it goes to."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def decode_16k(data: bytes, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Decode one audio file held in memory; raise BadAudio for corrupt, empty or too long audio.

    ``max_seconds`` is the model's window (2 x max_source_positions frames of 10 ms): 30 s for every Whisper
    size, shorter for a model built with fewer encoder positions (the demo's). Longer clips cannot be seen
    whole, so they are skipped as too_long rather than cut (a cut clip would be trained on the wrong text).
    """
    import soundfile

    if not data:
        raise BadAudio(EMPTY_AUDIO, "the file has zero bytes")
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile raises several types for garbage input; all mean "corrupt"
        message = str(err).rsplit(": ", 1)[-1]  # drop libsndfile's "Error opening <BytesIO ...>" prefix
        raise BadAudio(CORRUPT_AUDIO, f"libsndfile cannot decode it: {message}") from err
    if samples.shape[0] == 0:
        raise BadAudio(EMPTY_AUDIO, "audio has no samples")
    if samples.shape[0] > max_seconds * rate:
        raise BadAudio(TOO_LONG, f"audio lasts {samples.shape[0] / rate:.1f} s, over the model's {max_seconds:g} s "
                                 "window (2 x max_source_positions frames of 10 ms)")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return resample_16k(mono, rate)


def resample_16k(mono: np.ndarray, rate: int) -> np.ndarray:
    """soxr HQ to 16 kHz, length fixed to ceil(n x ratio) as librosa.resample(fix=True) does."""
    if rate == SAMPLE_RATE:
        return np.ascontiguousarray(mono, dtype=np.float32)
    import soxr

    resampled = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    wanted = math.ceil(mono.shape[0] * (SAMPLE_RATE / rate))  # librosa's float expression, for equal lengths
    if resampled.shape[0] > wanted:
        resampled = resampled[:wanted]
    elif resampled.shape[0] < wanted:
        resampled = np.pad(resampled, (0, wanted - resampled.shape[0]))
    return np.ascontiguousarray(resampled, dtype=np.float32)
