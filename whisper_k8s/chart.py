"""The Helm chart as a library: where it is, its model presets, its values schema, and rendering.

The chart is the single source of pod specs: the CLI and every backend call :func:`render`, which runs the real
``helm template`` so that what a local run executes is exactly what a cluster would get. Values are checked
once, against the chart's ``values.schema.json``, before the chart is rendered, so that a bad value is reported
in one line naming the field and the fix (``helm template`` is told to skip its own check of the same schema).
What Helm makes of values (its ``-f``/``--set`` parsing and its merging over the chart's defaults) is asked of
Helm itself: :func:`helm_values`.

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

from whisper_k8s import goyaml
from whisper_k8s.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
# The copy of helm/ that the wheel carries (in a source checkout, a link to helm/).
PACKAGED_CHART = Path(__file__).resolve().parent / "_chart"
CHART_ENV = "WHISPER_K8S_CHART"
HELM_ENV = "WHISPER_K8S_HELM"


def chart_dir() -> Path:
    """The chart folder: $WHISPER_K8S_CHART, else helm/ of a source checkout, else the one in the package."""
    override = os.environ.get(CHART_ENV)
    candidates = [Path(override)] if override else [ROOT / "helm", PACKAGED_CHART]
    for path in candidates:
        if (path / "Chart.yaml").is_file():
            return path
    raise UserError(
        f"no Helm chart at {candidates[-1]} (Chart.yaml missing): "
        + (f"set {CHART_ENV} to the chart folder" if override else
           f"reinstall whisper-k8s (its wheel carries the chart) or set {CHART_ENV} to the chart folder")
    )


def preset_names() -> list[str]:
    """The model presets the chart ships (files/model-presets/<name>.json)."""
    return sorted(p.stem for p in (chart_dir() / "files" / "model-presets").glob("*.json"))


def presets_text() -> str:
    """The presets as a comma list for help texts, or why there are none (--help must work without a chart)."""
    try:
        return ", ".join(preset_names())
    except UserError as err:
        return f"none found ({err})"


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


def helm_values(value_args: list[str], *, chart_defaults: bool = False) -> dict:
    """What Helm makes of ``-f FILE`` / ``--set`` / ``--set-json`` / ``--set-string`` arguments: ``.Values``.

    Runs ``helm template`` on a chart whose one template prints ``.Values`` as JSON, so the parsing, typing and
    merging are Helm's own. Without ``chart_defaults`` that chart has no defaults and the result is the user's
    values alone; with it, this chart's values.yaml is the default and the result is what its templates see
    (Helm's coalescing: a user ``null`` removes a default). A UserError carries Helm's reason.
    """
    with tempfile.TemporaryDirectory(prefix="whisper-values-") as tmp:
        echo = Path(tmp)
        (echo / "templates").mkdir()
        (echo / "Chart.yaml").write_text("apiVersion: v2\nname: values\nversion: 0.0.0\n")
        (echo / "templates" / "values.json").write_text("{{ toJson .Values }}\n")
        if chart_defaults:
            shutil.copyfile(chart_dir() / "values.yaml", echo / "values.yaml")
        proc = subprocess.run([helm_binary(), "template", "values", str(echo), *value_args],
                              capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UserError(_helm_reason(proc.stderr))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _helm_reason(stderr: str) -> str:
    """Helm's error message as one line."""
    return " ".join(stderr.strip().removeprefix("Error: ").split())


@lru_cache(maxsize=1)
def _schema_validator():
    import jsonschema

    schema = json.loads((chart_dir() / "values.schema.json").read_text())
    return jsonschema.Draft7Validator(schema)


def _field(error, key: str = "") -> str:
    path = ".".join(str(p) for p in [*error.absolute_path, *([key] if key else [])])
    return path or "(top level)"


def _fix(error) -> str:
    """How to make the value valid, for the schema keywords the chart uses."""
    limit = error.validator_value
    fixes = {
        "enum": "use one of those",
        "minimum": f"use {limit} or more", "exclusiveMinimum": f"use more than {limit}",
        "maximum": f"use {limit} or less", "exclusiveMaximum": f"use less than {limit}",
        "minLength": "give a non-empty value", "maxLength": f"use at most {limit} characters",
        "pattern": "use a value that matches it", "required": "set it",
    }
    if error.validator == "type":
        if isinstance(error.instance, str) and "number" in json.dumps(limit):
            return "--set passes a decimal as a string: put the value in a -f values file"
        return f"use a value of type {' or '.join(limit) if isinstance(limit, list) else limit}"
    return fixes.get(error.validator, "see the chart's values.yaml for what it accepts")


def _describe(error) -> list[str]:
    """'field: problem (fix)' for one schema violation; an unknown key is named as the field itself."""
    if error.validator == "additionalProperties":
        unknown = [key for key in error.instance if key not in error.schema.get("properties", {})]
        return [f"{_field(error, key)}: {key!r} was unexpected (remove it or check its spelling against the "
                "chart's values.yaml)" for key in unknown]
    return [f"{_field(error)}: {error.message} ({_fix(error)})"]


def schema_errors(values: dict) -> list[str]:
    """Every schema violation of user ``values`` merged over the chart defaults, as 'field: problem (fix)'."""
    with tempfile.TemporaryDirectory(prefix="whisper-values-") as tmp:
        values_file = Path(tmp) / "values.yaml"
        values_file.write_text(goyaml.dump(values))
        merged = helm_values(["--values", str(values_file)], chart_defaults=True)
    errors = sorted(_schema_validator().iter_errors(merged), key=lambda e: list(map(str, e.absolute_path)))
    return [line for error in errors for line in _describe(error)]


def validate_values(values: dict) -> None:
    """Raise one UserError line naming every bad field of user ``values`` and its fix."""
    errors = schema_errors(values)
    if errors:
        raise UserError("invalid chart values: " + "; ".join(errors))


@lru_cache(maxsize=1)
def _default_values_text() -> str:
    return (chart_dir() / "values.yaml").read_text()


def default_values() -> dict:
    """The chart's values.yaml as a dict (a fresh copy each call)."""
    import yaml

    return yaml.safe_load(_default_values_text())


def render(values: dict, release: str, namespace: str = "default") -> list[dict]:
    """Validate ``values`` (the one check), run ``helm template`` with them and return the documents in order.

    ``values`` are user values (the chart defaults fill the rest), written to a temporary file so that types
    survive exactly (``--set`` would guess them).
    """
    import yaml

    validate_values(values)
    with tempfile.TemporaryDirectory(prefix="whisper-values-") as tmp:
        values_file = Path(tmp) / "values.yaml"
        values_file.write_text(goyaml.dump(values))
        cmd = [helm_binary(), "template", release, str(chart_dir()), "--namespace", namespace,
               "--values", str(values_file), "--skip-schema-validation"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UserError(f"helm template failed for release {release!r}: {_helm_reason(proc.stderr)}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def find(documents: list[dict], kind: str) -> list[dict]:
    """The rendered documents of one kind (e.g. "PyTorchJob", "ConfigMap")."""
    return [doc for doc in documents if doc.get("kind") == kind]
