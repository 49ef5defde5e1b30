"""Memory per arrangement: what the training state takes by the model, and the largest micro batch that fits.

- ``state_report``: bytes of parameters, gradients, master weights and AdamW moments the trainer holds, counted
  from its tensors, beside ``precision.state_bytes`` (the per-parameter model: 18 bytes for bf16 with fp32
  masters, 16 for the fp32 arrangements), so the model is checked on every machine the benchmark runs on.
- ``largest_micro_batch``: doubling from the benchmark's micro batch until a step runs out of device memory,
  then bisection, each probe two full training steps (on the same trainer: the compiled layers recompile once,
  with the batch dimension symbolic). Records peak memory and step time per probe, so the report also says
  whether a larger batch (e.g. one that only activation checkpointing makes fit) trains faster per sample.
"""

from __future__ import annotations

import gc
import time

CAP = 256  # no probe beyond this micro batch


def state_report(trainer) -> dict:
    """The trainer's persistent training state in GiB, counted and modelled."""
    from whisper_trainer import precision

    counted = precision.training_state_bytes(trainer.model, trainer.optimizer)
    params = [p for p in trainer.model.parameters()]
    trainable = sum(p.numel() for p in params if p.requires_grad)
    frozen = sum(p.numel() for p in params if not p.requires_grad)
    modelled = precision.state_bytes(trainer.cfg.training.precision, trainable, frozen)
    return {"precision": trainer.cfg.training.precision, "trainable_parameters": trainable,
            "counted_gib": round(counted / 2**30, 3), "modelled_gib": round(modelled / 2**30, 3)}


def largest_micro_batch(trainer, make_batch, device, deadline: float, known_fit: int, accel=None) -> dict:
    """Largest micro batch (up to ``CAP``) whose training step fits on ``device``, starting above ``known_fit``
    (a size already trained); stops at ``deadline`` (then ``exact`` is false). ``accel``: torch.cuda by default."""
    import torch

    accel = accel or getattr(torch, device.type)
    probes: list[dict] = []

    def fits(size: int) -> bool:
        batch = make_batch(size)
        stream = iter(lambda: dict(batch), None)
        accel.reset_peak_memory_stats(device)
        try:
            trainer.train_step(stream)  # the first step at a new size may compile
            started = time.perf_counter()
            trainer.train_step(stream)
            accel.synchronize(device)
            seconds = time.perf_counter() - started
        except torch.OutOfMemoryError:
            probes.append({"micro_batch": size, "fits": False})
            return False
        finally:
            gc.collect()
            accel.empty_cache()
        probes.append({"micro_batch": size, "fits": True,
                       "peak_gib": round(accel.max_memory_allocated(device) / 2**30, 2),
                       "step_ms": round(1000 * seconds, 1), "samples_per_second": round(size / seconds, 3)})
        return True

    largest, failing = known_fit, None
    while failing is None and 2 * largest <= CAP and time.time() < deadline:
        if fits(2 * largest):
            largest *= 2
        else:
            failing = 2 * largest
    while failing is not None and failing - largest > 1 and time.time() < deadline:
        middle = (largest + failing) // 2
        if fits(middle):
            largest = middle
        else:
            failing = middle
    exact = (failing is not None and failing - largest == 1) or (failing is None and 2 * largest > CAP)
    fitting = [p for p in probes if p["fits"]]
    return {"largest_micro_batch": largest, "exact": exact, "capped": failing is None and 2 * largest > CAP,
            "fastest": max(fitting, key=lambda p: p["samples_per_second"]) if fitting else None, "probes": probes}
