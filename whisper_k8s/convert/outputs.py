"""What both conversion directions share: dtype names, the progress bar, the guard on existing outputs and
the result they return."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from whisper_k8s.convert import marker
from whisper_k8s.errors import UserError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
          "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("fp32", "bf16", "fp16")


def parse_dtype(dtype) -> torch.dtype | None:
    """``"bf16"``/``torch.bfloat16``/None -> torch dtype or None (keep the source's)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype)]
    except KeyError:
        raise UserError(f"--dtype {dtype}: choose one of {', '.join(DTYPE_CHOICES)}") from None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def progress_bar(total: int, desc: str, quiet: bool):
    """A byte-counting tqdm bar on stderr, silent when asked or when stderr is not a terminal (pod logs)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                disable=quiet or not sys.stderr.isatty(), leave=False)


def refuse_foreign_output(dst: Path, force: bool) -> None:
    """An existing output that no conversion of ours wrote is replaced only with ``--force``."""
    if dst.exists() and marker.read(dst) is None and not force:
        if dst.is_dir() and not any(dst.iterdir()):
            return
        raise UserError(f"{dst} already exists and was not written by `convert`: remove it, choose another "
                        "output path, or pass --force to replace it")


@dataclass
class ConversionResult:
    """What a conversion did (``skipped``: the marker said the output is current)."""

    output: Path
    skipped: bool
    tensors: int = 0
    nbytes: int = 0
    details: dict = field(default_factory=dict)

    def summary(self) -> str:
        if self.skipped:
            return f"{self.output}: up to date (same source as last time), nothing to do"
        extra = "".join(f", {k} {v}" for k, v in self.details.items())
        return f"{self.output}: {self.tensors} tensors, {self.nbytes / 2**30:.2f} GiB{extra}"
