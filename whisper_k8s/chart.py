"""The Helm chart as a library: where it is, its model presets, its values schema, and rendering.

The chart is the single source of pod specs: the CLI and every backend call :func:`render`, which runs the real
``helm template`` so that what a local run executes is exactly what a cluster would get. Values are checked
against the chart's ``values.schema.json`` first, in Python, so that a bad value is reported as a UserError
naming the field before helm is even started (helm checks the same schema again).

Object names follow the chart's ``whisper.fullname``: ``fullnameOverride`` when set, else the release name when
it contains the chart name ("whisper"), else ``<release>-whisper``. Callers that want the job to be named
exactly like the release pass ``fullnameOverride``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from whisper_k8s.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CHART_ENV = "WHISPER_K8S_CHART"
HELM_ENV = "WHISPER_K8S_HELM"


def chart_dir() -> Path:
    """The chart folder: $WHISPER_K8S_CHART, else helm/ beside this package (a source checkout)."""
    path = Path(os.environ.get(CHART_ENV) or ROOT / "helm")
    if not (path / "Chart.yaml").is_file():
        raise UserError(
            f"no Helm chart at {path} (Chart.yaml missing): run from a whisper-k8s checkout "
            f"or set {CHART_ENV} to the chart folder"
        )
    return path


def preset_names() -> list[str]:
    """The model presets the chart ships (files/model-presets/<name>.json)."""
    return sorted(p.stem for p in (chart_dir() / "files" / "model-presets").glob("*.json"))


def preset_path(name: str) -> Path:
    """The MindSpeed-MM model.json of preset ``name`` (e.g. "large-v3", "tiny")."""
    path = chart_dir() / "files" / "model-presets" / f"{name}.json"
    if not path.is_file():
        raise UserError(f"unknown model preset {name!r}: choose one of {', '.join(preset_names())}")
    return path


def helm_binary() -> str:
    """$WHISPER_K8S_HELM, else helm on PATH, else the pinned one `make setup` installs into .tools/bin."""
    candidates = [os.environ.get(HELM_ENV), shutil.which("helm"), str(ROOT / ".tools" / "bin" / "helm")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    raise UserError("helm is not installed: run `make setup` (installs Helm v4 into .tools/bin) or put helm on PATH")


@lru_cache(maxsize=1)
def _schema_validator():
    import jsonschema

    schema = json.loads((chart_dir() / "values.schema.json").read_text())
    return jsonschema.Draft7Validator(schema)


def _field(error) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "(top level)"


def _describe(error) -> str:
    """One line naming the field, what is wrong, and for an unknown key where it may go."""
    if error.validator == "additionalProperties":
        return f"{_field(error)}: {error.message} (remove it or check its spelling in helm/values.yaml)"
    return f"{_field(error)}: {error.message}"


def schema_errors(values: dict) -> list[str]:
    """Every schema violation of ``values`` merged over the chart defaults, as 'field: problem' lines."""
    from whisper_k8s.values import deep_merge

    merged = deep_merge(default_values(), values)
    errors = sorted(_schema_validator().iter_errors(merged), key=lambda e: list(map(str, e.absolute_path)))
    return [_describe(e) for e in errors]


def validate_values(values: dict) -> None:
    """Raise UserError naming every bad field of ``values`` (user values; the chart defaults fill the rest)."""
    errors = schema_errors(values)
    if errors:
        raise UserError("invalid chart values:\n  " + "\n  ".join(errors))


@lru_cache(maxsize=1)
def _default_values_text() -> str:
    return (chart_dir() / "values.yaml").read_text()


def default_values() -> dict:
    """The chart's values.yaml as a dict (a fresh copy each call)."""
    import yaml

    return yaml.safe_load(_default_values_text())


def render(values: dict, release: str, namespace: str = "default") -> list[dict]:
    """Run ``helm template`` on the chart with ``values`` and return the rendered documents in order.

    ``values`` are user values (the chart defaults fill the rest), written to a temporary file so that types
    survive exactly (``--set`` would guess them).
    """
    import yaml

    from whisper_k8s.values import to_helm_yaml

    validate_values(values)
    with tempfile.TemporaryDirectory(prefix="whisper-values-") as tmp:
        values_file = Path(tmp) / "values.yaml"
        values_file.write_text(to_helm_yaml(values))
        cmd = [helm_binary(), "template", release, str(chart_dir()), "--namespace", namespace,
               "--values", str(values_file)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UserError(f"helm template failed for release {release!r}: {proc.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def find(documents: list[dict], kind: str) -> list[dict]:
    """The rendered documents of one kind (e.g. "PyTorchJob", "ConfigMap")."""
    return [doc for doc in documents if doc.get("kind") == kind]
