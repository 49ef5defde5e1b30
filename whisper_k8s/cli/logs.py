"""`logs`: the merged logs of all pods of a job, each line prefixed with its replica (``[worker-0]``); ``-f``
follows."""

from __future__ import annotations

import argparse
import sys

from whisper_k8s.cli import _jobs
from whisper_k8s.operators import all_roles

NAME = "logs"
HELP = "print the merged logs of a job's pods ([master-0], [worker-0] ...); -f follows restarts and new pods"
ORDER = 30
EXAMPLES = """
  python -m whisper_k8s logs whisper-hi
  python -m whisper_k8s logs whisper-hi -f --role worker --rank 3
  python -m whisper_k8s logs whisper-hi --since 10m | grep -i loss
  python -m whisper_k8s logs demo --local -f
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _jobs.add_job_name(parser)
    parser.add_argument("-f", "--follow", action="store_true", help="keep streaming until the job ends (Ctrl-C stops)")
    parser.add_argument("--since", type=duration, metavar="DURATION", help="only lines newer than this: 30s, 10m, 2h")
    parser.add_argument("--role", choices=all_roles(), help="only this replica role")
    parser.add_argument("--rank", type=int, help="only the replica with this node rank")
    _jobs.add_backend_arguments(parser)


def duration(text: str) -> float:
    """argparse type for kubectl-style durations (``45s``, ``10m``, ``2h``, ``1h30m``)."""
    units, total, number = {"s": 1, "m": 60, "h": 3600, "d": 86400}, 0.0, ""
    for char in text.strip():
        if char.isdigit() or char == ".":
            number += char
        elif char in units and number:
            total, number = total + float(number) * units[char], ""
        else:
            raise argparse.ArgumentTypeError(f"duration {text!r} must look like 30s, 10m, 2h or 1h30m")
    if number or total <= 0:
        raise argparse.ArgumentTypeError(f"duration {text!r} must look like 30s, 10m, 2h or 1h30m")
    return total


def stream(scheduler, name: str, *, follow: bool, since=None, role=None, rank=None, wait: bool = False) -> int:
    """Print the log lines; with ``wait`` return the job's outcome as the exit code (used by submit -f)."""
    from whisper_k8s.errors import JobFailed

    try:
        for line in scheduler.log_iter(name, follow=follow, since=since, role=role, rank=rank):
            print(line, flush=True)
    except BrokenPipeError:  # `logs NAME | head`: the reader left, which is not an error
        sys.stderr.close()
        return 0
    if wait:
        status = scheduler.wait(name)
        if status.state != "Succeeded":
            raise JobFailed(f"job {status.handle} {status.state}; see `python -m whisper_k8s status {name}`")
        print(f"job {status.handle} Succeeded", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    return stream(_jobs.scheduler(args), args.name, follow=args.follow, since=args.since,
                  role=args.role, rank=args.rank)
