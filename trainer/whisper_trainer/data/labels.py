"""Transcript -> Whisper decoder targets, with the language token taken from the Common Voice locale.

Convention (checked against transformers): ``WhisperForConditionalGeneration.forward(labels=...)`` builds
``decoder_input_ids = shift_tokens_right(labels, pad, decoder_start_token_id)``, i.e. it prepends
``<|startoftranscript|>`` itself, and MindSpeed-MM's model shifts the same way. So ``labels`` here are

    <|lang|> <|transcribe|> <|notimestamps|> text <|endoftext|>

(no leading ``<|startoftranscript|>``) and the decoder sees ``<|startoftranscript|> <|lang|> <|transcribe|>
<|notimestamps|> text``: exactly the prompt ``generate()`` forces, so the model learns to continue it. Keeping
the start token in the labels would train on a doubled start token that inference never produces. The text is
encoded as ``WhisperTokenizer(text)`` encodes it (no added leading space), so the labels equal the usual HF
recipe's ``tokenizer(text).input_ids[1:]``. Batches carry no ``decoder_input_ids``: the model's own shift is the
one source of them (its ``pad_token_id`` fills where labels hold -100; those positions carry no loss).

English-only vocabularies (OpenAI's ``.en`` models: GPT-2's byte-level BPE, whose ``<|endoftext|>`` is id 50256;
multilingual ones put it at 50257) were trained without language and task tokens: their labels are
``<|notimestamps|> text <|endoftext|>``, the continuation of the prompt Whisper gives them.
"""

from __future__ import annotations

import os

from whisper_k8s.errors import UserError

START_OF_TRANSCRIPT = "<|startoftranscript|>"
END_OF_TEXT = "<|endoftext|>"
NO_TIMESTAMPS = "<|notimestamps|>"
TRANSLATE = "<|translate|>"
TASKS = ("transcribe", "translate")
TOO_MANY_TOKENS = "too_many_tokens"
GPT2_END_OF_TEXT = 50256  # <|endoftext|> of the English-only (GPT-2) vocabulary


class LabelEncoder:
    """Encodes one transcript into label ids; built once per process from the processor's tokenizer.json.

    The ``tokenizers`` runtime is used directly: the same vocabulary and pre-tokenizer as
    ``transformers.WhisperTokenizer`` without its per-call Python overhead.
    """

    def __init__(self, processor_dir: str, task: str = "transcribe"):
        from tokenizers import Tokenizer

        tokenizer_file = os.path.join(processor_dir, "tokenizer.json")
        if not os.path.isfile(tokenizer_file):
            raise UserError(
                f"{tokenizer_file} does not exist: processor_name_or_path must be a Hugging Face Whisper processor "
                "folder (write one offline with `python -m whisper_k8s assets processor --out DIR`)"
            )
        if task not in TASKS:
            raise UserError(f"task {task!r} is not a Whisper task: use one of {', '.join(TASKS)}")
        self.tokenizer = Tokenizer.from_file(tokenizer_file)
        self.start_id = self._special_id(START_OF_TRANSCRIPT)
        self.end_id = self._special_id(END_OF_TEXT)
        self.no_timestamps_id = self._special_id(NO_TIMESTAMPS)
        self.task_id = self._special_id(f"<|{task}|>")
        self.english_only = self.end_id == GPT2_END_OF_TEXT
        if self.english_only and task != "transcribe":
            raise UserError(f"task {task!r}: the processor's vocabulary is English-only (a .en model) and cannot "
                            "translate: use task transcribe or a multilingual processor")
        translate_id = self._special_id(TRANSLATE)
        # Whisper's language tokens are exactly the ids between <|startoftranscript|> and <|translate|>.
        self.language_ids = {
            self.tokenizer.id_to_token(token_id)[2:-2]: token_id
            for token_id in range(self.start_id + 1, translate_id)
        }

    def _special_id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise UserError(f"the processor's tokenizer has no {token} token: it is not a Whisper tokenizer")
        return token_id

    def language_id(self, locale: str) -> int:
        """Common Voice locale -> Whisper language token id: the full code, else its primary subtag.

        ``zh-CN`` -> ``<|zh|>``, ``sv-SE`` -> ``<|sv|>``, ``yue`` -> ``<|yue|>`` (large-v3 vocabularies).
        """
        for code in (locale.lower(), locale.split("-")[0].lower()):
            if code in self.language_ids and (code == "en" or not self.english_only):
                return self.language_ids[code]
        if self.english_only:
            raise UserError(f"Common Voice language {locale!r}: the processor's vocabulary is English-only (a .en "
                            "model): train on en, or use a multilingual processor (assets processor --variant "
                            "large-v3) and model")
        raise UserError(
            f"Common Voice language {locale!r} has no Whisper language token: Whisper knows "
            f"{', '.join(sorted(self.language_ids))}. Fix basic_parameters.language in data.json"
        )

    def encode(self, text: str, language_id: int) -> list[int]:
        """Label ids for one transcript (see the module docstring for the layout)."""
        body = self.tokenizer.encode(text, add_special_tokens=False).ids
        prompt = [] if self.english_only else [language_id, self.task_id]
        return [*prompt, self.no_timestamps_id, *body, self.end_id]
