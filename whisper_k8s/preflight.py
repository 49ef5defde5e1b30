"""``python -m whisper_k8s.preflight``: check what a training job will read, before any trainer starts.

Meant for an init container of every training pod (after the ``processor`` one), so that a wrong claim fails
in seconds with one line instead of a trainer crash after every node pulled the image:

- the dataset (``--dataset``, the dataset claim's mount): either a folder written by ``dataset prepare`` whose
  manifest matches the model (n_mels, window, task, and the processor's vocabulary and mel filters when
  ``--processor`` is given) and lists the language(s) and split with every shard on disk at its size; or a
  Common Voice 11 tree holding the language(s) and split (``dataset.tree_check``);
- the pretrained weights (``--pretrained``, a Hugging Face Whisper folder on the models claim): a Whisper
  config.json and weights whose every tensor shape matches the preset (safetensors headers and mapped files
  only: no weight is read).

On failure it prints ONE line ``preflight: <claim> <path>: <what is wrong>: <fix>`` on stderr, writes the same
line to the container's termination log (``/dev/termination-log``, what Kubernetes shows as the terminated
state's message, so ``status`` can show it), and exits 2 (the kit's exit status for bad input).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from whisper_k8s.errors import UserError

EXIT_FAILED = UserError.exit_code
TERMINATION_LOG = "/dev/termination-log"


class PreflightFailed(UserError):
    """One check failed: ``where`` (claim and path), ``what`` went wrong and the ``fix``."""

    def __init__(self, where: str, what: str, fix: str):
        super().__init__(f"{where}: {what}: {fix}")


def _where(claim: str | None, path: Path) -> str:
    return f"claim {claim} {path}" if claim else str(path)


def check_prepared(root: Path, languages: list[str], split: str, *, n_mels: int, n_frames: int, task: str,
                   processor: str | None, claim: str | None) -> str:
    """A ``dataset prepare`` folder made for this model and holding ``languages``/``split``; a summary."""
    from whisper_trainer.data.prepared import MANIFEST, read_manifest

    where = _where(claim, root / MANIFEST)
    fix = ("prepare the dataset for this model: python -m whisper_k8s dataset prepare --preset PRESET "
           "--lang " + ",".join(languages) + f" --split {split}, into a new folder")
    try:
        manifest = read_manifest(root)
    except UserError as err:
        raise PreflightFailed(where, str(err).split(": ", 1)[-1], fix) from None
    wanted = {"n_mels": n_mels, "n_frames": n_frames, "task": task}
    if processor:
        from whisper_trainer.data.features import mel_filters
        from whisper_trainer.data.labels import LabelEncoder
        from whisper_trainer.data.prepared import processor_identity

        identity = processor_identity(LabelEncoder(processor, task), mel_filters(processor, n_mels))
        wanted.update({f"processor.{k}": v for k, v in identity.items()})
    found = {k: (manifest.get("processor") or {}).get(k[10:]) if k.startswith("processor.") else manifest.get(k)
             for k in wanted}
    differ = [f"{k} is {found[k]!r}, the job needs {wanted[k]!r}" for k in wanted if found[k] != wanted[k]]
    if differ:
        raise PreflightFailed(where, "prepared for another model or processor (" + "; ".join(differ) + ")", fix)
    for lang in languages:
        entry = manifest["languages"].get(lang, {}).get(split)
        if entry is None:
            raise PreflightFailed(where, f"holds no {lang}/{split}", fix)
        for shard in entry["shards"]:
            path = root / shard["file"]
            if not path.is_file() or path.stat().st_size != shard["bytes"]:
                raise PreflightFailed(_where(claim, path), "missing or not the size the manifest records",
                                      "upload or prepare the folder again (both resume and verify)")
    return f"prepared features for {','.join(languages)}/{split} ({n_mels} mels, {n_frames} frames)"


def check_dataset(root: Path, languages: list[str], split: str, *, claim: str | None = None, **model) -> str:
    """The dataset the job reads: prepared features (see :func:`check_prepared`) or a Common Voice tree."""
    from whisper_trainer.data.prepared import MANIFEST, is_prepared_root

    from whisper_k8s.dataset.tree_check import check_tree

    if is_prepared_root(root) or (root / MANIFEST).is_file():
        return check_prepared(root, languages, split, claim=claim, **model)
    report = check_tree(root, languages, [split])
    missing = report.missing(languages, [split])
    if not report.is_tree or missing:
        what = (f"not a Common Voice 11 tree ({'; '.join(report.problems)})" if not report.is_tree
                else f"lacks {', '.join(missing)} ({'; '.join(report.problems)})")
        raise PreflightFailed(_where(claim, root), what,
                              "upload the Common Voice 11 tree (python -m whisper_k8s dataset upload SRC --claim "
                              f"{claim or 'NAME'}) or set data.language/data.split to what the claim holds")
    return f"Common Voice 11 tree with {','.join(languages)}/{split}"


def check_pretrained(folder: Path, preset: str, *, claim: str | None = None) -> str:
    """A Hugging Face Whisper folder whose weights have exactly the preset's shapes."""
    from whisper_k8s.assets.model_folder import ModelFolderProblem, read_whisper_folder
    from whisper_k8s.chart import preset_path

    try:
        read_whisper_folder(folder, json.loads(preset_path(preset).read_text()), preset)
    except ModelFolderProblem as err:
        raise PreflightFailed(_where(claim, err.path), err.what,
                              f"upload a Hugging Face Whisper {preset} folder (python -m whisper_k8s assets "
                              f"upload-model SRC --claim {claim or 'NAME'}), or choose the preset that matches "
                              "it") from None
    return f"pretrained {preset} weights in {folder}"


def report_failure(message: str, termination_log: str | None) -> None:
    line = f"preflight: {message}"
    print(line, file=sys.stderr)
    if termination_log:
        try:
            Path(termination_log).write_text(line + "\n")
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m whisper_k8s.preflight", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="dataset folder the job reads (dataset_name_or_path)")
    parser.add_argument("--dataset-claim", help="its claim's name (for the message)")
    parser.add_argument("--lang", help="Common Voice locale(s), comma list")
    parser.add_argument("--split", default="train")
    parser.add_argument("--preset", default="large-v3", help="chart model preset (n_mels, window, shapes)")
    parser.add_argument("--task", default="transcribe")
    parser.add_argument("--processor", help="processor folder: also check prepared labels and features match it")
    parser.add_argument("--pretrained", help="Hugging Face Whisper folder the job starts from")
    parser.add_argument("--models-claim", help="its claim's name (for the message)")
    parser.add_argument("--termination-log", default=TERMINATION_LOG if os.access(TERMINATION_LOG, os.W_OK) else None,
                        help=f"file for the failure line (default {TERMINATION_LOG} when writable)")
    args = parser.parse_args(argv)
    try:
        from whisper_k8s.dataset.prepare import preset_geometry

        n_mels, n_frames = preset_geometry(args.preset)
        passed = []
        if args.dataset:
            languages = [lang for lang in (args.lang or "").split(",") if lang]
            if not languages:
                raise UserError("--lang is required with --dataset")
            passed.append(check_dataset(Path(args.dataset), languages, args.split, claim=args.dataset_claim,
                                        n_mels=n_mels, n_frames=n_frames, task=args.task, processor=args.processor))
        if args.pretrained:
            passed.append(check_pretrained(Path(args.pretrained), args.preset, claim=args.models_claim))
    except UserError as err:
        report_failure(str(err), args.termination_log)
        return EXIT_FAILED
    print("preflight: ok: " + "; ".join(passed or ["nothing to check"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
