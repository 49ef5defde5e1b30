"""The Trainer: set everything up from a TrainerConfig, then one readable training loop.

Each iteration takes ``accumulation`` micro batches per rank (gradients synchronised only on the last one),
clips, steps AdamW and the learning-rate schedule, and logs. After each iteration all ranks agree (one tiny
all-reduce) whether to stop: a SIGTERM on any rank, ``--exit-interval``, or the end. A checkpoint is written
at every save interval, when stopping, and at the end, so a pod that is told to go saves first and exits 0.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from collections.abc import Callable, Iterator
from statistics import fmean

import torch

from whisper_trainer import kernels, parallel, precision
from whisper_trainer.checkpoint import CheckpointManager
from whisper_trainer.config import TrainerConfig
from whisper_trainer.heartbeat import TrainerProgress
from whisper_trainer.log import LIFECYCLE
from whisper_trainer.metrics import MetricsWriter, Stopwatch, average_samples_per_second, format_line
from whisper_trainer.model import (
    build_model,
    count_parameters,
    load_mm_state,
    loss_on_batch,
    read_pretrained_mm_state,
)
from whisper_trainer.optim import LRSchedule, build_optimizer

log = logging.getLogger(__name__)
lifecycle = logging.getLogger(LIFECYCLE)


class StopRequest:
    """Set by SIGTERM (what Kubernetes sends before it kills a pod); the loop checks it at step boundaries."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        log.warning("received %s: will save a checkpoint at the end of this iteration and exit", self.signal_name)


def default_loader_factory(cfg: TrainerConfig, env: parallel.DistEnv):
    from whisper_trainer.data import build_dataloader

    return build_dataloader(
        cfg.data.dataset_root, cfg.data.languages, cfg.training.split, cfg.data.processor_dir,
        n_mels=cfg.model.num_mel_bins, rank=env.rank, world_size=env.world_size,
        micro_batch_size=cfg.training.micro_batch_size, num_workers=cfg.training.num_workers,
        seed=cfg.training.seed, shuffle=cfg.data.shuffle, max_label_tokens=cfg.training.max_label_tokens,
        task=cfg.data.task, pin_memory=cfg.data.pin_memory and env.device.type != "cpu",
        n_frames=cfg.model.n_frames,
        compact_features=True,  # padded to 30 s on the device (features_on_device), not by the data workers
    )


def features_on_device(batch: dict, n_frames: int, device) -> torch.Tensor:
    """The batch's log-mel input [B, n_mels, n_frames] on ``device``.

    The default loader hands over compact batches (each clip's frames and the constant its padding takes):
    the padded 30 s window is built on the device, so the data workers skip writing ~12 MB per batch of 8 and
    the host-to-device copy carries only the frames that hold audio. Padded batches (other loaders) are copied.
    """
    if "input_frames" in batch:
        from whisper_trainer.data.features import expand_features

        return expand_features(dict(batch), n_frames, device)["input_features"]
    return batch["input_features"].to(device, non_blocking=True)


