"""Evaluate a Whisper checkpoint on a Common Voice 11 split: WER and CER with Whisper's normalisation.

The split is read straight from the tar shards with the trainer's catalogue (``whisper_trainer.data.catalog``),
so evaluation sees exactly the samples, texts and skip rules that training sees. Samples are transcribed in
batches with the language forced to the split's language (as Whisper's own Common Voice numbers are), and
every sample's reference, hypothesis, normalised forms and error counts go to a JSON-lines file written
atomically (temp file, then rename), so an interrupted run leaves no half file.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from whisper_k8s.errors import UserError
from whisper_k8s.inference.audio import load_audio
from whisper_k8s.inference.metrics import Errors, Score, score, text_normalizer

log = logging.getLogger(__name__)


@dataclass
class EvalSummary:
    """Corpus scores of one evaluation run (rates are fractions: 0.125 = 12.5 %)."""

    wer: float
    cer: float
    n: int
    skipped: int
    language: str
    split: str
    model: str
    word_errors: int
    reference_words: int
    out_path: str | None
    seconds: float

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        written = f" -> {self.out_path}" if self.out_path else ""
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        return (
            f"WER {self.wer:.2%} CER {self.cer:.2%} on {self.n} {self.language}/{self.split} samples{skipped} "
            f"({self.word_errors}/{self.reference_words} words wrong) model={self.model} "
            f"in {self.seconds:.1f} s{written}"
        )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Sample:
    """One usable Common Voice clip: its TSV path, reference sentence and 16 kHz audio."""

    path: str
    sentence: str
    audio: object  # np.ndarray


def iter_samples(dataset_root: str | os.PathLike, language: str, split: str, *, limit: int | None = None,
                 skipped: list[str] | None = None) -> Iterator[Sample]:
    """Usable samples of one split in transcript order (at most ``limit``).

    Samples the catalogue flags (missing member, truncated tar, empty text, ...) and clips that do not decode
    are not scored: each is logged and its description appended to ``skipped``.
    """
    from whisper_trainer.data.catalog import build_catalog

    catalog = build_catalog(dataset_root, [language], split)  # now, so a bad dataset fails before any work
    return _usable(catalog, limit, skipped)


def _usable(catalog, limit: int | None, skipped: list[str] | None) -> Iterator[Sample]:
    taken = 0
    for index in range(len(catalog)):
        if limit is not None and taken >= limit:
            return
        problem = catalog.problems[index]
        audio = None
        if problem is None:
            try:
                audio = load_audio(io.BytesIO(_read_member(catalog, index)), name=catalog.describe(index))
            except UserError as err:
                problem = f"undecodable audio ({err})"
        if problem is not None:
            log.warning("skipping %s: %s", catalog.describe(index), problem)
            if skipped is not None:
                skipped.append(f"{catalog.describe(index)}: {problem}")
            continue
        taken += 1
        yield Sample(catalog.paths[index], catalog.texts[index], audio)


def _read_member(catalog, index: int) -> bytes:
    """A clip's bytes, read from its tar shard by byte range (the catalogue indexed the headers)."""
    location = catalog.locations[index]
    with open(catalog.shards[location.shard], "rb") as shard:
        return os.pread(shard.fileno(), location.size, location.offset)


def _batches(samples: Iterator[Sample], size: int) -> Iterator[list[Sample]]:
    batch: list[Sample] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _record(sample: Sample, transcript, scored: Score) -> dict:
    return {
        "path": sample.path,
        "reference": sample.sentence,
        "hypothesis": transcript.text,
        "reference_normalized": scored.reference,
        "hypothesis_normalized": scored.hypothesis,
        "wer": round(scored.words.rate, 6),
        "cer": round(scored.chars.rate, 6),
        "word_errors": scored.words.count,
        "reference_words": scored.words.reference_length,
        "language": transcript.language,
        "timestamps": transcript.timestamps,
        "segments": [segment.as_dict() for segment in transcript.segments],
    }


def evaluate_dataset(model_path, dataset_root: str | os.PathLike, language: str, split: str = "test", *,
                     processor_dir: str | os.PathLike | None = None, limit: int | None = None,
                     out_path: str | os.PathLike | None = None, batch_size: int = 8, device: str = "auto",
                     num_beams: int = 1, max_new_tokens: int | None = None, model_config=None,
                     timestamps: bool | None = None, dtype: str = "auto") -> EvalSummary:
    """Transcribe ``limit`` (default all) usable samples of ``language``/``split`` and score them.

    ``model_path``: a Hugging Face folder, MindSpeed-MM ``.pth`` or Megatron folder (or an already loaded
    model, then ``processor_dir`` is required); ``model_config``: a model.json for a checkpoint that carries
    none and matches no preset. ``out_path``: per-sample JSON lines (optional), each with the transcript's
    segments and their times. ``timestamps``: as ``transcribe_audio``'s (None: when the model predicts them).
    """
    from whisper_k8s.inference.transcribe import load_model, load_processor, transcribe_audio

    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    started = time.monotonic()
    skipped: list[str] = []
    samples = iter_samples(dataset_root, language, split, limit=limit, skipped=skipped)
    loaded = not isinstance(model_path, (str, os.PathLike))
    model = model_path if loaded else load_model(model_path, device, dtype=dtype, config=model_config)
    processor = load_processor(None if loaded else model_path, processor_dir)
    normalize = text_normalizer(language, processor.tokenizer)
    words, chars, n = Errors(), Errors(), 0
    with _ResultsFile(out_path) as results:
        for batch in _batches(samples, batch_size):
            transcripts = transcribe_audio(
                model, processor, [s.audio for s in batch], names=[s.path for s in batch], language=language,
                batch_size=batch_size, num_beams=num_beams, max_new_tokens=max_new_tokens, timestamps=timestamps,
            )
            for sample, transcript in zip(batch, transcripts, strict=True):
                scored = score(sample.sentence, transcript.text, normalize)
                words, chars, n = words + scored.words, chars + scored.chars, n + 1
                results.write(_record(sample, transcript, scored))
            log.info("evaluate: %d samples, running WER %.2f%%", n, 100 * words.rate)
    if n == 0:
        raise UserError(
            f"no usable samples in {dataset_root} for {language}/{split} ({len(skipped)} skipped): "
            "check the dataset, language and split"
        )
    return EvalSummary(
        wer=words.rate, cer=chars.rate, n=n, skipped=len(skipped), language=language, split=split,
        model=_model_name(model_path), word_errors=words.count, reference_words=words.reference_length,
        out_path=os.fspath(out_path) if out_path else None, seconds=time.monotonic() - started,
    )


def _model_name(model_path) -> str:
    if isinstance(model_path, (str, os.PathLike)):
        return os.fspath(model_path)
    return type(model_path).__name__


class _ResultsFile:
    """JSON lines into ``<path>.tmp``, renamed to ``path`` only when the whole evaluation succeeded."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self.tmp = self.path.with_name(f".{self.path.name}.tmp") if self.path else None
        self.file = None

    def __enter__(self) -> _ResultsFile:
        if self.path:
            if self.path.is_dir():
                raise UserError(f"--out {self.path} is a folder: give a file name such as results.jsonl")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.tmp, "w", encoding="utf-8")
        return self

    def write(self, record: dict) -> None:
        if self.file:
            self.file.write(json.dumps(record, ensure_ascii=False) + "\n")

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.file:
            return
        self.file.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
