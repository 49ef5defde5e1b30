"""Bad input end to end: broken data is skipped and counted by a real training run, or stops it clearly; bad
configuration is refused before any pod starts or any file is written, naming the field, key or file.

The loader-level details (each broken kind's skip reason and message, resume with skips) are in
tests/test_data_pipeline.py; schema and cross-field value checks in tests/test_values.py and tests/test_chart.py;
model.json/data.json/flag checks in tests/test_trainer_config.py. Here the trainer's entry point
(``python -m whisper_trainer``, single process) and ``submit --local`` are driven as a user would.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
from collections import Counter
from pathlib import Path

import pytest

from whisper_k8s.formats import megatron

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "helm" / "files" / "model-presets" / "tiny.json"
# synth's broken kinds -> the skip counter each lands in (the trainer logs every counter)
SKIP_REASON = {
    "corrupt_mp3": "corrupt_audio", "empty_audio": "empty_audio", "empty_sentence": "empty_text",
    "whitespace_sentence": "empty_text", "missing_audio": "missing_file", "too_long": "too_long",
    "non_utf8_text": "bad_text_encoding", "truncated_shard": "truncated_tar",
}


@pytest.fixture(scope="module")
def broken_set(tmp_path_factory):
    """3 good clips, then one sample of every broken kind synth writes (TSV order, one shard)."""
    from whisper_k8s.dataset.synth import BROKEN_KINDS, synthesize

    assert set(SKIP_REASON) == set(BROKEN_KINDS), "a broken kind without an expected skip reason"
    return synthesize(tmp_path_factory.mktemp("bad-input") / "cv", lang="en", train=3, test=0, seed=11,
                      broken=list(BROKEN_KINDS))


@pytest.fixture
def trainer(tmp_path, processor_dir, capsys):
    """Run the trainer's entry point in this process; returns (exit code, output, run folder)."""
    from whisper_trainer.__main__ import main

    def run(dataset: Path, *, language: str = "en", model: dict | None = None, iters: int = 2) -> tuple:
        run_dir = tmp_path / "run"
        model_json, data_json = tmp_path / "model.json", tmp_path / "data.json"
        model_json.write_text(json.dumps(model or json.loads(TINY.read_text())))
        data_json.write_text(json.dumps({
            "dataset_param": {
                "dataset_type": "audio",
                "basic_parameters": {"dataset_name_or_path": str(dataset), "language": language},
                "preprocess_parameters": {"processor_name_or_path": str(processor_dir), "language": "English",
                                          "task": "transcribe"},
            },
            "dataloader_param": {"dataloader_mode": "sampler", "shuffle": False, "drop_last": False,
                                 "pin_memory": False},
        }))
        code = main(["--mm-model", str(model_json), "--mm-data", str(data_json), "--save", str(run_dir / "checkpoints"),
                     "--micro-batch-size", "2", "--lr", "1e-3", "--train-iters", str(iters), "--save-interval", "2",
                     "--log-interval", "1", "--num-workers", "0", "--device", "cpu", "--seed", "3"])
        captured = capsys.readouterr()
        return code, captured.out + captured.err, run_dir

    root = logging.getLogger()
    handlers, level, sigterm = root.handlers[:], root.level, signal.getsignal(signal.SIGTERM)
    yield run
    root.handlers[:], root.level = handlers, level  # the entry point sets up its own logging and SIGTERM handler
    signal.signal(signal.SIGTERM, sigterm)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ------------------------------------------------------------------------------------------------- data
def test_a_run_over_every_broken_kind_finishes_and_reports_each_skip(broken_set, trainer):
    code, output, run_dir = trainer(broken_set.root)
    assert code == 0, output[-3000:]
    # Iteration 2 reads the third good clip, skips every broken row, and wraps to the first clip again.
    expected = Counter(SKIP_REASON[sample["kind"]] for sample in broken_set.broken)
    last = next(line for line in output.splitlines() if "iteration       2/2" in line)
    for reason, count in expected.items():
        assert f"{reason}={count}" in last, last
    for sample in broken_set.broken:  # one warning per bad file, naming it and why
        assert any(sample["path"] in line and SKIP_REASON[sample["kind"]] in line for line in output.splitlines()
                   if "skipping" in line), sample
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    iterations = [m for m in metrics if "loss" in m]  # besides the start and checkpoint events
    assert {k: v for k, v in iterations[1]["skipped_samples"].items() if v} == dict(expected)
    assert megatron.read_tracker(run_dir / "checkpoints") == 2


