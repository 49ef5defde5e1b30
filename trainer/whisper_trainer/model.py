"""The Whisper model the trainer trains, and its state in MindSpeed-MM's key names.

Hugging Face ``WhisperForConditionalGeneration`` with SDPA attention, built from a model.json with the LM
head untied (``tie_word_embeddings=False``): MindSpeed-MM's model has its own ``proj_out.weight`` and trains
it, so our checkpoints have exactly its keys and shapes (``expected_mm_shapes``). Key names are translated
only through ``whisper_k8s.formats.mindspeed`` (one mapping for the trainer and the converter).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from whisper_k8s.errors import UserError
from whisper_k8s.formats import megatron
from whisper_k8s.formats.mindspeed import (
    LM_HEAD,
    TIED_EMBEDDING,
    check_mm_state,
    expected_mm_shapes,
    hf_to_mm_key,
    mm_to_hf_key,
)
from whisper_trainer.config import ModelConfig

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


def hf_config(model_cfg: ModelConfig):
    from transformers import WhisperConfig

    return WhisperConfig(**model_cfg.hf_kwargs())


def build_model(model_cfg: ModelConfig, *, seed: int, device: str | torch.device = "cpu"):
    """A freshly initialised model, identical on every rank for the same seed (``device="meta"``: no memory)."""
    from transformers import WhisperForConditionalGeneration

    config = hf_config(model_cfg)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(device):
        model = WhisperForConditionalGeneration(config)
    _use_npu_fused_attention_if_present(model)
    return model


def _use_npu_fused_attention_if_present(model) -> None:
    """On Ascend, torch_npu routes SDPA to its fused attention kernel (``npu_fusion_attention``) by itself.

    Nothing to patch: we only log which path is taken, so a slow run on NPU can be told apart.
    """
    if any(p.device.type == "npu" for p in model.parameters()):
        log.info("attention: SDPA on NPU (torch_npu fused attention kernel)")


def mm_state_dict(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Hugging Face state dict -> MindSpeed-MM keys in MindSpeed-MM's order, the untied head included.

    The order matters to tools that compare key lists: Hugging Face declares k/v/q/out projections,
    MindSpeed-MM q/k/v/out. Keys the config does not expect are kept at the end (and refused by the checks).
    """
    renamed = {hf_to_mm_key(k): v for k, v in state.items()}
    ordered = {k: renamed.pop(k) for k in expected_mm_shapes(config) if k in renamed}
    ordered.update(renamed)
    return ordered


def hf_state_dict(mm_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {mm_to_hf_key(k): v for k, v in mm_state.items()}


def _read_hf_folder(folder: Path) -> dict[str, torch.Tensor]:
    """Tensors of a Hugging Face model folder (safetensors, sharded or not; else pytorch_model.bin)."""
    from safetensors.torch import load_file as load_safetensors

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for name in files:
            state.update(load_safetensors(str(folder / name)))
        return state
    if (folder / "model.safetensors").is_file():
        return load_safetensors(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").is_file():
        return megatron.load_file(folder / "pytorch_model.bin")
    raise UserError(f"ckpt_path {folder}: a Hugging Face folder needs model.safetensors or pytorch_model.bin")


def read_pretrained_mm_state(ckpt_path: str) -> dict[str, torch.Tensor]:
    """The MM-key state behind ``ckpt_path``: a MindSpeed-MM .pth, a Megatron folder/file, or an HF folder.

    A Hugging Face checkpoint has no ``proj_out.weight`` (tied on save), so the head is materialised from
    the decoder embedding: the weights then mean the same thing in the untied model.
    """
    path = Path(ckpt_path)
    if path.is_dir() and (path / "config.json").is_file():
        state = {hf_to_mm_key(k.removeprefix("module.")): v for k, v in _read_hf_folder(path).items()}
        if LM_HEAD not in state and TIED_EMBEDDING in state:
            state[LM_HEAD] = state[TIED_EMBEDDING].clone()
        return state
    loaded = megatron.load_file(megatron.resolve_model_file(path))
    state = loaded.get("model", loaded) if isinstance(loaded, dict) else loaded
    if not isinstance(state, dict):
        raise UserError(f"ckpt_path {ckpt_path}: expected a state dict (or a dict with 'model')")
    return state


def load_mm_state(model, mm_state: dict[str, torch.Tensor], config: dict, *, source: str) -> None:
    """Copy an MM-key state into ``model`` after checking every key and shape; errors list the differences."""
    problems = check_mm_state({k: tuple(v.shape) for k, v in mm_state.items()}, config)
    if problems:
        shown = "; ".join(problems[:8]) + (f"; ... {len(problems) - 8} more" if len(problems) > 8 else "")
        raise UserError(f"{source}: does not match model.json ({len(problems)} problem(s)): {shown}")
    with torch.no_grad():
        model.load_state_dict(hf_state_dict(mm_state), strict=True)


def causal_lm_inputs(labels: torch.Tensor, decoder_start_token_id: int, pad_token_id: int):
    """Decoder inputs and targets from label rows.

    Labels that already start with ``<|startoftranscript|>`` (the data contract) are shifted by one: the
    decoder reads ``sot lang task notimestamps text`` and predicts ``lang task notimestamps text eot``.
    Labels without it get the start token prepended, as Hugging Face's ``shift_tokens_right`` does.
    """
    if bool((labels[:, 0] == decoder_start_token_id).all()):
        inputs, targets = labels[:, :-1], labels[:, 1:]
    else:
        start = torch.full_like(labels[:, :1], decoder_start_token_id)
        inputs, targets = torch.cat([start, labels[:, :-1]], dim=1), labels
    inputs = inputs.masked_fill(inputs == IGNORE_INDEX, pad_token_id)
    return inputs.contiguous(), targets.contiguous()


def loss_on_batch(model, input_features: torch.Tensor, labels: torch.Tensor, config) -> torch.Tensor:
    """Mean token cross entropy (ignore index -100), computed in fp32 as MindSpeed-MM does outside the model."""
    decoder_input_ids, targets = causal_lm_inputs(labels, config.decoder_start_token_id, config.pad_token_id)
    logits = model(input_features=input_features, decoder_input_ids=decoder_input_ids, use_cache=False).logits
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX
    )


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
