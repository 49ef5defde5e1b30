"""`status NAME --watch`: redraw the status and progress until the job ends; the exit code is its outcome.

On a terminal the screen is redrawn in place; into a pipe or file each refresh is appended after a line with
its time, so a log of a watch shows how the job went (and when it stalled).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from whisper_k8s.backends.base import JobState
from whisper_k8s.errors import JobFailed
from whisper_k8s.progress.render import format_status_with_progress, iso
from whisper_k8s.progress.summary import Progress

if TYPE_CHECKING:
    from whisper_k8s.backends.base import JobStatus

CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen
INTERVAL_SECONDS = 2.0


def watch(read: Callable[[], tuple[JobStatus, Progress | None]], *, interval: float = INTERVAL_SECONDS,
          out: TextIO | None = None, sleep: Callable[[float], None] = time.sleep,
          render: Callable[[JobStatus, Progress | None], str] = format_status_with_progress) -> int:
    """Show ``read()`` every ``interval`` seconds until the job is Succeeded (return 0) or Failed (return 4)."""
    out = out or sys.stdout
    in_place = out.isatty()
    while True:
        status, progress = read()
        text = render(status, progress)
        if in_place:
            out.write(CLEAR + text + "\n")
        else:
            out.write(f"--- {iso(time.time())}\n{text}\n")
        out.flush()
        if status.is_terminal:
            return 0 if status.state == JobState.SUCCEEDED else JobFailed.exit_code
        sleep(interval)
