"""`logs`: the merged logs of all pods of a job, each line prefixed with its replica (``[worker-0]``); ``-f``
follows."""

from __future__ import annotations

import argparse
import sys

from whisper_k8s.cli import _jobs
from whisper_k8s.operators import all_roles

NAME = "logs"
HELP = ("print the merged logs of a job's pods ([master-0], [worker-0] ...), each restart marked with why the run "
        "before it ended; -f follows restarts and new pods in time order; a job not started yet says why")
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
    """Print the log lines; with ``wait`` return the job's outcome as the exit code (used by submit -f).

    When no replica has started, say why there is nothing to read yet (the pending reasons and their fixes).
    """
    from whisper_k8s.errors import JobFailed

    printed = False
    if follow:
        explain_waiting(scheduler, name, only_if_stuck=True)
    try:
        for line in scheduler.log_iter(name, follow=follow, since=since, role=role, rank=rank):
            print(line, flush=True)
            printed = True
    except BrokenPipeError:  # `logs NAME | head`: the reader left, which is not an error
        sys.stderr.close()
        return 0
    if not printed and not follow:
        explain_waiting(scheduler, name)
    if wait:
        status = scheduler.wait(name)
        if status.state != "Succeeded":
            raise JobFailed(f"job {status.handle} {status.state}; see `{_jobs.hint(scheduler, 'status', name)}`")
        print(f"job {status.handle} Succeeded", file=sys.stderr)
    return 0


def explain_waiting(scheduler, name: str, only_if_stuck: bool = False) -> None:
    """On stderr, when none of the job's replicas has started: why (each pod's reason and the fixes); with
    ``only_if_stuck`` only when there is a reason (not for a job whose pods are just being created)."""
    status = scheduler.describe(name)
    if status is None or status.is_terminal or any(p.phase != "Pending" for p in status.pods):
        return
    if only_if_stuck and not status.problems and not any(p.reason for p in status.pods):
        return
    waiting = "; ".join(f"{p.replica} {p.phase}" + (f" ({p.reason})" if p.reason else "") for p in status.pods)
    print(f"no log yet: no replica of job {name} has started ({waiting or 'no pods yet'})", file=sys.stderr)
    for problem in status.problems:
        print(f"! {problem}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    return stream(_jobs.job_scheduler(args), args.name, follow=args.follow, since=args.since,
                  role=args.role, rank=args.rank)
