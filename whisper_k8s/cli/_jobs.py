"""Options every job subcommand shares (job name, namespace, backend, cluster access) and the scheduler
they select. Not a subcommand itself (the leading underscore keeps it out of the CLI's discovery).

The commands on an existing job (``status``, ``logs``, ``collect``, ``delete``) find where it runs from the
record ``submit`` wrote (:mod:`whisper_k8s.places`); a flag the user gives wins over the record.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, NoReturn

from whisper_k8s import places
from whisper_k8s.backends import BACKENDS, DEFAULT_BACKEND, Scheduler, get_scheduler
from whisper_k8s.errors import UserError

# A job name becomes pod names like <name>-worker-15 and label values: keep it DNS-1123 and short.
_JOB_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_JOB_NAME = 45
_PLACE_OPTIONS = ("backend", "namespace", "kubeconfig", "context")


class _Remembered(argparse.Action):
    """Store the option's value (its ``const`` for a flag) and remember that the user gave it."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        namespace.given_options = getattr(namespace, "given_options", frozenset()) | {self.dest}


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", default=places.DEFAULT_NAMESPACE, action=_Remembered,
                        help="Kubernetes namespace (default: the job's recorded one, else default)")
    parser.add_argument("--backend", choices=sorted(BACKENDS), default=DEFAULT_BACKEND, action=_Remembered,
                        help="where the job runs (default: where `submit` recorded it, else "
                             f"{DEFAULT_BACKEND})")
    parser.add_argument("--local", dest="backend", const="local", nargs=0, action=_Remembered,
                        help="run on this machine without a cluster (same as --backend local)")
    parser.add_argument("--kubeconfig", action=_Remembered,
                        help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", action=_Remembered, help="kubeconfig context (default: the current one)")


def add_job_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", type=job_name, help="the job (its release) name")


def job_name(name: str) -> str:
    """argparse type: a valid job name, or a UserError-like message that says what is allowed."""
    if not _JOB_NAME.match(name) or len(name) > MAX_JOB_NAME:
        raise argparse.ArgumentTypeError(
            f"job name {name!r} must be lower-case letters, digits and '-', start with a letter, end with a "
            f"letter or digit, and be at most {MAX_JOB_NAME} characters (e.g. whisper-hi-2node)")
    return name


def scheduler(args: argparse.Namespace, state_dir: str | None = None) -> Scheduler:
    """The backend the arguments select, built with only the options that backend understands."""
    kwargs: dict[str, Any] = {"namespace": args.namespace}
    if args.backend == "kubernetes":
        kwargs.update(kubeconfig=args.kubeconfig, context=args.context)
    elif args.kubeconfig or args.context:
        raise UserError(f"--kubeconfig/--context do not apply to the {args.backend} backend: drop them")
    elif state_dir:
        kwargs["state_dir"] = state_dir
    return get_scheduler(args.backend, **kwargs)


def job_scheduler(args: argparse.Namespace) -> Scheduler:
    """The backend of the existing job ``args.name``: the flags given, the rest from the job's recorded place
    (see whisper_k8s.places); without a record a local job of that name, else the default backend.

    ``args`` is updated to the place chosen, so messages name it.
    """
    given = getattr(args, "given_options", frozenset())
    explicit = {option: getattr(args, option) if option in given else None for option in _PLACE_OPTIONS}
    place = places.choose(args.name, args.command, **explicit)
    if place is None and explicit["backend"] is None and _local_job_exists(args.name):
        place = places.Place("local", namespace=args.namespace)
    args.recorded_place = place
    if place is not None:
        for option in _PLACE_OPTIONS:
            if option not in given:
                setattr(args, option, getattr(place, option) or (
                    places.DEFAULT_NAMESPACE if option == "namespace" else None))
    return scheduler(args, state_dir=place.state_dir if place else None)


def _local_job_exists(name: str) -> bool:
    from whisper_k8s.backends import local_state

    return local_state.job_exists(local_state.state_root(), name)


def place_of(args: argparse.Namespace, backend: Scheduler) -> places.Place:
    """Where ``backend`` runs the job, as :mod:`whisper_k8s.places` records it."""
    root = getattr(backend, "root", None)
    return places.Place(args.backend, namespace=args.namespace, kubeconfig=args.kubeconfig, context=args.context,
                        state_dir=str(root) if root is not None else None)


def no_such_job(args: argparse.Namespace, backend: Scheduler) -> NoReturn:
    """UserError for a job ``describe`` does not find: where its kept outputs are when it was deleted, else
    the command that lists the jobs there."""
    kept = backend.deleted_job(args.name) or next(
        (p.kept for p in places.recorded(args.name) if p.key == place_of(args, backend).key and p.deleted), ())
    if kept:
        again = resubmit_hint(args, backend)
        again = f"; `{again}` resumes from them" if again else ""
        raise UserError(f"job {args.name} was deleted; its outputs are kept: {'; '.join(kept)}{again}; `"
                        f"{hint(backend, 'delete', args.name, '--purge-outputs')}` removes them")
    listing = places.command("list", flags=place_of(args, backend).flags(default_backend=DEFAULT_BACKEND))
    raise UserError(f"no job {args.name} in namespace {args.namespace} on the {args.backend} backend (see "
                    f"`{listing}`)")


def resubmit_hint(args: argparse.Namespace, backend: Scheduler) -> str | None:
    """The submit that starts job ``args.name`` again in the same place from its kept values (None when submit
    kept them elsewhere, with --values-out)."""
    from whisper_k8s import values

    kept_values = values.default_values_path(args.name)
    if not kept_values.is_file():
        return None
    return places.command("submit", "--name", args.name, "-f", str(kept_values), flags=place_of(args, backend).flags())


def hint(backend: Scheduler, verb: str, *words: str) -> str:
    """A command about a job of ``backend`` that runs as printed (from this folder: the record finds local and
    docker jobs; Kubernetes jobs get their namespace/context flags, so it runs from anywhere)."""
    return places.command(verb, *words, flags=backend.place_flags())


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
