"""Transcribe audio with any Whisper checkpoint of ours or OpenAI's: audio of any length, timestamps, language
given or detected (none for English-only models), batched across files, on NPU, GPU or CPU.

The decoding itself is ``longform`` (Whisper's sequential long-form algorithm) over ``decoding`` (batched
incremental decoding with Whisper's token rules); prompts come from ``tokens``. Why not transformers'
``model.generate``: Whisper's own generate needs a complete generation_config (``lang_to_id``, ...), which
models pretrained from scratch here and converted MindSpeed-MM checkpoints may not carry, and the prompt must
continue exactly what the trainer's labels teach. Features are the trainer's log-mel (``LogMel``), equal to
the Hugging Face feature extractor's, so inference sees what training saw.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from whisper_k8s.errors import UserError
from whisper_k8s.inference.audio import SAMPLE_RATE, load_audio
from whisper_k8s.inference.longform import FileState, LongFormDecoder, Options, Segment
from whisper_k8s.inference.tokens import processor_folder, vocabulary

DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")


@dataclass
class Result:
    """The transcript of one audio file (or one in-memory clip)."""

    path: str
    text: str
    language: str
    language_detected: bool
    duration_s: float
    windows: int
    segments: list[Segment] = field(default_factory=list)
    timestamps: bool = False  # segment times come from the model's timestamp tokens (else: window bounds)
    english_only: bool = False  # an English-only (.en) model: no language was detected or given

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "text": self.text,
            "language": self.language,
            "language_detected": self.language_detected,
            "duration_s": round(self.duration_s, 3),
            "windows": self.windows,
            "timestamps": self.timestamps,
            "english_only": self.english_only,
            "segments": [s.as_dict() for s in self.segments],
        }


# --- device, model and processor -------------------------------------------------------------------------


def resolve_device(name: str = "auto"):
    """``auto`` picks an Ascend NPU, else CUDA, else the CPU (the trainer's rule, so both agree)."""
    import torch
    from whisper_trainer.parallel import pick_device_type

    return torch.device(pick_device_type(name))


def load_model(path: str | os.PathLike, device: str = "auto", dtype: str | None = "auto", config=None):
    """A WhisperForConditionalGeneration in eval mode from a Hugging Face folder, a MindSpeed-MM ``.pth`` or a
    Megatron checkpoint (save or ``iter_*`` folder), the last two converted in memory by the converter.

    ``dtype``: "fp32"/"bf16"/"fp16", or "auto": fp32 on the CPU (where half-precision matmuls are slow), on an
    accelerator the checkpoint's own half precision, fp16 for an fp32 checkpoint (Whisper's inference
    precision). ``config``: a model.json for checkpoints that carry none and match no preset.
    """
    import torch

    from whisper_k8s.convert import load_hf_model

    path = Path(path)
    if not path.exists():
        raise UserError(f"--model {path} does not exist: give a Hugging Face folder, a .pth or a checkpoint folder")
    if dtype not in (None, *DTYPE_CHOICES):
        raise UserError(f"--dtype {dtype}: choose one of {', '.join(DTYPE_CHOICES)}")
    torch_device = resolve_device(device) if isinstance(device, str) else device
    own_half = dtype in (None, "auto") and torch_device.type != "cpu"  # the checkpoint's, or fp16
    if dtype in (None, "auto") and torch_device.type == "cpu":
        dtype = "fp32"
    model = load_hf_model(path, config=config, device=torch_device, dtype=None if own_half else dtype).eval()
    if own_half and model.dtype == torch.float32:
        model = model.half()
    return model


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


def window_encoder(model, processor):
    """``encode(windows) -> encoder states``: the trainer's log-mel of each window (padded to the model's
    window, 2 x max_source_positions frames), on the model's device and dtype, through the encoder."""
    import torch
    from whisper_trainer.data.features import LogMel, mel_filters

    frames = 2 * int(model.config.max_source_positions)
    log_mel = LogMel(mel_filters(processor_folder(processor), int(model.config.num_mel_bins)), n_frames=frames)
    parameter = next(model.parameters())

    def encode(windows: list[np.ndarray]):
        features = log_mel(list(windows)).to(device=parameter.device, dtype=parameter.dtype)
        with torch.inference_mode():
            return model.model.encoder(features).last_hidden_state

    return encode, frames


# --- files and clips ----------------------------------------------------------------------------------------


def transcribe_audio(model, processor, clips: Sequence[np.ndarray], *, names: Sequence[str] | None = None,
                     language: str | None = None, batch_size: int = 8, num_beams: int = 1,
                     task: str = "transcribe", max_new_tokens: int | None = None, timestamps: bool | None = None,
                     condition_on_previous_text: bool = False, options: Options | None = None) -> list[Result]:
    """Transcribe 16 kHz mono clips of any length; windows of different clips are decoded together.

    ``language``: a code, name or Common Voice locale (None: detected per clip; English-only models are always
    English); ``timestamps``: None decides from the model (``longform.knows_timestamps``); ``options``: every
    other knob of the long-form decoder (temperatures, thresholds, seed).
    """
    import torch

    for flag, value in (("--batch-size", batch_size), ("--num-beams", num_beams), ("--max-new-tokens", max_new_tokens)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    limit = model.config.max_target_positions - 4  # the longest prompt without context is 4 tokens
    if max_new_tokens is not None and max_new_tokens > limit:
        raise UserError(f"--max-new-tokens {max_new_tokens}: at most {limit} tokens fit this model's decoder")
    options = replace(options or Options(), task=task, batch_size=batch_size, num_beams=num_beams,
                      max_new_tokens=max_new_tokens, timestamps=timestamps,
                      condition_on_previous_text=condition_on_previous_text)
    vocab = vocabulary(processor, model, task)
    given = vocab.language(language)
    names = list(names) if names is not None else [f"clip{i}" for i in range(len(clips))]
    files = [FileState(np.asarray(clip, dtype=np.float32), given) for clip in clips]
    encode, frames = window_encoder(model, processor)
    decoder = LongFormDecoder(model, vocab, encode, frames, options,
                              lambda ids: processor.tokenizer.decode(ids, skip_special_tokens=True))
    with torch.inference_mode():
        decoder.decode_files(files)
    return [
        Result(
            path=name,
            text=" ".join(s.text for s in f.segments),
            language=f.language or given or "en",
            language_detected=given is None and not vocab.english_only,
            duration_s=f.audio.size / SAMPLE_RATE,
            windows=f.windows,
            segments=f.segments,
            timestamps=bool(decoder.timestamps),
            english_only=vocab.english_only,
        )
        for name, f in zip(names, files, strict=True)
    ]


def transcribe_files(model, processor, paths: Sequence[str | os.PathLike], language: str | None = None,
                     batch_size: int = 8, device: str = "auto", *, processor_dir: str | os.PathLike | None = None,
                     model_config=None, dtype: str = "auto", **decoding) -> list[Result]:
    """Transcribe audio files; ``model`` and ``processor`` may be loaded objects or paths.

    A path model is loaded on ``device`` in ``dtype`` (a loaded model stays as it is; ``model_config`` as in
    ``load_model``); a None processor is read from ``processor_dir`` or the model folder. ``decoding``: the
    keyword arguments of ``transcribe_audio``.
    """
    if isinstance(model, (str, os.PathLike)):
        model_path = model
        model = load_model(model_path, device, dtype=dtype, config=model_config)
    else:
        model_path = None
    if processor is None or isinstance(processor, (str, os.PathLike)):
        processor = load_processor(model_path, processor or processor_dir)
    clips = [load_audio(path) for path in paths]
    return transcribe_audio(model, processor, clips, names=[os.fspath(p) for p in paths], language=language,
                            batch_size=batch_size, **decoding)
