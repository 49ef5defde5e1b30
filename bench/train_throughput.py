"""Benchmark: training throughput, MFU, memory and bf16 soundness of our trainer, against a plain HF loop.

Our trainer and the baseline train the same model (Hugging Face ``WhisperForConditionalGeneration``, untied head
as MindSpeed-MM) on the same batch with the same optimizer settings (AdamW, lr 1e-5, clipping at 1.0), in this
one process, one loop after the other, each timed over the same steps after warm-up steps (wall time on a
GPU/NPU, this process's CPU time on a CPU, which a shared machine's load barely moves):

- ours: ``whisper_trainer.train.Trainer.train_step``, set up by ``Trainer.setup`` exactly as a run is, in its
  default arrangement (on a GPU/NPU: bf16 parameters and activations with fp32 master weights and fp32
  main-grad buffers, each layer and the loss compiled on CUDA, fused AdamW, no host sync inside the step).
  ``--variant NAME:FLAGS`` times it again with other trainer flags; on a GPU/NPU by default: ``autocast`` (the
  earlier arrangement, bf16 autocast over fp32 weights), ``fsdp``, ``checkpointed`` (activation checkpointing)
  and ``eager`` (no compile).
- baseline: the plain loop people write from the Hugging Face examples: ``model(input_features,
  labels=labels).loss.backward()`` under bf16 autocast, ``clip_grad_norm_``, ``AdamW.step``, ``zero_grad``.

Beside the speed: MFU against the datasheet's dense bf16 peak and against the bf16 matmul rate measured on the
card in the same run; per loop the peak device memory, the training state counted and modelled
(``memory_search.state_report``) and one profiled step (device time by kind of kernel); on CUDA the largest
micro batch that fits for the default arrangement, ``autocast`` and ``checkpointed`` (``memory_search``), each
SDPA backend's time on the model's attention shapes, and the bf16-vs-fp32 loss curves over 200 iterations of
generated speech (``loss_curves``; needs ``python bench/loss_curves.py prepare`` first, bench/gpu_session.sh).

Shapes: whisper-large-v3 (``--preset large-v3``), micro batch 8, 30 s of audio (128 x 3000 mel frames), 448
target tokens, as issue 8 set them. On CPU the default is the ``tiny`` preset with micro batch 2 so that CI
exercises the script (figures then only compare the two loops on this machine; MFU is null: no peak known).

Robust by construction: every section (matmul peak, each loop, the memory search, the loss curves) runs on its
own; one that fails is recorded under ``errors`` and the others go on; one that would not fit in what is left
of ``--budget-seconds`` is recorded under ``skipped``; the result file is rewritten (atomically) after every
section, so an interrupted run leaves what it measured. Writes bench/results/train_throughput.json (GPU/NPU)
or train_throughput.cpu.json (CPU) and prints one summary line.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "train_throughput.json"  # GPU/NPU figures: the ones issue 8 targets
RESULTS_CPU = ROOT / "bench" / "results" / "train_throughput.cpu.json"  # CPU runs do not overwrite them
ACCELERATOR_VARIANTS = ("autocast:--precision=bf16-autocast", "checkpointed:--activation-checkpointing",
                        "eager:--compile=off", "fsdp:--parallel=fsdp")  # run in this order; the last may not fit
MEMORY_SEARCHED = ("ours", "autocast", "checkpointed")  # largest micro batch searched for these (CUDA)
# Seconds a section needs at least on an H200 (large-v3: build, compile, steps); skipped when less is left.
SECTION_SECONDS = {"ours": 90, "baseline": 40, "loss_curves": 75, "variant": 60, "memory_search": 45}
CURVE_LAYERS = 4  # the loss-curve model on a GPU: large-v3's width, 4 encoder and 4 decoder layers
PRESETS = ROOT / "helm" / "files" / "model-presets"
sys.path[:0] = [str(ROOT), str(ROOT / "trainer")]
import device_probes  # noqa: E402 (bench/, the script's own folder)
import loss_curves  # noqa: E402
import memory_search  # noqa: E402
from host import host_info  # noqa: E402

# Dense bf16 peak FLOP/s (no sparsity) of cards this kit targets, by a substring of the device name.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12,
             "Ascend910B": 313e12, "910B": 313e12}


def forward_flops_per_sample(cfg: dict, target_tokens: int) -> float:
    """Multiply-adds x 2 of one sample's forward pass (matmuls, convolutions, attention scores)."""
    d, mels, vocab = cfg["d_model"], cfg["num_mel_bins"], cfg["vocab_size"]
    s = cfg["max_source_positions"]  # encoder positions after the stride-2 conv
    frames, t = 2 * s, target_tokens
    enc_ffn, dec_ffn = cfg["encoder_ffn_dim"], cfg["decoder_ffn_dim"]
    macs = frames * d * mels * 3 + s * d * d * 3  # conv1 (stride 1), conv2 (stride 2)
    macs += cfg["encoder_layers"] * (4 * s * d * d + 2 * s * s * d + 2 * s * d * enc_ffn)
    per_decoder_layer = (4 * t * d * d + 2 * t * t * d  # self attention
                         + 2 * t * d * d + 2 * s * d * d + 2 * t * s * d  # cross attention (q,o on t; k,v on s)
                         + 2 * t * d * dec_ffn)
    macs += cfg["decoder_layers"] * per_decoder_layer + t * d * vocab  # LM head
    return 2.0 * macs


