"""Logging set-up for the trainer: rank-tagged lines, rank 0 verbose, other ranks warnings only.

Every rank still logs its lifecycle (joined, stopped) through ``LIFECYCLE`` at INFO, so each pod's log shows
that its processes started and how they ended: what `logs` and `kubectl logs` on a worker pod need.
"""

from __future__ import annotations

import logging
import sys

LIFECYCLE = "whisper_trainer.lifecycle"


def setup_logging(rank: int, node_rank: int, level: str = "INFO") -> None:
    """Lines like ``2026-01-01 12:00:00 [node 0 rank 3] message``; only rank 0 logs below WARNING."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s [node {node_rank} rank {rank}] %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if rank == 0 else "WARNING")
    logging.getLogger(LIFECYCLE).setLevel(level)
    for noisy in ("urllib3", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel("WARNING")
