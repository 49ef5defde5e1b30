"""The Whisper model the trainer trains, and its state in MindSpeed-MM's key names.

Hugging Face ``WhisperForConditionalGeneration`` with SDPA attention (on an NPU the trainer switches it to
torch_npu's fused kernel: ``kernels.use_attention``), built from a model.json with the LM
head untied (``tie_word_embeddings=False``): MindSpeed-MM's model has its own ``proj_out.weight`` and trains
it, so our checkpoints have exactly its keys and shapes (``expected_mm_shapes``). Key names are translated
only through ``whisper_k8s.convert.mapping`` (one mapping for the trainer and the converter).
"""

from __future__ import annotations

import torch

from whisper_k8s.errors import UserError
from whisper_k8s.formats.mindspeed import check_mm_state
from whisper_trainer.config import ModelConfig
from whisper_trainer.kernels import fp32_cross_entropy

IGNORE_INDEX = -100


def hf_config(model_cfg: ModelConfig):
    from transformers import WhisperConfig

    return WhisperConfig(**model_cfg.hf_kwargs())


def build_model(model_cfg: ModelConfig, *, seed: int, device: str | torch.device = "cpu"):
    """A freshly initialised model, identical on every rank for the same seed (``device="meta"``: no memory).

    The trainer initialises it on its accelerator, where large-v3's 1.5 B random draws take a moment rather than
    the CPU's long while; the same seed gives the same weights on every device of one kind.
    """
    from transformers import WhisperForConditionalGeneration

    config = hf_config(model_cfg)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(device):
        return WhisperForConditionalGeneration(config)


def mm_state_dict(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Hugging Face state dict -> MindSpeed-MM keys in MindSpeed-MM's order (checked against ``config``).

    The order matters to tools that compare key lists: Hugging Face declares k/v/q/out projections,
    MindSpeed-MM q/k/v/out. The converter's mapping is used, so trainer and converter cannot disagree.
    """
    from whisper_k8s.convert.mapping import hf_state_to_mm

    return hf_state_to_mm(state, config)


def hf_state_dict(mm_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from whisper_k8s.convert.mapping import mm_state_to_hf

    return mm_state_to_hf(mm_state)


def read_pretrained_mm_state(ckpt_path: str, config: dict) -> dict[str, torch.Tensor]:
    """The MM-key state behind ``ckpt_path``: a MindSpeed-MM .pth, a Megatron folder/file, or an HF folder.

    A Hugging Face checkpoint has no ``proj_out.weight`` (tied on save): the converter's mapping materialises
    it from the decoder embedding, so the weights mean the same thing in the untied model. Files are
    memory-mapped and read with ``weights_only`` (whisper_k8s.convert.sources).
    """
    from whisper_k8s.convert.sources import open_source

    source = open_source(ckpt_path)
    if source.key_style == "mm":
        return dict(source.tensors)
    return mm_state_dict(source.tensors, config)


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


def loss_on_batch(model, input_features: torch.Tensor, labels: torch.Tensor, config,
                  cross_entropy=fp32_cross_entropy) -> torch.Tensor:
    """Mean token cross entropy (ignore index -100), computed in fp32 as MindSpeed-MM does outside the model.

    ``cross_entropy`` is ``kernels.fp32_cross_entropy`` or its compiled form (``kernels.cross_entropy_for``).
    """
    decoder_input_ids, targets = causal_lm_inputs(labels, config.decoder_start_token_id, config.pad_token_id)
    logits = model(input_features=input_features, decoder_input_ids=decoder_input_ids, use_cache=False).logits
    return cross_entropy(logits, targets, IGNORE_INDEX)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
