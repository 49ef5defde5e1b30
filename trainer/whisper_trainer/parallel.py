"""Devices, the process group, and the data-parallel wrappers (DDP, FSDP2, bf16 main-grad DDP) for each precision.

One code path for Ascend NPU (torch_npu + HCCL), NVIDIA GPU (NCCL) and CPU (gloo). ``torch_npu`` is imported
only when present, so the same image and tests run where it is not. Works under ``torchrun`` (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in the environment) and as a plain single process (world 1, no
process group), which is how unit tests and quick local runs use it.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from whisper_k8s.errors import UserError
from whisper_trainer import npu
from whisper_trainer.precision import MainGradDataParallel

log = logging.getLogger(__name__)

BACKENDS = {"npu": "hccl", "cuda": "nccl", "cpu": "gloo"}


@dataclass
class DistEnv:
    """Where this process sits: global rank, world size, local rank, node rank, its device, processes per node."""

    rank: int
    world_size: int
    local_rank: int
    node_rank: int
    device: torch.device
    local_world_size: int = 1  # processes on this node (torchrun's LOCAL_WORLD_SIZE)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def initialized(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def pick_device_type(requested: str) -> str:
    """``auto`` prefers NPU, then CUDA, then CPU. An explicit choice that is not there is an error."""
    available = {"npu": npu.available, "cuda": torch.cuda.is_available, "cpu": lambda: True}
    if requested == "auto":
        return next(kind for kind in ("npu", "cuda", "cpu") if available[kind]())
    if requested not in available:
        raise UserError(f"--device {requested}: choose auto, npu, cuda or cpu")
    if not available[requested]():
        raise UserError(f"--device {requested}: no {requested} device is visible to this process "
                        "(check the container's device resources, or use --device auto)")
    return requested


def _env_int(*names: str, default: int = 0) -> int:
    for name in names:
        if os.environ.get(name, "").strip().lstrip("-").isdigit():
            return int(os.environ[name])
    return default


def init_distributed(device: str = "auto", timeout_minutes: int = 30, group_for_one: bool = False) -> DistEnv:
    """Join the process group torchrun described, or run as a single process when there is none.

    ``group_for_one``: a single process still gets a process group of one (an in-memory store, no network),
    for FSDP2, which needs one: ``--parallel fsdp`` on one GPU then trains as it does on many (bf16 compute,
    fp32 master weights and gradient reduction) instead of silently in fp32.

    Under the training operator RANK in the pod is the node rank, but torchrun (driven by the PET_*
    variables) sets RANK to the global process rank for its child, which is what is read here. The node rank
    is read from GROUP_RANK (torchrun) or PET_NODE_RANK for the log only.
    """
    kind = pick_device_type(device)
    world_size = _env_int("WORLD_SIZE", default=1)
    rank = _env_int("RANK", default=0)
    local_rank = _env_int("LOCAL_RANK", default=0)
    node_rank = _env_int("GROUP_RANK", "PET_NODE_RANK", "NODE_RANK", default=0)
    if kind == "cpu":
        dev = torch.device("cpu")
    else:
        dev = torch.device(kind, local_rank)
        getattr(torch, kind).set_device(dev)
    if world_size == 1 and group_for_one and not dist.is_initialized():
        dist.init_process_group(backend=BACKENDS[kind], store=dist.HashStore(), rank=0, world_size=1,
                                device_id=dev if kind == "cuda" else None)
    if world_size > 1 and not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise UserError(f"WORLD_SIZE={world_size} but {name} is not set: launch with torchrun")
        dist.init_process_group(
            backend=BACKENDS[kind], rank=rank, world_size=world_size,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            device_id=dev if kind == "cuda" else None,  # binds NCCL to the GPU; HCCL picks set_device
        )
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, node_rank=node_rank, device=dev,
                   local_world_size=_env_int("LOCAL_WORLD_SIZE", default=1))


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.initialized:
        dist.barrier()


def any_rank(env: DistEnv, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (all ranks stop at the same step)."""
    if not env.initialized:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_over_ranks(env: DistEnv, values: list[float]) -> list[float]:
    if not env.initialized:
        return values
    t = torch.tensor(values, dtype=torch.float64 if env.device.type == "cpu" else torch.float32,
                     device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [v / env.world_size for v in t.tolist()]


def broadcast_object(env: DistEnv, obj):
    """Rank 0's ``obj`` on every rank."""
    if not env.initialized:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=env.device if env.device.type != "cpu" else None)
    return box[0]


