"""``collect NAME --to DIR``: the latest complete checkpoint of a job as a Hugging Face folder, with a report.

1. The backend copies what is needed from the job's outputs volume into a temporary folder next to ``DIR``
   (:meth:`Scheduler.fetch_outputs`; both backends produce the layout of :func:`copy_outputs`):
   ``checkpoints/`` with the tracker and the one iteration chosen by :func:`latest_complete_iteration`,
   ``metrics.jsonl``, ``processor/`` when the job generated one, ``config/`` with the job's model.json and
   data.json.
2. The checkpoint is converted with the converter's ``convert_mm_to_hf`` using the job's model.json and the
   processor (``--processor``, else the job's ``/outputs/processor``, else the data.json's
   ``processor_name_or_path`` when that folder exists here).
3. ``report.md`` and ``loss.png`` (see :mod:`whisper_k8s.report`) are written beside the weights.

``DIR`` appears whole or not at all (it is built in a temporary sibling and renamed), so
``WhisperForConditionalGeneration.from_pretrained(DIR)`` and ``WhisperProcessor.from_pretrained(DIR)`` work
on whatever is there.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from whisper_k8s.atomic import atomic_directory, refuse_to_clobber
from whisper_k8s.backends.base import JobState, JobStatus, Scheduler
from whisper_k8s.errors import UserError
from whisper_k8s.formats import megatron

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
PROCESSOR = "processor"
CONFIG = "config"
CONFIG_FILES = ("model.json", "data.json")
# transformers 4 writes preprocessor_config.json, transformers 5 processor_config.json
PROCESSOR_MARKERS = ("preprocessor_config.json", "processor_config.json")


@dataclass
class CollectResult:
    folder: Path
    iteration: int | str
    state: str
    report: Path


# ---------------------------------------------------------------------------------------- checkpoints
def latest_complete_iteration(root: Path) -> int | str:
    """The newest iteration under ``root`` whose model file reads back, not newer than the tracker.

    The trainer writes the model file atomically and moves the tracker after it, so the tracker's iteration
    is complete; iterations beyond it may still be in the making. An unreadable file (e.g. damaged storage)
    falls back to the next older iteration.
    """
    tracker = megatron.read_tracker(root)
    if tracker == megatron.RELEASE:
        return tracker
    on_disk = megatron.iterations_on_disk(root)
    candidates = [i for i in reversed(on_disk) if tracker is None or i <= tracker]
    problems = []
    for iteration in candidates:
        try:
            megatron.load_file(megatron.model_file(megatron.iteration_dir(root, iteration)))
            return iteration
        except UserError as err:
            problems.append(str(err))
    detail = f": {'; '.join(problems)}" if problems else ""
    raise UserError(f"no complete checkpoint under {root} (the job has not saved one yet?){detail}")


def _copy_file(source: Path, target: Path, bar) -> None:
    """Copy in 8 MiB chunks, advancing the progress bar; the target is written under a temp name first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    with open(source, "rb") as src, open(partial, "wb") as dst:
        while chunk := src.read(8 << 20):
            dst.write(chunk)
            bar.update(len(chunk))
    partial.replace(target)


def select_outputs(outputs: Path, config: Path | None = None) -> tuple[int | str, list[tuple[Path, str]]]:
    """The chosen iteration and the files collect needs, as (source, path inside the fetched folder).

    The same selection runs on this machine (local backend) and inside the helper pod (Kubernetes).
    """
    root = outputs / CHECKPOINTS
    iteration = latest_complete_iteration(root)
    model = megatron.model_file(megatron.iteration_dir(root, iteration))
    files = [(model, str(model.relative_to(outputs)))]
    files += [(outputs / METRICS, METRICS)] if (outputs / METRICS).is_file() else []
    if (outputs / PROCESSOR).is_dir():
        files += [(f, str(f.relative_to(outputs))) for f in sorted((outputs / PROCESSOR).rglob("*")) if f.is_file()]
    if config is not None:
        files += [(config / name, f"{CONFIG}/{name}") for name in CONFIG_FILES if (config / name).is_file()]
    return iteration, files


