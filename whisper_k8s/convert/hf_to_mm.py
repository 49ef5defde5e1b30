"""Hugging Face Whisper -> MindSpeed-MM ``.pth`` (what model.json's ``ckpt_path`` names) or a Megatron folder.

Fixes what the seed's rename script gets wrong: the LM head ``proj_out.weight``, which Hugging Face omits
because it is tied to the embeddings, is written out (MindSpeed-MM's head is untied and loaded with
strict=False, so without it training starts from a random head); the result must hold exactly
``expected_mm_shapes(config)``, else nothing is written. Streams through memory maps (see ``pth_writer``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from whisper_k8s.atomic import atomic_directory
from whisper_k8s.convert import marker
from whisper_k8s.convert.mapping import Plan, plan_hf_to_mm
from whisper_k8s.convert.outputs import (
    ConversionResult,
    parse_dtype,
    progress_bar,
)
from whisper_k8s.convert.pages import PageReleaser
from whisper_k8s.convert.preparation import prepare_conversion
from whisper_k8s.convert.pth_writer import StagingFile, exact_view, save_mapped, staging_path
from whisper_k8s.convert.sources import TensorSource
from whisper_k8s.errors import UserError
from whisper_k8s.formats import megatron

log = logging.getLogger(__name__)
PTH_SUFFIXES = (".pth", ".pt")


def convert_hf_to_mm(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    dtype=None,
    megatron_layout: bool = False,
    config=None,
    force: bool = False,
    quiet: bool = False,
    durable: bool = False,
) -> ConversionResult:
    """Convert ``src`` (HF folder or weights file) to ``dst``: a ``.pth`` file, or with ``megatron_layout`` a
    Megatron save folder (``latest_checkpointed_iteration.txt`` = release). A rerun with the same source is
    a no-op unless ``force``. The output appears atomically (temp + rename); ``durable`` also waits for the
    disk (fsync) so it survives a power loss, which costs the time to flush gigabytes."""
    src, dst = Path(src), Path(dst)
    cast = parse_dtype(dtype)
    if not megatron_layout and dst.suffix not in PTH_SUFFIXES:
        raise UserError(f"{dst}: name the MindSpeed-MM output *.pth (or pass --megatron for a checkpoint folder)")
    prepared = prepare_conversion(src, dst, direction="hf-to-mm", key_style="hf", config=config, cast=cast,
                                  force=force, accepts="Hugging Face Whisper checkpoints",
                                  extra_options={"megatron": megatron_layout})
    if prepared is None:
        return ConversionResult(dst, skipped=True)
    source, fingerprint, model_config, origin = (prepared.source, prepared.fingerprint, prepared.model_config,
                                                 prepared.config_origin)
    plan = plan_hf_to_mm(source.shapes(), model_config, str(src))
    details = {"source": str(src), "config": origin, "format": "megatron" if megatron_layout else "pth"}

    if megatron_layout:
        with atomic_directory(dst, overwrite=True, what="Megatron checkpoint") as staging:
            file = megatron.model_file(megatron.iteration_dir(staging, megatron.RELEASE))
            nbytes = _write(source, plan, cast, file, _megatron_entry, None, quiet, durable)
            megatron.write_tracker(staging, megatron.RELEASE)
            marker.write(staging, fingerprint, marker.output_files(staging), details)
    else:
        def mark(tmp: Path) -> None:
            marker.write(dst, fingerprint, {dst.name: marker.file_identity(tmp)}, details)

        nbytes = _write(source, plan, cast, dst, lambda tensors: tensors, mark, quiet, durable)
    return ConversionResult(dst, skipped=False, tensors=len(plan), nbytes=nbytes, details={"config": origin})


def _megatron_entry(tensors: dict) -> dict:
    """The dict MindSpeed-MM/Megatron load from ``model_optim_rng.pt`` for a converted (release) checkpoint."""
    return {"model": tensors, "checkpoint_version": megatron.CHECKPOINT_VERSION, "iteration": 0}


def _write(source: TensorSource, plan: Plan, cast: torch.dtype | None, path: Path,
           wrap: Callable[[dict], dict], before_rename, quiet: bool, durable: bool) -> int:
    """Save the planned tensors to ``path``; returns the bytes of tensor data written."""
    def converted(name: str) -> bool:
        tensor = source.tensors[name]
        return (cast is not None and tensor.is_floating_point() and tensor.dtype != cast) or not tensor.is_contiguous()

    staged_names = [(out, name) for out, name in plan if converted(name)]
    staging = StagingFile(staging_path(path)) if staged_names else None
    try:
        outputs, regions = _stage(source, staged_names, cast, staging, quiet) if staging else ({}, [])
        for out, name in plan:
            outputs.setdefault(out, exact_view(source.tensors[name]))
        tensors = {out: outputs[out] for out, _ in plan}
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        with progress_bar(total, f"writing {path.name}", quiet) as bar:
            save_mapped(wrap(tensors), path, source.regions + regions, on_write=bar.update,
                        before_rename=before_rename, durable=durable)
        return total
    finally:
        if staging:
            staging.remove()


def _stage(source: TensorSource, names: Plan, cast, staging: StagingFile, quiet: bool):
    """Cast tensors one at a time into the staging file; return their mapped views and the staging region."""
    releaser = PageReleaser(source.regions)
    indices = {}
    total = sum(source.tensors[name].numel() * (cast or source.tensors[name].dtype).itemsize for _, name in names)
    with progress_bar(total, f"casting to {str(cast).removeprefix('torch.')}", quiet) as bar:
        for out, name in names:
            tensor = source.tensors[name]
            converted = tensor.to(cast) if cast is not None and tensor.is_floating_point() else tensor
            indices[out] = staging.add(converted)
            nbytes = converted.numel() * converted.element_size()
            del converted
            releaser.advance(nbytes)
            bar.update(nbytes)
    releaser.release_all()
    views, region = staging.mapped()
    return {out: views[i] for out, i in indices.items()}, [region] if region else []
