"""Chart values from what the user typed: ``-f`` files, submit flags and ``--set key=value``, in Helm's order.

Precedence (lowest first), as with ``helm install -f a.yaml --set ...``: the chart's own defaults, each
``-f`` file in order, the named submit flags (``--nodes``, ``--accelerator``...), then ``--set`` and
``--set-string``. The merged *user* values are validated against the chart's schema (together with the
chart defaults) before anything reaches a cluster and written to a file the user keeps and can re-submit
with ``-f``.

``--set`` follows Helm's rules for the common cases: dotted keys (``a.b=1``), list items (``a[0]=x``,
``a[1].b=y``), lists in braces (``a={x,y}``), several assignments separated by commas, ``\\`` escapes for
``.`` and ``,``, and Helm's typing: ``true``/``false`` are booleans, ``null`` removes a key, whole numbers
without a leading zero are integers, everything else (floats included) is a string.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from whisper_k8s import atomic
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

Key = list[str | int]


# ----------------------------------------------------------------------------------------- --set parsing
def typed_value(text: str) -> Any:
    """Helm's typing of a ``--set`` value (floats stay strings, as in Helm)."""
    lowered = text.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    if lowered == "null":
        return None
    if text == "0":
        return 0
    if text and text[0] != "0":
        try:
            return int(text, 10)
        except ValueError:
            pass
    return text


def _split_unescaped(text: str, separator: str, *, respect_braces: bool = False) -> list[str]:
    """Split on ``separator`` except where escaped with ``\\`` or (optionally) inside ``{...}``."""
    parts, current, depth, escaped = [], [], 0, False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif respect_braces and char == "{":
            depth += 1
            current.append(char)
        elif respect_braces and char == "}":
            depth -= 1
            current.append(char)
        elif char == separator and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    out, escaped = [], False
    for char in text:
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def parse_key(key: str, expression: str) -> Key:
    """``a.b[1].c`` -> ``["a", "b", 1, "c"]``; a UserError names the expression when it is malformed."""
    path: Key = []
    for part in _split_unescaped(key, "."):
        name, bracket, rest = part.partition("[")
        if name or not bracket:
            if not name:
                raise UserError(f"--set {expression!r}: empty key segment in {key!r}")
            path.append(_unescape(name))
        while bracket:
            index, closing, rest = rest.partition("]")
            if not closing or not index.isdigit():
                raise UserError(f"--set {expression!r}: list index in {key!r} must be [N] with N >= 0")
            path.append(int(index))
            if rest and not rest.startswith("["):
                raise UserError(f"--set {expression!r}: unexpected {rest!r} after an index in {key!r}")
            bracket, rest = rest[:1], rest[1:]
    return path


def parse_set(expression: str, *, as_string: bool = False) -> list[tuple[Key, Any]]:
    """Parse one ``--set`` argument (maybe several comma-separated assignments) into (key path, value)."""
    assignments = []
    for item in _split_unescaped(expression, ",", respect_braces=True):
        key, equals, raw = item.partition("=")
        if not equals or not key:
            raise UserError(f"--set {expression!r}: {item!r} is not key=value (e.g. --set nodes=2)")
        if not as_string and raw.startswith("{") and raw.endswith("}"):
            # as in Helm, "{}" is a list holding one empty string
            value: Any = [typed_value(_unescape(v)) for v in _split_unescaped(raw[1:-1], ",")]
        else:
            value = _unescape(raw) if as_string else typed_value(_unescape(raw))
        assignments.append((parse_key(key, expression), value))
    return assignments


def set_path(values: dict[str, Any], path: Key, value: Any) -> None:
    """Assign ``value`` at ``path``, creating maps and padding lists the way Helm does."""
    node: Any = values
    for step, following in zip(path, path[1:], strict=False):
        node = _child(node, step, [] if isinstance(following, int) else {})
    _assign(node, path[-1], value)


def _child(node: Any, step: str | int, empty: Any) -> Any:
    current = node[step] if _has(node, step) else None
    if not isinstance(current, type(empty)):
        current = empty
        _assign(node, step, current)
    return current


def _has(node: Any, step: str | int) -> bool:
    if isinstance(step, int):
        return isinstance(node, list) and step < len(node)
    return isinstance(node, dict) and step in node


def _assign(node: Any, step: str | int, value: Any) -> None:
    if isinstance(step, int):
        if not isinstance(node, list):
            raise UserError(f"--set: index [{step}] used on a value that is not a list")
        node.extend([None] * (step + 1 - len(node)))
        node[step] = value
    else:
        if not isinstance(node, dict):
            raise UserError(f"--set: key {step!r} used on a value that is not a map")
        node[step] = value


# ------------------------------------------------------------------------------------------ merging
def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's coalescing: maps merge key by key, anything else replaces; ``None`` removes the key."""
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_values_file(path: Path | str) -> dict[str, Any]:
    """Read one ``-f`` file; UserError names the file when it is missing, not YAML, or not a map."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"values file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise UserError(f"values file {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"values file {path} must hold a map of chart values, not a {type(data).__name__}")
    return data


def flag_values(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The values the named submit flags stand for (flags left at None are not set)."""
    values: dict[str, Any] = {}
    for dest, to_values in FLAG_VALUES.items():
        if flags.get(dest) is not None:
            for key, value in to_values(flags[dest]).items():
                set_path(values, parse_key(key, key), value)
    return values


def build_values(
    files: Iterable[Path | str] = (),
    flags: Mapping[str, Any] | None = None,
    sets: Iterable[str] = (),
    set_strings: Iterable[str] = (),
) -> dict[str, Any]:
    """The user's values: files, then flags, then ``--set``, then ``--set-string`` (later wins)."""
    values: dict[str, Any] = {}
    for path in files:
        values = deep_merge(values, load_values_file(path))
    values = deep_merge(values, flag_values(flags or {}))
    for expression in sets:
        for path, value in parse_set(expression):
            set_path(values, path, value)
    for expression in set_strings:
        for path, value in parse_set(expression, as_string=True):
            set_path(values, path, value)
    return values


# --------------------------------------------------------------------------------------- validation
def validate(values: Mapping[str, Any]) -> None:
    """Check the user's values (over the chart defaults) against the chart's values.schema.json.

    Delegates to whisper_k8s.chart.validate_values so that the CLI, the backends and the chart tests share
    one validator; the UserError names every bad field.
    """
    from whisper_k8s.chart import validate_values

    validate_values(dict(values))


# ------------------------------------------------------------------------------------------ writing
def default_values_path(name: str, runs_dir: Path | str = "runs") -> Path:
    """Where submit keeps the values of job ``name`` (re-submit with ``-f`` this file)."""
    return Path(runs_dir) / name / "values.yaml"


def to_helm_yaml(values: Mapping[str, Any]) -> str:
    """YAML that Helm reads back with the same types: a job named ``n`` stays the string "n", "1e3" a string."""
    import yaml

    from whisper_k8s import goyaml

    return yaml.dump(dict(values), Dumper=goyaml.dumper(), sort_keys=False, default_flow_style=False)


def write_values(values: Mapping[str, Any], path: Path | str) -> Path:
    """Write the values as YAML atomically (temp file + rename), so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# chart values written by `python -m whisper_k8s submit`; re-submit with -f this file\n"
    text += to_helm_yaml(values)
    atomic.write_text(path, text)
    return path
