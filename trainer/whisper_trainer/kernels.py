"""How the model's math runs on the device: per-layer ``torch.compile`` and the attention (SDPA) backend.

Compiling each encoder and decoder layer (not the whole Hugging Face model) fuses the layer's memory-bound
work (layer norms, GELU, residual adds, bf16 casts) into a few kernels and cuts the Python launch overhead
that bounds the decoder's small matmuls. Every encoder layer has the same code, so one graph serves all 32
(likewise the decoder): compile time does not grow with depth. Batches differ in label length, so the decoder
and the loss are first compiled for one length and, at the first other length, once more with the length
symbolic (PyTorch's automatic dynamic shapes): two compiles in all, not one per length. Each layer's ``forward`` is replaced in place,
so the state dict keeps its key names and checkpoints do not change. The fp32 cross entropy over the logits is
compiled too: the cast, log-softmax and gather become one pass instead of three full-size tensors.

``--compile auto`` compiles on CUDA only: Inductor has no NPU backend (torch_npu brings its own graph mode)
and on CPU the compile time outweighs a short run's gain.
"""

from __future__ import annotations

import functools
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
        layer.forward = torch.compile(layer.forward, backend=backend, fullgraph=True)
    log.info("compile: %d transformer layers and the loss with torch.compile (%s)", len(layers), backend)


def fp32_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean token cross entropy in fp32, as MindSpeed-MM computes it outside the model."""
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=ignore_index)


def cross_entropy_for(compiled: bool, backend: str = "inductor"):
    """The loss function the trainer uses: ``fp32_cross_entropy``, compiled when the layers are."""
    if not compiled:
        return fp32_cross_entropy
    return torch.compile(fp32_cross_entropy, backend=backend, fullgraph=True)


def attention_shapes(fields: dict, target_tokens: int) -> dict[str, tuple[int, int, bool, int]]:
    """The model's SDPA calls per sample: name -> (query length, key length, causal, calls per forward)."""
    source = int(fields["max_source_positions"])
    return {"encoder_self": (source, source, False, int(fields["encoder_layers"])),
            "decoder_self": (target_tokens, target_tokens, True, int(fields["decoder_layers"])),
            "decoder_cross": (target_tokens, source, False, int(fields["decoder_layers"]))}


def time_attention_backends(fields: dict, batch: int, target_tokens: int, device: torch.device,
                            repeats: int = 10) -> dict[str, dict[str, float | str]]:
    """Forward+backward milliseconds of each fused SDPA backend on each of the model's attention shapes (bf16).

    A backend that cannot run a shape on this card is recorded with PyTorch's reason instead of a time.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    heads = int(fields["encoder_attention_heads"])
    head_dim = int(fields["d_model"]) // heads
    backends = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION}
    timings: dict[str, dict[str, float | str]] = {}
    for shape, (q_len, k_len, causal, _) in attention_shapes(fields, target_tokens).items():
        def tensor(length: int) -> torch.Tensor:
            return torch.randn(batch, heads, length, head_dim, device=device, dtype=torch.bfloat16,
                               requires_grad=True)

        q, k, v = tensor(q_len), tensor(k_len), tensor(k_len)
        for name, backend in backends.items():
            try:
                with sdpa_kernel([backend]):
                    timings.setdefault(shape, {})[name] = _time_ms(
                        functools.partial(_attention_step, q, k, v, causal), device, repeats)
            except RuntimeError as err:
                timings.setdefault(shape, {})[name] = f"not available: {str(err).splitlines()[0][:160]}"
    return timings


def _attention_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> None:
    torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal).sum().backward()


def _time_ms(work, device: torch.device, repeats: int) -> float:
    for _ in range(3):
        work()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(device)
    start.record()
    for _ in range(repeats):
        work()
    end.record()
    torch.cuda.synchronize(device)
    return round(start.elapsed_time(end) / repeats, 4)


def fastest_attention_backend(timings: dict[str, dict[str, float | str]], fields: dict, target_tokens: int) -> str:
    """The backend with the least time over one forward+backward of the whole model (calls x time per call)."""
    calls = {shape: count for shape, (_, _, _, count) in attention_shapes(fields, target_tokens).items()}
    totals = {}
    for backend in ("flash", "cudnn", "efficient"):
        per_shape = [timings[shape].get(backend) for shape in calls]
        if all(isinstance(ms, float) for ms in per_shape):
            totals[backend] = sum(calls[shape] * ms for shape, ms in zip(calls, per_shape, strict=True))
    if not totals:
        return "auto"
    return min(totals, key=totals.get)


def choose_attention(setting: str, device: torch.device, fields: dict, batch: int, target_tokens: int) -> str:
    """The SDPA backend to use: the flag's, or for ``auto`` on CUDA the fastest on this model's own shapes.

    Timing takes a second or two at start-up. Which backend wins depends on the card, the head size and the
    sequence lengths (on an H200, cuDNN's is faster for Whisper's 1500-frame encoder attention and flash for
    short causal decoder attention), so it is measured rather than assumed. ``auto`` elsewhere stays ``auto``:
    PyTorch's own per-call choice.
    """
    if setting not in ATTENTION_CHOICES:
        raise UserError(f"--attention-backend {setting}: choose {', '.join(ATTENTION_CHOICES)}")
    if setting != "auto":
        if device.type != "cuda" and setting != "math":
            raise UserError(f"--attention-backend {setting} needs a CUDA device (this run uses {device.type}): "
                            "use auto")
        return setting
    if device.type != "cuda":
        return "auto"
    timings = time_attention_backends(fields, batch, target_tokens, device)
    log.info("attention: SDPA backends timed on this model's shapes (fwd+bwd ms): %s", timings)
    return fastest_attention_backend(timings, fields, target_tokens)


def restrict_attention(backend: str) -> None:
    """Make ``backend`` the only SDPA kernel (``auto``: leave PyTorch's choice). Process-wide; set it before
    compiling, since a compiled graph keeps the kernel it was traced with."""
    if backend == "auto":
        return
    switches = {"flash": torch.backends.cuda.enable_flash_sdp, "cudnn": torch.backends.cuda.enable_cudnn_sdp,
                "efficient": torch.backends.cuda.enable_mem_efficient_sdp,
                "math": torch.backends.cuda.enable_math_sdp}
    for name, enable in switches.items():
        enable(name == backend)
    log.info("attention: scaled_dot_product_attention restricted to the %s backend", backend)


def tune_convolutions(device: torch.device) -> None:
    """Let cuDNN pick the fastest algorithm for the encoder's two convolutions: their shapes never change
    (every batch is 30 s windows), so the one-time search pays back from the second step."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
