"""The bf16 arrangement's soundness on the benchmark's machine: loss curves of bf16 and fp32 training on speech.

The same check as tests/test_precision.py (``precision.loss_curve_gap`` against ``precision.SOUND_TOLERANCE``
over windows of ``precision.SOUND_WINDOW`` iterations), run where the benchmark runs, so that a GPU's bf16
kernels (cuDNN attention, cuBLAS with bf16 inputs) are covered too, with the failing control beside it (bf16
whose master weights are rounded to bf16 after each step).

Speech needs espeak-ng/flite, which a GPU machine may lack, so the batches are made beforehand on any machine
that has them (``python bench/loss_curves.py prepare``: generated Common Voice clips read by the trainer's own
loader, saved as compact batches) and carried to the GPU machine (bench/gpu_session.sh does both).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEECH_BATCHES = ROOT / "bench" / ".speech" / "batches.pt"  # ignored by git; made by `prepare`
sys.path[:0] = [str(ROOT), str(ROOT / "trainer")]
N_MELS = 128  # large-v3's processor (and the demo preset's)
WINDOW_FRAMES = 500  # clips up to 5 s: the demo preset's window, so the batches fit any preset


def prepare(out: Path = SPEECH_BATCHES, clips: int = 32, micro_batch: int = 4, seed: int = 0) -> Path:
    """Generate ``clips`` English clips (espeak-ng/flite), read them with the trainer's loader, save the batches."""
    import torch
    from whisper_trainer.data import build_dataloader

    from whisper_k8s.assets.processor import write_processor
    from whisper_k8s.dataset.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        synthesize(Path(tmp) / "cv", lang="en", train=clips, test=0, seed=seed)
        write_processor(Path(tmp) / "processor", variant="large-v3")
        loader = build_dataloader(str(Path(tmp) / "cv"), ["en"], "train", str(Path(tmp) / "processor"),
                                  n_mels=N_MELS, rank=0, world_size=1, micro_batch_size=micro_batch, num_workers=0,
                                  seed=seed, n_frames=WINDOW_FRAMES, compact_features=True)
        stream = iter(loader)
        batches = [next(stream) for _ in range(max(1, clips // micro_batch))]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".tmp")
    torch.save({"batches": batches, "n_mels": N_MELS, "micro_batch": micro_batch}, partial)
    os.replace(partial, out)
    return out


def load_batches(path: Path) -> list[dict]:
    import torch

    return torch.load(path, weights_only=True)["batches"]


class Replay:
    """Batches in turn, forever (also the throughput loops' loader: one batch replayed)."""

    def __init__(self, batches: list[dict]):
        self.batches = batches

    def __iter__(self):
        while True:
            for batch in self.batches:
                yield dict(batch)  # the trainer expands compact batches in place

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def stats(self) -> dict:
        return {}


def compare(build_trainer, batches: list[dict], iterations: int, with_control: bool = True) -> dict:
    """Train ``iterations`` steps in fp32 and in bf16 (and the control) from the same weights on the same batches.

    ``build_trainer(flags, loader)`` returns a set-up ``whisper_trainer.train.Trainer`` for extra trainer flags.
    Returns the curves, the window gaps, the tolerance and whether bf16 stayed within it.
    """
    from whisper_trainer import precision

    def curve(flags: list[str], control: bool = False) -> list[float]:
        trainer = build_trainer(flags, Replay(batches))
        if control:
            precision.round_master_weights_after_each_step(trainer.model)
        stream = iter(trainer.loader)
        return [round(trainer.train_step(stream)["loss"], 6) for _ in range(iterations)]

    window = min(precision.SOUND_WINDOW, iterations)
    curves = {"fp32": curve(["--precision", "fp32"]), "bf16": curve(["--precision", "bf16"])}
    if with_control:
        curves["bf16_without_fp32_masters"] = curve(["--precision", "bf16"], control=True)
    gaps = {name: [round(g, 6) for g in precision.loss_curve_gap(values, curves["fp32"], window)]
            for name, values in curves.items() if name != "fp32"}
    return {"iterations": iterations, "window": window, "tolerance": precision.SOUND_TOLERANCE,
            "max_gap": {name: max(values) for name, values in gaps.items()},
            "bf16_within_tolerance": max(gaps["bf16"]) <= precision.SOUND_TOLERANCE,
            "window_gaps": gaps, "losses": curves}


def main() -> int:
    parser = argparse.ArgumentParser(description="make the speech batches the benchmark's loss curves train on")
    parser.add_argument("command", choices=["prepare"])
    parser.add_argument("--out", type=Path, default=SPEECH_BATCHES)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--micro-batch", type=int, default=4)
    args = parser.parse_args()
    out = prepare(args.out, args.clips, args.micro_batch)
    print(f"loss_curves: {args.clips} generated clips as batches of {args.micro_batch} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
