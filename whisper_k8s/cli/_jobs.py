"""Options every job subcommand shares (job name, namespace, backend, cluster access) and the scheduler
they select. Not a subcommand itself (the leading underscore keeps it out of the CLI's discovery)."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from whisper_k8s.backends import BACKENDS, DEFAULT_BACKEND, Scheduler, get_scheduler
from whisper_k8s.errors import UserError

# A job name becomes pod names like <name>-worker-15 and label values: keep it DNS-1123 and short.
_JOB_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_JOB_NAME = 45


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", default="default", help="Kubernetes namespace (default: default)")
    parser.add_argument("--backend", choices=sorted(BACKENDS), default=DEFAULT_BACKEND,
                        help=f"where the job runs (default: {DEFAULT_BACKEND})")
    parser.add_argument("--local", action="store_const", dest="backend", const="local",
                        help="run on this machine without a cluster (same as --backend local)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")


def add_job_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", type=job_name, help="the job (its release) name")


def job_name(name: str) -> str:
    """argparse type: a valid job name, or a UserError-like message that says what is allowed."""
    if not _JOB_NAME.match(name) or len(name) > MAX_JOB_NAME:
        raise argparse.ArgumentTypeError(
            f"job name {name!r} must be lower-case letters, digits and '-', start with a letter, end with a "
            f"letter or digit, and be at most {MAX_JOB_NAME} characters (e.g. whisper-hi-2node)")
    return name


def scheduler(args: argparse.Namespace) -> Scheduler:
    """The backend the arguments select, built with only the options that backend understands."""
    kwargs = {"namespace": args.namespace}
    if args.backend == "kubernetes":
        kwargs.update(kubeconfig=args.kubeconfig, context=args.context)
    elif args.kubeconfig or args.context:
        raise UserError(f"--kubeconfig/--context do not apply to the {args.backend} backend: drop them")
    return get_scheduler(args.backend, **kwargs)


def choose_operator(scheduler: Scheduler, user_values: dict[str, Any]) -> None:
    """Set ``operator`` when neither ``--operator`` nor a values file chose it and the backend can ask its
    cluster which kind it serves (Kubernetes: API discovery); other backends keep the chart's default.

    The choice lands in the kept values file, so a re-submit with ``-f`` renders the same kind.
    """
    choose = getattr(scheduler, "choose_operator", None)
    if "operator" in user_values or choose is None:
        return
    user_values["operator"] = choose()
    print(f"operator: {user_values['operator']} (served by the cluster; --operator overrides)", file=sys.stderr)
