"""How the model's math runs on the device: per-layer ``torch.compile``, activation checkpointing, the attention kernel.

Compiling each encoder and decoder layer (not the whole Hugging Face model) fuses the layer's memory-bound
work (layer norms, GELU, residual adds, bf16 casts) into a few kernels and cuts the Python launch overhead
that bounds the decoder's small matmuls. Every encoder layer has the same code, so one graph serves all 32
(likewise the decoder): compile time does not grow with depth. Batches differ in label length, so the decoder
and the loss are first compiled for one length and, at the first other length, once more with the length
symbolic (PyTorch's automatic dynamic shapes): two compiles in all, not one per length. Each layer's
``forward`` is replaced in place, so the state dict keeps its key names and checkpoints do not change. The fp32
cross entropy over the logits is compiled too: the cast, log-softmax and gather become one pass instead of
three full-size tensors.

``--compile auto`` compiles on CUDA only: Inductor has no NPU backend (torch_npu brings its own graph mode)
and on CPU the compile time outweighs a short run's gain.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import sysconfig
from pathlib import Path

import torch

from whisper_k8s.errors import UserError
from whisper_trainer.config import ATTENTION_CHOICES, COMPILE_CHOICES

log = logging.getLogger(__name__)


def compile_wanted(setting: str, device: torch.device) -> bool:
    """Whether to compile. ``auto`` on a machine that cannot build kernels trains eagerly, saying why;
    ``on`` there is an error that names what to install."""
    if setting not in COMPILE_CHOICES:
        raise UserError(f"--compile {setting}: choose {', '.join(COMPILE_CHOICES)}")
    wanted = setting == "on" or (setting == "auto" and device.type == "cuda")
    missing = missing_build_tools(device) if wanted else None
    if missing and setting == "on":
        raise UserError(f"--compile on: torch.compile cannot build kernels here: {missing}; install it in the "
                        "image or use --compile off")
    if missing:
        log.warning("compile: off, torch.compile cannot build kernels here (%s); training eagerly (slower)", missing)
        return False
    return wanted


def missing_build_tools(device: torch.device) -> str | None:
    """What Inductor needs to build kernels and is not here: Triton (CUDA) compiles a small C launcher against
    Python's headers, the CPU backend C++; slim runtime images often have neither."""
    variable, names = ("CC", ("cc", "gcc", "clang")) if device.type == "cuda" else ("CXX", ("c++", "g++", "clang++"))
    problems = []
    if not (os.environ.get(variable) or any(shutil.which(name) for name in names)):
        problems.append(f"no {'C' if variable == 'CC' else 'C++'} compiler ({' / '.join(names)}, or ${variable})")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        problems.append(f"no Python headers (Python.h, the python{sys.version_info[0]}.{sys.version_info[1]}-dev "
                        "package)")
    return " and ".join(problems) or None


def share_compile_workers(local_world_size: int, cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Give each trainer process of a node its share of the container's CPUs for Inductor's compile workers.

    Inductor starts up to 32 worker processes (each a Python with torch loaded) per trainer process, counted
    from the CPUs the process may be scheduled on, not from the container's CPU limit: 8 ranks on a large
    node would start hundreds at once and can run the pod out of memory before the first step. An explicit
    TORCHINDUCTOR_COMPILE_THREADS is left alone. Returns the number set (None when left alone).
    """
    if "TORCHINDUCTOR_COMPILE_THREADS" in os.environ:
        return None
    workers = max(1, min(32, usable_cpus(cgroup_root) // max(1, local_world_size)))
    import torch._inductor.config as inductor_config

    inductor_config.compile_threads = workers
    log.info("compile: %d compile worker(s) for this process (%d per node)", workers, local_world_size)
    return workers


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this container may use: its CPU limit (the CFS quota, cgroup v2 or v1) when set, else its affinity."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cpu_quota(cgroup_root)
    return max(1, min(affinity, int(quota))) if quota else affinity


def _cpu_quota(root: Path) -> float | None:
    try:
        if (root / "cpu.max").is_file():  # cgroup v2: "<quota> <period>" or "max <period>"
            quota, period = (root / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = root / "cpu"
        if (v1 / "cpu.cfs_quota_us").is_file():  # cgroup v1: -1 means no limit
            quota = int((v1 / "cpu.cfs_quota_us").read_text())
            return None if quota <= 0 else quota / int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None


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


def choose_attention(setting: str, device: torch.device) -> str:
    """The attention kernel to use: ``auto`` is torch_npu's fused attention on an NPU (``npu``, the kernel
    MindSpeed-MM trains Whisper with) and PyTorch's own per-call SDPA choice elsewhere.

    Measured on an H200 with large-v3 (bench/train_throughput.py): PyTorch already picks cuDNN's fused kernel
    there, the fastest of the three on the model's attention shapes, and restricting the model to cuDNN or to
    flash changed the compiled step by under 1 %. The SDPA names are for cards or versions where the choice is worse.
    """
    if setting not in ATTENTION_CHOICES:
        raise UserError(f"--attention-backend {setting}: choose {', '.join(ATTENTION_CHOICES)}")
    if setting == "auto":
        return "npu" if device.type == "npu" else "auto"
    if setting == "npu" and device.type != "npu":
        raise UserError(f"--attention-backend npu needs an Ascend NPU (this run uses {device.type}): use auto")
    if setting not in ("npu", "math") and device.type != "cuda":
        raise UserError(f"--attention-backend {setting} needs a CUDA device (this run uses {device.type}): "
                        "use auto")
    return setting


def use_attention(model: torch.nn.Module, backend: str) -> None:
    """Route the model's attention to ``backend`` (``choose_attention``'s answer): the NPU's fused kernel through
    whisper_trainer.npu, or SDPA restricted to one kernel (``auto``: PyTorch's choice)."""
    if backend == "npu":
        from whisper_trainer import npu

        npu.use_fused_attention(model)
        log.info("attention: torch_npu.npu_fusion_attention")
        return
    restrict_attention(backend)


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


def checkpoint_layers(layers: list[torch.nn.Module]) -> None:
    """Activation checkpointing per layer: each layer keeps only its input for the backward pass and runs its
    forward again there (about a third more compute for the layers, much less activation memory).

    Like ``compile_layers`` the ``forward`` is replaced in place (state dict keys unchanged), and before compiling,
    so that the compiled graph holds the checkpoint and Inductor's partitioner decides what to recompute (the
    order torchtitan uses). Module hooks (FSDP2's all-gather) stay outside, around the checkpointed call.
    """
    from torch.utils.checkpoint import checkpoint

    for layer in layers:
        layer.forward = functools.partial(checkpoint, layer.forward, use_reentrant=False)
    log.info("activation checkpointing: %d transformer layers recompute their forward in the backward pass",
             len(layers))


def tune_convolutions(device: torch.device) -> None:
    """Let cuDNN pick the fastest algorithm for the encoder's two convolutions: their shapes never change
    (every batch is 30 s windows), so the one-time search pays back from the second step."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