def make_batch(cfg: dict, micro_batch: int, target_tokens: int, seed: int = 0):
    """A batch as the data loader gives it: features [B, mels, 3000], labels [B, T] without <|sot|>."""
    import torch

    g = torch.Generator().manual_seed(seed)
    features = torch.randn(micro_batch, cfg["num_mel_bins"], 2 * cfg["max_source_positions"], generator=g)
    prompt = torch.tensor([50259, 50360, 50364])  # <|en|><|transcribe|><|notimestamps|>
    text = torch.randint(220, 50000, (micro_batch, target_tokens - len(prompt) - 1), generator=g)
    labels = torch.cat([prompt.expand(micro_batch, -1), text, torch.full((micro_batch, 1), 50257)], dim=1)
    return {"input_features": features, "labels": labels, "num_samples": micro_batch}


def time_steps(step, device, warmup: int, steps: int) -> list[float]:
    """Seconds per step after ``warmup`` untimed steps: wall time on an accelerator, this process's CPU time
    on a CPU (which a shared machine's load barely moves)."""
    from whisper_trainer.parallel import synchronize

    now = time.perf_counter if device.type != "cpu" else time.process_time
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(steps):
        start = now()
        step()
        synchronize(device)
        times.append(now() - start)
    return times


class Setting:
    """What every loop of one run shares: the device, the model files, the batch and the timing settings."""

    def __init__(self, args, kind: str, workdir: Path, model_fields: dict):
        import torch

        self.args, self.kind, self.workdir, self.fields = args, kind, workdir, model_fields
        self.device = torch.device(kind)
        self.batch = make_batch(model_fields, args.micro_batch, args.target_tokens)
        self.flops = 3 * forward_flops_per_sample(model_fields, args.target_tokens)
        self.peak: float | None = None
        self.defaults = device_probes.sdp_switches()
        (workdir / "data.json").write_text(json.dumps({"dataset_param": {
            "basic_parameters": {"dataset_name_or_path": str(workdir), "language": "en"},
            "preprocess_parameters": {"processor_name_or_path": str(workdir)}}}))

    def trainer(self, name: str, flags: list[str], loader, fields: dict | None = None):
        """Our trainer set up as a run sets it up, for ``fields`` (default: the benchmark's model) plus ``flags``."""
        from whisper_trainer import parallel
        from whisper_trainer.config import parse_args
        from whisper_trainer.train import Trainer

        folder = self.workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.json").write_text(json.dumps({**(fields or self.fields), "ckpt_path": ""}))
        argv = ["--mm-model", str(folder / "model.json"), "--mm-data", str(self.workdir / "data.json"),
                "--save", str(folder / "ckpt"), "--micro-batch-size", str(self.args.micro_batch), "--lr", "1e-5",
                "--clip-grad", "1.0", "--train-iters", "1000", "--device", self.kind,
                "--metrics-file", str(folder / "m.jsonl"), *([] if self.args.bf16 else ["--precision", "fp32"])]
        cfg = parse_args(argv + list(flags), check_files=False)
        env = parallel.init_distributed(self.kind, group_for_one=cfg.parallel.strategy == "fsdp")
        trainer = Trainer(cfg, env, loader_factory=lambda c, e: loader)
        trainer.setup()
        return trainer

    def summarise(self, times: list[float], micro_batch: int | None = None) -> dict:
        micro_batch = micro_batch or self.args.micro_batch
        mean = sum(times) / len(times)
        samples_per_second = micro_batch / mean
        achieved = samples_per_second * self.flops
        return {"samples_per_second": round(samples_per_second, 4), "mean_step_ms": round(1000 * mean, 2),
                "step_ms": [round(1000 * t, 2) for t in times],
                "model_tflops_per_second": round(achieved / 1e12, 4),
                "mfu": round(achieved / self.peak, 4) if self.peak else None}

    def release(self) -> None:
        """Undo what a finished loop leaves behind before the next one is built: its model, optimizer state and
        compiled code, a process group of one (``--parallel fsdp``), and an ``--attention-backend`` restriction,
        which is process-wide. Dynamo's cache is reset too: it does not guard on the SDPA switches, so a variant
        with another backend would otherwise silently reuse the previous loop's graphs."""
        import torch
        from whisper_trainer import parallel

        parallel.shutdown()
        device_probes.restore_sdp_switches(self.defaults)
        torch._dynamo.reset()
        gc.collect()
        if self.device.type != "cpu":
            getattr(torch, self.device.type).empty_cache()


