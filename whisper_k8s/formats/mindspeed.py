"""MindSpeed-MM's Whisper state-dict names and the mapping to Hugging Face ``WhisperForConditionalGeneration``.

MindSpeed-MM 2.2.0 (``WhisperForConditionalGeneration_mm``) keeps Hugging Face's module tree but names the
attention projections ``proj_q``/``proj_k``/``proj_v``/``proj_out`` instead of ``q_proj``/``k_proj``/``v_proj``/
``out_proj``, and has an untied LM head ``proj_out.weight`` that Hugging Face checkpoints omit (tied to
``model.decoder.embed_tokens.weight``). Only attention projections are renamed: the top-level ``proj_out``
(the LM head) has the same name on both sides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

LM_HEAD = "proj_out.weight"
TIED_EMBEDDING = "model.decoder.embed_tokens.weight"

_HF_ATTN = re.compile(r"\.(self_attn|encoder_attn)\.(q|k|v|out)_proj\.")
_MM_ATTN = re.compile(r"\.(self_attn|encoder_attn)\.proj_(q|k|v|out)\.")


def hf_to_mm_key(key: str) -> str:
    """``model.encoder.layers.0.self_attn.q_proj.weight`` -> ``...self_attn.proj_q.weight``."""
    return _HF_ATTN.sub(lambda m: f".{m.group(1)}.proj_{m.group(2)}.", key)


def mm_to_hf_key(key: str) -> str:
    """``...encoder_attn.proj_out.bias`` -> ``...encoder_attn.out_proj.bias``; ``proj_out.weight`` stays."""
    return _MM_ATTN.sub(lambda m: f".{m.group(1)}.{m.group(2)}_proj.", key)


def _required(config: Mapping, field: str) -> int:
    if field not in config:
        raise KeyError(field)
    return int(config[field])


def expected_mm_shapes(config: Mapping) -> dict[str, tuple[int, ...]]:
    """Every key and shape of MindSpeed-MM's Whisper built from ``config`` (a model.json or HF config.json).

    The order is MindSpeed-MM's ``state_dict()`` order. ``KeyError`` names a missing config field.
    """
    d = _required(config, "d_model")
    vocab = _required(config, "vocab_size")
    mels = _required(config, "num_mel_bins")
    enc_ffn = _required(config, "encoder_ffn_dim")
    dec_ffn = _required(config, "decoder_ffn_dim")
    shapes: dict[str, tuple[int, ...]] = {
        "model.encoder.conv1.weight": (d, mels, 3),
        "model.encoder.conv1.bias": (d,),
        "model.encoder.conv2.weight": (d, d, 3),
        "model.encoder.conv2.bias": (d,),
        "model.encoder.embed_positions.weight": (_required(config, "max_source_positions"), d),
    }

    def attention(prefix: str) -> None:
        for proj in ("q", "k", "v", "out"):
            shapes[f"{prefix}.proj_{proj}.weight"] = (d, d)
            if proj != "k":  # Whisper's key projection has no bias
                shapes[f"{prefix}.proj_{proj}.bias"] = (d,)
        shapes[f"{prefix}_layer_norm.weight"] = (d,)
        shapes[f"{prefix}_layer_norm.bias"] = (d,)

    def feed_forward(prefix: str, ffn: int) -> None:
        shapes[f"{prefix}.fc1.weight"] = (ffn, d)
        shapes[f"{prefix}.fc1.bias"] = (ffn,)
        shapes[f"{prefix}.fc2.weight"] = (d, ffn)
        shapes[f"{prefix}.fc2.bias"] = (d,)
        shapes[f"{prefix}.final_layer_norm.weight"] = (d,)
        shapes[f"{prefix}.final_layer_norm.bias"] = (d,)

    for i in range(_required(config, "encoder_layers")):
        attention(f"model.encoder.layers.{i}.self_attn")
        feed_forward(f"model.encoder.layers.{i}", enc_ffn)
    shapes["model.encoder.layer_norm.weight"] = (d,)
    shapes["model.encoder.layer_norm.bias"] = (d,)
    shapes[TIED_EMBEDDING] = (vocab, d)
    shapes["model.decoder.embed_positions.weight"] = (_required(config, "max_target_positions"), d)
    for i in range(_required(config, "decoder_layers")):
        attention(f"model.decoder.layers.{i}.self_attn")
        attention(f"model.decoder.layers.{i}.encoder_attn")
        feed_forward(f"model.decoder.layers.{i}", dec_ffn)
    shapes["model.decoder.layer_norm.weight"] = (d,)
    shapes["model.decoder.layer_norm.bias"] = (d,)
    shapes[LM_HEAD] = (vocab, d)
    return shapes


def check_mm_state(found: Mapping[str, tuple[int, ...]], config: Mapping) -> list[str]:
    """Differences between ``found`` (key -> shape) and what ``config`` implies, one line each; [] when equal."""
    expected = expected_mm_shapes(config)
    problems = [f"missing: {k} {expected[k]}" for k in expected if k not in found]
    problems += [f"unexpected: {k} {tuple(found[k])}" for k in found if k not in expected]
    problems += [
        f"wrong shape: {k} is {tuple(found[k])}, expected {expected[k]}"
        for k in expected
        if k in found and tuple(found[k]) != expected[k]
    ]
    return problems
