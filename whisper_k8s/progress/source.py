"""Where a backend's progress snapshot comes from: the one thing each backend provides for `status`.

A source returns the probe's snapshot (:func:`whisper_k8s.progress.probe.snapshot`) of the job's outputs
folder in one call:

- :class:`LocalSource`: the outputs folder is on this machine (the local backend's folder, the docker
  backend's bind-mounted host folder); the probe runs in this process.
- :class:`CommandSource`: the outputs are only reachable by running a command beside them (``kubectl exec``
  into the running master pod, ``docker exec``); the backend hands in a function that runs an argv there and
  returns its stdout, and the probe runs there: one round trip, a few tens of KiB whatever the file's size.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from whisper_k8s.errors import ClusterError
from whisper_k8s.progress import probe


class ProgressSource(Protocol):
    def snapshot(self, records: int = probe.DEFAULT_RECORDS) -> dict[str, Any]:
        """The probe's snapshot of the job's outputs (at least ``records`` iteration records when there are)."""


class LocalSource:
    """Outputs in a folder of this machine."""

    def __init__(self, outputs: str | Path):
        self.outputs = Path(outputs)

    def snapshot(self, records: int = probe.DEFAULT_RECORDS) -> dict[str, Any]:
        return probe.snapshot(self.outputs, records=records)


class CommandSource:
    """Outputs reachable by a command: ``run(argv)`` runs it where the volume is mounted, returns its stdout.

    ``where`` names that place in errors (``pod whisper-hi-master-0``); ``outputs`` is the folder's path
    there (the chart mounts the volume at ``/outputs``).
    """

    def __init__(self, run: Callable[[list[str]], str], where: str, outputs: str = "/outputs",
                 python: str = "python"):
        self.run = run
        self.where = where
        self.outputs = outputs
        self.python = python

    def snapshot(self, records: int = probe.DEFAULT_RECORDS) -> dict[str, Any]:
        return parse_snapshot(self.run(probe.command(self.outputs, records, self.python)), self.where)


def parse_snapshot(stdout: str, where: str) -> dict[str, Any]:
    """The snapshot in a probe's output: its last JSON line (anything the runtime printed before is skipped)."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and item.get("format") == probe.FORMAT:
            return item
        if isinstance(item, dict) and "format" in item:
            raise ClusterError(f"the progress probe in {where} speaks format {item['format']}, this CLI "
                               f"{probe.FORMAT}: use the same whisper-k8s version as the job's image")
    shown = stdout.strip()[-300:] or "nothing"
    raise ClusterError(f"the progress probe in {where} printed no snapshot ({shown}): check that the job's "
                       "image has whisper_k8s (python -m whisper_k8s.progress.probe /outputs)")