def transfer_bar(total: int | None, desc: str, quiet: bool = False):
    """A byte-counting tqdm bar on stderr (hidden when stderr is not a terminal or ``quiet``)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                disable=quiet or not sys.stderr.isatty(), leave=False)


def copy_outputs(outputs: Path, dest: Path, *, config: Path | None = None, quiet: bool = False) -> Path:
    """Copy from an outputs folder what collect needs (see the module doc) into ``dest``; return ``dest``."""
    iteration, files = select_outputs(outputs, config)
    with transfer_bar(sum(source.stat().st_size for source, _ in files), "fetch outputs", quiet) as bar:
        for source, relative in files:
            _copy_file(source, dest / relative, bar)
    finish_fetch(dest, iteration)
    return dest


def finish_fetch(dest: Path, iteration: int | str) -> None:
    """Point the fetched checkpoints' tracker at the fetched iteration."""
    (dest / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    megatron.write_tracker(dest / CHECKPOINTS, iteration)


def write_outputs_tar(outputs: str = "/outputs", config: str | None = "/config") -> None:
    """Stream the selected files as an uncompressed tar to stdout (run inside the collect helper pod).

    Writes ``iteration <N> bytes <total>`` on stderr first so the receiving side can show progress.
    """
    import tarfile

    iteration, files = select_outputs(Path(outputs), Path(config) if config else None)
    total = sum(source.stat().st_size for source, _ in files)
    print(f"iteration {iteration} bytes {total}", file=sys.stderr, flush=True)
    with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as tar:
        for source, relative in files:
            tar.add(source, arcname=relative, recursive=False)


# ---------------------------------------------------------------------------------------- inputs
def is_processor_dir(path: Path) -> bool:
    return any((path / name).is_file() for name in PROCESSOR_MARKERS)


def _job_processor(fetched: Path) -> Path | None:
    """The processor the job trained with, when it can be found on this machine."""
    if is_processor_dir(fetched / PROCESSOR):
        return fetched / PROCESSOR
    data_json = fetched / CONFIG / "data.json"
    if data_json.is_file():
        data = json.loads(data_json.read_text())
        path = (((data.get("dataset_param") or {}).get("preprocess_parameters") or {})
                .get("processor_name_or_path"))
        if path and is_processor_dir(Path(path)):
            return Path(path)
    return None


def _model_config(fetched: Path, explicit: Path | None) -> dict | None:
    """The job's model.json without its ``ckpt_path`` (a pod path that means nothing here)."""
    path = explicit or fetched / CONFIG / "model.json"
    if not path.is_file():
        if explicit:
            raise UserError(f"--model-json {explicit}: no such file")
        return None
    config = json.loads(path.read_text())
    config.pop("ckpt_path", None)
    return config


# ---------------------------------------------------------------------------------------- collect
def collect(scheduler: Scheduler, name: str, dest: str | Path, *, processor: str | Path | None = None,
            model_json: str | Path | None = None, force: bool = False, quiet: bool = False) -> CollectResult:
    """Fetch, convert and report (see the module doc). Raises UserError before writing anything when the
    job does not exist, has no complete checkpoint, or ``dest`` holds something else (without ``force``)."""
    from whisper_k8s.convert import convert_mm_to_hf
    from whisper_k8s.report import REPORT_MD, write_report

    status = scheduler.describe(name)
    if status is None and scheduler.deleted_job(name):  # deleted, its outputs kept: they are still read
        status = JobStatus(name=name, namespace=scheduler.namespace, backend=scheduler.name, state="Deleted")
    if status is None:
        raise UserError(f"no job {name} in namespace {scheduler.namespace} for the {scheduler.name} backend")
    if status.state == JobState.PENDING:
        raise UserError(f"job {name} has not started yet: nothing to collect")
    dest = Path(dest).absolute()
    if not force:
        refuse_to_clobber(dest, "collected model")
    processor_dir = Path(processor) if processor else None
    if processor_dir and not is_processor_dir(processor_dir):
        raise UserError(f"--processor {processor_dir}: not a Hugging Face WhisperProcessor folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fetched = Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch-", dir=dest.parent))
    try:
        scheduler.fetch_outputs(name, fetched)
        iteration = megatron.read_tracker(fetched / CHECKPOINTS)
        processor_dir = processor_dir or _job_processor(fetched)
        if processor_dir is None:
            raise UserError(f"job {name} has no processor in its outputs and its data.json names none that "
                            "exists here: pass --processor DIR (e.g. from `python -m whisper_k8s assets "
                            "processor --out DIR`)")
        config = _model_config(fetched, Path(model_json) if model_json else None)
        with atomic_directory(dest, overwrite=force, what="collected model") as staging:
            convert_mm_to_hf(fetched / CHECKPOINTS, staging, config=config, processor=processor_dir,
                             force=True, quiet=quiet)
            metrics = fetched / METRICS
            if metrics.is_file():
                shutil.copy2(metrics, staging / METRICS)
            write_report(staging, job=name, state=status.state, checkpoint=f"iteration {iteration}",
                         metrics=staging / METRICS)
    finally:
        shutil.rmtree(fetched, ignore_errors=True)
    return CollectResult(folder=dest, iteration=iteration, state=status.state, report=dest / REPORT_MD)
