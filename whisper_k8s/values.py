"""Chart values from what the user typed: ``-f`` files, submit flags and ``--set``, merged by Helm itself.

Precedence (lowest first), as with ``helm install -f a.yaml --set ...``: the chart's own defaults, each
``-f`` file in order, the named submit flags (``--nodes``, ``--accelerator``...), then ``--set`` and
``--set-string``. Helm parses and merges them (:func:`whisper_k8s.chart.helm_values`): the flags go in as
``--set-json``, which Helm applies after the files and before ``--set``. The result is the user's values (the
chart defaults are not copied in); submit keeps them in a file that re-submits with ``-f``. They are checked
against the chart's schema once, when the chart is rendered (:func:`whisper_k8s.chart.render`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from whisper_k8s import atomic, chart, goyaml, places
from whisper_k8s.errors import UserError


def _image_values(image: str) -> dict[str, Any]:
    """``registry:5000/repo:tag`` -> repository + tag (a colon before the last ``/`` is a registry port)."""
    repository, colon, tag = image.rpartition(":")
    if not colon or "/" in tag:
        return {"image.repository": image}
    return {"image.repository": repository, "image.tag": tag}


def _dataset_values(dataset: str) -> dict[str, Any]:
    """An absolute path is a hostPath (single-node labs); anything else names an existing claim."""
    if dataset.startswith("/"):
        return {"storage.dataset.type": "hostPath", "storage.dataset.hostPath": dataset}
    return {"storage.dataset.type": "existingClaim", "storage.dataset.existingClaim": dataset}


def _pretrained_values(folder: str) -> dict[str, Any]:
    return {"model.pretrained.enabled": True, "model.pretrained.path": folder}


# submit flag (argparse dest) -> chart values it stands for. The one place tying the CLI to the chart's layout.
FLAG_VALUES: dict[str, Any] = {
    "nodes": lambda v: {"nodes": v},
    "npus_per_node": lambda v: {"accelerator.perNode": v},
    "accelerator": lambda v: {"accelerator.type": v},
    "image": _image_values,
    "dataset": _dataset_values,
    "pretrained": _pretrained_values,
    "language": lambda v: {"data.language": v},
    "preset": lambda v: {"model.preset": v},
    "operator": lambda v: {"operator": v},
}

SET_SYNTAX = "Helm syntax: a.b=1, list[0]=x, a={x,y}, several separated by commas"


def flag_values(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The dotted chart keys the named submit flags stand for (flags left at None set nothing)."""
    values: dict[str, Any] = {}
    for dest, to_values in FLAG_VALUES.items():
        if flags.get(dest) is not None:
            values.update(to_values(flags[dest]))
    return values


def build_values(
    files: Iterable[Path | str] = (),
    flags: Mapping[str, Any] | None = None,
    sets: Iterable[str] = (),
    set_strings: Iterable[str] = (),
) -> dict[str, Any]:
    """The user's values as Helm merges them: files, then flags, then ``--set``, then ``--set-string``.

    A UserError names the file or the ``--set`` argument Helm refused, with Helm's reason.
    """
    arguments = [("--values", str(path)) for path in files]
    arguments += [("--set", expression) for expression in sets]
    arguments += [("--set-string", expression) for expression in set_strings]
    for option, argument in arguments:
        _precheck(option, argument)
    flag_json = [("--set-json", f"{key}={json.dumps(value)}") for key, value in flag_values(flags or {}).items()]
    try:
        return chart.helm_values([part for pair in arguments + flag_json for part in pair])
    except UserError as failure:
        for option, argument in arguments:  # one at a time, to name the argument Helm refused
            try:
                chart.helm_values([option, argument])
            except UserError as err:
                raise _argument_error(option, argument, str(err)) from None
        raise failure from None


def _precheck(option: str, argument: str) -> None:
    """What Helm would silently accept but is certainly a mistake: a missing file, a --set without a key."""
    if option == "--values":
        if not Path(argument).is_file():
            raise UserError(f"values file {argument} does not exist")
        return
    key, equals, _ = argument.partition("=")
    if not equals or not key:
        raise UserError(f"{option} {argument!r} is not key=value (e.g. {option} nodes=2; {SET_SYNTAX})")


def _argument_error(option: str, argument: str, reason: str) -> UserError:
    if option != "--values":
        reason = reason.split(" data: ", 1)[-1]
        return UserError(f"{option} {argument!r}: {reason} ({SET_SYNTAX})")
    reason = reason.split(f"{argument}: ", 1)[-1]
    if "into Go value of type map" in reason:
        return UserError(f"values file {argument} must hold a map of chart values (key: value lines), "
                         f"not a list or a single value")
    return UserError(f"values file {argument} is not valid YAML: {reason}")


def default_values_path(name: str, runs_dir: Path | str | None = None) -> Path:
    """Where submit keeps the values of job ``name`` (re-submit with ``-f`` this file): ``runs/<name>/values.yaml``
    (``runs``: ``$WHISPER_K8S_RUNS`` when set), beside the job's place record (whisper_k8s.places)."""
    return Path(runs_dir or places.runs_dir()) / name / "values.yaml"


def write_values(values: Mapping[str, Any], path: Path | str) -> Path:
    """Write the values as YAML atomically (temp file + rename), so a crash never leaves half a file.

    The YAML is what Helm reads back with the same types (whisper_k8s.goyaml): a job named ``n`` stays "n".
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# chart values written by `python -m whisper_k8s submit`; re-submit with -f this file\n"
    text += goyaml.dump(dict(values))
    atomic.write_text(path, text)
    return path
