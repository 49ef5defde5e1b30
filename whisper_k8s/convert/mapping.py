"""Hugging Face <-> MindSpeed-MM state dicts: the key plan, the materialised LM head, strict validation.

Used both on whole in-memory state dicts (the trainer) and on lazy sources (the file converter): a *plan* is
the ordered list of ``(output name, source name)`` pairs, computed from names and shapes alone, checked
against ``expected_mm_shapes(config)`` before anything is read or written.
"""

from __future__ import annotations

from collections.abc import Mapping

from whisper_k8s.errors import UserError
from whisper_k8s.formats.mindspeed import (
    LM_HEAD,
    TIED_EMBEDDING,
    check_mm_state,
    expected_mm_shapes,
    hf_to_mm_key,
    mm_to_hf_key,
)

Plan = list[tuple[str, str]]


def as_mapping(config) -> Mapping:
    """A model.json / config.json dict, or a transformers config object (``to_dict``)."""
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if not isinstance(config, Mapping):
        raise UserError(f"expected a model config (dict or WhisperConfig), got {type(config).__name__}")
    return config


def expected_shapes(config) -> dict[str, tuple[int, ...]]:
    try:
        return expected_mm_shapes(as_mapping(config))
    except KeyError as err:
        raise UserError(f"the model config lacks the field {err.args[0]!r} (a Whisper model.json/config.json "
                        "has d_model, encoder_layers, decoder_layers, vocab_size, num_mel_bins, ...)") from None


def raise_on_problems(problems: list[str], what: str) -> None:
    if problems:
        shown = "\n  ".join(problems[:40])
        more = f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else ""
        raise UserError(f"{what} does not match the model config ({len(problems)} problems):\n  {shown}{more}")


def plan_hf_to_mm(shapes: Mapping[str, tuple[int, ...]], config, what: str = "the checkpoint") -> Plan:
    """``(mm name, hf name)`` in MindSpeed-MM order; the head comes from the embeddings when HF omits it."""
    sources = {hf_to_mm_key(name): name for name in shapes}
    if LM_HEAD not in sources and TIED_EMBEDDING in sources:
        sources[LM_HEAD] = TIED_EMBEDDING
    found = {mm: tuple(shapes[hf]) for mm, hf in sources.items()}
    expected = expected_shapes(config)
    raise_on_problems(check_mm_state(found, as_mapping(config)), what)
    return [(mm, sources[mm]) for mm in expected]


def plan_mm_to_hf(shapes: Mapping[str, tuple[int, ...]], config, what: str = "the checkpoint") -> Plan:
    """``(hf name, mm name)`` in MindSpeed-MM order, head included (the caller drops it when tied)."""
    raise_on_problems(check_mm_state({k: tuple(v) for k, v in shapes.items()}, as_mapping(config)), what)
    return [(mm_to_hf_key(mm), mm) for mm in expected_shapes(config)]


def hf_state_to_mm(state_dict: Mapping, config) -> dict:
    """A Hugging Face Whisper state dict -> MindSpeed-MM keys in MindSpeed-MM's order, ``proj_out.weight``
    materialised from the embeddings when absent (same tensor object: no copy). UserError lists every
    missing, unexpected or wrongly shaped key."""
    plan = plan_hf_to_mm({k: tuple(v.shape) for k, v in state_dict.items()}, config, "the state dict")
    return {mm: state_dict[hf] for mm, hf in plan}


def mm_state_to_hf(state_dict: Mapping, config=None) -> dict:
    """A MindSpeed-MM state dict -> Hugging Face keys (pure renaming, ``proj_out.weight`` kept).

    With ``config`` the key set and shapes are checked first. Whether the head is tied is the caller's
    decision: ``head_is_tied`` tells whether a tied model would lose anything.
    """
    if config is not None:
        plan_mm_to_hf({k: tuple(v.shape) for k, v in state_dict.items()}, config, "the state dict")
    return {mm_to_hf_key(k): v for k, v in state_dict.items()}


def head_is_tied(state_dict: Mapping) -> bool:
    """True when the LM head is absent or bit-identical to the decoder embeddings (either key style)."""
    head = state_dict.get(LM_HEAD)
    embed = state_dict.get(TIED_EMBEDDING)
    if head is None:
        return True
    if embed is None or head.shape != embed.shape or head.dtype != embed.dtype:
        return False
    import torch

    return head.data_ptr() == embed.data_ptr() or torch.equal(head, embed)
