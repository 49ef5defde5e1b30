"""The decoder's prompts and the special tokens it may or may not emit, for multilingual and English-only models.

Multilingual prompts continue what the trainer's labels teach (its ``LabelEncoder``, the one definition of what
follows ``<|startoftranscript|>``): ``<|lang|><|task|><|notimestamps|>``, without ``<|notimestamps|>`` when
timestamps are decoded. English-only models (OpenAI's ``.en``) were trained without language and task tokens:
their prompt is ``<|startoftranscript|>`` alone (plus ``<|notimestamps|>``). They are recognised by their
vocabulary, GPT-2's byte-level BPE whose ``<|endoftext|>`` is id 50256 (51,864 tokens in all; multilingual
vocabularies put it at 50257), or by a generation config that says ``is_multilingual: false``.

With previous text as context, ``<|startofprev|>`` and up to half the decoder's positions of earlier tokens
come before the prompt, as Whisper does.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from whisper_k8s.errors import UserError

TIME_PRECISION = 0.02  # seconds per timestamp token: one encoder position (2 mel frames of 10 ms)


def processor_folder(processor) -> str:
    """The folder a processor was loaded from (the label encoder reads its tokenizer.json)."""
    folder = getattr(processor.tokenizer, "name_or_path", "") or ""
    if not (Path(folder) / "tokenizer.json").is_file():
        raise UserError(
            f"the processor was not loaded from a folder with tokenizer.json ({folder!r}): save it with "
            "save_pretrained(DIR) and load it with whisper_k8s.inference.transcribe.load_processor"
        )
    return folder


@functools.lru_cache(maxsize=8)
def _label_encoder(folder: str, task: str):
    from whisper_trainer.data.labels import LabelEncoder

    return LabelEncoder(folder, task=task)


def label_encoder(processor, task: str = "transcribe"):
    """The trainer's LabelEncoder for this processor and task (cached: it parses tokenizer.json)."""
    return _label_encoder(processor_folder(processor), task)


def whisper_language(encoder, language: str) -> str:
    """A Whisper language code from a code (``hi``), a name (``Hindi``) or a Common Voice locale (``zh-CN``).

    Locales map the way training labels map them (the trainer's ``LabelEncoder.language_id``).
    """
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    wanted = TO_LANGUAGE_CODE.get(language.strip().lower(), language.strip())
    if encoder.english_only and wanted.split("-")[0].lower() != "en":
        raise UserError(f"--language {language}: this model is English-only (a .en vocabulary): drop --language "
                        "or pass en")
    try:
        token_id = encoder.language_id(wanted)
    except UserError:
        raise UserError(
            f"--language {language!r} has no Whisper language token: use a code such as en, hi, zh "
            f"(one of {len(encoder.language_ids)} this processor knows) or a Common Voice locale such as zh-CN"
        ) from None
    return next(code for code, code_id in encoder.language_ids.items() if code_id == token_id)


def is_english_only(encoder, generation_config=None) -> bool:
    """True for OpenAI's ``.en`` models and any model on their vocabulary (see the module docstring)."""
    if getattr(generation_config, "is_multilingual", None) is False:
        return True
    return encoder.english_only


@dataclass(frozen=True)
class Vocabulary:
    """The special ids of one model + processor, and the prompts built from them."""

    encoder: object  # the trainer's LabelEncoder
    english_only: bool
    task: str
    sot_prev: int
    no_speech: int | None
    timestamp_begin: int | None  # id of <|0.00|>; None when the vocabulary has no timestamp tokens
    suppress: tuple[int, ...]  # never sampled: the model's suppress_tokens plus every control token
    begin_suppress: tuple[int, ...]  # never the first token: " " and <|endoftext|>
    max_initial_timestamp: int  # the first timestamp is at most this index (50: 1.00 s)

    @property
    def sot(self) -> int:
        return self.encoder.start_id

    @property
    def eot(self) -> int:
        return self.encoder.end_id

    @property
    def no_timestamps(self) -> int:
        return self.encoder.no_timestamps_id

    def language(self, language: str | None) -> str | None:
        """The Whisper code for ``language`` (None: to be detected); always ``en`` for English-only models."""
        if self.english_only:
            if language is not None:
                whisper_language(self.encoder, language)  # refuses any language but English
            return "en"
        return None if language is None else whisper_language(self.encoder, language)

    def prompt(self, language: str, *, timestamps: bool, previous: list[int] = (), max_previous: int = 223
               ) -> list[int]:
        """``[<|startofprev|> previous...] <|startoftranscript|> [<|lang|> <|task|>] [<|notimestamps|>]``."""
        label = self.encoder.encode("", self.encoder.language_ids[language])
        prefix = label[: label.index(self.eot)]  # what the labels teach: [<|lang|> <|task|>] <|notimestamps|>
        if timestamps:
            prefix = [token for token in prefix if token != self.no_timestamps]
        context = [self.sot_prev, *previous[-max_previous:]] if previous and max_previous > 0 else []
        return [*context, self.sot, *prefix]

    def is_timestamp(self, token: int) -> bool:
        return self.timestamp_begin is not None and token >= self.timestamp_begin

    def text_tokens(self, tokens: list[int]) -> list[int]:
        return [token for token in tokens if token < self.eot]


def vocabulary(processor, model, task: str = "transcribe") -> Vocabulary:
    """The Vocabulary of ``model`` decoded with ``processor``'s tokenizer, for ``task``."""
    encoder = label_encoder(processor, task)
    english_only = is_english_only(encoder, getattr(model, "generation_config", None))
    if task == "translate" and english_only:
        raise UserError("--task translate: this model is English-only (a .en vocabulary) and cannot translate")
    tokenizer = encoder.tokenizer
    begin = encoder.no_timestamps_id + 1
    has_timestamps = tokenizer.id_to_token(begin) == "<|0.00|>"
    generation = getattr(model, "generation_config", None)
    model_suppress = [int(t) for t in (getattr(generation, "suppress_tokens", None) or []) if int(t) >= 0]
    # Every control token (start, languages, tasks, <|startofprev|>, <|nospeech|>, <|notimestamps|> ...) lies
    # between <|endoftext|> and the first timestamp in Whisper's vocabularies.
    controls = range(encoder.end_id + 1, begin if has_timestamps else tokenizer.get_vocab_size())
    blank = tokenizer.encode(" ", add_special_tokens=False).ids
    return Vocabulary(
        encoder=encoder,
        english_only=english_only,
        task=task,
        sot_prev=_required(tokenizer, "<|startofprev|>"),
        no_speech=tokenizer.token_to_id("<|nospeech|>"),
        timestamp_begin=begin if has_timestamps else None,
        suppress=tuple(sorted(set(model_suppress) | set(controls))),
        begin_suppress=tuple([*blank, encoder.end_id]),
        max_initial_timestamp=int(getattr(generation, "max_initial_timestamp_index", None) or 50),
    )


def _required(tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise UserError(f"the processor's tokenizer has no {token} token: it is not a Whisper tokenizer")
    return token_id
