"""Where each job runs, so that the commands after ``submit`` find it by its name alone.

``submit`` records the job's place in ``runs/<name>/places.json`` of the folder it ran in (beside the kept
values; ``$WHISPER_K8S_RUNS`` names another folder than ``runs``): the backend, the namespace, for Kubernetes the ``--kubeconfig``/``--context`` it was given, for the
local and docker backends the absolute state folder their jobs live in. ``status``, ``logs``, ``collect`` and
``delete`` read it when no ``--backend``/``--local`` is given:

* one place recorded: that one (a flag the user gives still wins over what the record says);
* several (the same name submitted to two backends): the live ones win over deleted ones (whose outputs were
  kept); if that leaves several, a UserError lists each with the exact command that selects it;
* none (another folder, or a job submitted before records existed): a local job of that name in the local
  state folder, else Kubernetes, the default backend.

``delete`` marks its place deleted and notes where the kept outputs are (so ``collect`` still finds them and
``status`` can say so). The record is replaced atomically.

Local and docker jobs belong to the folder they were submitted from (their state lives in ``runs/local``,
``runs/docker``); Kubernetes jobs live in the cluster and are found from any folder with ``-n``/``--context``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from whisper_k8s import atomic
from whisper_k8s.errors import UserError

RUNS_ENV = "WHISPER_K8S_RUNS"  # where submit keeps each job's values and place record (default ./runs)
PLACES_FILE = "places.json"
PROGRAM = "python -m whisper_k8s"
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class Place:
    """One place a job was submitted to. ``deleted``: when ``delete`` removed the job; ``kept``: where its kept
    outputs are (folders, claim names), one description each."""

    backend: str
    namespace: str = DEFAULT_NAMESPACE
    kubeconfig: str | None = None
    context: str | None = None
    state_dir: str | None = None
    submitted: str = ""
    deleted: str = ""
    kept: tuple[str, ...] = field(default_factory=tuple)

    @property
    def key(self) -> tuple:
        return (self.backend, self.namespace, self.kubeconfig, self.context, self.state_dir)

    def flags(self, default_backend: str | None = None) -> list[str]:
        """The flags that select this place explicitly (the backend's left out when it is ``default_backend``)."""
        flags = ["--local"] if self.backend == "local" else ["--backend", self.backend]
        flags = [] if self.backend == default_backend else flags
        return flags + namespace_flags(self.namespace, self.kubeconfig, self.context)

    def __str__(self) -> str:
        if self.backend == "kubernetes":
            where = f"kubernetes namespace {self.namespace}" + (f" context {self.context}" if self.context else "")
        else:
            where = f"{self.backend} in {self.state_dir}"
        return where + (f", deleted {self.deleted}" if self.deleted else "")


def namespace_flags(namespace: str, kubeconfig: str | None = None, context: str | None = None) -> list[str]:
    """``-n``, ``--kubeconfig``, ``--context`` where they differ from the defaults."""
    flags = ["-n", namespace] if namespace and namespace != DEFAULT_NAMESPACE else []
    flags += ["--kubeconfig", kubeconfig] if kubeconfig else []
    return flags + (["--context", context] if context else [])


def command(verb: str, *words: str, flags: Iterable[str] = ()) -> str:
    """A command line as the user types it: ``python -m whisper_k8s logs demo -f``."""
    import shlex

    return " ".join([PROGRAM, verb, *(shlex.quote(w) for w in [*words, *flags])])


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------ the record
def runs_dir() -> Path:
    """The folder of the jobs' kept values and records: ``$WHISPER_K8S_RUNS``, else ``runs`` here."""
    return Path(os.environ.get(RUNS_ENV) or "runs")


def record_file(name: str) -> Path:
    """``runs/<name>/places.json``: beside the kept values of the job (see whisper_k8s.values)."""
    return runs_dir() / name / PLACES_FILE


def recorded(name: str) -> list[Place]:
    """The places recorded for job ``name`` in this folder (none when there is no readable record)."""
    try:
        data = json.loads(record_file(name).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return []
    return [Place(**dict(entry, kept=tuple(entry.get("kept") or ()))) for entry in data.get("places", [])]


def _write(name: str, places: Sequence[Place]) -> None:
    path = record_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [{k: list(v) if k == "kept" else v for k, v in asdict(p).items()} for p in places]
    atomic.write_text(path, json.dumps({"name": name, "places": entries}, indent=1) + "\n")


def record_submit(name: str, place: Place) -> None:
    """Remember that job ``name`` was submitted to ``place`` (a live place, replacing the same place's entry)."""
    others = [p for p in recorded(name) if p.key != place.key]
    _write(name, [*others, replace(place, submitted=now_iso(), deleted="", kept=())])


def record_delete(name: str, place: Place, kept: Sequence[str]) -> None:
    """After ``delete``: the place stays, marked deleted, with where its outputs are kept (so ``status`` and
    ``collect`` can say so; a live place of the same name wins over it)."""
    places = recorded(name)
    found = [p for p in places if p.key == place.key]
    others = [p for p in places if p.key != place.key]
    _write(name, [*others, replace(found[0] if found else place, deleted=now_iso(), kept=tuple(kept))])


# ------------------------------------------------------------------------------------------------ resolving
def choose(name: str, verb: str, *, backend: str | None, namespace: str | None, kubeconfig: str | None,
           context: str | None) -> Place | None:
    """The recorded place of job ``name`` that matches the flags the user gave (None: nothing recorded fits).

    UserError when several live places fit, listing for each the exact ``verb`` command that selects it.
    """
    given = {"backend": backend, "namespace": namespace, "kubeconfig": kubeconfig, "context": context}
    fitting = [p for p in recorded(name)
               if all(value is None or getattr(p, key) == value for key, value in given.items())]
    chosen = [p for p in fitting if not p.deleted] or fitting
    if len(chosen) > 1:
        options = "; ".join(f"`{command(verb, name, flags=p.flags())}` ({p})" for p in chosen)
        raise UserError(f"job {name} was submitted to {len(chosen)} places (see {record_file(name)}): "
                        f"name one: {options}")
    return chosen[0] if chosen else None
