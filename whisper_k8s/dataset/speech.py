"""Real speech for test data: espeak-ng and flite voices at a few speeds, encoded as Common Voice-like MP3.

Two engines and several voices and speeds give the variety a model needs to learn words rather than one
waveform; both engines are deterministic, and so is libsndfile's MP3 encoder, so a seed fixes every byte.
flite only speaks English; other languages use espeak-ng's voices for them.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from whisper_k8s.dataset.common_voice_layout import SAMPLE_RATE
from whisper_k8s.errors import UserError


@dataclass(frozen=True)
class Voice:
    engine: str  # "espeak-ng" or "flite"
    name: str  # espeak-ng voice (with variant) or flite voice
    gender: str  # Common Voice's gender column: "male" / "female"

    @property
    def label(self) -> str:
        return f"{self.engine}:{self.name}"


# Speeds: espeak-ng words per minute; flite duration stretch (above 1 is slower).
ESPEAK_SPEEDS = (145, 165, 185)
FLITE_STRETCHES = (0.9, 1.0, 1.15)

VOICES = {
    "en": (
        Voice("flite", "slt", "female"),
        Voice("flite", "rms", "male"),
        Voice("flite", "awb", "male"),
        Voice("flite", "kal16", "male"),
        Voice("espeak-ng", "en-us", "male"),
        Voice("espeak-ng", "en-gb", "male"),
        Voice("espeak-ng", "en-us+f3", "female"),
        Voice("espeak-ng", "en-gb+f2", "female"),
    ),
    "hi": (
        Voice("espeak-ng", "hi", "male"),
        Voice("espeak-ng", "hi+m3", "male"),
        Voice("espeak-ng", "hi+f3", "female"),
        Voice("espeak-ng", "hi+f4", "female"),
    ),
}


def speeds_for(voice: Voice) -> tuple:
    return FLITE_STRETCHES if voice.engine == "flite" else ESPEAK_SPEEDS


def slowest_speed(voice: Voice):
    return max(FLITE_STRETCHES) if voice.engine == "flite" else min(ESPEAK_SPEEDS)


def check_engines(voices) -> None:
    for engine in sorted({v.engine for v in voices}):
        if shutil.which(engine) is None:
            raise UserError(
                f"{engine} is not installed, so no speech can be synthesised: "
                f"`sudo apt-get install {engine}` (or `make setup`)"
            )


def _command(voice: Voice, speed, text_file: Path, wav_file: Path) -> list[str]:
    if voice.engine == "flite":
        stretch = f"duration_stretch={speed}"
        return ["flite", "-voice", voice.name, "-f", str(text_file), "-o", str(wav_file), "--setf", stretch]
    return ["espeak-ng", "-v", voice.name, "-s", str(speed), "-f", str(text_file), "-w", str(wav_file)]


def speak(voice: Voice, speed, text: str, workdir: Path, name: str):
    """Speak ``text`` and return (float32 samples, sample rate); ``name`` keeps parallel calls' files apart."""
    import soundfile as sf

    stem = workdir / name
    text_file, wav_file = stem.with_suffix(".txt"), stem.with_suffix(".wav")
    text_file.write_text(text + "\n", encoding="utf-8")
    done = subprocess.run(_command(voice, speed, text_file, wav_file), capture_output=True, text=True)
    if done.returncode != 0 or not wav_file.is_file():
        raise RuntimeError(f"{voice.label} failed to speak {text!r}: {done.stderr.strip()[:300]}")
    samples, rate = sf.read(wav_file, dtype="float32")
    text_file.unlink()
    wav_file.unlink()
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    return samples, rate


def to_common_voice_mp3(samples, rate: int) -> bytes:
    """Resample to 48 kHz mono and encode as MP3, as Common Voice distributes its clips."""
    import numpy as np
    import soundfile as sf
    import soxr

    audio = soxr.resample(samples, rate, SAMPLE_RATE) if rate != SAMPLE_RATE else samples
    audio = np.clip(audio, -1.0, 1.0).astype("float32")
    buffer = io.BytesIO()
    sf.write(buffer, audio, SAMPLE_RATE, format="MP3")
    return buffer.getvalue()


def decode_mp3(data: bytes):
    """(samples, rate) of MP3 bytes; raises soundfile's error when they are not audio."""
    import soundfile as sf

    return sf.read(io.BytesIO(data), dtype="float32")
