"""AdamW and Megatron's learning-rate schedule (linear warmup, then cosine, linear or constant decay).

Megatron semantics, so a run configured like the seed's script behaves the same: warmup from 0 to ``--lr``
over ``--lr-warmup-iters``, then decay to ``--min-lr`` by ``--lr-decay-iters`` (default ``--train-iters``),
constant ``--min-lr`` after that. The state dict carries Megatron's field names (``opt_param_scheduler``).
"""

from __future__ import annotations

import math

import torch

from whisper_trainer.config import TrainingConfig


def build_optimizer(model: torch.nn.Module, t: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW over every trainable parameter; no decay on biases and norms (as Megatron does).

    Under the bf16 arrangement (``precision.MainGradDataParallel``) it steps the fp32 master weights, in the same
    parameter order (so optimizer states of the other arrangements load), and each step ends by rounding them
    into the model's bf16 parameters.
    """
    masters = hasattr(model, "named_master_parameters")
    named = model.named_master_parameters() if masters else (
        (name, p) for name, p in model.named_parameters() if p.requires_grad)
    decay, no_decay = [], []
    for name, p in named:
        (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    params = decay + no_decay
    hyper = {"lr": t.lr, "betas": (t.adam_beta1, t.adam_beta2), "eps": t.adam_eps}
    # One fused kernel per step for plain tensors on CUDA and (where torch_npu has it) NPU; foreach elsewhere
    # (CPU, FSDP2's DTensors).
    plain = bool(params) and all(type(p.data) is torch.Tensor for p in params)
    if plain and params[0].device.type == "npu":
        from whisper_trainer import npu

        optimizer = npu.fused_adamw(groups, grads_owned_elsewhere=masters, **hyper)
    else:
        fused = plain and all(p.is_cuda for p in params)
        optimizer = torch.optim.AdamW(groups, **hyper, **({"fused": True} if fused else {"foreach": True}))
    if masters:
        optimizer.register_step_post_hook(lambda *_: model.publish_master_weights())
    return optimizer


class LRSchedule:
    """Sets the optimizer's learning rate for each iteration; ``num_steps`` is the iterations taken."""

    def __init__(self, optimizer: torch.optim.Optimizer, t: TrainingConfig):
        self.optimizer = optimizer
        self.max_lr = t.lr
        self.min_lr = t.min_lr
        self.warmup = t.lr_warmup_iters
        self.decay_steps = t.lr_decay_iters or t.train_iters
        self.style = t.lr_decay_style
        self.num_steps = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        if self.warmup > 0 and step <= self.warmup:
            return self.max_lr * step / self.warmup
        if self.style == "constant":
            return self.max_lr
        if step > self.decay_steps:
            return self.min_lr
        span = self.decay_steps - self.warmup
        ratio = (step - self.warmup) / span if span > 0 else 1.0
        if self.style == "linear":
            coeff = 1.0 - ratio
        else:  # cosine
            coeff = 0.5 * (math.cos(math.pi * ratio) + 1.0)
        return self.min_lr + coeff * (self.max_lr - self.min_lr)

    @property
    def lr(self) -> float:
        return self.lr_at(self.num_steps)

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def step(self) -> None:
        self.num_steps += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"max_lr": self.max_lr, "min_lr": self.min_lr, "lr_warmup_steps": self.warmup,
                "lr_decay_steps": self.decay_steps, "lr_decay_style": self.style, "num_steps": self.num_steps}

    def load_state_dict(self, state: dict) -> None:
        """Only the position is taken from the checkpoint; the schedule itself follows this run's flags."""
        self.num_steps = int(state["num_steps"])
        self._apply()
