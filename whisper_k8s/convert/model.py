"""``load_hf_model``: a transformers Whisper from any checkpoint we handle, converted in memory.

Inference, evaluation and the trainer's ``ckpt_path`` all need a ``WhisperForConditionalGeneration`` whatever
the checkpoint's format. A Hugging Face folder loads through ``from_pretrained``; anything else is mapped
(no copy), renamed with the same plan the file converter uses, and copied tensor by tensor into a model
allocated once (built on the meta device, so nothing is initialised only to be overwritten).
"""

from __future__ import annotations

import os
from pathlib import Path

from whisper_k8s.convert.hf_config import build_generation_config, build_hf_config, resolve_config
from whisper_k8s.convert.mapping import head_is_tied, plan_hf_to_mm, plan_mm_to_hf
from whisper_k8s.convert.outputs import parse_dtype
from whisper_k8s.convert.sources import TensorSource, open_source
from whisper_k8s.errors import UserError
from whisper_k8s.formats.mindspeed import LM_HEAD, TIED_EMBEDDING, mm_to_hf_key


def load_hf_model(path: str | os.PathLike, config=None, device="cpu", dtype=None):
    """A ``WhisperForConditionalGeneration`` (eval mode) from a Hugging Face folder, a MindSpeed-MM ``.pth``,
    a Megatron save/``iter_*`` folder or a bare weights file.

    ``config``: model.json/config.json path, dict or WhisperConfig (needed when the checkpoint carries none
    and matches no chart preset); ``dtype``: "fp32"/"bf16"/"fp16" or a torch dtype (default: the weights').
    """
    path = Path(path)
    torch_dtype = parse_dtype(dtype)
    if path.is_dir() and (path / "config.json").is_file() and config is None:
        source = open_source(path)
        if source.key_style == "hf":
            from transformers import WhisperForConditionalGeneration

            model = WhisperForConditionalGeneration.from_pretrained(path, dtype=torch_dtype or "auto")
            return model.to(device).eval()
    return _from_source(open_source(path), config, device, torch_dtype)


def _hf_named_tensors(source: TensorSource, model_config) -> dict:
    """HF name -> mapped tensor, validated against the config (either key style; the head materialised)."""
    shapes = source.shapes()
    if source.key_style == "hf":
        plan = plan_hf_to_mm(shapes, model_config, str(source.path))
        return {mm_to_hf_key(mm): source.tensors[hf] for mm, hf in plan}
    if source.key_style == "mm":
        return {hf: source.tensors[mm] for hf, mm in plan_mm_to_hf(shapes, model_config, str(source.path))}
    raise UserError(f"{source.path}: neither Hugging Face nor MindSpeed-MM Whisper key names")


def _from_source(source: TensorSource, config, device, dtype):
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    model_config, _ = resolve_config(config, source)
    tensors = _hf_named_tensors(source, model_config)
    tied = head_is_tied({k: tensors[k] for k in (LM_HEAD, TIED_EMBEDDING)})
    dtype = dtype or tensors[TIED_EMBEDDING].dtype
    hf_config = WhisperConfig.from_dict(build_hf_config(model_config, tie_word_embeddings=tied))
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(hf_config)
    model.to_empty(device=device).to(dtype)
    model.tie_weights()
    if tied:
        tensors.pop(LM_HEAD)
    result = model.load_state_dict(tensors, strict=False)
    missing = [k for k in result.missing_keys if not (tied and k == LM_HEAD)]
    if missing or result.unexpected_keys:
        raise UserError(f"{source.path}: weights do not fit the model (missing {missing[:5]}, "
                        f"unexpected {result.unexpected_keys[:5]})")
    source.release()
    model.generation_config = GenerationConfig(**build_generation_config(model_config))
    return model.eval()
