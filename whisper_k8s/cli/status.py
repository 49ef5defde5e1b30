"""`status`: a job's state and conditions, and a table of its pods with what is wrong with them."""

from __future__ import annotations

import argparse

from whisper_k8s.cli import _jobs

NAME = "status"
HELP = ("show a job's conditions and its pods (role, node rank, phase, restarts, node, age, reason), with the fix "
        "for each reason a pod is stuck")
ORDER = 20
EXAMPLES = """
  python -m whisper_k8s status whisper-hi
  python -m whisper_k8s status whisper-hi -n team-a --context prod
  python -m whisper_k8s status demo --local
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _jobs.add_job_name(parser)
    _jobs.add_backend_arguments(parser)


def run(args: argparse.Namespace) -> int:
    backend = _jobs.job_scheduler(args)
    status = backend.describe(args.name)
    if status is None:
        _jobs.no_such_job(args, backend)
    print(status)
    return 0
