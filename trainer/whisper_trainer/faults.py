"""Fault-injection points for reliability tests: inert unless ``WHISPER_TRAINER_FAULT`` names one.

A crash is only interesting where it leaves delicate state behind, and a test cannot hit such a moment by
timing alone. So the trainer marks those moments with :func:`fault_point`; a test sets

    WHISPER_TRAINER_FAULT=<point>[@<iteration>]:<seconds>

in the trainer's environment (the chart's ``extraEnv``), and the process that reaches ``<point>`` (at that
iteration, when given) logs ``fault injection: pausing at <point> ...`` and sleeps ``<seconds>``: a window in
which the test kills it. If nobody does, the run goes on unchanged. Unset (the default, and always in
production) a point costs one dictionary lookup.

Points (:data:`POINTS`):

``checkpoint-publish``
    Rank 0 has written and verified a checkpoint's staging folder (``<save>/.iter_N.tmp``, manifest
    included) and not yet renamed it into place nor moved ``latest_checkpointed_iteration.txt``.
"""

from __future__ import annotations

import logging
import os
import time

from whisper_k8s.errors import UserError

log = logging.getLogger(__name__)

FAULT_ENV = "WHISPER_TRAINER_FAULT"
POINTS = ("checkpoint-publish",)


def parse_fault(spec: str) -> tuple[str, int | None, float]:
    """``checkpoint-publish@4:5`` -> ("checkpoint-publish", 4, 5.0); a bad spec names the variable and the fix."""
    where, _, seconds = spec.partition(":")
    point, _, iteration = where.partition("@")
    try:
        pause = float(seconds)
        at = int(iteration) if iteration else None
    except ValueError:
        pause = at = None
    if point not in POINTS or pause is None or pause < 0:
        raise UserError(f"{FAULT_ENV}={spec!r}: expected <point>[@<iteration>]:<seconds> with a point among "
                        f"{', '.join(POINTS)} (unset it to run without fault injection)")
    return point, at, pause


def fault_point(point: str, iteration: int) -> None:
    """Pause here when ``WHISPER_TRAINER_FAULT`` names this point (and this iteration, if it names one)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    wanted, at, pause = parse_fault(spec)
    if wanted == point and at in (None, iteration):
        log.warning("fault injection: pausing at %s of iteration %d for %.1f s (pid %d)", point, iteration, pause,
                    os.getpid())
        time.sleep(pause)
