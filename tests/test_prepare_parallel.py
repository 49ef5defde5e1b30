"""`dataset prepare` split over independent processes (an Indexed Job's pods): same shards as one process,
and no manifest until every share has verified its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from whisper_k8s.cli.main import main
from whisper_k8s.dataset.prepare import prepare
from whisper_k8s.dataset.prepare_parallel import MARKERS

SHARD_SIZE = 4  # the 16 train + 4 test clips make 5 shards


def arguments(source, out, processor_dir) -> list[str]:
    return ["dataset", "prepare", "--source", str(source), "--out", str(out), "--lang", "en", "--split",
            "train,test", "--processor", str(processor_dir), "--n-mels", "128", "--shard-size", str(SHARD_SIZE)]


def shards_of(out) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    return {(lang, split): entry for lang, splits in manifest["languages"].items() for split, entry in splits.items()}


@pytest.mark.e2e
def test_two_processes_prepare_the_same_shards_as_one(cv_dataset, processor_dir, tmp_path, capsys):
    single = tmp_path / "single"
    prepare(cv_dataset, single, languages="en", splits="train,test", processor_dir=processor_dir, n_mels=128,
            workers=1, shard_size=SHARD_SIZE)
    out = tmp_path / "parallel"
    assert main(arguments(cv_dataset, out, processor_dir) + ["--parallel", "2"]) == 0
    assert "prepared 20 of 20 samples (128 mels, 3000 frames) with 2 processes: 5 shard(s)" in capsys.readouterr().out
    assert shards_of(out) == shards_of(single)  # records, sha256 included
    assert sorted(p.name for p in (out / MARKERS).iterdir()) == [f"index-0000{i}-of-00002.json" for i in range(2)]


@pytest.mark.e2e
def test_a_crashed_share_leaves_no_manifest_until_it_is_run_again(cv_dataset, processor_dir, tmp_path, capsys,
                                                                  monkeypatch):
    out = tmp_path / "prepared"
    base = arguments(cv_dataset, out, processor_dir) + ["--workers", "1", "--count", "2"]
    assert main(base + ["--index", "0"]) == 0
    assert "the manifest follows when every share" in capsys.readouterr().out
    assert not (out / "manifest.json").exists()

    crashing = subprocess.Popen([sys.executable, "-m", "whisper_k8s", *base, "--index", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    crashing.send_signal(signal.SIGKILL)  # killed while planning or writing: no marker, so no manifest
    crashing.wait()
    assert not (out / "manifest.json").exists()
    assert main(base + ["--finalize"]) == 2
    assert "index(es) 1 of 2 have not verified their shards" in capsys.readouterr().err

    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")  # how each pod of an Indexed Job learns its share
    assert main(base) == 0
    assert "share 1 of 2:" in capsys.readouterr().out and (out / "manifest.json").is_file()
    entries = shards_of(out)
    assert [s["file"] for s in entries[("en", "train")]["shards"]] == [
        f"en/train/shard-0000{n}.wmel" for n in range(4)]
    assert entries[("en", "test")]["samples"] == 4
    assert main(base + ["--index", "0"]) == 0  # a rerun keeps what verified
    assert "0 shard(s) written and 3 kept" in capsys.readouterr().out


def test_share_arguments_are_checked(cv_dataset, processor_dir, tmp_path, capsys, monkeypatch):
    base = arguments(cv_dataset, tmp_path / "o", processor_dir)
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    assert main(base + ["--count", "2"]) == 2
    assert "--count 2 needs --index I or $JOB_COMPLETION_INDEX" in capsys.readouterr().err
    assert main(base + ["--count", "2", "--index", "2"]) == 2
    assert "--index 2 is outside 0..1" in capsys.readouterr().err
    assert main(base + ["--index", "0"]) == 2
    assert not os.path.exists(tmp_path / "o" / "manifest.json")
