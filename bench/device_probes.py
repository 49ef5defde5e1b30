"""What a GPU can do and where a training step's GPU time goes: the benchmark's device probes (CUDA only).

- ``matmul_peak``: the bf16 matmul rate this card reaches (the practical ceiling beside the datasheet's);
- ``time_attention_backends``: each fused SDPA backend's forward+backward time on the model's attention shapes;
- ``kernel_time_by_kind``: one profiled step, device time by kind of kernel, the top kernels, how busy the GPU was.
"""

from __future__ import annotations

import functools
import time

from whisper_trainer.parallel import synchronize

KERNEL_KINDS = (("attention", ("flash", "fmha", "cudnn", "attention", "sdpa")),
                ("matmul", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "matmul")),
                ("convolution", ("conv", "implicit", "winograd")),
                ("optimizer", ("multi_tensor", "adam", "fused_adam")),
                ("compiled elementwise (Triton)", ("triton",)))


def attention_shapes(fields: dict, target_tokens: int) -> dict[str, tuple[int, int, bool, int]]:
    """The model's SDPA calls per sample: name -> (query length, key length, causal, calls per forward)."""
    source = int(fields["max_source_positions"])
    return {"encoder_self": (source, source, False, int(fields["encoder_layers"])),
            "decoder_self": (target_tokens, target_tokens, True, int(fields["decoder_layers"])),
            "decoder_cross": (target_tokens, source, False, int(fields["decoder_layers"]))}


def time_attention_backends(fields: dict, batch: int, target_tokens: int, device,
                            repeats: int = 10) -> dict[str, dict[str, float | str]]:
    """Forward+backward milliseconds of each fused SDPA backend on each of the model's attention shapes (bf16).

    A backend that cannot run a shape on this card is recorded with PyTorch's reason instead of a time.
    """
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    heads = int(fields["encoder_attention_heads"])
    head_dim = int(fields["d_model"]) // heads
    backends = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION}
    timings: dict[str, dict[str, float | str]] = {}
    for shape, (q_len, k_len, causal, _) in attention_shapes(fields, target_tokens).items():
        def tensor(length: int):
            return torch.randn(batch, heads, length, head_dim, device=device, dtype=torch.bfloat16,
                               requires_grad=True)

        q, k, v = tensor(q_len), tensor(k_len), tensor(k_len)
        for name, backend in backends.items():
            try:
                with sdpa_kernel([backend]):
                    timings.setdefault(shape, {})[name] = cuda_event_ms(
                        functools.partial(_attention_step, q, k, v, causal), device, repeats)
            except RuntimeError as err:
                timings.setdefault(shape, {})[name] = f"not available: {str(err).splitlines()[0][:160]}"
    return timings


def _attention_step(q, k, v, causal: bool) -> None:
    import torch

    torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal).sum().backward()


def cuda_event_ms(work, device, repeats: int) -> float:
    """Mean milliseconds of ``work`` on the GPU (CUDA events), after three untimed calls."""
    import torch

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


SDP_SWITCHES = ("flash", "cudnn", "mem_efficient", "math")


def sdp_switches() -> dict[str, bool]:
    import torch

    return {name: getattr(torch.backends.cuda, f"{name}_sdp_enabled")() for name in SDP_SWITCHES}


def restore_sdp_switches(saved: dict[str, bool]) -> None:
    import torch

    for name, enabled in saved.items():
        getattr(torch.backends.cuda, f"enable_{name}_sdp")(enabled)


def kernel_time_by_kind(step, device) -> dict | None:
    """One profiled step on CUDA: device time per kind of kernel and how busy the GPU was over the step.

    Says where the time goes (and so what could still be gained): matmuls, attention, convolutions, the
    optimizer, fused elementwise kernels, other elementwise. ``gpu_busy_share`` below 1 means host-side gaps.
    """
    if device.type != "cuda":
        return None
    import torch
    from torch.profiler import ProfilerActivity, profile

    try:
        synchronize(device)
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            synchronize(device)
        wall_us = (time.perf_counter() - start) * 1e6
        totals: dict[str, float] = {}
        by_name: dict[str, float] = {}
        for event in prof.events():
            if event.device_type != torch.autograd.DeviceType.CUDA:
                continue
            name = event.name.lower()
            kind = next((kind for kind, keys in KERNEL_KINDS if any(key in name for key in keys)), "other")
            totals[kind] = totals.get(kind, 0.0) + event.device_time_total
            by_name[event.name] = by_name.get(event.name, 0.0) + event.device_time_total
    except Exception as err:  # a profiler that cannot run here must not cost the measurement
        return {"error": f"{type(err).__name__}: {err}"[:300]}
    busy = sum(totals.values())
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:20]
    return {"profiled_step_ms": round(wall_us / 1000, 2), "gpu_busy_share": round(busy / wall_us, 3),
            "ms_by_kind": {kind: round(us / 1000, 2) for kind, us in sorted(totals.items(), key=lambda kv: -kv[1])},
            "top_kernels_ms": {name[:120]: round(us / 1000, 2) for name, us in top}}


def matmul_peak(device, size: int = 8192, repeats: int = 10) -> float | None:
    """bf16 matmul FLOP/s this card reaches on random data: the practical ceiling beside the datasheet's."""
    if device.type != "cuda":
        return None
    import torch

    a, b = (torch.randn(size, size, device=device, dtype=torch.bfloat16) for _ in range(2))
    return 2 * size ** 3 / (cuda_event_ms(lambda: a @ b, device, repeats) / 1000)
