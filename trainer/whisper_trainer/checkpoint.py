"""Checkpoints in MindSpeed-MM's Megatron layout, written atomically, verified, and resumed from by themselves.

```
<save>/latest_checkpointed_iteration.txt                  moved only after the folder below is complete
<save>/iter_0000100/mp_rank_00/model_optim_rng.pt         model (MM keys), iteration, args, checkpoint_version,
                                                          optimizer, opt_param_scheduler, rng_state (all ranks)
<save>/iter_0000100/whisper_k8s/rank_<r>.pt                exact-resume extras of rank r: data position, RNG
<save>/iter_0000100/whisper_k8s/optimizer/                 FSDP only: sharded optimizer (torch.distributed.checkpoint)
<save>/iter_0000100/model.json (and <save>/model.json)     the model.json trained (converters read it)
<save>/iter_0000100/whisper_k8s/manifest.json             written last: world size, sha256 of every file
```
An iteration is written into ``<save>/.iter_0000100.tmp``, reloaded and checked (keys, shapes, checksums),
renamed into place, and only then does the tracker move; the oldest iterations beyond ``keep`` are removed.
A crash at any point leaves the previous checkpoint as the latest. On start, the newest iteration whose
manifest and checksums hold is resumed; a corrupt newer one is skipped with a log line saying why.
Everything is read with ``whisper_k8s.formats.megatron.load_file`` (``weights_only`` with an allow-list).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from whisper_k8s.checksum import sha256_file
from whisper_k8s.errors import UserError
from whisper_k8s.formats import megatron
from whisper_k8s.formats.mindspeed import check_mm_state
from whisper_trainer import parallel
from whisper_trainer.faults import fault_point
from whisper_trainer.model import hf_state_dict, mm_state_dict

log = logging.getLogger(__name__)

EXTRAS_DIR = "whisper_k8s"
MANIFEST = "manifest.json"
OPTIMIZER_DIR = "optimizer"


def rank_file(iter_dir: Path, rank: int) -> Path:
    return iter_dir / EXTRAS_DIR / f"rank_{rank}.pt"


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG state, with Megatron's key names (``cuda_rng_state`` holds the device RNG)."""
    state = {
        "random_rng_state": random.getstate(),
        "np_rng_state": np.random.get_state(),
        "torch_rng_state": torch.get_rng_state(),
    }
    if device.type in ("cuda", "npu"):
        state["cuda_rng_state"] = getattr(torch, device.type).get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(_as_python_random_state(state["random_rng_state"]))
    np.random.set_state(state["np_rng_state"])
    torch.set_rng_state(state["torch_rng_state"])
    if device.type in ("cuda", "npu") and "cuda_rng_state" in state:
        getattr(torch, device.type).set_rng_state(state["cuda_rng_state"], device)


def _as_python_random_state(state) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


@dataclass
class Resumed:
    """What a resume restored: the iteration reached and what the trainer keeps beside the model."""

    iteration: int
    trainer_state: dict[str, Any]


