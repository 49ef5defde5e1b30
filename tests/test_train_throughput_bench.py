"""bench/train_throughput.py runs on CPU (the tiny preset) and writes the fields the README and issues 8 and 20 read.

Figures are not asserted (speed lives in benchmarks, not tests); the shape of the result and its honesty are:
``ratio`` must be ours over the baseline as the two loops measured them, the memory model must match the
counted tensors, the loss-curve verdict must follow from the curves, and a section that fails must not cost the
others' figures. The GPU-only parts run here as far as a CPU allows: the largest-micro-batch search against a
trainer that runs out of memory above a known size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import memory_search  # noqa: E402


@pytest.fixture(scope="module")
def speech_batches(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("speech") / "batches.pt"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "loss_curves.py"), "prepare", "--out", str(out),
                           "--clips", "4", "--micro-batch", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_cpu_run_writes_every_section_and_survives_a_failing_one(tmp_path, speech_batches):
    out = tmp_path / "train_throughput.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--steps", "1", "--warmup",
                           "0", "--output", str(out), "--variant", "eager:--compile=off",
                           "--variant", "broken:--attention-backend=flash",  # needs CUDA: fails on CPU
                           "--speech-batches", str(speech_batches), "--curve-iterations", "4"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["config"]["preset"] == "tiny" and result["machine"]["device"] == "cpu"
    ours, baseline = result["ours"]["samples_per_second"], result["baseline"]["samples_per_second"]
    assert ours > 0 and baseline > 0
    assert result["ratio"] == round(ours / baseline, 3)
    assert result["mfu"] == {"ours": None, "baseline": None}  # no known peak on CPU: not invented
    state = result["ours"]["training_state"]
    assert state["precision"] == "fp32" and state["counted_gib"] == state["modelled_gib"] > 0
    assert result["variants"]["eager"]["flags"] == ["--compile=off"]
    assert result["variants"]["broken"] is None and "--attention-backend flash" in result["errors"]["variants.broken"]
    curves = result["loss_curves"]
    assert len(curves["losses"]["bf16"]) == len(curves["losses"]["fp32"]) == 4
    assert curves["bf16_within_tolerance"] == (curves["max_gap"]["bf16"] <= curves["tolerance"])
    assert "train_throughput" in proc.stdout and "ratio" in proc.stdout  # the one summary line
    assert "variants.broken" in proc.stdout  # ... which names what failed


def test_missing_speech_batches_are_an_error_of_that_section_only(tmp_path):
    out = tmp_path / "train_throughput.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--steps", "1", "--warmup",
                           "0", "--output", str(out), "--speech-batches", str(tmp_path / "none.pt")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert "bench/loss_curves.py prepare" in result["errors"]["loss_curves"] and result["ratio"] > 0


class OutOfMemoryAbove:
    """A trainer whose step runs out of device memory for micro batches above ``limit`` (and a stand-in for
    torch.cuda's memory statistics)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.peak = 0

    def train_step(self, stream):
        size = next(stream)["num_samples"]
        if size > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        self.peak = size * 2**30

    def reset_peak_memory_stats(self, device):
        self.peak = 0

    def max_memory_allocated(self, device):
        return self.peak

    def synchronize(self, device):
        pass

    def empty_cache(self):
        pass


def test_largest_micro_batch_doubles_then_bisects_to_the_exact_size():
    fake = OutOfMemoryAbove(37)
    found = memory_search.largest_micro_batch(fake, lambda size: {"num_samples": size}, "cuda",
                                              deadline=float("inf"), known_fit=8, accel=fake)
    assert found["largest_micro_batch"] == 37 and found["exact"] and not found["capped"]
    assert [p["micro_batch"] for p in found["probes"]] == [16, 32, 64, 48, 40, 36, 38, 37]
    assert [p["fits"] for p in found["probes"]] == [True, True, False, False, False, True, False, True]
    assert found["probes"][-1]["peak_gib"] == 37.0
    capped = memory_search.largest_micro_batch(OutOfMemoryAbove(10**6), lambda size: {"num_samples": size}, "cuda",
                                               deadline=float("inf"), known_fit=8, accel=OutOfMemoryAbove(10**6))
    assert capped["largest_micro_batch"] == memory_search.CAP and capped["capped"]
