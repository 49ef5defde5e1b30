"""`list`: the jobs of this kit in a namespace, with state, nodes and age."""

from __future__ import annotations

import argparse

from whisper_k8s.cli import _jobs

NAME = "list"
HELP = "list the jobs of this kit (PyTorchJobs and TrainJobs, by the chart's labels) with state, nodes and age"
ORDER = 55
EXAMPLES = """
  python -m whisper_k8s list
  python -m whisper_k8s list -n team-a
  python -m whisper_k8s list --local
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _jobs.add_backend_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from whisper_k8s.backends.base import format_age, format_table

    jobs = _jobs.scheduler(args).list()
    if not jobs:
        print(f"no jobs in namespace {args.namespace}")
        return 0
    rows = [[job.name, job.operator, job.state, str(job.nodes or "-"), format_age(job.created)] for job in jobs]
    print(format_table(["NAME", "KIND", "STATE", "NODES", "AGE"], rows))
    return 0
