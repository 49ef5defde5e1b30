"""The init container's preflight: good inputs pass, each bad one gives ONE line naming claim, path and fix."""

from __future__ import annotations

import json
import shutil

import pytest

from whisper_k8s.dataset.prepare import prepare
from whisper_k8s.preflight import main


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out.strip(), captured.err.strip()


def failed(capsys, *argv) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 2 and not out and len(err.splitlines()) == 1 and err.startswith("preflight: "), (code, out, err)
    return err


@pytest.fixture(scope="module")
def prepared(cv_dataset, processor_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "cv-en-large-v3"
    prepare(cv_dataset, out, languages="en", splits="train", processor_dir=processor_dir, n_mels=128, workers=1)
    return out


def test_a_common_voice_tree_with_the_language_and_split_passes(cv_dataset, capsys):
    code, out, _ = run(capsys, "--dataset", str(cv_dataset), "--lang", "en", "--split", "train")
    assert code == 0 and out == "preflight: ok: Common Voice 11 tree with en/train"


def test_a_tree_without_the_language_names_claim_path_and_fix(cv_dataset, tmp_path, capsys):
    log = tmp_path / "termination-log"
    err = failed(capsys, "--dataset", str(cv_dataset), "--dataset-claim", "cv11", "--lang", "hi",
                 "--termination-log", str(log))
    assert f"claim cv11 {cv_dataset}: lacks hi/train" in err
    assert "dataset upload SRC --claim cv11" in err and "data.language/data.split" in err
    assert log.read_text().strip() == err  # what Kubernetes shows as the init container's termination message
    assert f"{tmp_path}: not a Common Voice 11 tree (no n_shards.json" in failed(
        capsys, "--dataset", str(tmp_path), "--lang", "en")


def test_a_damaged_tree_says_which_shard(cv_dataset, tmp_path, capsys):
    tree = tmp_path / "cv"
    shutil.copytree(cv_dataset, tree)
    (tree / "audio/en/train/en_train_0.tar").write_bytes(b"")
    assert "audio/en/train/en_train_0.tar is not a tar file" in failed(
        capsys, "--dataset", str(tree), "--lang", "en")


def test_prepared_features_of_this_model_pass_and_others_are_refused(prepared, processor_dir, tmp_path, capsys):
    code, out, _ = run(capsys, "--dataset", str(prepared), "--lang", "en", "--processor", str(processor_dir))
    assert code == 0 and "prepared features for en/train (128 mels, 3000 frames)" in out
    err = failed(capsys, "--dataset", str(prepared), "--dataset-claim", "cv11", "--lang", "en", "--task", "translate")
    assert "claim cv11" in err and "task is 'transcribe', the job needs 'translate'" in err and "--preset" in err
    assert "holds no en/test" in failed(capsys, "--dataset", str(prepared), "--lang", "en", "--split", "test")
    damaged = tmp_path / "prepared"
    shutil.copytree(prepared, damaged)
    manifest = json.loads((damaged / "manifest.json").read_text())
    shard = damaged / manifest["languages"]["en"]["train"]["shards"][0]["file"]
    shard.unlink()
    err = failed(capsys, "--dataset", str(damaged), "--lang", "en")
    assert f"{shard}: missing or not the size the manifest records" in err


def test_pretrained_weights_must_match_the_preset(hf_whisper_tiny, tmp_path, capsys):
    code, out, _ = run(capsys, "--pretrained", str(hf_whisper_tiny), "--preset", "tiny")
    assert code == 0 and out == f"preflight: ok: pretrained tiny weights in {hf_whisper_tiny}"
    err = failed(capsys, "--pretrained", str(hf_whisper_tiny), "--models-claim", "whisper-models",
                 "--preset", "large-v3")
    assert f"claim whisper-models {hf_whisper_tiny}: custom (d_model 64" in err
    assert "does not match preset large-v3 (" in err and "assets upload-model SRC --claim whisper-models" in err
    broken = tmp_path / "broken"
    shutil.copytree(hf_whisper_tiny, broken)
    (broken / "model.safetensors").write_bytes(b"\x10")
    assert "too short to be a safetensors file" in failed(capsys, "--pretrained", str(broken), "--preset", "tiny")
    (broken / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert "config.json: model_type is 'bert', not 'whisper'" in failed(
        capsys, "--pretrained", str(broken), "--preset", "tiny")
    assert "config.json: missing or unreadable" in failed(capsys, "--pretrained", str(tmp_path), "--preset", "tiny")
