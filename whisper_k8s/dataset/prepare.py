"""`dataset prepare`: compute Whisper features once and store them in shards the trainer reads directly.

Multi-epoch pretraining decodes every clip once per epoch; decoding and resampling MP3 are most of the data
pipeline's CPU time (bench/data_pipeline.py). Preparing does that work once, in parallel over the shards, and
the trainer then only reads stored frames. The shard format, the manifest's compatibility fields and the reader
live in ``whisper_trainer.data.prepared``; this module plans and writes.

Safety: each shard is written to a temporary file and renamed, then a ``.done`` record with its sha256 is
written beside it; ``manifest.json`` comes last. A second run with the same arguments keeps every shard whose
checksum verifies and redoes the others (interrupted, truncated or damaged ones). A folder that holds another
dataset's or another model's preparation, or anything else, is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from whisper_k8s.atomic import write_text
from whisper_k8s.checksum import sha256_file
from whisper_k8s.dataset import common_voice_layout as cv
from whisper_k8s.errors import UserError

LOG = logging.getLogger("whisper_k8s.dataset.prepare")
PLAN = "prepare-plan.json"
DONE_SUFFIX = ".done"
DEFAULT_SHARD_SIZE = 1024  # rows per shard: ~300 MB of features at Common Voice's ~6 s clips
MEL_GROUP = 16  # clips per batched log-mel computation


@dataclass
class PrepareResult:
    root: Path
    samples: int = 0
    usable: int = 0
    skipped: Counter = field(default_factory=Counter)
    shards_written: int = 0
    shards_kept: int = 0
    feature_bytes: int = 0
    seconds: float = 0.0
    samples_written: int = 0  # rows of the shards written by this run (the others were kept)
    shard_cpu_seconds: float = 0.0  # CPU time of the shard jobs written (decode, features, write): the per-sample cost


def preset_geometry(preset: str) -> tuple[int, int]:
    """(n_mels, n_frames) of a chart model preset: num_mel_bins and 2 x max_source_positions."""
    from whisper_k8s.chart import preset_path

    fields = json.loads(preset_path(preset).read_text())
    return int(fields["num_mel_bins"]), 2 * int(fields["max_source_positions"])


@dataclass
class Preparation:
    """Everything a run needs, the same in every process of a parallel run: the plan (written to
    ``prepare-plan.json``), the shard jobs ``(lang, split, number, start, stop)`` in order, and what the workers
    read."""

    out: Path
    plan: dict
    jobs: list[tuple]
    context: _WorkerContext


def plan_preparation(source: str | os.PathLike, out: str | os.PathLike, *, languages: list[str] | str,
                     splits: list[str] | str, processor_dir: str | os.PathLike, n_mels: int, n_frames: int = 3000,
                     task: str = "transcribe", workers: int | None = None,
                     shard_size: int = DEFAULT_SHARD_SIZE) -> Preparation:
    """Check the arguments and the source, claim ``out`` for this plan and list the shard jobs."""
    from whisper_trainer.data.catalog import build_catalog
    from whisper_trainer.data.features import mel_filters
    from whisper_trainer.data.labels import LabelEncoder
    from whisper_trainer.data.prepared import FORMAT, FORMAT_VERSION, processor_identity

    source, out = Path(source).resolve(), Path(out)
    languages, splits = _as_list(languages, "--lang"), _as_list(splits, "--split")
    _check_arguments(splits=splits, n_mels=n_mels, n_frames=n_frames, workers=workers, shard_size=shard_size)
    if not (source / cv.N_SHARDS_FILE).is_file():
        raise UserError(f"--source {source} is not a Common Voice 11 root: it has no {cv.N_SHARDS_FILE} (the root "
                        "holds audio/, transcript/ and n_shards.json)")
    cv.read_n_shards(source)  # a clear error when n_shards.json itself is bad
    encoder = LabelEncoder(str(processor_dir), task)
    for language in languages:
        encoder.language_id(language)
    filters = mel_filters(str(processor_dir), n_mels)
    catalogs = {(lang, split): build_catalog(source, [lang], split) for lang in languages for split in splits}
    plan = {
        "format": FORMAT, "version": FORMAT_VERSION, "n_mels": n_mels, "n_frames": n_frames, "task": task,
        "processor": processor_identity(encoder, filters), "shard_size": shard_size,
        "source": {"path": str(source), "identity": source_identity(source, languages, splits)},
        "languages": {lang: list(splits) for lang in languages},
    }
    _claim_output(out, plan)
    jobs = [
        (lang, split, number, start, min(start + shard_size, len(catalog)))
        for (lang, split), catalog in catalogs.items()
        for number, start in enumerate(range(0, len(catalog), shard_size))
    ]
    return Preparation(out, plan, jobs, _WorkerContext(catalogs, encoder, filters, n_frames, out))


def prepare_shards(preparation: Preparation, jobs: list[tuple], workers: int | None,
                   result: PrepareResult) -> dict[tuple, dict]:
    """Records of ``jobs`` by (lang, split, number): shards that verify are kept, the others written."""
    records, todo = {}, []
    for job in jobs:
        record = verified_shard(preparation.out, job)
        if record is None:
            todo.append(job)
        else:
            records[job[:3]] = record
            result.shards_kept += 1
    for job, (record, cpu_seconds) in zip(todo, _run(preparation.context, todo, workers or os.cpu_count() or 1),
                                          strict=True):
        records[job[:3]] = record
        result.shards_written += 1
        result.samples_written += record["samples"]
        result.shard_cpu_seconds += cpu_seconds
    return records


def write_manifest(preparation: Preparation, records: dict[tuple, dict], result: PrepareResult) -> None:
    """``manifest.json`` from every shard's record, written last (its presence means the folder is whole)."""
    plan = preparation.plan
    manifest = {key: plan[key] for key in plan if key not in ("shard_size", "languages")}
    manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest["languages"] = {}
    for lang, split, number, _, _ in preparation.jobs:
        record = records[(lang, split, number)]
        entry = manifest["languages"].setdefault(lang, {}).setdefault(
            split, {"samples": 0, "usable": 0, "skipped": {}, "shards": []})
        entry["shards"].append(record)
        entry["samples"] += record["samples"]
        entry["usable"] += record["usable"]
        entry["skipped"] = dict(Counter(entry["skipped"]) + Counter(record["skipped"]))
        result.samples += record["samples"]
        result.usable += record["usable"]
        result.skipped.update(record["skipped"])
        result.feature_bytes += record["bytes"]
    write_text(preparation.out / "manifest.json", json.dumps(manifest, indent=1) + "\n")


