"""Write a small Common Voice 11 tree of real synthetic speech, optionally with deliberately broken samples.

Tests and demos need data in exactly the shape the trainer reads in production (tar shards of 48 kHz MP3,
CV's TSV columns, ``n_shards.json``) without downloading anything. Sentences come from seeded word lists, the
speech from espeak-ng and flite, so a seed fixes every byte and a tiny model can learn the vocabulary. Broken
samples (``BROKEN_KINDS``) are appended to the train split and recorded in ``synth.json`` so bad-input tests
know which row is which.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import random
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from whisper_k8s.atomic import atomic_directory
from whisper_k8s.dataset import common_voice_layout as cv
from whisper_k8s.dataset.sentences import SENTENCE_TEMPLATES, deal_sentences, long_paragraph
from whisper_k8s.dataset.speech import (
    VOICES,
    Voice,
    check_engines,
    slowest_speed,
    speak,
    speeds_for,
    to_common_voice_mp3,
)
from whisper_k8s.errors import UserError

# What each broken kind writes (all land in the train split, after the good clips).
BROKEN_KINDS = {
    "corrupt_mp3": "the clip's bytes are text, not MP3 frames",
    "empty_audio": "the clip is a zero-byte file",
    "empty_sentence": "real speech, but the sentence cell is empty",
    "whitespace_sentence": "real speech, but the sentence is only spaces",
    "missing_audio": "a TSV row whose clip is in no shard",
    "too_long": "real speech of a paragraph, longer than Whisper's 30 s window",
    "non_utf8_text": "the TSV row's sentence starts with a 0xFF byte (not UTF-8)",
    "truncated_shard": "the last train shard is cut off in the middle of this clip",
}
MANIFEST_FILE = "synth.json"
DEFAULT_SHARD_SIZE = 500
TOO_LONG_SECONDS = 31.0
POOL_SIZE = 2  # the TTS engines are single-threaded processes; two keep a small machine busy
_TAR_MTIME = 1_661_990_400  # 2022-09-01, fixed so shards are byte-identical across runs
_CORRUPT_BYTES = b"corrupt MP3: this is text, not an audio frame\n" * 64
_NOT_UTF8 = b"\xff"


@dataclass
class Clip:
    """One planned TSV row and (usually) one tar member."""

    lang: str
    split: str
    clip_id: int
    sentence: str
    voice: Voice
    speed: object
    broken: str | None = None
    audio: bytes | None = None

    @property
    def path(self) -> str:
        return cv.clip_file_name(self.lang, self.clip_id)

    @property
    def has_member(self) -> bool:
        return self.broken != "missing_audio"


@dataclass
class SynthResult:
    """What was written: usable as a path (``os.fspath(result)`` is the root)."""

    root: Path
    langs: list[str]
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    n_shards: dict[str, dict[str, int]] = field(default_factory=dict)
    broken: list[dict[str, object]] = field(default_factory=list)

    def __fspath__(self) -> str:
        return str(self.root)

    def broken_sample(self, kind: str, lang: str | None = None) -> dict[str, object]:
        """Where the sample of one broken kind went: {kind, lang, split, path, shard}."""
        for sample in self.broken:
            if sample["kind"] == kind and lang in (None, sample["lang"]):
                return sample
        raise KeyError(f"no {kind!r} sample was written (pass broken=[{kind!r}])")


def synthesize(
    out_dir: Path | str,
    lang: str | Sequence[str] = "en",
    train: int = 16,
    test: int = 4,
    seed: int = 0,
    broken: Iterable[str] = (),
    *,
    dev: int = 0,
    shard_size: int = DEFAULT_SHARD_SIZE,
    overwrite: bool = False,
) -> SynthResult:
    """Write a Common Voice 11 tree at ``out_dir`` (atomically) and return what it holds.

    ``lang`` is a CV locale or several (a list or "en,hi"); every language gets ``train``/``dev``/``test``
    clips. ``broken`` names kinds from ``BROKEN_KINDS``, one extra train row each (per language).
    """
    langs = _parse_langs(lang)
    counts = {"train": _count("train", train), "dev": _count("dev", dev), "test": _count("test", test)}
    kinds = _parse_broken(broken)
    if sum(counts.values()) + len(kinds) == 0:
        raise UserError("nothing to write: give --train or --test a count of at least 1")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise UserError(f"--shard-size must be a whole number of clips >= 1 (got {shard_size!r})")
    check_engines(v for code in langs for v in VOICES[code])

    result = SynthResult(root=Path(out_dir).absolute(), langs=langs)
    with atomic_directory(out_dir, overwrite=overwrite, what="dataset") as staging:
        for code in langs:
            clips = _plan_language(code, counts, kinds, seed)
            _write_language(staging, code, clips, shard_size, result)
        (staging / cv.N_SHARDS_FILE).write_text(json.dumps(result.n_shards, indent=2) + "\n")
        manifest = {
            "generator": __name__,
            "seed": seed,
            "langs": langs,
            "rows": result.rows,
            "broken": result.broken,
        }
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return result


def _parse_langs(lang: str | Sequence[str]) -> list[str]:
    langs = [p.strip() for p in lang.split(",")] if isinstance(lang, str) else [str(p).strip() for p in lang]
    langs = [code for code in langs if code]
    if not langs:
        raise UserError("--lang is empty: give a Common Voice locale such as en or hi")
    unknown = [code for code in langs if code not in SENTENCE_TEMPLATES]
    if unknown:
        raise UserError(
            f"unknown language {', '.join(map(repr, unknown))}: synthetic speech exists for "
            f"{', '.join(sorted(SENTENCE_TEMPLATES))} (Common Voice locale codes)"
        )
    return list(dict.fromkeys(langs))


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"--{name} must be a whole number of clips >= 0 (got {value!r})")
    return value


def _parse_broken(broken: Iterable[str]) -> list[str]:
    if isinstance(broken, str):
        broken = [b for b in broken.split(",") if b.strip()]
    wanted = [b.strip() for b in broken]
    unknown = [b for b in wanted if b not in BROKEN_KINDS]
    if unknown:
        raise UserError(
            f"unknown broken-sample kind {', '.join(map(repr, unknown))}: choose from {', '.join(BROKEN_KINDS)}"
        )
    return [kind for kind in BROKEN_KINDS if kind in wanted]  # canonical order: truncated_shard goes last


def _plan_language(lang: str, counts: dict[str, int], kinds: list[str], seed: int) -> list[Clip]:
    """Every clip of one language, decided up front from the seed so threads cannot change the result."""
    rng = random.Random(f"whisper-k8s-synth:{seed}:{lang}")
    wanted = {split: n + (len(kinds) if split == "train" else 0) for split, n in counts.items()}
    ids = iter(rng.sample(range(10_000_000, 40_000_000), sum(wanted.values())))
    # One deal for all splits: like Common Voice, a sentence lands in one split only (until the word lists
    # run out), so the test split measures transcription of new sentences made of known words.
    sentences = iter(deal_sentences(lang, sum(counts.values()), random.Random(f"{seed}:{lang}:sentences")))
    clips = []
    for split, n in counts.items():
        for sentence in itertools.islice(sentences, n):
            voice = rng.choice(VOICES[lang])
            clips.append(Clip(lang, split, next(ids), sentence, voice, rng.choice(speeds_for(voice))))
    for kind in kinds:
        voice = rng.choice(VOICES[lang])
        sentence = deal_sentences(lang, 1, rng)[0]
        clip = Clip(lang, "train", next(ids), sentence, voice, rng.choice(speeds_for(voice)), broken=kind)
        if kind == "too_long":
            clip.voice = VOICES[lang][0]
            clip.speed = slowest_speed(clip.voice)
            clip.sentence = long_paragraph(lang, rng, sentences=12)
        clips.append(clip)
    return clips


def _render_audio(clips: list[Clip]) -> None:
    """Speak and encode the clips two at a time: threads suffice, as the work happens in the TTS processes
    and in libsndfile, which runs without the GIL."""
    with (
        tempfile.TemporaryDirectory(prefix="whisper-k8s-tts-") as workdir,
        ThreadPoolExecutor(POOL_SIZE) as pool,
    ):
        for clip, audio in zip(clips, pool.map(lambda c: _clip_audio(c, Path(workdir)), clips), strict=True):
            clip.audio = audio


def _clip_audio(clip: Clip, workdir: Path) -> bytes:
    if clip.broken == "corrupt_mp3":
        return _CORRUPT_BYTES
    if clip.broken == "empty_audio":
        return b""
    if clip.broken == "too_long":
        return _too_long_audio(clip, workdir)
    samples, rate = speak(clip.voice, clip.speed, clip.sentence, workdir, name=str(clip.clip_id))
    return to_common_voice_mp3(samples, rate)


def _too_long_audio(clip: Clip, workdir: Path) -> bytes:
    """Speech of a paragraph, lengthened sentence by sentence until it runs past 30 s."""
    extra = random.Random(clip.clip_id)
    for _ in range(20):
        samples, rate = speak(clip.voice, clip.speed, clip.sentence, workdir, name=str(clip.clip_id))
        if len(samples) / rate > TOO_LONG_SECONDS:
            return to_common_voice_mp3(samples, rate)
        clip.sentence += " " + long_paragraph(clip.lang, extra, sentences=4)
    raise RuntimeError(
        f"{clip.voice.label} did not speak {TOO_LONG_SECONDS} s from {len(clip.sentence)} chars"
    )


def _write_language(root: Path, lang: str, clips: list[Clip], shard_size: int, result: SynthResult) -> None:
    result.rows[lang], result.n_shards[lang] = {}, {}
    for split in cv.SPLITS:
        split_clips = [c for c in clips if c.split == split]
        members = [c for c in split_clips if c.has_member]
        shards = [members[i : i + shard_size] for i in range(0, len(members), shard_size)]
        shard_of = {}
        for index, shard in enumerate(shards):
            _render_audio(shard)  # one shard at a time keeps memory flat for large splits
            _write_shard(cv.shard_path(root, lang, split, index), lang, split, index, shard)
            shard_of.update((clip.clip_id, index) for clip in shard)
        if split == "train" and shards and shards[-1][-1].broken == "truncated_shard":
            _truncate_last_member(cv.shard_path(root, lang, split, len(shards) - 1))
        _write_transcript(cv.transcript_path(root, lang, split), split_clips)
        result.rows[lang][split] = len(split_clips)
        result.n_shards[lang][split] = len(shards)
        result.broken.extend(
            {"kind": c.broken, "lang": lang, "split": split, "path": c.path, "shard": shard_of.get(c.clip_id)}
            for c in split_clips
            if c.broken
        )


def _write_shard(path: Path, lang: str, split: str, index: int, clips: list[Clip]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for clip in clips:
            info = tarfile.TarInfo(cv.member_name(lang, split, index, clip.path))
            info.size, info.mtime, info.mode = len(clip.audio), _TAR_MTIME, 0o644
            tar.addfile(info, io.BytesIO(clip.audio))
            clip.audio = None


def _truncate_last_member(path: Path) -> None:
    """Cut the shard in the middle of its last member's data, as an interrupted download leaves it."""
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    os.truncate(path, last.offset_data + max(1, last.size // 2))


def _write_transcript(path: Path, clips: list[Clip]) -> None:
    lines = ["\t".join(cv.TSV_COLUMNS).encode("utf-8")]
    for clip in clips:
        lines.append(_tsv_line(clip))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")


def _tsv_line(clip: Clip) -> bytes:
    sentence = {"empty_sentence": "", "whitespace_sentence": "   "}.get(clip.broken or "", clip.sentence)
    speaker = hashlib.sha512(f"whisper-k8s synthetic speaker {clip.voice.label}".encode()).hexdigest()
    row = {
        "client_id": speaker,
        "path": clip.path,
        "sentence": sentence,
        "up_votes": 2,
        "down_votes": 0,
        "age": ("twenties", "thirties", "fourties", "fifties")[int(speaker[:8], 16) % 4],
        "gender": clip.voice.gender,
        "accents": "",
        "locale": clip.lang,
        "segment": "",
    }
    cells = [cell.encode("utf-8") for cell in cv.format_tsv_row(row).split("\t")]
    if clip.broken == "non_utf8_text":
        cells[cv.TSV_COLUMNS.index("sentence")] = _NOT_UTF8 + sentence.encode("utf-8")
    return b"\t".join(cells)