class Trainer:
    def __init__(self, cfg: TrainerConfig, env: parallel.DistEnv,
                 loader_factory: Callable[[TrainerConfig, parallel.DistEnv], object] = default_loader_factory):
        self.cfg = cfg
        self.env = env
        self.loader_factory = loader_factory
        self.accumulation = cfg.accumulation_steps(env.world_size)
        self.global_batch = cfg.global_batch_size(env.world_size)
        self.iteration = 0
        self.consumed_samples = 0
        self.iteration_ms: list[float] = []
        self.stop = StopRequest()
        self.compile_backend = "inductor"  # tests use "aot_eager": the same capture without code generation
        self.metrics = MetricsWriter(cfg.metrics.metrics_file, cfg.metrics.tensorboard_dir, enabled=env.is_main)
        self.progress = TrainerProgress(cfg.metrics.metrics_file, env, self.metrics, {
            "train_iters": cfg.training.train_iters, "world_size": env.world_size, "global_batch": self.global_batch,
            "save_interval": cfg.checkpoint.save_interval})

    # ------------------------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        self.stop.install()  # a SIGTERM during set-up stops the run after its first iteration, with a save
        cfg, env = self.cfg, self.env
        arrangement = precision.resolve(cfg.training.precision, cfg.training.bf16, env.device)
        # The arrangement as resolved, also in the checkpoint's args (bf16 = Megatron's meaning: bf16 parameters).
        self.cfg = cfg = dataclasses.replace(cfg, training=dataclasses.replace(
            cfg.training, precision=arrangement, bf16=arrangement == "bf16"))
        model = build_model(cfg.model, seed=cfg.training.seed, device=env.device)
        if cfg.model.ckpt_path:
            load_mm_state(model, read_pretrained_mm_state(cfg.model.ckpt_path, cfg.model.fields), cfg.model.fields,
                          source=f"ckpt_path {cfg.model.ckpt_path}")
            if env.is_main:
                log.info("initialised from %s", cfg.model.ckpt_path)
        self.hf_config = model.config
        if env.is_main:
            mode = cfg.parallel.strategy if env.initialized else "single process"
            log.info("model: %.1fM parameters, %s on %s x%d (node %d), global batch %d = micro %d x world %d "
                     "x accumulation %d, %s", count_parameters(model) / 1e6, mode, env.device.type,
                     env.world_size, env.node_rank, self.global_batch, cfg.training.micro_batch_size,
                     env.world_size, self.accumulation, precision.DESCRIPTIONS[arrangement])
        self.attention_backend = kernels.choose_attention(cfg.parallel.attention_backend, env.device)
        kernels.use_attention(model, self.attention_backend)
        kernels.tune_convolutions(env.device)
        self.model = parallel.wrap_model(model, env, cfg.parallel.strategy, arrangement)
        if cfg.parallel.activation_checkpointing:
            kernels.checkpoint_layers(parallel.transformer_layers(parallel.unwrap(self.model)))
        compiled = kernels.compile_wanted(cfg.parallel.compile, env.device)
        if compiled:
            if self.compile_backend == "inductor":
                kernels.share_compile_workers(env.local_world_size)
            kernels.compile_layers(parallel.transformer_layers(parallel.unwrap(self.model)), self.compile_backend)
        self.cross_entropy = kernels.cross_entropy_for(compiled, self.compile_backend)
        lifecycle.info("joined: rank %d of %d (local rank %d on node %d), device %s", env.rank, env.world_size,
                       env.local_rank, env.node_rank, env.device)
        self.optimizer = build_optimizer(self.model, cfg.training)
        self.scheduler = LRSchedule(self.optimizer, cfg.training)
        self.loader = self.loader_factory(cfg, env)
        self.checkpoints = CheckpointManager(cfg.checkpoint.save, cfg.checkpoint.load, cfg.checkpoint.keep, env,
                                             cfg.model.fields, cfg.parallel.strategy)
        self.progress.start_reporting()  # inputs checked: from here on the run writes its progress
        resumed = self.checkpoints.resume(self.model, self.optimizer, self.scheduler, self.loader,
                                          load_optim=not cfg.checkpoint.no_load_optim,
                                          load_rng=not cfg.checkpoint.no_load_rng)
        if resumed:
            self.iteration = resumed.iteration
            self.consumed_samples = int(resumed.trainer_state.get("consumed_samples", 0))
        self.progress.started(resumed.iteration if resumed else None, compiling=compiled)

    # ------------------------------------------------------------------------------------------------- loop
    def train(self) -> dict:
        """Run to ``--train-iters`` (or a stop); return a summary. Call ``setup()`` first."""
        t, c = self.cfg.training, self.cfg.checkpoint
        batches = iter(self.loader)
        saved_at = self.iteration if self.iteration else None
        reason = "finished"
        while self.iteration < t.train_iters:
            record = self.train_step(batches)
            self.iteration += 1
            self.report(record)
            self.progress.iteration_done(self.iteration)
            stop = parallel.any_rank(self.env, self.stop.requested)
            exit_now = bool(t.exit_interval and self.iteration % t.exit_interval == 0)
            if stop or exit_now or self.iteration % c.save_interval == 0 or self.iteration == t.train_iters:
                self.save()
                saved_at = self.iteration
            if stop or exit_now:
                reason = "signal" if stop else "exit-interval"
                break
        if saved_at != self.iteration:
            self.save()
        return self.finish(reason)

    def train_step(self, batches: Iterator[dict]) -> dict:
        """One iteration: accumulate ``accumulation`` micro batches, clip, step. Returns the raw figures."""
        env, t = self.env, self.cfg.training
        watch = Stopwatch()
        lr = self.scheduler.lr
        self.model.train()
        parallel.zero_grad(self.model, self.optimizer)
        loss_sum, samples = torch.zeros((), device=env.device), 0  # read after the step: no host sync inside
        for micro in range(self.accumulation):
            waited = time.perf_counter()
            batch = self.progress.next_batch(batches)
            watch.waited(time.perf_counter() - waited)
            features = features_on_device(batch, self.cfg.model.n_frames, env.device)
            labels = batch["labels"].to(env.device, non_blocking=True)
            with parallel.gradient_sync(self.model, enabled=micro == self.accumulation - 1):
                with precision.autocast(env.device, t.precision):
                    loss = loss_on_batch(self.model, features, labels, self.hf_config, self.cross_entropy)
                (loss / self.accumulation).backward()
            loss_sum += loss.detach().float()
            samples += int(batch["num_samples"])
        parallel.finish_gradient_sync(self.model)
        grad_norm = parallel.clip_grad_norm(self.model, t.clip_grad)
        self.optimizer.step()
        self.scheduler.step()
        parallel.synchronize(env.device)
        seconds = watch.elapsed()
        loss_mean, samples_mean, wait_mean = parallel.mean_over_ranks(
            env, [loss_sum.item() / self.accumulation, float(samples), watch.data_wait / seconds])
        global_samples = round(samples_mean * env.world_size)
        self.consumed_samples += global_samples
        return {"loss": loss_mean, "lr": lr, "grad_norm": float(grad_norm), "iteration_ms": 1000 * seconds,
                "samples_per_second": global_samples / seconds, "data_wait_share": wait_mean,
                "global_samples": global_samples}

    def report(self, record: dict) -> None:
        self.iteration_ms.append(record["iteration_ms"])
        record = {"iteration": self.iteration, **record, "consumed_samples": self.consumed_samples,
                  "train_iters": self.cfg.training.train_iters, "world_size": self.env.world_size,
                  "samples_per_second_per_device": record["samples_per_second"] / self.env.world_size,
                  "time": time.time()}
        if self.iteration % self.cfg.metrics.log_interval == 0 or self.iteration == self.cfg.training.train_iters:
            record["skipped_samples"] = self.skipped_samples()
            if self.env.is_main:
                log.info(format_line(record, self.cfg.training.train_iters))
        self.metrics.write(record)

    def skipped_samples(self) -> dict[str, int]:
        """Bad samples skipped so far, summed over ranks, by reason (collective)."""
        stats = getattr(self.loader, "stats", dict)()
        total: dict[str, int] = {}
        for per_rank in parallel.all_gather_objects(self.env, dict(stats)):
            for reason, count in per_rank.items():
                total[reason] = total.get(reason, 0) + int(count)
        return total

    def save(self) -> None:
        with self.progress.checkpointing(self.iteration):
            self.checkpoints.save(
                self.iteration, self.model, self.optimizer, self.scheduler, self.loader,
                self.cfg.as_namespace(self.env.world_size) if self.env.is_main else None,
                {"consumed_samples": self.consumed_samples, "iteration": self.iteration},
            )

    def finish(self, reason: str) -> dict:
        headline = average_samples_per_second(self.iteration_ms, self.global_batch)
        summary = {"iteration": self.iteration, "stopped_by": reason, "global_batch": self.global_batch,
                   "mean_iteration_ms": fmean(self.iteration_ms) if self.iteration_ms else None,
                   "average_samples_per_second": headline}
        if self.env.is_main:
            if headline is not None:
                log.info("Average Samples per Second: %.3f", headline)
            self.metrics.write({"summary": summary})
        lifecycle.info("training stopped at iteration %d (%s)", self.iteration, reason)
        self.metrics.close()
        self.progress.finished(reason)
        return summary

