"""Command-line flags generated from config dataclasses (torchtitan's style).

A setting is one dataclass field declared with :func:`option`: its annotation is the flag's type, and the
default, choices, range and help are the field's. :func:`flags_of` lists the flags of a config's sections,
:func:`build_parser` makes the argparse parser from them, :func:`sections_from` builds the section objects
from the parsed arguments and :func:`check_ranges` refuses a value outside a declared range in one line.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from whisper_k8s.errors import UserError


def option(default: Any, help: str, *, flag: str = "", choices: tuple = (), minimum: float | None = None,
           exclusive_minimum: float | None = None, maximum: float | None = None, required: bool = False) -> Any:
    """A setting that is a command-line flag: a dataclass field whose metadata describes the flag.

    The flag is ``--`` + the field name with ``-`` for ``_`` unless ``flag`` names it (Megatron's names); its type
    is the field's annotation (``bool`` is a switch that is off by default, ``X | None`` is an optional X).
    ``minimum``/``exclusive_minimum``/``maximum`` bound a number the way a JSON schema words it.
    """
    return field(default=default, metadata={
        "help": help, "flag": flag, "choices": tuple(choices), "minimum": minimum,
        "exclusive_minimum": exclusive_minimum, "maximum": maximum, "required": required})


@dataclass(frozen=True)
class Flag:
    """One command-line flag, as :func:`option` declared it on field ``name`` of config section ``section``."""

    section: str
    name: str
    flag: str
    type: type
    default: Any
    choices: tuple
    minimum: float | None
    exclusive_minimum: float | None
    maximum: float | None
    required: bool
    help: str

    @property
    def dest(self) -> str:
        return f"{self.section}.{self.name}"

    def bounds(self) -> list[tuple[str, float]]:
        """The range as (comparison, limit) pairs, e.g. [(">=", 1)]."""
        pairs = ((">=", self.minimum), (">", self.exclusive_minimum), ("<=", self.maximum))
        return [(op, limit) for op, limit in pairs if limit is not None]

    def describe(self) -> str:
        """The help text plus what the field declares: range, and default or required."""
        notes = [f"{op} {limit:g}" for op, limit in self.bounds()]
        if self.required:
            notes.append("required")
        elif self.default is not None and self.default != "" and self.default is not False:
            notes.append(f"default: {self.default}")
        return f"{self.help} [{'; '.join(notes)}]" if notes else self.help


def _value_type(annotation: Any) -> type:
    """int for ``int`` and ``int | None``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return annotation


def flags_of(sections: dict[str, type]) -> list[Flag]:
    """The flags of the :func:`option` fields of each section class, in order (other fields are not flags)."""
    out = []
    for section, cls in sections.items():
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if "help" in f.metadata:
                m = f.metadata
                out.append(Flag(section, f.name, m["flag"] or "--" + f.name.replace("_", "-"),
                                _value_type(hints[f.name]), f.default, m["choices"], m["minimum"],
                                m["exclusive_minimum"], m["maximum"], m["required"], m["help"]))
    return out


def build_parser(sections: dict[str, type], **parser_options: Any) -> argparse.ArgumentParser:
    """An argparse parser with one argument per flag, grouped by section (titled with the section's name and
    described by its docstring)."""
    parser = argparse.ArgumentParser(**parser_options)
    groups = {name: parser.add_argument_group(name, cls.__doc__) for name, cls in sections.items()}
    for spec in flags_of(sections):
        kwargs: dict[str, Any] = {"dest": spec.dest, "default": spec.default, "help": spec.describe()}
        if spec.type is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs.update(type=spec.type, required=spec.required)
            if spec.choices:
                kwargs["choices"] = spec.choices
            else:
                kwargs["metavar"] = spec.flag[2:].replace("-", "_").upper()
        groups[spec.section].add_argument(spec.flag, **kwargs)
    return parser


def sections_from(ns: argparse.Namespace, sections: dict[str, type]) -> dict[str, Any]:
    """Each section object built from the parsed flags (non-flag fields keep their defaults)."""
    specs = flags_of(sections)
    return {name: cls(**{s.name: getattr(ns, s.dest) for s in specs if s.section == name})
            for name, cls in sections.items()}


def check_ranges(ns: argparse.Namespace, sections: dict[str, type]) -> None:
    """UserError naming the first flag whose value is outside its declared range."""
    for spec in flags_of(sections):
        value = getattr(ns, spec.dest)
        for op, limit in spec.bounds() if value is not None else ():
            if not {">=": value >= limit, ">": value > limit, "<=": value <= limit}[op]:
                raise UserError(f"{spec.flag} must be {op} {limit:g}, found {value}")
