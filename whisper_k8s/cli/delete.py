"""`delete`: remove a job (helm uninstall) and wait until its job object is gone."""

from __future__ import annotations

import argparse

from whisper_k8s.cli import _jobs

NAME = "delete"
HELP = "delete a job and its release, then verify it is gone (outputs on kept volumes stay)"
ORDER = 50
EXAMPLES = """
  python -m whisper_k8s delete whisper-hi
  python -m whisper_k8s delete whisper-hi -n team-a
  python -m whisper_k8s delete demo --local
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _jobs.add_job_name(parser)
    _jobs.add_backend_arguments(parser)


def run(args: argparse.Namespace) -> int:
    _jobs.scheduler(args).cancel(args.name)
    print(f"deleted {args.backend}://{args.namespace}/{args.name}")
    return 0