def loop_facts(device) -> dict:
    """What the loop just timed used: peak device memory, and the graphs torch.compile captured (recompiles show
    as more graphs than layer kinds). Resets both for the next loop."""
    import torch
    from torch._dynamo.utils import counters

    facts = {"compiled_graphs": int(counters["stats"].get("unique_graphs", 0))}
    counters.clear()
    if device.type != "cpu":
        accel = getattr(torch, device.type)
        facts["peak_memory_gib"] = round(accel.max_memory_allocated(device) / 2**30, 2)
        accel.reset_peak_memory_stats(device)
    return facts


def measure_ours(setting: Setting, report: Report, name: str, flags: list[str], profile: bool) -> dict:
    """Time our trainer with ``flags``; profile one step; on CUDA search the largest micro batch when asked."""
    trainer = setting.trainer(name, flags, loss_curves.Replay([setting.batch]))
    stream = iter(trainer.loader)

    def step():
        return trainer.train_step(stream)

    times = time_steps(step, setting.device, setting.args.warmup, setting.args.steps)
    result = {"flags": flags, **setting.summarise(times), "precision": trainer.cfg.training.precision,
              "attention_backend": trainer.attention_backend, **loop_facts(setting.device),
              "training_state": memory_search.state_report(trainer)}
    if profile:
        result["kernels"] = device_probes.kernel_time_by_kind(step, setting.device)
    progress(f"{name}: {result['samples_per_second']} samples/s, mean step {result['mean_step_ms']} ms")
    if name in MEMORY_SEARCHED and setting.args.memory_search:
        if report.allows(f"{name}.memory_search", SECTION_SECONDS["memory_search"]):
            # Leave a minute for what follows (the baseline after ours).
            deadline = min(time.time() + setting.args.memory_search_seconds, report.deadline - 60)
            result["memory_search"] = memory_search.largest_micro_batch(
                trainer, lambda size: make_batch(setting.fields, size, setting.args.target_tokens),
                setting.device, deadline, known_fit=setting.args.micro_batch)
            progress(f"{name}: largest micro batch {result['memory_search']['largest_micro_batch']}")
    return result


