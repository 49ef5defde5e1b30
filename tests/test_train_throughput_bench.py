"""bench/train_throughput.py runs on CPU (the tiny preset) and writes the fields the README and issue 8 read.

Figures are not asserted (speed lives in benchmarks, not tests); the shape of the result and the honesty of
its ratio are: ``ratio`` must be ours over the baseline as the two loops measured them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_run_writes_ours_baseline_ratio_and_machine(tmp_path):
    out = tmp_path / "train_throughput.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--steps", "1", "--warmup",
                           "0", "--output", str(out), "--variant", "eager:--compile=off"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["config"]["preset"] == "tiny" and result["machine"]["device"] == "cpu"
    ours, baseline = result["ours"]["samples_per_second"], result["baseline"]["samples_per_second"]
    assert ours > 0 and baseline > 0
    assert result["ratio"] == round(ours / baseline, 3)
    assert result["variants"]["eager"]["flags"] == ["--compile=off"]
    assert result["mfu"] == {"ours": None, "baseline": None}  # no known peak on CPU: not invented
    assert "train_throughput" in proc.stdout and "ratio" in proc.stdout  # the one summary line
