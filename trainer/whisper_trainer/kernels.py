"""How the model's math runs on the device: per-layer ``torch.compile`` and the attention (SDPA) backend.

Compiling each encoder and decoder layer (not the whole Hugging Face model) fuses the layer's memory-bound
work (layer norms, GELU, residual adds, bf16 casts) into a few kernels and cuts the Python launch overhead
that bounds the decoder's small matmuls. Every encoder layer has the same code, so one graph serves all 32
(likewise the decoder): compile time does not grow with depth. Each layer's ``forward`` is replaced in place,
so the state dict keeps its key names and checkpoints do not change. The fp32 cross entropy over the logits is
compiled too: the cast, log-softmax and gather become one pass instead of three full-size tensors.

``--compile auto`` compiles on CUDA only: Inductor has no NPU backend (torch_npu brings its own graph mode)
and on CPU the compile time outweighs a short run's gain.
"""

from __future__ import annotations

import logging

import torch

from whisper_k8s.errors import UserError
from whisper_trainer.config import ATTENTION_CHOICES, COMPILE_CHOICES

log = logging.getLogger(__name__)


def compile_wanted(setting: str, device: torch.device) -> bool:
    if setting not in COMPILE_CHOICES:
        raise UserError(f"--compile {setting}: choose {', '.join(COMPILE_CHOICES)}")
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def compile_layers(layers: list[torch.nn.Module], backend: str = "inductor") -> None:
    """Compile each transformer layer's ``forward`` in place (``fullgraph``: a graph break is a bug to see).

    The module's own hooks stay outside the compiled code: FSDP2's per-layer all-gather/reshard hooks run
    eagerly around it, so the same call works for a single process, DDP and FSDP2.
    """
    for layer in layers:
        layer.forward = torch.compile(layer.forward, backend=backend, fullgraph=True, dynamic=False)
    log.info("compile: %d transformer layers and the loss with torch.compile (%s)", len(layers), backend)


def fp32_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean token cross entropy in fp32, as MindSpeed-MM computes it outside the model."""
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=ignore_index)


def cross_entropy_for(compiled: bool, backend: str = "inductor"):
    """The loss function the trainer uses: ``fp32_cross_entropy``, compiled when the layers are."""
    if not compiled:
        return fp32_cross_entropy
    return torch.compile(fp32_cross_entropy, backend=backend, fullgraph=True, dynamic=False)


def select_attention(backend: str, device: torch.device) -> None:
    """Restrict scaled_dot_product_attention to one backend (``auto``: PyTorch's own choice per call).

    Process-wide, set once before the first forward (and before compiling, which bakes the choice in). A
    backend the device cannot run fails at the first step with PyTorch's reason.
    """
    if backend not in ATTENTION_CHOICES:
        raise UserError(f"--attention-backend {backend}: choose {', '.join(ATTENTION_CHOICES)}")
    if backend == "auto":
        return
    if device.type != "cuda" and backend != "math":
        raise UserError(f"--attention-backend {backend} needs a CUDA device (this run uses {device.type}): "
                        "use auto")
    switches = {"flash": torch.backends.cuda.enable_flash_sdp, "cudnn": torch.backends.cuda.enable_cudnn_sdp,
                "efficient": torch.backends.cuda.enable_mem_efficient_sdp,
                "math": torch.backends.cuda.enable_math_sdp}
    for name, enable in switches.items():
        enable(name == backend)
    log.info("attention: scaled_dot_product_attention restricted to the %s backend", backend)
