"""YAML that Helm and kubectl read back unchanged.

Both parse YAML 1.1 in Go, where a bare ``n``, ``y``, ``on`` or ``1e3`` is a boolean or a number. PyYAML
resolves fewer of these and so writes some of them bare: a job named ``n`` came back from Helm as ``false``.
Every string that such a parser would not read as a string is written quoted here.
"""

from __future__ import annotations

import re

_YAML11_WORDS = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null", "~", ""})
_YAML11_NUMBER = re.compile(r"[-+]?(0x[0-9a-f_]+|0o?[0-7_]+|0b[01_]+|[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?)")
_STR = "tag:yaml.org,2002:str"


def not_a_string_to_go(text: str) -> bool:
    """Whether Go's YAML 1.1 parsers would read ``text`` written bare as a boolean, null or number."""
    lowered = text.lower()
    if lowered in _YAML11_WORDS or _YAML11_NUMBER.fullmatch(lowered):
        return True
    try:
        float(lowered.replace("_", ""))
    except ValueError:
        return False
    return True


def dumper(block_multiline: bool = False):
    """A PyYAML SafeDumper class with that quoting; ``block_multiline`` writes multi-line strings as ``|``
    blocks (readable model.json and scripts in rendered manifests)."""
    import yaml

    class GoSafeDumper(yaml.SafeDumper):
        pass

    def represent_str(dumper_: yaml.SafeDumper, text: str):
        if block_multiline and "\n" in text:
            return dumper_.represent_scalar(_STR, text, style="|")
        if not_a_string_to_go(text):
            return dumper_.represent_scalar(_STR, text, style="'")
        return yaml.SafeDumper.represent_str(dumper_, text)

    GoSafeDumper.add_representer(str, represent_str)
    return GoSafeDumper


def dump(data) -> str:
    """``data`` as block YAML with that quoting, keys in their order (what a values file or manifest holds)."""
    import yaml

    return yaml.dump(data, Dumper=dumper(), sort_keys=False, default_flow_style=False)
