"""``dataset prepare`` split over N independent processes: a Kubernetes Indexed Job's pods, or N local ones.

Index ``i`` of ``N`` plans the same run as every other index (the plan, and so the shard list, depends only on
the arguments and the source), takes every N-th shard job (``jobs[i::N]``: shards are equal-sized, so the
shares are even), prepares it (keeping shards that already verify), re-reads each of its shards against its
sha256, and only then writes its marker ``.prepare/index-<i>-of-<N>.json`` (the plan's hash and its records).

``manifest.json`` is written last, by :func:`finalize`, only when the markers of all N indexes are there for
this very plan and every shard they list is on disk at its recorded size. Each index tries it after writing
its marker, so the last one to finish writes it (no index waits for the others, no extra pod); a crash in any
index leaves its marker missing and so no manifest. ``dataset prepare --finalize`` runs the same check once
more (a shared file system that shows new files late to other clients can make every index miss the last
marker); it is idempotent. Rerunning a crashed index resumes it: its finished shards verify and are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from whisper_k8s.atomic import write_text
from whisper_k8s.dataset.prepare import (
    Preparation,
    PrepareResult,
    plan_preparation,
    prepare_shards,
    verified_shard,
    write_manifest,
)
from whisper_k8s.errors import JobFailed, UserError

MARKERS = ".prepare"
INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes in each pod of an Indexed Job


def plan_hash(plan: dict) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


def marker_path(out: Path, index: int, count: int) -> Path:
    return out / MARKERS / f"index-{index:05d}-of-{count:05d}.json"


def check_share(index: int | None, count: int) -> int:
    """The index of this process (``index``, else $JOB_COMPLETION_INDEX), checked against ``count``."""
    if index is None:
        value = os.environ.get(INDEX_ENV)
        if value is None or not value.isdigit():
            raise UserError(f"--count {count} needs --index I or ${INDEX_ENV} (set in each pod of an Indexed Job)")
        index = int(value)
    if not 0 <= index < count:
        raise UserError(f"--index {index} is outside 0..{count - 1} (--count {count})")
    return index


def prepare_index(index: int, count: int, *, workers: int | None = None, **options) -> PrepareResult:
    """Prepare and verify this index's share, write its marker, and the manifest when every index is done."""
    started = time.monotonic()
    preparation = plan_preparation(workers=workers, **options)
    result = PrepareResult(root=preparation.out)
    mine = preparation.jobs[index::count]
    records = prepare_shards(preparation, mine, workers, result)
    for job in mine:
        if verified_shard(preparation.out, job) is None:
            raise UserError(f"shard {job[:3]} of index {index} does not verify after it was written: the volume "
                            "is damaged or shared with another writer; run this index again")
    marker = marker_path(preparation.out, index, count)
    marker.parent.mkdir(exist_ok=True)
    write_text(marker, json.dumps({"plan": plan_hash(preparation.plan), "index": index, "count": count,
                                   "records": [[*job[:3], records[job[:3]]] for job in mine]}) + "\n")
    finalize(preparation, count, result, required=False)
    result.seconds = time.monotonic() - started
    return result


def finalize(preparation: Preparation, count: int, result: PrepareResult, *, required: bool = True) -> bool:
    """Write the manifest if all ``count`` indexes verified their shards; else False (``required``: UserError
    naming the indexes that have not finished)."""
    wanted, records, missing = plan_hash(preparation.plan), {}, []
    for index in range(count):
        try:
            marker = json.loads(marker_path(preparation.out, index, count).read_text())
        except (OSError, ValueError):
            marker = None
        if not marker or marker.get("plan") != wanted:
            missing.append(index)
            continue
        records.update({(lang, split, number): record for lang, split, number, record in marker["records"]})
    if missing:
        if required:
            raise UserError(f"{preparation.out}: index(es) {', '.join(map(str, missing[:10]))} of {count} have not "
                            "verified their shards: run them (again); the manifest is written once all have")
        return False
    for lang, split, number, _, _ in preparation.jobs:
        record = records.get((lang, split, number))
        shard = preparation.out / record["file"] if record else None
        if shard is None or not shard.is_file() or shard.stat().st_size != record["bytes"]:
            raise UserError(f"{preparation.out}: shard {lang}/{split}/{number} is missing or changed since its index "
                            "verified it: run `dataset prepare` again with the same arguments")
    write_manifest(preparation, records, result)
    return True


def run_local(count: int, arguments: list[str], *, workers: int | None = None) -> list[str]:
    """Run indexes 0..count-1 as local processes of ``python -m whisper_k8s dataset prepare ARGUMENTS --index I
    --count N`` (what each pod of the Indexed Job runs), wait for all, return their outputs; JobFailed naming
    the first that failed."""
    per_index = workers or max(1, (os.cpu_count() or 1) // count)
    processes = [subprocess.Popen([sys.executable, "-m", "whisper_k8s", "dataset", "prepare", *arguments,
                                   "--index", str(i), "--count", str(count), "--workers", str(per_index)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(count)]
    outputs = [process.communicate() for process in processes]
    failed = [(i, errors) for i, (process, (_, errors)) in enumerate(zip(processes, outputs, strict=True))
              if process.returncode != 0]
    if failed:
        index, errors = failed[0]
        last = (errors.strip().splitlines() or ["no message"])[-1]
        raise JobFailed(f"prepare index {index} of {count} failed ({last}); {len(failed)} of {count} failed: run "
                        "the same command again, verified shards are kept")
    return [stdout for stdout, _ in outputs]


def read_result(out: Path) -> dict:
    """The totals of a finished preparation, from its manifest."""
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    entries = [entry for splits in manifest["languages"].values() for entry in splits.values()]
    return {"samples": sum(e["samples"] for e in entries), "usable": sum(e["usable"] for e in entries),
            "shards": sum(len(e["shards"]) for e in entries),
            "bytes": sum(s["bytes"] for e in entries for s in e["shards"])}
