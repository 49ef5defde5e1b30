"""Transcribe audio with any Whisper checkpoint of ours: long files in the model's windows (30 s for Whisper),
batched, language given or detected, on NPU, GPU or CPU.

Why not ``model.generate(language=...)``: Whisper's own generate needs a complete generation_config
(``lang_to_id``, ``task_to_id``, ...), which models pretrained from scratch here and converted MindSpeed-MM
checkpoints do not carry. So the decoder prompt is ``<|startoftranscript|>`` followed by the prefix the
trainer's labels hold (its LabelEncoder: ``<|lang|><|transcribe|><|notimestamps|>``), and the plain
encoder-decoder generation loop of transformers runs greedy or beam search from it until ``<|endoftext|>``. Language detection is Whisper's: one decoder step after ``<|startoftranscript|>`` on the
first window, arg-max over the language tokens.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from whisper_k8s.errors import UserError
from whisper_k8s.inference.audio import SAMPLE_RATE, load_audio, split_windows, window_samples


@dataclass
class Result:
    """The transcript of one audio file (or one in-memory clip)."""

    path: str
    text: str
    language: str
    language_detected: bool
    duration_s: float
    windows: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "text": self.text,
            "language": self.language,
            "language_detected": self.language_detected,
            "duration_s": round(self.duration_s, 3),
            "windows": self.windows,
        }


# --- device, model and processor -------------------------------------------------------------------------


def resolve_device(name: str = "auto"):
    """``auto`` picks an Ascend NPU, else CUDA, else the CPU (the trainer's rule, so both agree)."""
    import torch
    from whisper_trainer.parallel import pick_device_type

    return torch.device(pick_device_type(name))


def load_model(path: str | os.PathLike, device: str = "auto", dtype=None, config=None):
    """A WhisperForConditionalGeneration in eval mode from a Hugging Face folder, a MindSpeed-MM ``.pth`` or a
    Megatron checkpoint (save or ``iter_*`` folder), the last two converted in memory by the converter.

    ``dtype``: "fp32"/"bf16"/"fp16" (default: fp32 on the CPU, where bf16 matmuls are slow, else the
    checkpoint's own); ``config``: a model.json for checkpoints that carry none and match no preset.
    """
    from whisper_k8s.convert import load_hf_model

    path = Path(path)
    if not path.exists():
        raise UserError(f"--model {path} does not exist: give a Hugging Face folder, a .pth or a checkpoint folder")
    torch_device = resolve_device(device) if isinstance(device, str) else device
    if dtype is None and torch_device.type == "cpu":
        dtype = "fp32"
    return load_hf_model(path, config=config, device=torch_device, dtype=dtype).eval()


def load_processor(model_path: str | os.PathLike | None = None, processor_dir: str | os.PathLike | None = None):
    """The WhisperProcessor from ``processor_dir`` if given, else from the model folder."""
    from transformers import WhisperProcessor

    where = processor_dir if processor_dir is not None else model_path
    if where is not None and _has_processor(Path(where)):
        return WhisperProcessor.from_pretrained(where)
    found = f"in {where}" if where is not None else "given"
    raise UserError(
        f"no Whisper processor (tokenizer.json and preprocessor_config.json) {found}: pass --processor DIR "
        "(e.g. one written by `python -m whisper_k8s assets processor DIR`)"
    )


def _has_processor(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in ("tokenizer.json", "vocab.json")) and any(
        (path / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")
    )


# --- tokens -------------------------------------------------------------------------------------------------
# The decoder prompt is derived from the trainer's label encoder (whisper_trainer.data.labels), the one
# definition of what follows <|startoftranscript|>, so inference continues exactly what training taught.


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
    try:
        token_id = encoder.language_id(wanted)
    except UserError:
        raise UserError(
            f"--language {language!r} has no Whisper language token: use a code such as en, hi, zh "
            f"(one of {len(encoder.language_ids)} this processor knows) or a Common Voice locale such as zh-CN"
        ) from None
    return next(code for code, code_id in encoder.language_ids.items() if code_id == token_id)


def decoder_prompt_ids(encoder, code: str) -> list[int]:
    """``<|startoftranscript|>`` followed by what every label holds before its text, for language ``code``:
    ``<|lang|><|task|><|notimestamps|>`` under the current label convention."""
    prefix = encoder.encode("", encoder.language_ids[code])
    return [encoder.start_id, *prefix[: -1 if prefix[-1] == encoder.end_id else None]]


# --- decoding -----------------------------------------------------------------------------------------------


def _features(processor, windows: Sequence[np.ndarray], model):
    """Log-mel features padded to the model's window (30 s for Whisper), on the model's device and dtype."""
    parameter = next(model.parameters())
    features = processor.feature_extractor(
        list(windows), sampling_rate=SAMPLE_RATE, return_tensors="pt", max_length=window_samples(model.config)
    ).input_features
    return features.to(device=parameter.device, dtype=parameter.dtype)


def detect_languages(model, processor, windows: Sequence[np.ndarray]) -> list[str]:
    """Whisper's language identification: the most likely language token after <|startoftranscript|>."""
    import torch

    encoder = label_encoder(processor)
    codes = list(encoder.language_ids)
    features = _features(processor, windows, model)
    ids = torch.tensor([encoder.language_ids[code] for code in codes], device=features.device)
    start = torch.full((len(windows), 1), encoder.start_id, device=features.device)
    with torch.inference_mode():
        logits = model(input_features=features, decoder_input_ids=start).logits[:, -1, :]
    return [codes[i] for i in logits[:, ids].argmax(dim=-1).tolist()]


def generate_tokens(model, processor, windows: Sequence[np.ndarray], prompts: list[list[int]], *,
                    num_beams: int = 1, max_new_tokens: int | None = None) -> list[list[int]]:
    """Text token ids (prompt and <|endoftext|> removed) for each window, decoded from its own prompt.

    Special tokens other than <|endoftext|> are suppressed, so the output is plain text. ``max_new_tokens``
    defaults to half the decoder's positions (224 of 448), openai-whisper's own ``sample_len``: 30 s of speech
    needs about 100 tokens, and a model that never stops (an untrained one) costs half as much. It is capped
    so that prompt plus text fit the 448 positions.
    """
    import torch
    from transformers import GenerationConfig, LogitsProcessorList
    from transformers.generation import GenerationMixin

    end = label_encoder(processor).end_id
    features = _features(processor, windows, model)
    prompt = torch.tensor(prompts, device=features.device)
    room = model.config.max_target_positions - prompt.shape[1]
    wanted = max_new_tokens or model.config.max_target_positions // 2
    config = GenerationConfig(
        # A total length, not max_new_tokens: the model's own generation_config carries max_length, and giving
        # both makes transformers warn on every batch. The prompt is the same length in every row.
        max_length=prompt.shape[1] + min(room, wanted),
        num_beams=num_beams,
        do_sample=False,
        eos_token_id=end,
        pad_token_id=end,
        decoder_start_token_id=prompts[0][0],
    )
    with torch.inference_mode():
        # The generic encoder-decoder loop, deliberately not Whisper's generate (see the module docstring).
        out = GenerationMixin.generate(
            model,
            input_features=features,
            attention_mask=torch.ones(features.shape[0], features.shape[-1], dtype=torch.long,
                                      device=features.device),
            decoder_input_ids=prompt,
            decoder_attention_mask=torch.ones_like(prompt),
            generation_config=config,
            logits_processor=LogitsProcessorList([_suppress_special_tokens(end)]),
        )
    return [_strip(row, prompt.shape[1], end) for row in out.tolist()]


def _suppress_special_tokens(end: int):
    """A logits processor that forbids every id after <|endoftext|> (languages, tasks, timestamps, ...).

    In Whisper's vocabulary all special tokens follow <|endoftext|>, so one slice does it; transformers'
    ``suppress_tokens`` would run ``torch.isin`` over the whole vocabulary at every step instead.
    """

    def suppress(input_ids, scores):
        scores[:, end + 1 :] = float("-inf")
        return scores

    return suppress


def _strip(row: list[int], prompt_length: int, end: int) -> list[int]:
    text = row[prompt_length:]
    return text[: text.index(end)] if end in text else text


# --- files and clips ----------------------------------------------------------------------------------------


def transcribe_audio(model, processor, clips: Sequence[np.ndarray], *, names: Sequence[str] | None = None,
                     language: str | None = None, batch_size: int = 8, num_beams: int = 1,
                     task: str = "transcribe", max_new_tokens: int | None = None) -> list[Result]:
    """Transcribe 16 kHz mono clips of any length: windows of all clips are batched together."""
    for flag, value in (("--batch-size", batch_size), ("--num-beams", num_beams), ("--max-new-tokens", max_new_tokens)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    tokenizer = processor.tokenizer
    encoder = label_encoder(processor, task)
    names = list(names) if names is not None else [f"clip{i}" for i in range(len(clips))]
    windows = [split_windows(clip, window_samples(model.config)) for clip in clips]
    if language is None:
        languages = _batched(lambda b: detect_languages(model, processor, b), [w[0] for w in windows], batch_size)
    else:
        languages = [whisper_language(encoder, language)] * len(clips)
    flat = [(i, window) for i, clip_windows in enumerate(windows) for window in clip_windows]
    tokens = _batched(
        lambda batch: generate_tokens(
            model, processor, [window for _, window in batch],
            [decoder_prompt_ids(encoder, languages[i]) for i, _ in batch],
            num_beams=num_beams, max_new_tokens=max_new_tokens,
        ),
        flat,
        batch_size,
    )
    texts: list[list[str]] = [[] for _ in clips]
    for (i, _), ids in zip(flat, tokens, strict=True):
        texts[i].append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    return [
        Result(
            path=names[i],
            text=" ".join(t for t in texts[i] if t),
            language=languages[i],
            language_detected=language is None,
            duration_s=clips[i].size / SAMPLE_RATE,
            windows=len(windows[i]),
        )
        for i in range(len(clips))
    ]


def _batched(fn, items: list, batch_size: int) -> list:
    out: list = []
    for start in range(0, len(items), batch_size):
        out.extend(fn(items[start : start + batch_size]))
    return out


def transcribe_files(model, processor, paths: Sequence[str | os.PathLike], language: str | None = None,
                     batch_size: int = 8, device: str = "auto", *, num_beams: int = 1,
                     processor_dir: str | os.PathLike | None = None, task: str = "transcribe",
                     max_new_tokens: int | None = None, model_config=None) -> list[Result]:
    """Transcribe audio files; ``model`` and ``processor`` may be loaded objects or paths.

    A path model is loaded on ``device`` (a loaded model stays where it is; ``model_config`` as in
    ``load_model``); a None processor is read from ``processor_dir`` or the model folder.
    """
    if isinstance(model, (str, os.PathLike)):
        model_path = model
        model = load_model(model_path, device, config=model_config)
    else:
        model_path = None
    if processor is None or isinstance(processor, (str, os.PathLike)):
        processor = load_processor(model_path, processor or processor_dir)
    clips = [load_audio(path) for path in paths]
    return transcribe_audio(
        model, processor, clips, names=[os.fspath(p) for p in paths], language=language,
        batch_size=batch_size, num_beams=num_beams, task=task, max_new_tokens=max_new_tokens,
    )
