"""`delete`: remove a job (helm uninstall) and wait until its job object is gone; its outputs stay unless
``--purge-outputs`` names them."""

from __future__ import annotations

import argparse

from whisper_k8s.cli import _jobs

NAME = "delete"
HELP = ("delete a job and its release, then verify it is gone; its outputs stay (the claims helm keeps, "
        "storage.keepClaims), and --purge-outputs removes the outputs the job created")
ORDER = 50
EXAMPLES = """
  python -m whisper_k8s delete whisper-hi
  python -m whisper_k8s delete whisper-hi -n team-a
  python -m whisper_k8s delete demo --local --purge-outputs
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _jobs.add_job_name(parser)
    parser.add_argument("--purge-outputs", action="store_true",
                        help="also remove the outputs volume the job created (checkpoints, metrics); claims and "
                             "host folders you named are never removed")
    _jobs.add_backend_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from whisper_k8s import places

    backend = _jobs.job_scheduler(args)
    deleted = backend.cancel(args.name, purge_outputs=args.purge_outputs)
    place = _jobs.place_of(args, backend)
    places.record_delete(args.name, place, deleted.kept)
    print(f"deleted {args.backend}://{args.namespace}/{args.name}")
    for line in deleted.purged:
        print(f"removed (--purge-outputs): {line}")
    for line in deleted.kept:
        print(f"kept: {line}")
    if not deleted.kept:
        return 0
    steps = []
    if backend.deleted_job(args.name):  # this backend still reads the kept outputs
        steps.append(f"`{_jobs.hint(backend, 'collect', args.name, '--to', f'runs/{args.name}/hf')}` converts "
                     "the latest checkpoint")
    again = _jobs.resubmit_hint(args, backend)
    if again:
        steps.append(f"`{again}` resumes training from it")
    steps.append(f"`{_jobs.hint(backend, 'delete', args.name, '--purge-outputs')}` removes the outputs")
    print("next: " + " | ".join(steps))
    return 0
