"""bench/transcribe.py runs end to end on a short recording and writes what the README reads.

Figures are not asserted (speed lives in the benchmark); the shape of the result and the honesty of its
derived numbers are: a real-time factor is the measured seconds over the audio's length.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_short_run_writes_both_sides_of_every_case(tmp_path, tiny_en_dir):
    out = tmp_path / "transcribe.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "transcribe.py"), "--model", str(tiny_en_dir),
                           "--sentences", "3", "--repeats", "1", "--threads", "1", "--output", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["long"]) == {"ours", "transformers", "ours_plain_windows", "ours_condition_on_previous_text",
                                   "transformers_condition_on_previous_text"}
    assert set(result["short"]) == {"ours", "transformers"}
    audio = {"long": result["config"]["long_audio_s"], "short": result["config"]["short_audio_s"]}
    for kind, cases in (("long", result["long"]), ("short", result["short"])):
        for case in cases.values():
            assert 0 <= case["wer"] <= 1 and case["seconds"] > 0
            assert abs(case["rtf"] - case["seconds"] / audio[kind]) < 0.01
    assert len(result["reference_sentences"]) == 3 and result["long"]["ours"]["segments"]
    assert "WER ours" in proc.stdout and "transformers" in proc.stdout