def baseline_step(setting: Setting):
    """The plain Hugging Face loop on the same model config, batch and optimizer settings."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    hf = {k: v for k, v in setting.fields.items() if k not in ("model_id", "ckpt_path", "torch_dtype",
                                                                "num_hidden_layers")}
    torch.manual_seed(0)
    device = setting.device
    with torch.device(device):  # initialised where it trains, as our trainer does
        model = WhisperForConditionalGeneration(WhisperConfig(**hf, tie_word_embeddings=False))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    features = setting.batch["input_features"].to(device)
    labels = setting.batch["labels"].to(device)

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=setting.args.bf16):
            loss = model(input_features=features, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def measure_baseline(setting: Setting) -> dict:
    step = baseline_step(setting)
    times = time_steps(step, setting.device, setting.args.warmup, setting.args.steps)
    result = {**setting.summarise(times), **loop_facts(setting.device),
              "kernels": device_probes.kernel_time_by_kind(step, setting.device)}
    progress(f"baseline: {result['samples_per_second']} samples/s, mean step {result['mean_step_ms']} ms")
    return result


def measure_loss_curves(setting: Setting) -> dict:
    """bf16 vs fp32 (and the control) on the prepared speech batches; the model: large-v3's width with
    CURVE_LAYERS layers on a GPU/NPU, the demo preset on a CPU (both read 128 mel bins)."""
    args = setting.args
    if not args.speech_batches.is_file():
        raise FileNotFoundError(f"{args.speech_batches}: run `python bench/loss_curves.py prepare` first "
                                "(on a machine with espeak-ng and flite; bench/gpu_session.sh prepare)")
    batches = loss_curves.load_batches(args.speech_batches)
    if setting.device.type == "cpu":
        fields = json.loads((PRESETS / "demo.json").read_text())
    else:
        fields = {**json.loads((PRESETS / "large-v3.json").read_text()), "encoder_layers": CURVE_LAYERS,
                  "decoder_layers": CURVE_LAYERS, "num_hidden_layers": CURVE_LAYERS}
    flags = ["--micro-batch-size", str(int(batches[0]["num_samples"])), "--lr", "1e-4",
             "--lr-warmup-iters", str(min(10, args.curve_iterations // 2)),
             "--train-iters", str(args.curve_iterations), "--seed", "11", "--compile", "off"]

    def build(precision_flags: list[str], loader):
        setting.release()
        return setting.trainer("curve", flags + precision_flags, loader, fields)

    result = loss_curves.compare(build, batches, args.curve_iterations)
    setting.release()
    result["model"] = {"d_model": fields["d_model"], "layers": fields["encoder_layers"], "batches": len(batches),
                       "micro_batch": int(batches[0]["num_samples"]), "compile": "off"}
    progress(f"loss curves: max window gap bf16 {result['max_gap']['bf16']:.5f}, tolerance {result['tolerance']:.5f}")
    return result


class Report:
    """The result file, rewritten after every section; sections that fail or do not fit the budget are noted."""

    def __init__(self, path: Path, budget_seconds: float | None):
        self.path = path
        self.started = time.time()
        self.deadline = self.started + budget_seconds if budget_seconds else float("inf")
        self.data: dict = {"name": "train_throughput",
                           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                           "budget_seconds": budget_seconds, "section_seconds": {}, "errors": {}, "skipped": {}}

    def allows(self, name: str, seconds: float) -> bool:
        left = self.deadline - time.time()
        if left < seconds:
            self.data["skipped"][name] = f"time budget: {left:.0f} s left, needs about {seconds} s"
            progress(f"{name}: skipped ({self.data['skipped'][name]})")
            return False
        return True

    def run(self, name: str, work, seconds: float = 0.0, release=None):
        """``work()``'s result, or None when it failed (the error noted) or did not fit the time left."""
        if not self.allows(name, seconds):
            return None
        started = time.time()
        try:
            return work()
        except Exception as err:  # one section's failure must not cost the others' figures
            traceback.print_exc()
            self.data["errors"][name] = f"{type(err).__name__}: {err}"[:600]
            return None
        finally:
            self.data["section_seconds"][name] = round(time.time() - started, 1)
            if release:
                release()
            self.write()

    def write(self) -> None:
        self.data["total_seconds"] = round(time.time() - self.started, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".json.tmp")
        partial.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(partial, self.path)


