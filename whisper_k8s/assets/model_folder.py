"""A Hugging Face Whisper folder (what ``save_pretrained`` writes): checked from its headers, and uploaded.

``read_whisper_folder`` is the one check of such a folder, used before ``assets upload-model`` sends it (on
the user's machine) and by the preflight init container (on the models claim): config.json says Whisper, the
weights are there (safetensors, single or sharded, or pytorch_model.bin) and every tensor has the shape its own
config implies, and with a preset, the shapes of that preset. Shapes come from safetensors headers and mapped
files (``convert.sources``): no weight is read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from whisper_k8s.errors import UserError


class ModelFolderProblem(UserError):
    """What is wrong (``what``) with which file or folder (``path``); callers add the fix for their context."""

    def __init__(self, path: Path, what: str):
        super().__init__(f"{path}: {what}")
        self.path, self.what = path, what


def read_whisper_folder(folder: str | os.PathLike, preset: Mapping | None = None,
                        preset_name: str = "") -> tuple[dict, dict]:
    """(config.json, tensor shapes) of a Hugging Face Whisper folder; ModelFolderProblem when it is not one,
    or when its weights do not have the shapes of its config (or of ``preset``)."""
    from whisper_k8s.convert.hf_config import describe_size, infer_dimensions, preset_problems
    from whisper_k8s.convert.sources import open_source

    folder = Path(folder)
    config_file = folder / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as err:
        raise ModelFolderProblem(config_file, f"missing or unreadable ({err.__class__.__name__})") from None
    if not isinstance(config, dict) or config.get("model_type") != "whisper":
        found = config.get("model_type") if isinstance(config, dict) else None
        raise ModelFolderProblem(config_file, f"model_type is {found!r}, not 'whisper'")
    try:
        shapes = open_source(folder).shapes()
    except UserError as err:
        raise ModelFolderProblem(folder, str(err).split(": ", 1)[-1]) from None
    try:
        own = preset_problems(shapes, config)
    except KeyError as err:
        raise ModelFolderProblem(config_file, f"lacks the field {err}") from None
    if own:
        raise ModelFolderProblem(folder, f"the weights do not match its config.json ({own[0]}; {len(own)} "
                                         "difference(s))")
    if preset is not None:
        problems = preset_problems(shapes, preset)
        if problems:
            raise ModelFolderProblem(folder, f"{describe_size(infer_dimensions(shapes))} does not match preset "
                                             f"{preset_name} ({problems[0]}; {len(problems)} difference(s))")
    return config, shapes


def upload_model(src: str | os.PathLike, transport, dest: str, *, preset: str | None = None, quiet: bool = False):
    """Check ``src`` here (UserError naming the fix before anything is sent), then send it into ``dest`` on
    the models volume with the verified, resumable transfer (``transfer.send``); the TransferResult."""
    from whisper_k8s.chart import preset_path
    from whisper_k8s.transfer.send import upload

    expected = json.loads(preset_path(preset).read_text()) if preset else None
    try:
        read_whisper_folder(src, expected, preset or "")
    except ModelFolderProblem as err:
        raise UserError(f"SRC {err}: give a Hugging Face Whisper folder as save_pretrained writes it (config.json "
                        "and model.safetensors)" + (f" of the {preset} size, or another --preset" if preset else "")) from None
    return upload(src, transport, dest, quiet=quiet)