def all_gather_objects(env: DistEnv, obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not env.initialized:
        return [obj]
    out: list = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def transformer_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Encoder and decoder layers of a Hugging Face Whisper model: the units FSDP2 shards one by one."""
    inner = model.model
    return list(inner.encoder.layers) + list(inner.decoder.layers)


def wrap_model(model: torch.nn.Module, env: DistEnv, strategy: str, precision: str) -> torch.nn.Module:
    """The model as it trains: FSDP2 (``fully_shard`` per encoder/decoder layer, then the root) for sharded state,
    else the bf16 main-grad wrapper (``--precision bf16``; also with one process) or DDP.

    Without a process group FSDP and DDP do not apply: the fp32 arrangements train the model as it is (same
    numerics, no communication).
    """
    if strategy not in ("ddp", "fsdp"):
        raise UserError(f"--parallel {strategy}: choose ddp or fsdp")
    model.to(env.device)
    if strategy == "fsdp" and env.initialized:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if precision == "bf16" \
            else None
        kwargs = {"mp_policy": mp} if mp else {}
        for layer in transformer_layers(model):
            fully_shard(layer, **kwargs)
        fully_shard(model, **kwargs)
        return model
    if precision == "bf16":
        return MainGradDataParallel(model, distributed=env.initialized, world_size=env.world_size)
    if not env.initialized:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [env.device.index] if env.device.type != "cpu" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


@contextlib.contextmanager
def gradient_sync(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on the non-final micro steps of an accumulated iteration."""
    if enabled:
        yield
        return
    if hasattr(model, "no_sync"):  # DDP
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def zero_grad(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Start an iteration with no gradients: the main-grad buffer zeroed (bf16), else the gradients freed."""
    if hasattr(model, "zero_grad_buffer"):
        model.zero_grad_buffer()
    else:
        optimizer.zero_grad(set_to_none=True)


def finish_gradient_sync(model: torch.nn.Module) -> None:
    """Wait for the gradient reduction still in flight after the last backward pass (bf16 main-grad buckets;
    DDP and FSDP2 finish theirs inside the backward pass)."""
    if hasattr(model, "finish_gradient_sync"):
        model.finish_gradient_sync()


def clip_grad_norm(model: torch.nn.Module, max_norm: float) -> torch.Tensor:
    """Clip (unless ``max_norm`` is 0) and return the total gradient norm: over the fp32 main gradients (bf16),
    or the parameters' gradients, also FSDP2's DTensors.

    The norm stays a device tensor: reading it here would make the host wait for the backward pass before it
    can queue the optimizer step; the trainer reads it once the iteration is done.
    """
    if hasattr(model, "clip_main_grads"):
        return model.clip_main_grads(max_norm)
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return norm


def full_precision_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict on the CPU with the fp32 master weights where the model computes in bf16."""
    state = model.master_state_dict() if hasattr(model, "master_state_dict") else unwrap(model).state_dict()
    return {k: v.detach().cpu() for k, v in state.items()}


def load_full_precision_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full-precision state dict (keys checked strictly); the bf16 arrangement keeps it as its masters."""
    if hasattr(model, "load_master_state_dict"):
        model.load_master_state_dict(state)
        return
    with torch.no_grad():
        unwrap(model).load_state_dict(state, strict=True)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so iteration times measure the work and not the launch."""
    if device.type in ("cuda", "npu"):
        getattr(torch, device.type).synchronize(device)