def progress(message: str) -> None:
    """One line on stderr per finished section, so a slow or interrupted run shows where it got to."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine(device) -> dict:
    import torch

    info = {**host_info(), "torch": torch.__version__, "threads": torch.get_num_threads(), "device": device.type}
    if device.type == "cuda":
        info["accelerator"] = torch.cuda.get_device_name(device)
    elif device.type == "npu":
        info["accelerator"] = torch.npu.get_device_name(device)
    else:
        info["accelerator"] = None
        info["note"] = "no GPU/NPU in this run: CPU figures with a small config, MFU not applicable"
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def peak_flops(info: dict) -> float | None:
    name = (info.get("accelerator") or "").replace(" ", "")
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'NAME:--flag value ...' -> (NAME, ['--flag', 'value', ...])."""
    name, sep, flags = text.partition(":")
    if not sep or not name.strip() or not name.strip().replace("-", "").replace("_", "").isalnum():
        raise SystemExit(f"--variant {text!r}: write NAME:FLAGS, e.g. 'eager:--compile off'")
    return name.strip(), flags.split()


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default=None, help="model preset (default: large-v3 on GPU/NPU, tiny on CPU)")
    parser.add_argument("--micro-batch", type=int, default=None, help="default: 8 on GPU/NPU, 2 on CPU")
    parser.add_argument("--target-tokens", type=int, default=448)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 10 on GPU/NPU, 3 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 3, CPU 1)")
    parser.add_argument("--device", default="auto", choices=["auto", "npu", "cuda", "cpu"])
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", default=None,
                        help="fp32 for both loops (the default on CPU)")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"default: {RESULTS.relative_to(ROOT)} on GPU/NPU, {RESULTS_CPU.relative_to(ROOT)} on CPU")
    parser.add_argument("--variant", action="append", default=None, metavar="NAME:FLAGS",
                        help="also time our trainer with extra flags, e.g. 'eager:--compile=off' (repeatable). "
                             f"Default on a GPU/NPU: {' '.join(ACCELERATOR_VARIANTS)}; on CPU none")
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help="stop starting sections when this much time has passed (default: none)")
    parser.add_argument("--no-memory-search", dest="memory_search", action="store_false", default=None,
                        help="skip the largest-micro-batch search (default: on CUDA, for "
                             f"{', '.join(MEMORY_SEARCHED)})")
    parser.add_argument("--memory-search-seconds", type=float, default=60,
                        help="time for each largest-micro-batch search")
    parser.add_argument("--speech-batches", type=Path, default=loss_curves.SPEECH_BATCHES,
                        help="batches for the bf16-vs-fp32 loss curves (made by bench/loss_curves.py prepare)")
    parser.add_argument("--curve-iterations", type=int, default=200, help="0 skips the loss curves")
    args = parser.parse_args(argv)

    from whisper_trainer.parallel import pick_device_type

    kind = pick_device_type(args.device)
    accelerated = kind != "cpu"
    args.preset = args.preset or ("large-v3" if accelerated else "tiny")
    args.output = args.output or (RESULTS if accelerated else RESULTS_CPU)
    args.variant = list(ACCELERATOR_VARIANTS) if args.variant is None and accelerated else (args.variant or [])
    args.micro_batch = args.micro_batch or (8 if accelerated else 2)
    args.steps = args.steps or (10 if accelerated else 3)
    args.warmup = args.warmup if args.warmup is not None else (3 if accelerated else 1)
    args.bf16 = accelerated if args.bf16 is None else args.bf16  # CPU: fp32, what the CPU path trains with
    args.memory_search = (kind == "cuda") if args.memory_search is None else (args.memory_search and kind == "cuda")
    return args, kind