def prepare(source: str | os.PathLike, out: str | os.PathLike, *, workers: int | None = None,
            **options) -> PrepareResult:
    """Prepare ``languages`` x ``splits`` of the Common Voice 11 root ``source`` into ``out`` (keywords: see
    :func:`plan_preparation`)."""
    started = time.monotonic()
    preparation = plan_preparation(source, out, workers=workers, **options)
    result = PrepareResult(root=preparation.out)
    records = prepare_shards(preparation, preparation.jobs, workers, result)
    write_manifest(preparation, records, result)
    result.seconds = time.monotonic() - started
    return result


def source_identity(source: Path, languages: list[str], splits: list[str]) -> str:
    """sha256 over n_shards.json, the transcripts and the tar shards' names and sizes of what is prepared.

    The transcripts are hashed whole; the tars (gigabytes) by name and size only, which catches another
    release, a re-download that differs, or a truncated copy.
    """
    digest = hashlib.sha256((source / cv.N_SHARDS_FILE).read_bytes())
    for lang in languages:
        for split in splits:
            transcript = cv.transcript_path(source, lang, split)
            digest.update(transcript.read_bytes() if transcript.is_file() else b"-")
            for shard in cv.shard_paths(source, lang, split):
                digest.update(f"{shard.name}:{shard.stat().st_size if shard.is_file() else -1}".encode())
    return digest.hexdigest()


def verified_shard(out: Path, job: tuple) -> dict | None:
    """The record of a shard written by an earlier run, if it is there whole (checksum and row count)."""
    from whisper_trainer.data.prepared import shard_file

    lang, split, number, start, stop = job
    shard = out / shard_file(lang, split, number)
    done = shard.with_name(shard.name + DONE_SUFFIX)
    try:
        record = json.loads(done.read_text())
        whole = shard.is_file() and record["samples"] == stop - start and record["sha256"] == sha256_file(shard)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not whole:
        LOG.warning("prepared shard %s does not verify: preparing it again", shard)
        return None
    return record


@dataclass
class _WorkerContext:
    """What every shard job reads; inherited by forked worker processes instead of being pickled per job."""

    catalogs: dict
    encoder: object
    filters: object
    n_frames: int
    out: Path


_CONTEXT: _WorkerContext | None = None


def _run(context: _WorkerContext, jobs: list[tuple], workers: int):
    """Shard records in job order; a process pool when there are several jobs and workers."""
    global _CONTEXT
    _CONTEXT = context
    if workers <= 1 or len(jobs) <= 1:
        return [_prepare_shard(job) for job in jobs]
    import multiprocessing

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    if method != "fork":
        raise UserError("dataset prepare with --workers > 1 needs the fork start method (Linux): use --workers 1")
    with multiprocessing.get_context(method).Pool(min(workers, len(jobs))) as pool:
        return pool.map(_prepare_shard, jobs, chunksize=1)