class CheckpointManager:
    """Saves and resumes the whole training state. Every method is collective: all ranks call it together."""

    def __init__(self, save_root: str, load_root: str, keep: int, env: parallel.DistEnv, model_fields: dict,
                 strategy: str):
        self.save_root = Path(save_root)
        self.load_root = Path(load_root or save_root)
        self.keep = keep
        self.env = env
        self.model_fields = model_fields
        self.strategy = strategy

    # ----------------------------------------------------------------------------------------------- saving
    def save(self, iteration: int, model, optimizer, scheduler, loader, args, trainer_state: dict) -> Path:
        env = self.env
        final = megatron.iteration_dir(self.save_root, iteration)
        staging = self.save_root / f".{final.name}.tmp"
        if env.is_main:
            shutil.rmtree(staging, ignore_errors=True)
            (staging / EXTRAS_DIR).mkdir(parents=True)
        parallel.barrier(env)
        model_state, optimizer_state = self._gather_model_and_optimizer(model, optimizer, staging)
        all_rng = parallel.all_gather_objects(env, rng_state(env.device))
        megatron.save_file(
            {"iteration": iteration, "world_size": env.world_size, "trainer": trainer_state,
             "loader": loader.state_dict(), "rng_state": all_rng[env.rank]},
            rank_file(staging, env.rank),
        )
        if env.is_main:
            megatron.save_file({
                "model": mm_state_dict(model_state, self.model_fields), "iteration": iteration, "args": args,
                "checkpoint_version": megatron.CHECKPOINT_VERSION, "optimizer": optimizer_state,
                "opt_param_scheduler": scheduler.state_dict(), "rng_state": all_rng,
            }, megatron.model_file(staging))
            (staging / "model.json").write_text(json.dumps(self.model_fields, indent=4) + "\n")
        parallel.barrier(env)
        error = ""
        if env.is_main:
            try:
                self._verify_and_publish(staging, final, iteration)
            except Exception as err:  # reported to every rank, so that none waits forever
                error = f"checkpoint {final} failed verification: {err}"
        error = parallel.broadcast_object(env, error)
        if error:
            raise UserError(error)
        log.info("saved checkpoint %s", final)
        return final

    def _gather_model_and_optimizer(self, model, optimizer, staging: Path):
        """Full model state on rank 0; the optimizer whole on rank 0 (DDP) or sharded to disk (FSDP)."""
        if self.strategy == "fsdp" and self.env.initialized:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
                get_optimizer_state_dict,
            )

            full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            dcp.save(get_optimizer_state_dict(model, optimizer),
                     checkpoint_id=str(staging / EXTRAS_DIR / OPTIMIZER_DIR))
            return full, {"format": "torch.distributed.checkpoint", "path": f"{EXTRAS_DIR}/{OPTIMIZER_DIR}"}
        if not self.env.is_main:
            return None, None
        return parallel.full_precision_state(model), optimizer.state_dict()

    def _verify_and_publish(self, staging: Path, final: Path, iteration: int) -> None:
        loaded = megatron.load_file(megatron.model_file(staging))
        problems = check_mm_state({k: tuple(v.shape) for k, v in loaded["model"].items()}, self.model_fields)
        if problems:
            raise UserError("; ".join(problems[:5]))
        if loaded["iteration"] != iteration:
            raise UserError(f"iteration {loaded['iteration']} in the file, expected {iteration}")
        for rank in range(self.env.world_size):
            if not rank_file(staging, rank).is_file():
                raise UserError(f"{rank_file(staging, rank)} is missing")
        manifest = {
            "iteration": iteration, "world_size": self.env.world_size, "strategy": self.strategy,
            "files": {str(p.relative_to(staging)): sha256_file(p) for p in _files_under(staging)},
        }
        tmp = staging / EXTRAS_DIR / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, staging / EXTRAS_DIR / MANIFEST)
        fault_point("checkpoint-publish", iteration)  # tests kill the writer here (see faults.py); inert otherwise
        if final.exists():  # the same iteration saved again (e.g. after a resume): swap, then drop the old
            retired = self.save_root / f".{final.name}.old"
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(final, retired)
            os.replace(staging, final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, final)
        tmp = self.save_root / ".model.json.tmp"
        shutil.copyfile(final / "model.json", tmp)
        os.replace(tmp, self.save_root / "model.json")
        megatron.write_tracker(self.save_root, iteration)
        self._prune()

    def _prune(self) -> None:
        """Keep the newest ``keep`` iterations; never the one the tracker names."""
        latest = megatron.read_tracker(self.save_root)
        for old in megatron.iterations_on_disk(self.save_root)[: -self.keep]:
            if old != latest:
                megatron.remove_iteration(self.save_root, old)
                log.info("removed old checkpoint iteration %d (keeping the last %d)", old, self.keep)

    # --------------------------------------------------------------------------------------------- resuming
    def find_resumable(self) -> tuple[int | None, list[str]]:
        """Newest iteration under the load folder whose manifest and checksums hold, and why others were skipped."""
        notes: list[str] = []
        tracker = megatron.read_tracker(self.load_root) if self.load_root.is_dir() else None
        for iteration in reversed(megatron.iterations_on_disk(self.load_root)):
            problem = self.check_iteration(megatron.iteration_dir(self.load_root, iteration))
            if problem is None:
                if tracker not in (None, iteration):
                    notes.append(f"resuming from iteration {iteration} although {megatron.TRACKER} says {tracker}")
                return iteration, notes
            notes.append(f"skipping checkpoint iteration {iteration}: {problem}; falling back to an older one")
        return None, notes

    def check_iteration(self, iter_dir: Path) -> str | None:
        """None when the folder is complete and intact, else what is wrong with it."""
        manifest_path = iter_dir / EXTRAS_DIR / MANIFEST
        if not manifest_path.is_file():
            return f"no {EXTRAS_DIR}/{MANIFEST} (incomplete, or not written by this trainer)"
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as err:
            return f"{manifest_path} is not valid JSON ({err})"
        for rel, digest in manifest["files"].items():
            path = iter_dir / rel
            if not path.is_file():
                return f"{path} is missing"
            if sha256_file(path) != digest:
                return f"{path} is corrupt (checksum differs from the manifest)"
        if manifest["world_size"] != self.env.world_size:
            raise UserError(
                f"{iter_dir} was written by {manifest['world_size']} processes, this run has "
                f"{self.env.world_size}: exact resume needs the same world size (or start a new --save folder "
                f"with model.json ckpt_path={iter_dir} to continue from its weights)"
            )
        if manifest.get("strategy") != self.strategy:
            raise UserError(f"{iter_dir} was written with --parallel {manifest.get('strategy')}, this run uses "
                            f"--parallel {self.strategy}: use the same strategy to resume")
        return None

    def resume(self, model, optimizer, scheduler, loader, *, load_optim: bool = True,
               load_rng: bool = True) -> Resumed | None:
        """Restore the newest complete checkpoint (all ranks agree on which); None when there is none."""
        env = self.env
        found = (None, [])
        error = ""
        if env.is_main:
            try:
                found = self.find_resumable()
            except UserError as err:
                error = str(err)
        iteration, notes, error = parallel.broadcast_object(env, (*found, error))
        if error:
            raise UserError(error)
        for note in notes:
            if env.is_main:
                log.warning(note)
        if iteration is None:
            return None
        iter_dir = megatron.iteration_dir(self.load_root, iteration)
        main = megatron.load_file(megatron.model_file(iter_dir))
        mine = megatron.load_file(rank_file(iter_dir, env.rank), mmap=False)
        self._load_model_and_optimizer(model, optimizer, main, iter_dir, load_optim)
        if load_optim:
            scheduler.load_state_dict(main["opt_param_scheduler"])
        loader.load_state_dict(mine["loader"])
        if load_rng:
            set_rng_state(mine["rng_state"], env.device)
        if env.is_main:
            log.info("resumed from %s (iteration %d)", iter_dir, iteration)
        if env.is_main and megatron.read_tracker(self.load_root) != iteration and self.load_root == self.save_root:
            megatron.write_tracker(self.save_root, iteration)
        parallel.barrier(env)
        return Resumed(iteration=iteration, trainer_state=mine["trainer"])

    def _load_model_and_optimizer(self, model, optimizer, main: dict, iter_dir: Path, load_optim: bool) -> None:
        problems = check_mm_state({k: tuple(v.shape) for k, v in main["model"].items()}, self.model_fields)
        if problems:
            raise UserError(f"{iter_dir} does not fit model.json ({'; '.join(problems[:5])}): resume with the "
                            "model.json it was trained with, or use a new --save folder")
        state = hf_state_dict(main["model"])
        if self.strategy == "fsdp" and self.env.initialized:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_optimizer_state_dict,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))
            if load_optim:
                osd = get_optimizer_state_dict(model, optimizer)
                dcp.load(osd, checkpoint_id=str(iter_dir / EXTRAS_DIR / OPTIMIZER_DIR))
                set_optimizer_state_dict(model, optimizer, osd)
            return
        parallel.load_full_precision_state(model, state)
        if load_optim:
            optimizer.load_state_dict(main["optimizer"])