def main(argv: list[str] | None = None) -> int:
    args, kind = parse(argv)
    model_fields = json.loads((PRESETS / f"{args.preset}.json").read_text())
    report = Report(args.output, args.budget_seconds)
    with tempfile.TemporaryDirectory() as tmp:
        setting = Setting(args, kind, Path(tmp), model_fields)
        device = setting.device
        info = machine(device)
        setting.peak = peak_flops(info)
        report.data.update(
            config={"preset": args.preset, "micro_batch": args.micro_batch, "target_tokens": args.target_tokens,
                    "audio_frames": 2 * model_fields["max_source_positions"], "bf16": args.bf16,
                    "steps": args.steps, "warmup": args.warmup, "train_flops_per_sample": setting.flops,
                    "peak_bf16_flops": setting.peak},
            machine=info)
        report.write()
        measured_peak = None
        if device.type == "cuda":
            measured_peak = report.run("measured_bf16_matmul_flops", lambda: device_probes.matmul_peak(device))
            report.data["measured_bf16_matmul_flops"] = measured_peak
            report.data["attention_backend_ms"] = report.run("attention_backend_ms", lambda: (
                device_probes.time_attention_backends(model_fields, args.micro_batch, args.target_tokens, device)))
        ours = report.run("ours", lambda: measure_ours(setting, report, "ours", [], profile=True),
                          SECTION_SECONDS["ours"], setting.release)
        report.data["ours"] = ours
        baseline = report.run("baseline", lambda: measure_baseline(setting), SECTION_SECONDS["baseline"],
                              setting.release)
        report.data["baseline"] = baseline
        if ours and baseline:
            report.data["ratio"] = round(ours["samples_per_second"] / baseline["samples_per_second"], 3)
            report.data["mfu"] = {"ours": ours["mfu"], "baseline": baseline["mfu"]}
            if measured_peak:
                report.data["mfu_of_measured_matmul_peak"] = {
                    name: round(loop["model_tflops_per_second"] * 1e12 / measured_peak, 4)
                    for name, loop in (("ours", ours), ("baseline", baseline))}
            report.write()
        if args.curve_iterations:
            report.data["loss_curves"] = report.run("loss_curves", lambda: measure_loss_curves(setting),
                                                    SECTION_SECONDS["loss_curves"], setting.release)
        variants = report.data.setdefault("variants", {})
        for name, flags in dict(parse_variant(text) for text in args.variant).items():
            variants[name] = report.run(f"variants.{name}", functools.partial(
                measure_ours, setting, report, name, flags, profile=False), SECTION_SECONDS["variant"],
                setting.release)
        report.write()
    print(summary_line(report.data, args, info))
    return 0 if report.data.get("ratio") else 1


def summary_line(data: dict, args, info: dict) -> str:
    where = f"{args.preset}, micro batch {args.micro_batch}, {info['device']}" + (
        f", {info['accelerator']}" if info.get("accelerator") else "")
    ours, baseline = data.get("ours") or {}, data.get("baseline") or {}
    line = (f"train_throughput [{where}]: ours {ours.get('samples_per_second')} samples/s, plain HF loop "
            f"{baseline.get('samples_per_second')} samples/s, ratio {data.get('ratio')}x")
    if (data.get("mfu") or {}).get("ours") is not None:
        line += f", MFU ours {data['mfu']['ours']:.1%} baseline {data['mfu']['baseline']:.1%}"
    else:
        line += ", MFU n/a (no GPU/NPU)"
    curves = data.get("loss_curves")
    if curves:
        line += f", bf16 loss curve {'within' if curves['bf16_within_tolerance'] else 'OUTSIDE'} 2^-8 of fp32"
    if data["errors"] or data["skipped"]:
        line += f", errors: {sorted(data['errors'])}, skipped: {sorted(data['skipped'])}"
    return line + f" -> {args.output}"


if __name__ == "__main__":
    sys.exit(main())