def _prepare_shard(job: tuple) -> tuple[dict, float]:
    """Decode, featurise and write one shard (rows start..stop of one language/split): its record and the CPU
    seconds it took."""
    import torch
    from whisper_trainer.data.features import LogMel
    from whisper_trainer.data.prepared import ShardWriter, shard_file
    from whisper_trainer.data.stream import AudioSampleReader, StreamSettings, StreamSources

    started = time.process_time()
    torch.set_num_threads(1)  # one process per core: the pool is the parallelism
    context = _CONTEXT
    lang, split, number, start, stop = job
    catalog = context.catalogs[(lang, split)]
    settings = StreamSettings(micro_batch_size=1, max_label_tokens=1 << 30, seed=0, shuffle=False, rank=0,
                              world_size=1, streams_per_rank=1, n_frames=context.n_frames)
    skipped = Counter()
    reader = AudioSampleReader(StreamSources(catalog, context.encoder, context.filters), settings, skipped)
    log_mel = LogMel(context.filters, context.n_frames)
    shard = context.out / shard_file(lang, split, number)
    shard.parent.mkdir(parents=True, exist_ok=True)
    temp = shard.with_name(f".{shard.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "wb") as handle:
            writer = ShardWriter(handle)
            for group in range(start, stop, MEL_GROUP):
                _write_group(writer, reader, log_mel, catalog, range(group, min(group + MEL_GROUP, stop)))
            writer.finish()
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, shard)
    finally:
        reader.close()
        temp.unlink(missing_ok=True)
    record = {"file": shard_file(lang, split, number), "samples": stop - start, "usable": stop - start - sum(skipped.values()),
              "skipped": dict(skipped), "bytes": shard.stat().st_size, "sha256": sha256_file(shard)}
    write_text(shard.with_name(shard.name + DONE_SUFFIX), json.dumps(record) + "\n")
    return record, time.process_time() - started


def _write_group(writer, reader, log_mel, catalog, rows: range) -> None:
    """Read a few rows, compute their log-mel frames in one batch, and add them (skips in place) in order."""
    samples, reasons = {}, {}
    for index in rows:
        sample = reader.read(index)
        if sample is None:
            reasons[index] = reader.last_skip
        else:
            samples[index] = sample
    usable = list(samples)
    if usable:
        compact = log_mel.compact([samples[index][0] for index in usable])
        frames = dict(zip(usable, compact.frames.split(compact.lengths, dim=1), strict=True))
        pads = dict(zip(usable, compact.pad_values, strict=True))
    for index in rows:
        if index in samples:
            writer.add(catalog.paths[index], frames=frames[index], labels=samples[index][1], pad_value=pads[index])
        else:
            writer.add(catalog.paths[index], skipped=reasons[index])


def _claim_output(out: Path, plan: dict) -> None:
    """Make ``out`` ours for this plan: new or empty, or an earlier run of the very same plan (resume).

    Safe when the processes of a parallel run start together: the plan file is created only if absent
    (a hard link of a finished temp file), and hidden entries (temp files, ``.prepare/``) do not make a folder
    "not empty"; whoever comes second finds the plan and compares it."""
    plan_file = out / PLAN
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder for the prepared dataset")
    if not plan_file.is_file() and out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise UserError(f"--out {out} is not empty and holds no {PLAN} of an earlier prepare run: give a new "
                        "or empty folder (nothing there was changed)")
    out.mkdir(parents=True, exist_ok=True)
    if not plan_file.is_file():
        temp = write_text(out / f".{PLAN}.{os.getpid()}", json.dumps(plan, indent=1) + "\n")
        try:
            os.link(temp, plan_file)
            return
        except FileExistsError:
            pass  # another process of this run was first: compare with its plan
        finally:
            temp.unlink()
    try:
        earlier = json.loads(plan_file.read_text())
    except (OSError, ValueError):
        raise UserError(f"{plan_file} is unreadable: delete --out {out} to prepare it anew") from None
    changed = [key for key in plan if earlier.get(key) != plan[key]]
    if changed:
        raise UserError(
            f"--out {out} holds a preparation of something else ({', '.join(changed)} differ from {plan_file}): "
            "give another --out, or delete that folder to prepare it anew (nothing there was changed)"
        )


def _as_list(value: list[str] | str, flag: str) -> list[str]:
    items = [part.strip() for part in value.split(",")] if isinstance(value, str) else list(value)
    items = [item for item in items if item]
    if not items:
        raise UserError(f"{flag} is empty: give at least one value (comma list allowed)")
    return items


def _check_arguments(*, splits: list[str], n_mels: int, n_frames: int, workers: int | None, shard_size: int) -> None:
    unknown = [split for split in splits if split not in cv.SPLITS]
    if unknown:
        raise UserError(f"--split {','.join(unknown)} is not a Common Voice split: use {', '.join(cv.SPLITS)}")
    for flag, value in (("--n-mels", n_mels), ("--n-frames", n_frames), ("--shard-size", shard_size),
                        ("--workers", 1 if workers is None else workers)):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{flag} {value!r} is invalid: give an integer >= 1")
