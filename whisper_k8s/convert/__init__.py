"""Checkpoint conversion between Hugging Face Whisper and MindSpeed-MM (``.pth`` / Megatron), streaming and
verified; plus in-memory mappings and a loader that gives a transformers model from any of them.

Public API (each imports torch on use):
- ``convert_hf_to_mm(src, dst, *, dtype=None, megatron_layout=False, config=None, force=False, quiet=False,
  durable=False)``
- ``convert_mm_to_hf(src, dst, *, config=None, processor=None, dtype=None, force=False, quiet=False,
  durable=False)``
- ``inspect_checkpoint(path, config=None) -> Report``
- ``load_hf_model(path, config=None, device="cpu", dtype=None) -> WhisperForConditionalGeneration``
- ``hf_state_to_mm(state_dict, config) -> dict`` and ``mm_state_to_hf(state_dict, config=None) -> dict``;
  ``head_is_tied(state_dict) -> bool``
"""

from __future__ import annotations

from whisper_k8s.convert.hf_to_mm import convert_hf_to_mm
from whisper_k8s.convert.inspect import inspect_checkpoint
from whisper_k8s.convert.mapping import head_is_tied, hf_state_to_mm, mm_state_to_hf
from whisper_k8s.convert.mm_to_hf import convert_mm_to_hf
from whisper_k8s.convert.model import load_hf_model

__all__ = [
    "convert_hf_to_mm",
    "convert_mm_to_hf",
    "head_is_tied",
    "hf_state_to_mm",
    "inspect_checkpoint",
    "load_hf_model",
    "mm_state_to_hf",
]
