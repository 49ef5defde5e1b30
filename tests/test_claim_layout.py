"""`submit --dataset NAME`'s choice: prepared features made for the model, else the audio tree, else one line."""

from __future__ import annotations

import json

import pytest

from whisper_k8s.dataset.claim_layout import (
    AUDIO_DIR,
    audio_entry,
    choose_dataset,
    prepared_entry,
    prepared_path,
)
from whisper_k8s.dataset.prepare import prepare
from whisper_k8s.dataset.tree_check import check_tree
from whisper_k8s.errors import UserError


@pytest.fixture(scope="module")
def catalog(cv_dataset, processor_dir, tmp_path_factory) -> dict:
    """The catalog of a claim holding the synthetic tree and its features prepared for large-v3 (en/train)."""
    path = prepared_path("large-v3", ["en"])
    out = tmp_path_factory.mktemp("claim") / path
    prepare(cv_dataset, out, languages="en", splits="train", processor_dir=processor_dir, n_mels=128, workers=1)
    return {"audio": audio_entry(check_tree(cv_dataset).to_dict()),
            "prepared": {path: prepared_entry(json.loads((out / "manifest.json").read_text()), path)}}


def test_prepared_features_of_the_model_win(catalog):
    choice = choose_dataset(catalog, claim="cv11", preset="large-v3", languages=["en"], split="train")
    assert (choice.path, choice.kind) == ("prepared/large-v3-en-transcribe", "prepared")
    assert choice.reason == "prepared features for large-v3 (128 mels) holding en/train on claim cv11"


def test_the_audio_tree_when_no_prepared_features_fit(catalog):
    test_split = choose_dataset(catalog, claim="cv11", preset="large-v3", languages=["en"], split="test")
    assert (test_split.path, test_split.kind) == (AUDIO_DIR, "audio")
    assert "dataset prepare --claim cv11 --lang en --split test --preset large-v3" in test_split.reason
    other_task = choose_dataset(catalog, claim="cv11", preset="large-v3", languages=["en"], split="train",
                                task="translate")
    assert other_task.kind == "audio"


def test_neither_is_one_line_naming_what_the_claim_holds(catalog):
    with pytest.raises(UserError, match=r"claim cv11 holds no hi/train \(common_voice_11_0: en/train\+test; "
                                        r"prepared/large-v3-en-transcribe: en/train\): .*dataset upload SRC "
                                        r"--claim cv11"):
        choose_dataset(catalog, claim="cv11", preset="large-v3", languages=["hi"], split="train")
    with pytest.raises(UserError, match="holds no en/train \\(nothing yet\\)"):
        choose_dataset({}, claim="cv11", preset="large-v3", languages=["en"], split="train")
