"""Every value the chart passes to the trainer names a trainer flag with the values schema's type, range and
default, read from pods the real helm renders for the presets, accelerators, engines and operators of helm/ci.

The trainer's flags are generated from its config dataclasses (whisper_trainer.config.trainer_flags); the chart
says which flag a value feeds in its values.yaml documentation, ``(--flag)``, and where its default differs
from the trainer's own, ``(--flag; trainer default: X)``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from whisper_trainer.config import build_parser, parse_args, trainer_flags

from whisper_k8s import chart

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm"
SCENARIOS = {
    "defaults": {},
    **{path.stem: yaml.safe_load(path.read_text()) for path in sorted((CHART / "ci").glob("*-values.yaml"))},
    "nvidia": {"accelerator": {"type": "nvidia"}},
    "cpu-demo": {"accelerator": {"type": "cpu"}, "model": {"preset": "demo"}},
    "tiny-off": {"model": {"preset": "tiny"}, "training": {"bf16": False, "clipGrad": None, "warmupIters": 0}},
}
FLAGS = {spec.flag: spec for spec in trainer_flags()}
SCHEMA_TYPES = {"integer": int, "number": float, "boolean": bool, "string": str}
PARAM = re.compile(r"^\s*## @param ((?:training|data)\.\S+) (.*)$", re.M)
FLAG_DOC = re.compile(r"\((--[a-z0-9-]+)(?:; trainer default: ([^,;)]+))?")


def documented_flags() -> dict[str, tuple[str, str | None, str]]:
    """value path -> (flag, the trainer's default where the doc states it, the doc), from values.yaml."""
    found = {}
    for path, doc in PARAM.findall((CHART / "values.yaml").read_text()):
        if match := FLAG_DOC.search(doc):
            found[path] = (match[1], match[2], doc)
    return found


def lookup(tree: dict, path: str):
    for key in path.split("."):
        tree = tree.get(key) if isinstance(tree, dict) else None  # Helm drops a null value's key
    return tree


def schema_node(path: str) -> dict:
    node = json.loads((CHART / "values.schema.json").read_text())
    for key in path.split("."):
        node = node["properties"][key]
    return node


def trainer_command(documents: list[dict]) -> tuple[str, list[str]]:
    """(engine, flags) of the rendered training command: torchrun -m whisper_trainer | pretrain_whisper.py."""
    job = next(d for d in documents if d["kind"] in ("PyTorchJob", "TrainJob"))
    if job["kind"] == "TrainJob":
        args = job["spec"]["trainer"]["args"]
    else:
        (container,) = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
        args = container["args"]
    assert args[0] == "torchrun"
    if args[1:3] == ["-m", "whisper_trainer"]:
        return "native", args[3:]
    assert args[1].endswith("/pretrain_whisper.py"), args[:3]
    return "mindspeed-mm", args[2:]


def test_every_training_value_names_a_flag_with_the_schemas_type_range_and_default():
    documented = documented_flags()
    leaves = {f"training.{key}" for key in chart.default_values()["training"]} - {"training.extraArgs"}
    assert leaves <= set(documented), f"undocumented flags for {leaves - set(documented)}"
    defaults = chart.default_values()
    for path, (flag, stated, _) in documented.items():
        assert flag in FLAGS, f"{path} names {flag}, which the trainer does not have"
        spec, node = FLAGS[flag], schema_node(path)
        if "enum" in node:
            assert spec.type is str and set(spec.choices) == set(node["enum"]) - {None}, path
        else:
            types = [node["type"]] if isinstance(node["type"], str) else node["type"]
            assert [SCHEMA_TYPES[t] for t in types if t != "null"] == [spec.type], path
        if spec.default is not None:  # what a null value (the flag left out) stands for is a valid value too
            jsonschema.validate(spec.default, node)
        assert (node.get("minimum"), node.get("exclusiveMinimum"), node.get("maximum")) == \
            (spec.minimum, spec.exclusive_minimum, spec.maximum), f"{path} and {flag} allow different ranges"
        chart_default = lookup(defaults, path)
        if stated is None:
            assert chart_default == spec.default, f"{path} defaults to {chart_default!r}, {flag} to " \
                f"{spec.default!r}: make them equal or say '({flag}; trainer default: {spec.default})'"
        else:
            assert yaml.safe_load(stated) == spec.default != chart_default, f"{path}: stale '{stated}'"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rendered_trainer_command_parses_with_the_values_it_came_from(scenario, tmp_path):
    values = SCENARIOS[scenario]
    documents = chart.render(values, "flags")
    engine, flags = trainer_command(documents)
    options = [a for a in flags if a.startswith("--")]
    assert set(options) <= set(FLAGS), f"not trainer flags: {set(options) - set(FLAGS)}"
    parsed = build_parser().parse_args(flags)  # types and choices, as the trainer checks them
    for name, text in next(d for d in documents if d["kind"] == "ConfigMap")["data"].items():
        (tmp_path / name).write_text(text)
    local = [str(tmp_path / a.removeprefix("/config/")) if a.startswith("/config/") else a for a in flags]
    parse_args(local, check_files=False)  # ranges and the cross-checks with model.json
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    merged = chart.helm_values(["--values", str(values_file)], chart_defaults=True)
    for path, (flag, _, doc) in documented_flags().items():
        spec, value = FLAGS[flag], lookup(merged, path)
        if flag in options:  # the flag carries the value; a null one means off (0)
            got = getattr(parsed, spec.dest)
            assert got == (True if spec.type is bool else 0 if value is None else value), (path, got, value)
        else:  # left out: the trainer's default is the value, or the engine is upstream's and the doc says so
            assert value in (None, spec.default) or engine != "native" and "native engine" in doc, (path, value)
