"""WER and CER the way Whisper's papers report them: both texts normalised first, errors summed over the corpus.

Normalisation is Whisper's own (the copies transformers ships): ``EnglishTextNormalizer`` for English (it
lower-cases, drops punctuation, spells numbers and British spellings the same way), ``BasicTextNormalizer``
for every other language (lower-case, symbols and punctuation to spaces). Edit distances come from jiwer.
A corpus score is total errors over total reference length, not the mean of per-sentence scores, so short
sentences do not weigh more than long ones.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)


def english_spelling_mapping(tokenizer=None) -> dict[str, str]:
    """British -> American spellings for the English normaliser.

    A processor folder with ``normalizer.json`` carries it on its tokenizer; otherwise it comes from the
    openai-whisper package (installed for its assets). Without either, English scoring still works, only
    spelling variants count as errors (a warning says so).
    """
    mapping = getattr(tokenizer, "english_spelling_normalizer", None)
    if mapping:
        return dict(mapping)
    from whisper_k8s.assets.processor import whisper_assets_dir
    from whisper_k8s.errors import UserError

    try:
        return json.loads((whisper_assets_dir().parent / "normalizers" / "english.json").read_text())
    except (UserError, OSError):
        log.warning("no English spelling map (normalizer.json or openai-whisper): spelling variants count")
        return {}


def text_normalizer(language: str, tokenizer=None) -> Callable[[str], str]:
    """Whisper's normaliser for ``language``: English for ``en`` (and ``en-*``), Basic for the others."""
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    if language.lower().split("-")[0] in ("en", "english"):
        return EnglishTextNormalizer(english_spelling_mapping(tokenizer))
    return BasicTextNormalizer()


@dataclass
class Errors:
    """Edit operations between one reference and one hypothesis (words or characters)."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_length: int = 0

    @property
    def count(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Errors per reference unit; an empty reference scores 0 when matched, else 1 per inserted unit."""
        if self.reference_length == 0:
            return float(self.count)
        return self.count / self.reference_length

    def __add__(self, other: Errors) -> Errors:
        return Errors(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_length + other.reference_length,
        )


def word_errors(reference: str, hypothesis: str) -> Errors:
    """Word-level edit operations of two already normalised texts."""
    import jiwer

    out = jiwer.process_words(reference, hypothesis)
    return Errors(out.substitutions, out.deletions, out.insertions, out.hits + out.substitutions + out.deletions)


def char_errors(reference: str, hypothesis: str) -> Errors:
    """Character-level edit operations (spaces included, as jiwer's CER counts them)."""
    import jiwer

    out = jiwer.process_characters(reference, hypothesis)
    return Errors(out.substitutions, out.deletions, out.insertions, out.hits + out.substitutions + out.deletions)


@dataclass
class Score:
    """One sample's normalised texts and its errors."""

    reference: str
    hypothesis: str
    words: Errors
    chars: Errors


def score(reference: str, hypothesis: str, normalize: Callable[[str], str]) -> Score:
    ref, hyp = normalize(reference).strip(), normalize(hypothesis).strip()
    return Score(ref, hyp, word_errors(ref, hyp), char_errors(ref, hyp))


def corpus_rates(scores: Iterable[Score]) -> tuple[float, float]:
    """(WER, CER) over a corpus: summed errors over summed reference lengths."""
    words, chars = Errors(), Errors()
    for item in scores:
        words, chars = words + item.words, chars + item.chars
    return words.rate, chars.rate


def wer_cer(references: list[str], hypotheses: list[str], language: str, tokenizer=None) -> tuple[float, float]:
    """Corpus (WER, CER) of paired texts after Whisper's normalisation for ``language``."""
    normalize = text_normalizer(language, tokenizer)
    return corpus_rates(score(r, h, normalize) for r, h in zip(references, hypotheses, strict=True))
