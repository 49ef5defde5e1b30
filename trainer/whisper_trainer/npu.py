"""Everything specific to Ascend NPUs (torch_npu) in one place: the device check, the fused attention kernel
MindSpeed-MM trains Whisper with (``torch_npu.npu_fusion_attention``), and the fused AdamW.

No NPU has been reachable where this was written: the calls follow torch_npu's documentation and are tested
on CPU with a reference implementation of the kernel's documented semantics standing in for it
(tests/npu_reference.py); they are not verified on hardware (README, "What is and is not verified").

The kernel's contract as used here (torch_npu docs, ``npu_fusion_attention``): ``query/key/value`` in
``input_layout`` "BNSD" ([batch, heads, sequence, head size], which is how Hugging Face's attention hands them
over); ``head_num`` the number of heads; ``scale`` multiplies Q.K^T; ``keep_prob`` = 1 - dropout;
``atten_mask`` is boolean with **True = masked** (the opposite of SDPA's boolean mask), shaped [B,1,Sq,Skv],
[1,1,Sq,Skv] or [Sq,Skv]; ``sparse_mode`` 0 applies ``atten_mask`` as given, 2 ("leftUpCausal") is the causal
mask aligned at the top left (SDPA's ``is_causal``) and then takes the compressed 2048 x 2048 upper-triangular
mask instead of a full one; the first of the seven outputs is the attention output in the input layout.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

log = logging.getLogger(__name__)

ATTENTION_NAME = "npu_fusion_attention"  # the name the model's config selects the kernel by (transformers)
COMPRESSED_CAUSAL_SIZE = 2048  # sparse modes 2 and 3 take this fixed upper-triangular mask
LEFT_UP_CAUSAL = 2  # sparse_mode: causal, top-left aligned
_causal_masks: dict[torch.device, torch.Tensor] = {}


def available() -> bool:
    """torch_npu is installed and sees an NPU (importing it registers the ``npu`` device with torch)."""
    if importlib.util.find_spec("torch_npu") is None:
        return False
    import torch_npu  # noqa: F401

    return hasattr(torch, "npu") and torch.npu.is_available()


def fusion_attention_kernel():
    """``torch_npu.npu_fusion_attention`` (tests put the reference implementation here)."""
    import torch_npu

    return torch_npu.npu_fusion_attention


def compressed_causal_mask(device: torch.device) -> torch.Tensor:
    """The 2048 x 2048 mask sparse modes 2 and 3 expect: True above the diagonal (masked), made once per device."""
    if device not in _causal_masks:
        ones = torch.ones(COMPRESSED_CAUSAL_SIZE, COMPRESSED_CAUSAL_SIZE, dtype=torch.bool, device=device)
        _causal_masks[device] = torch.triu(ones, diagonal=1)
    return _causal_masks[device]


def attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                      is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """Hugging Face's attention-function contract (as ``sdpa_attention_forward``), computed by the NPU kernel.

    In: [B, N, S, D] tensors; ``attention_mask`` None, boolean (True = attend, SDPA's convention) or additive
    float (0 = attend); causal when the mask is None and the module is causal (the decoder's self-attention).
    Out: [B, S, N, D] and no attention weights.
    """
    heads, q_len, head_dim = query.shape[1], query.shape[2], query.shape[3]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
    options: dict = {"scale": scaling if scaling is not None else head_dim ** -0.5, "keep_prob": 1.0 - dropout}
    if attention_mask is not None:
        masked = ~attention_mask if attention_mask.dtype == torch.bool else attention_mask != 0
        options.update(atten_mask=masked, sparse_mode=0)
    elif causal and q_len > 1:
        options.update(atten_mask=compressed_causal_mask(query.device), sparse_mode=LEFT_UP_CAUSAL)
    output = fusion_attention_kernel()(query, key, value, heads, "BNSD", **options)[0]
    return output.transpose(1, 2).contiguous(), None


def use_fused_attention(model: torch.nn.Module) -> None:
    """Make ``model`` (Hugging Face Whisper) compute attention with the NPU kernel. Registered with transformers'
    attention and mask interfaces, so the decoder builds its masks as for SDPA (None when purely causal)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, sdpa_mask)
    model.config._attn_implementation = ATTENTION_NAME


def torch_fused_adamw_registered() -> bool:
    """Whether torch_npu registers PyTorch's fused AdamW kernel (``aten::_fused_adamw_``) for the NPU."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("aten::_fused_adamw_", "PrivateUse1")


def fused_adamw(groups: list[dict], grads_owned_elsewhere: bool, **hyper) -> torch.optim.Optimizer:
    """A fused AdamW for NPU parameters.

    PyTorch's own ``AdamW(fused=True)`` where torch_npu registers its kernel: the same update and the same state
    dict as on a GPU or CPU, so checkpoints move between machines. Otherwise ``torch_npu.optim.NpuFusedAdamW``,
    whose documented limits rule it out for the bf16 arrangement: it copies parameters and gradients into its
    own combined buffers (the fp32 master gradients are views of the main-grad buffer and must stay so), takes
    only fp32/fp16 parameters and refuses ``zero_grad(set_to_none=True)`` (zeroed instead here). There, and
    when torch_npu has neither, the multi-tensor ``foreach`` AdamW.
    """
    if torch_fused_adamw_registered():
        return torch.optim.AdamW(groups, fused=True, **hyper)
    import torch_npu

    if grads_owned_elsewhere or not hasattr(torch_npu.optim, "NpuFusedAdamW"):
        log.warning("optimizer: no fused AdamW for this arrangement in this torch_npu; using foreach AdamW")
        return torch.optim.AdamW(groups, foreach=True, **hyper)

    class CombinedAdamW(torch_npu.optim.NpuFusedAdamW):
        def zero_grad(self, set_to_none: bool = True) -> None:
            super().zero_grad(set_to_none=False)

    return CombinedAdamW(groups, **hyper)