def test_a_set_without_one_usable_sample_stops_with_a_clear_error(broken_set, trainer, tmp_path):
    only_bad = tmp_path / "only-bad"
    shutil.copytree(broken_set.root, only_bad)
    tsv = only_bad / "transcript" / "en" / "train.tsv"
    header, *rows = tsv.read_bytes().split(b"\n")
    bad_paths = {sample["path"].encode() for sample in broken_set.broken}
    tsv.write_bytes(b"\n".join([header, *(r for r in rows if r.split(b"\t")[1:2] and r.split(b"\t")[1] in bad_paths)]))
    code, output, run_dir = trainer(only_bad)
    assert code == 2, output[-3000:]
    assert "no usable sample" in output and "corrupt_audio 1" in output and "too_long 1" in output
    assert not (run_dir / "checkpoints").exists()  # nothing saved from a run that never trained


def test_an_unknown_language_code_is_refused_before_anything_is_written(broken_set, trainer):
    code, output, run_dir = trainer(broken_set.root, language="xx")
    assert code == 2
    assert "'xx'" in output and "basic_parameters.language" in output
    assert files_under(run_dir) == []


# ---------------------------------------------------------------------------------------- configuration
def test_a_checkpoint_of_another_model_size_is_refused_naming_the_keys(broken_set, trainer, tmp_path):
    import torch
    from whisper_trainer.config import validate_model_fields
    from whisper_trainer.model import build_model, mm_state_dict

    smaller = {**json.loads(TINY.read_text()), "d_model": 32, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64}
    model = build_model(validate_model_fields(dict(smaller)), seed=0)
    torch.save(mm_state_dict(model.state_dict(), smaller), tmp_path / "smaller.pth")  # the seed's .pth format
    code, output, run_dir = trainer(broken_set.root, model={**json.loads(TINY.read_text()),
                                                             "ckpt_path": str(tmp_path / "smaller.pth")})
    assert code == 2, output[-3000:]
    assert "smaller.pth" in output and "wrong shape: model.encoder.conv1.weight" in output
    assert files_under(run_dir) == []


def submit(tmp_path, monkeypatch, capsys, dataset: Path, *extra: str) -> tuple[int, str]:
    from whisper_k8s.cli.main import main

    monkeypatch.setenv("WHISPER_K8S_STATE", str(tmp_path / "state"))
    code = main(["submit", "--name", "refused", "--local", "--nodes", "2", "--accelerator", "cpu", "--preset",
                 "tiny", "--dataset", str(dataset), "--values-out", str(tmp_path / "values.yaml"), *extra])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("dataset", "extra", "named"), [
    ("missing", [], r"hostPath .*missing is not an existing directory"),
    ("cv", ["--set", "training.globalBatchSize=12"], "training.globalBatchSize 12 must be a multiple of"),
    ("cv", ["--set", "storage.dataset.type=existingClaim", "--set", "storage.dataset.hostPath="],
     "storage.dataset"),
    ("cv", ["--set", "nodes=0"], "nodes: 0 is less than the minimum of 1"),
    ("cv", ["--set", "training.microBatchSize=two"], "training.microBatchSize"),
], ids=["missing-dataset-path", "inconsistent-global-batch", "claim-without-name", "zero-nodes", "not-a-number"])
def test_bad_configuration_is_refused_before_anything_starts(tmp_path, monkeypatch, capsys, dataset, extra, named):
    import re

    (tmp_path / "cv").mkdir()
    code, err = submit(tmp_path, monkeypatch, capsys, tmp_path / dataset, *extra)
    assert code == 2 and re.search(named, err), err
    assert not (tmp_path / "state").exists() and not (tmp_path / "values.yaml").exists()
