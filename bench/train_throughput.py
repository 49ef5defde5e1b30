"""Benchmark: training throughput and model FLOPs utilisation, our trainer's step against a plain HF loop.

Both train the same model (Hugging Face ``WhisperForConditionalGeneration``, untied head as MindSpeed-MM)
on the same batch with the same optimizer (AdamW, lr 1e-5, clipping at 1.0), in this one process, timed over the
same number of steps after warm-up steps (on CPU step by step in turn and in CPU seconds of this process, so
that a shared machine's load hits both alike; on a GPU/NPU in wall time, one loop after the other):

- ours: ``whisper_trainer.train.Trainer.train_step`` (set up by ``Trainer.setup`` exactly as in a run:
  bf16 autocast, decoder inputs shifted behind <|startoftranscript|>, fp32 loss, clipping, Megatron LR schedule,
  and on CUDA each layer and the loss compiled, fused AdamW, no host sync inside the step).
  ``--variant NAME:FLAGS`` times it again with other trainer flags (e.g. ``eager:--compile=off``) for attribution.
- baseline: the plain loop people write from the Hugging Face examples: ``model(input_features,
  labels=labels).loss.backward()`` under bf16 autocast, ``clip_grad_norm_``, ``AdamW.step``, ``zero_grad``.

Shapes: whisper-large-v3 (``--preset large-v3``), micro batch 8, 30 s of audio (128 x 3000 mel frames), 448
target tokens, bf16, as issue 8 asks. That needs a GPU/NPU; on CPU the default is the ``tiny`` preset with
micro batch 2 so that CI exercises the script (figures then only compare the two loops on this machine).
MFU = model FLOPs per second / the card's dense bf16 peak (a table of known cards); model FLOPs per sample
are counted analytically (matmuls and convolutions, training = 3 x forward). On CPU no peak is known: MFU
is reported as null. On CUDA the result also holds the card's measured bf16 matmul rate (MFU against it too),
each SDPA backend's time on the model's attention shapes, peak memory, and one profiled step per loop: device
time by kind of kernel, the top kernels, and how busy the GPU was. Prints one summary line and writes
bench/results/train_throughput.json (GPU/NPU) or train_throughput.cpu.json (CPU).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "train_throughput.json"  # GPU/NPU figures: the ones issue 8 targets
RESULTS_CPU = ROOT / "bench" / "results" / "train_throughput.cpu.json"  # CPU runs do not overwrite them
# What a GPU/NPU run times beside the default: what compiling brings, and FSDP2's bf16 parameters with fp32
# master weights (the candidate next default, see README).
ACCELERATOR_VARIANTS = ("eager:--compile=off", "fsdp:--parallel=fsdp")
PRESETS = ROOT / "helm" / "files" / "model-presets"
sys.path[:0] = [str(ROOT), str(ROOT / "trainer")]
from host import host_info  # noqa: E402 (bench/, the script's own folder)

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


class SameBatch:
    """Endless loader of one batch (the benchmark measures the step, not the data pipeline)."""

    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        while True:
            yield self.batch

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def stats(self):
        return {}


def synchronize(device) -> None:
    if device.type in ("cuda", "npu"):
        import torch

        getattr(torch, device.type).synchronize()


def clock(device):
    """Wall time on an accelerator; on CPU this process's CPU time, which a shared machine's load barely moves."""
    return time.perf_counter if device.type != "cpu" else time.process_time


def time_steps(step, device, warmup: int, steps: int) -> list[float]:
    now = clock(device)
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


def time_interleaved(steps_by_name: dict, device, warmup: int, steps: int) -> dict[str, list[float]]:
    """Alternate the loops step by step, so a burst of load on a shared machine hits both alike."""
    now = clock(device)
    for step in steps_by_name.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps_by_name}
    for _ in range(steps):
        for name, step in steps_by_name.items():
            start = now()
            step()
            synchronize(device)
            times[name].append(now() - start)
    return times


def our_step(model_json: Path, data_json: Path, batch, args, device_kind: str, workdir: Path,
             extra_flags: list[str] = ()):
    """Our trainer, set up as a run sets it up (plus ``extra_flags``); returns (step, device, the trainer)."""
    from whisper_trainer import parallel
    from whisper_trainer.config import parse_args
    from whisper_trainer.train import Trainer

    argv = ["--mm-model", str(model_json), "--mm-data", str(data_json), "--save", str(workdir / "ckpt"),
            "--micro-batch-size", str(args.micro_batch), "--lr", "1e-5", "--clip-grad", "1.0",
            "--train-iters", "1000", "--device", device_kind, "--metrics-file", str(workdir / "m.jsonl")]
    cfg = parse_args(argv + (["--bf16"] if args.bf16 else []) + list(extra_flags), check_files=False)
    env = parallel.init_distributed(device_kind, group_for_one=cfg.parallel.strategy == "fsdp")
    trainer = Trainer(cfg, env, loader_factory=lambda c, e: SameBatch(batch))
    trainer.setup()
    batches = iter(trainer.loader)
    return (lambda: trainer.train_step(batches)), env.device, trainer


def baseline_step(model_fields: dict, batch, args, device):
    """The plain Hugging Face loop on the same model config, batch and optimizer settings."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    hf = {k: v for k, v in model_fields.items() if k not in ("model_id", "ckpt_path", "torch_dtype",
                                                              "num_hidden_layers")}
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(**hf, tie_word_embeddings=False)).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    features = batch["input_features"].to(device)
    labels = batch["labels"].to(device)

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(input_features=features, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def progress(message: str) -> None:
    """One line on stderr per finished loop, so a slow or interrupted run shows where it got to."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed_loop(name: str, step, device, args, facts: dict, profile: bool = False) -> list[float]:
    """Time ``step`` (warm-up, then timed steps), add what the loop used to ``facts[name]``, and report it."""
    times = time_steps(step, device, args.warmup, args.steps)
    facts.setdefault(name, {}).update(loop_facts(device))
    if profile:
        facts[name]["kernels"] = kernel_time_by_kind(step, device)
    progress(f"{name}: {facts[name]}, mean step {1000 * sum(times) / len(times):.1f} ms")
    return times


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


def release(device, sdp_defaults: dict[str, bool]) -> None:
    """Undo what a finished loop leaves behind before the next one is built: its model, optimizer state and
    compiled code, a process group of one (``--parallel fsdp``), and an ``--attention-backend`` restriction,
    which is process-wide. Dynamo's cache is reset too: it does not guard on the SDPA switches, so a variant
    with another backend would otherwise silently reuse the previous loop's graphs."""
    import torch
    from whisper_trainer import parallel

    parallel.shutdown()
    restore_sdp_switches(sdp_defaults)
    torch._dynamo.reset()
    gc.collect()
    if device.type != "cpu":
        getattr(torch, device.type).empty_cache()


def matmul_peak(device, size: int = 8192, repeats: int = 10) -> float | None:
    """bf16 matmul FLOP/s this card reaches on random data: the practical ceiling beside the datasheet's."""
    if device.type != "cuda":
        return None
    import torch

    a, b = (torch.randn(size, size, device=device, dtype=torch.bfloat16) for _ in range(2))
    return 2 * size ** 3 / (cuda_event_ms(lambda: a @ b, device, repeats) / 1000)


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
    return info


def peak_flops(info: dict) -> float | None:
    name = (info.get("accelerator") or "").replace(" ", "")
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def summarise(times: list[float], micro_batch: int, flops_per_sample: float, peak: float | None) -> dict:
    mean = sum(times) / len(times)
    samples_per_second = micro_batch / mean
    achieved = samples_per_second * flops_per_sample
    return {"samples_per_second": round(samples_per_second, 4), "mean_step_ms": round(1000 * mean, 2),
            "step_ms": [round(1000 * t, 2) for t in times], "model_tflops_per_second": round(achieved / 1e12, 4),
            "mfu": round(achieved / peak, 4) if peak else None}


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'NAME:--flag value ...' -> (NAME, ['--flag', 'value', ...])."""
    name, sep, flags = text.partition(":")
    if not sep or not name.strip() or not name.strip().replace("-", "").replace("_", "").isalnum():
        raise SystemExit(f"--variant {text!r}: write NAME:FLAGS, e.g. 'eager:--compile off'")
    return name.strip(), flags.split()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default=None, help="model preset (default: large-v3 on GPU/NPU, tiny on CPU)")
    parser.add_argument("--micro-batch", type=int, default=None, help="default: 8 on GPU/NPU, 2 on CPU")
    parser.add_argument("--target-tokens", type=int, default=448)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 10 on GPU/NPU, 3 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 3, CPU 1)")
    parser.add_argument("--device", default="auto", choices=["auto", "npu", "cuda", "cpu"])
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="fp32 (default on CPU)")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"default: {RESULTS.relative_to(ROOT)} on GPU/NPU, {RESULTS_CPU.relative_to(ROOT)} on CPU")
    parser.add_argument("--variant", action="append", default=None, metavar="NAME:FLAGS",
                        help="also time our trainer with extra flags, e.g. 'eager:--compile=off' (repeatable); "
                             "reported under variants, beside the default configuration's 'ours'. Default on a "
                             f"GPU/NPU: {' '.join(ACCELERATOR_VARIANTS)}; on CPU none")
    args = parser.parse_args()

    from whisper_trainer.parallel import pick_device_type

    kind = pick_device_type(args.device)
    accelerated = kind != "cpu"
    args.preset = args.preset or ("large-v3" if accelerated else "tiny")
    args.output = args.output or (RESULTS if accelerated else RESULTS_CPU)
    if args.variant is None:
        args.variant = list(ACCELERATOR_VARIANTS) if accelerated else []
    args.micro_batch = args.micro_batch or (8 if accelerated else 2)
    args.steps = args.steps or (10 if accelerated else 3)
    args.warmup = args.warmup if args.warmup is not None else (3 if accelerated else 1)
    if not accelerated and "--no-bf16" not in sys.argv:
        args.bf16 = False  # CPU bf16 autocast is slow and not what the CPU path trains with
    model_fields = json.loads((PRESETS / f"{args.preset}.json").read_text())
    batch = make_batch(model_fields, args.micro_batch, args.target_tokens)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "model.json").write_text(json.dumps({**model_fields, "ckpt_path": ""}))
        (workdir / "data.json").write_text(json.dumps({"dataset_param": {
            "basic_parameters": {"dataset_name_or_path": str(workdir), "language": "en"},
            "preprocess_parameters": {"processor_name_or_path": str(workdir)}}}))
        variants = dict(parse_variant(text) for text in args.variant)
        defaults = sdp_switches()
        ours_step, device, trainer = our_step(workdir / "model.json", workdir / "data.json", batch, args, kind,
                                              workdir)
        progress(f"ours set up on {device}")
        attention = (time_attention_backends(model_fields, args.micro_batch, args.target_tokens, device)
                     if device.type == "cuda" else None)
        facts: dict[str, dict] = {"ours": {"attention_backend": trainer.attention_backend}}
        if attention:
            progress(f"attention backends (fwd+bwd ms): {attention}")
        variant_times: dict[str, list[float]] = {}
        if device.type == "cpu" and not variants:  # both fit: interleave
            times = time_interleaved({"ours": ours_step, "baseline": baseline_step(model_fields, batch, args,
                                                                                   device)},
                                     device, args.warmup, args.steps)
            our_times, base_times = times["ours"], times["baseline"]
        else:  # large-v3 twice may not fit one card: one after the other, memory freed between
            our_times = timed_loop("ours", ours_step, device, args, facts, profile=True)
            del ours_step, trainer
            release(device, defaults)
            for name, flags in variants.items():
                step, _, trainer = our_step(workdir / "model.json", workdir / "data.json", batch, args, kind,
                                            workdir / name, flags)
                facts[name] = {"attention_backend": trainer.attention_backend}
                variant_times[name] = timed_loop(name, step, device, args, facts)
                del step, trainer
                release(device, defaults)
            base_times = timed_loop("baseline", baseline_step(model_fields, batch, args, device), device, args,
                                    facts, profile=True)

    info = machine(device)
    flops = 3 * forward_flops_per_sample(model_fields, args.target_tokens)
    peak = peak_flops(info)
    measured_peak = matmul_peak(device)
    ours_summary = {**summarise(our_times, args.micro_batch, flops, peak), **facts.get("ours", {})}
    base_summary = {**summarise(base_times, args.micro_batch, flops, peak), **facts.get("baseline", {})}
    ratio = round(ours_summary["samples_per_second"] / base_summary["samples_per_second"], 3)
    variant_summaries = {name: {"flags": variants[name], **summarise(times, args.micro_batch, flops, peak),
                                **facts[name]}
                         for name, times in variant_times.items()}
    result = {
        "name": "train_throughput",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": {"preset": args.preset, "micro_batch": args.micro_batch, "target_tokens": args.target_tokens,
                   "audio_frames": 2 * model_fields["max_source_positions"], "bf16": args.bf16,
                   "steps": args.steps, "warmup": args.warmup, "train_flops_per_sample": flops,
                   "peak_bf16_flops": peak},
        "ours": ours_summary, "baseline": base_summary, "ratio": ratio,
        "mfu": {"ours": ours_summary["mfu"], "baseline": base_summary["mfu"]},
        "measured_bf16_matmul_flops": measured_peak,
        "mfu_of_measured_matmul_peak": ({"ours": round(ours_summary["model_tflops_per_second"] * 1e12 / measured_peak, 4),
                                         "baseline": round(base_summary["model_tflops_per_second"] * 1e12
                                                           / measured_peak, 4)} if measured_peak else None),
        "variants": variant_summaries, "attention_backend_ms": attention,
        "machine": info,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.output.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_out, args.output)
    mfu = f"MFU ours {ours_summary['mfu']:.1%} baseline {base_summary['mfu']:.1%}" if peak else "MFU n/a (no GPU/NPU)"
    print(f"train_throughput [{args.preset}, micro batch {args.micro_batch}, {device.type}"
          f"{', ' + info['accelerator'] if info.get('accelerator') else ''}]: ours "
          f"{ours_summary['samples_per_second']:.3f} samples/s, plain HF loop {base_summary['samples_per_second']:.3f}"
          f" samples/s, ratio {ratio:.2f}x, {mfu} -> {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
