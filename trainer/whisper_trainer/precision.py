"""How parameters, gradients and master weights are kept: the ``--precision`` arrangements.

- ``bf16`` (the default on a GPU or NPU; Megatron's ``--bf16``): parameters and activations in bf16, an fp32
  master copy of every parameter, gradients accumulated over the micro batches and all-reduced in fp32, AdamW
  stepping the fp32 masters, which are then copied (rounded) into the bf16 parameters. Checkpoints hold the fp32
  masters, so a resumed run continues bitwise as if it had not stopped. With DDP or one process this is
  ``MainGradDataParallel`` below (Megatron's ``main_grad`` buffers); with ``--parallel fsdp`` FSDP2's
  ``MixedPrecisionPolicy`` does the same (its sharded fp32 parameters are the masters, it reduces in fp32 and
  accumulates unsynchronised micro steps in fp32).
- ``bf16-autocast``: the earlier arrangement: fp32 parameters, gradients and optimizer, matmuls under
  ``torch.autocast`` in bf16 (layer norms and the residual stream stay fp32). Every weight is cast on every use
  and the elementwise traffic is fp32, which is why it is slower.
- ``fp32``: everything in fp32: the reference the bf16 arrangement is checked against, and the CPU default.

``auto`` is ``bf16`` on a GPU or NPU and ``fp32`` on a CPU (or ``bf16`` there too when ``--bf16`` is given):
CPU runs are the demo, the tests and small labs, where fp32 is exact and, on CPUs without bf16 matrix units,
also the faster one (README, "Trainer flags"). Soundness of ``bf16`` is shown by a test, not assumed:
``loss_curve_gap`` is the measure tests/test_precision.py and the GPU benchmark both apply.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from whisper_k8s.errors import UserError
from whisper_trainer.config import PRECISION_CHOICES

# Elements per all-reduce bucket (fp32: 160 MB). Large enough that NCCL runs at bandwidth, small enough that the
# first buckets' reduction overlaps the rest of the backward pass (Megatron's default is 40 M as well).
BUCKET_NUMEL = 40_000_000
ALIGN = 64  # elements: every parameter's view into a flat buffer starts 128-byte aligned (bf16) for the kernels

# Soundness: the bf16 loss curve may differ from the fp32 one by at most bf16's machine epsilon (2^-8, 8
# significant bits), relative, over windows of 20 iterations (tests/test_precision.py says why).
SOUND_TOLERANCE = 2.0 ** -8
SOUND_WINDOW = 20
# Bytes of training state per parameter (trainable / frozen): parameter, gradient, fp32 master, AdamW's two moments.
STATE_BYTES = {"bf16": (2 + 4 + 4 + 8, 2 + 4), "bf16-autocast": (4 + 4 + 8, 4), "fp32": (4 + 4 + 8, 4)}

DESCRIPTIONS = {
    "bf16": "bf16 parameters and activations, fp32 master weights, gradients and reduction",
    "bf16-autocast": "bf16 autocast over fp32 parameters",
    "fp32": "fp32",
}


def resolve(setting: str, bf16_flag: bool, device: torch.device) -> str:
    """The arrangement a run uses: ``auto`` becomes ``bf16`` on an accelerator (or with ``--bf16``), else ``fp32``."""
    if setting not in PRECISION_CHOICES:
        raise UserError(f"--precision {setting}: choose {', '.join(PRECISION_CHOICES)}")
    if setting != "auto":
        return setting
    return "bf16" if bf16_flag or device.type != "cpu" else "fp32"


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` to bf16 for the ``bf16-autocast`` arrangement; the others run in their parameters' dtype."""
    if precision != "bf16-autocast":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _aligned_offsets(sizes: list[int]) -> list[int]:
    """Start of each of ``sizes`` in a flat buffer, each rounded up to ``ALIGN`` elements; the last entry is the
    buffer's length (Whisper's sizes are all multiples of 64, so there is no padding in practice)."""
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + -(-size // ALIGN) * ALIGN)
    return offsets


@dataclass
class _Bucket:
    start: int
    end: int
    members: int  # parameters whose gradient lands in [start, end)


class MainGradDataParallel(torch.nn.Module):
    """bf16 model, fp32 masters and fp32 gradient buffers, data-parallel over the process group when there is one.

    Layout (Megatron's): every floating parameter's fp32 master is a view into one flat fp32 buffer, its bf16
    value a view into one flat bf16 buffer, so refreshing the model after a step is one cast-copy kernel. Every
    trainable parameter has a ``main_grad``, a view into one flat fp32 gradient buffer laid out in reverse
    registration order (roughly the order the backward pass produces gradients). A hook after each parameter's
    gradient is accumulated adds the bf16 gradient into ``main_grad`` and frees it. On the last micro step of an
    iteration (outside ``no_sync``) each bucket of the buffer is all-reduced as soon as all its gradients are in,
    asynchronously, in bucket order on every rank, so communication overlaps the rest of the backward pass;
    ``finish_gradient_sync`` waits for them and hands the buffer to the masters as their ``.grad``.
    """

    def __init__(self, module: torch.nn.Module, distributed: bool, world_size: int = 1,
                 bucket_numel: int = BUCKET_NUMEL):
        super().__init__()
        self.module = module
        self.distributed = distributed
        self.world_size = world_size
        named = [(name, p) for name, p in module.named_parameters() if p.is_floating_point()]
        device = named[0][1].device
        offsets = _aligned_offsets([p.numel() for _, p in named])
        self._master_flat = torch.zeros(offsets[-1], dtype=torch.float32, device=device)
        self._param_flat = torch.zeros(offsets[-1], dtype=torch.bfloat16, device=device)
        self.masters: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for (name, p), offset in zip(named, offsets, strict=False):
                master = self._master_flat[offset:offset + p.numel()].view_as(p)
                master.copy_(p)
                p.data = self._param_flat[offset:offset + p.numel()].view_as(p)
                p.data.copy_(master)
                self.masters[name] = master
        for buffer_owner in module.modules():  # floating buffers follow the parameters (Whisper has none)
            for key, buf in buffer_owner._buffers.items():
                if buf is not None and buf.is_floating_point():
                    buffer_owner._buffers[key] = buf.to(torch.bfloat16)
        if distributed:  # every rank starts from rank 0's weights, as DDP makes sure
            dist.broadcast(self._master_flat, src=0)
            self._param_flat.copy_(self._master_flat)
        self._trainable = [(name, p) for name, p in named if p.requires_grad]
        backward_order = [p for _, p in reversed(self._trainable)]
        grad_offsets = _aligned_offsets([p.numel() for p in backward_order])
        self.grad_buffer = torch.zeros(grad_offsets[-1], dtype=torch.float32, device=device)
        self.buckets: list[_Bucket] = []
        self._bucket_of: dict[torch.nn.Parameter, int] = {}
        start = members = 0
        for p, offset, end in zip(backward_order, grad_offsets, grad_offsets[1:], strict=False):
            p.main_grad = self.grad_buffer[offset:offset + p.numel()].view_as(p)
            self._bucket_of[p] = len(self.buckets)
            members += 1
            if end - start >= bucket_numel:
                self.buckets.append(_Bucket(start, end, members))
                start, members = end, 0
        if members:
            self.buckets.append(_Bucket(start, grad_offsets[-1], members))
        for _, p in self._trainable:
            p.register_post_accumulate_grad_hook(self._on_gradient)
        self._sync = True
        self._reset_communication()

    def forward(self, *args, **kwargs):
        """The module's forward with floating inputs (the log-mel features) cast to bf16, as FSDP2's policy does."""
        def cast(value):
            return value.to(torch.bfloat16) if torch.is_tensor(value) and value.is_floating_point() else value

        return self.module(*(cast(a) for a in args), **{k: cast(v) for k, v in kwargs.items()})

    # ------------------------------------------------------------------------------------------- gradients
    def _reset_communication(self) -> None:
        self._pending = [bucket.members for bucket in self.buckets]
        self._next_bucket = 0
        self._handles: list = []

    def _on_gradient(self, param: torch.nn.Parameter) -> None:
        param.main_grad.add_(param.grad)
        param.grad = None
        if self._sync and self.distributed:
            self._pending[self._bucket_of[param]] -= 1
            while self._next_bucket < len(self.buckets) and self._pending[self._next_bucket] == 0:
                self._launch_next()

    def _launch_next(self) -> None:
        bucket = self.buckets[self._next_bucket]
        view = self.grad_buffer[bucket.start:bucket.end]
        view.div_(self.world_size)  # the mean over ranks, as DDP reduces
        self._handles.append(dist.all_reduce(view, async_op=True))
        self._next_bucket += 1

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Accumulate into ``main_grad`` without communicating (the non-final micro steps of an iteration)."""
        previous, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = previous

    def finish_gradient_sync(self) -> None:
        """Reduce what is not yet reduced (buckets with a parameter that got no gradient), wait for all, and make
        the reduced fp32 gradients the masters' ``.grad``."""
        if self.distributed:
            while self._next_bucket < len(self.buckets):
                self._launch_next()
            for handle in self._handles:
                handle.wait()
        self._reset_communication()
        for name, p in self._trainable:
            self.masters[name].grad = p.main_grad

    def zero_grad_buffer(self) -> None:
        """Start an iteration: zero the fp32 gradients (also after an iteration that stopped half-way)."""
        for handle in self._handles:
            handle.wait()
        self._reset_communication()
        self.grad_buffer.zero_()
        for _, p in self._trainable:
            p.grad = None

    def clip_main_grads(self, max_norm: float) -> torch.Tensor:
        """The gradients' global 2-norm (over the flat buffer: one kernel), clipped to ``max_norm`` unless it is 0."""
        norm = torch.linalg.vector_norm(self.grad_buffer)
        if max_norm > 0:
            self.grad_buffer.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
        return norm

    # ------------------------------------------------------------------------------------ master weights
    def named_master_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The fp32 masters of the trainable parameters, in the module's parameter order: what AdamW steps."""
        for name, _ in self._trainable:
            yield name, self.masters[name]

    @torch.no_grad()
    def publish_master_weights(self) -> None:
        """Round the fp32 masters into the bf16 parameters the model computes with (after every optimizer step)."""
        self._param_flat.copy_(self._master_flat)

    def master_state_dict(self) -> dict[str, torch.Tensor]:
        """The module's state dict (same keys, same order) with the fp32 masters in place of the bf16 parameters."""
        return {key: self.masters.get(key, value) for key, value in self.module.state_dict().items()}

    @torch.no_grad()
    def load_master_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load a full-precision state: keys checked strictly, masters set exactly, parameters rounded from them."""
        self.module.load_state_dict(state, strict=True)
        for name, master in self.masters.items():
            master.copy_(state[name])
        self.publish_master_weights()


def round_master_weights_after_each_step(model: MainGradDataParallel) -> None:
    """The failing control of the soundness checks: bf16 training whose masters lose their extra precision after
    every step (what training bf16 weights without fp32 masters amounts to). Never used for training."""
    publish = model.publish_master_weights

    def publish_and_round() -> None:
        publish()
        model._master_flat.copy_(model._param_flat)

    model.publish_master_weights = publish_and_round


def state_bytes(precision: str, trainable: int, frozen: int) -> int:
    """Bytes of persistent training state (not activations) the arrangement keeps for this many parameters."""
    per_trainable, per_frozen = STATE_BYTES[precision]
    return per_trainable * trainable + per_frozen * frozen


def training_state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes the model's parameters, gradients, fp32 masters and the optimizer's state occupy, each storage once
    (masters and gradients of the bf16 arrangement are views into flat buffers)."""
    tensors = [*model.parameters(), *(p.grad for p in model.parameters() if p.grad is not None)]
    for group in optimizer.param_groups:
        for p in group["params"]:
            tensors += [p, *([p.grad] if p.grad is not None else [])]
            tensors += [v for v in optimizer.state.get(p, {}).values() if torch.is_tensor(v) and v.dim() > 0]
    if isinstance(model, MainGradDataParallel):
        tensors.append(model.grad_buffer)
    storages = {}
    for tensor in tensors:
        local = getattr(tensor, "_local_tensor", tensor)  # FSDP2's DTensors: this rank's shard
        storage = local.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def loss_curve_gap(candidate: list[float], reference: list[float], window: int) -> list[float]:
    """Relative gap between two loss curves, window by window: |mean(candidate) - mean(reference)| / mean(reference)
    over consecutive windows of ``window`` steps (a trailing partial window is dropped).

    Window means, not single steps: two runs whose arithmetic differs in the last bits follow different but
    equally good paths, and single steps then differ by the step-to-step noise of either run, which says nothing
    about whether one of them trains worse. A systematic gap (updates lost to rounding, gradients accumulated too
    coarsely) shows in every window.
    """
    count = min(len(candidate), len(reference)) // window
    gaps = []
    for i in range(count):
        a = sum(candidate[i * window:(i + 1) * window]) / window
        b = sum(reference[i * window:(i + 1) * window]) / window
        gaps.append(abs(a - b) / abs(b))
    return gaps
