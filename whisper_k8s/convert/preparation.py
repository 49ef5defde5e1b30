"""The first half of a conversion, the same in both directions: open the source, decide from the idempotency
marker whether there is anything to do, guard the output, check the source's key style, resolve the config."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from whisper_k8s.convert import marker
from whisper_k8s.convert.hf_config import resolve_config
from whisper_k8s.convert.mapping import as_mapping
from whisper_k8s.convert.outputs import refuse_foreign_output
from whisper_k8s.convert.sources import TensorSource, open_source
from whisper_k8s.errors import UserError

_STYLE_NAMES = {"hf": "Hugging Face", "mm": "MindSpeed-MM"}


@dataclass
class Prepared:
    source: TensorSource
    fingerprint: str
    model_config: Mapping
    config_origin: str


def prepare_conversion(src: Path, dst: Path, *, direction: str, key_style: str, accepts: str, config, cast,
                       force: bool, extra_inputs: Iterable[Path] = (), extra_options: Mapping | None = None,
                       ) -> Prepared | None:
    """None when ``dst`` is already the conversion of this very source and options (a rerun is a no-op).

    ``key_style``: the key names the source must have; ``accepts``: what this direction converts, for the
    error when the source has the other style.
    """
    source = open_source(src)
    inputs = [*source.files, *extra_inputs, *(p for p in (source.config_path, config) if isinstance(p, (str, Path)))]
    options = {"direction": direction, "dtype": str(cast), **(extra_options or {}),
               "config": None if isinstance(config, (str, Path, type(None))) else as_mapping(config)}
    fingerprint = marker.fingerprint(inputs, options)
    if not force and marker.is_current(dst, fingerprint):
        return None
    refuse_foreign_output(dst, force)
    if source.key_style != key_style:
        raise UserError(f"{src} does not have {_STYLE_NAMES[key_style]} key names (key style: "
                        f"{source.key_style}): {direction} converts {accepts}")
    model_config, origin = resolve_config(config, source)
    return Prepared(source, fingerprint, model_config, origin)
