"""What ``delete`` keeps of a job on this machine (local and docker backends), the way ``helm uninstall`` keeps a
chart's claims in a cluster.

In a cluster the claims the chart creates carry ``helm.sh/resource-policy: keep`` (``storage.keepClaims``,
default true), so ``helm uninstall`` leaves them and the checkpoints on them; a claim the user named
(``existingClaim``) is not the release's, and a host folder is the node's. The local and docker backends stand
in for each claim with a folder under the job's state folder, and ``delete`` keeps those folders by the same
rule, with the job's plan and ConfigMap files (small) so that ``collect`` still reads the outputs; it writes
``deleted.json`` saying what was kept. ``delete --purge-outputs`` also removes the outputs claim the chart
created (never a claim or a host folder the user named). A new ``submit`` of the same name mounts the kept
folders again, and the trainer resumes from their latest checkpoint.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from whisper_k8s import atomic
from whisper_k8s.backends.base import Deleted

DELETED_FILE = "deleted.json"


def _describe(claim: dict[str, Any]) -> str:
    return f"{claim['volume']} (claim {claim['claim']}): {claim['folder']}"


def delete_job_folder(job_path: Path, claims: list[dict[str, Any]], *, outputs: str | None, config: str | None,
                      purge_outputs: bool, keep_files: Iterable[str] = ()) -> Deleted:
    """Remove a stopped job's folder except what a cluster would keep (see the module doc); say where the kept
    outputs and claims are (nothing kept: the folder is gone) and what ``purge_outputs`` removed."""
    kept, purgeable, removed, purged = [], [], [], []
    for claim in claims:
        is_outputs = claim["folder"] == outputs
        if not claim["keep"] or (purge_outputs and is_outputs and claim["created"]):
            removed.append(claim["folder"])
            purged += [_describe(claim)] if claim["keep"] else []
            continue
        kept.append(claim)
        if is_outputs and claim["created"]:
            purgeable.append(claim["folder"])
    lines = [_describe(claim) for claim in kept]
    if outputs and outputs not in {claim["folder"] for claim in claims}:
        lines.append(f"outputs (a host folder you named, never removed): {outputs}")
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    if not lines:
        shutil.rmtree(job_path, ignore_errors=True)
        return Deleted(purged=purged)
    keep = {Path(claim["folder"]) for claim in kept} | ({Path(config)} if config else set())
    _remove_all_but(job_path, keep, set(keep_files))
    atomic.write_text(job_path / DELETED_FILE, json.dumps({
        "deleted": datetime.now(timezone.utc).isoformat(timespec="seconds"), "kept": lines,
        "purgeable": purgeable}, indent=1) + "\n")
    return Deleted(kept=lines, purged=purged)


def _remove_all_but(folder: Path, keep: set[Path], files: set[str] = frozenset()) -> None:
    """Everything under ``folder`` goes except the ``keep`` folders (and the folders above them) and the
    top-level ``files``."""
    for entry in folder.iterdir():
        if entry.name in files or entry in keep:
            continue
        if entry.is_dir() and not entry.is_symlink() and any(entry in path.parents for path in keep):
            _remove_all_but(entry, keep)
        else:
            _remove(entry)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def read_deleted(job_path: Path) -> dict[str, Any] | None:
    """The record of a deleted job whose outputs were kept (None when there is none)."""
    try:
        return json.loads((job_path / DELETED_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None


def purge_deleted(job_path: Path) -> Deleted:
    """``delete --purge-outputs`` of a job deleted before: remove its kept outputs claim; say what stays."""
    record = read_deleted(job_path) or {}
    folders = set(record.get("purgeable") or [])
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    lines = record.get("kept") or []
    purged = [line for line in lines if any(line.endswith(f": {f}") for f in folders)]
    kept = [line for line in lines if line not in purged]
    if not [line for line in kept if "host folder" not in line]:
        shutil.rmtree(job_path, ignore_errors=True)
    else:
        record.update(kept=kept, purgeable=[])
        atomic.write_text(job_path / DELETED_FILE, json.dumps(record, indent=1) + "\n")
    return Deleted(kept=kept, purged=purged)


def forget_deleted(job_path: Path) -> None:
    """A new job of the same name starts on the kept folders: the deletion record no longer applies."""
    (job_path / DELETED_FILE).unlink(missing_ok=True)
