"""The rank's data loader: torch DataLoader workers over the batch streams, with a saveable exact position.

torch's DataLoader takes batches from its workers in strict round robin (worker 0, 1, ..., W-1, 0, ...), so the
n-th batch of a rank always comes from stream n mod W. The loader records, for each stream, the position that
travelled with its last consumed batch, plus which stream is next: that is the whole state. Batches that
workers prefetched but the trainer never received are not counted; a resumed loader produces them again.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator

from torch.utils.data import DataLoader

from whisper_k8s.errors import UserError
from whisper_trainer.data.stream import (
    SKIP_REASONS,
    BatchStreams,
    StreamSettings,
    StreamSources,
    start_position,
)

LOG = logging.getLogger("whisper_trainer.data")
STATE_VERSION = 1
# Settings whose change makes a saved position meaningless (the per-epoch shares would differ).
TOPOLOGY_KEYS = ("world_size", "streams_per_rank", "num_samples", "seed", "shuffle")


class ResumableLoader:
    """Endless iterator of batch dicts for one rank; ``state_dict``/``load_state_dict`` resume it exactly.

    Call ``load_state_dict`` before iterating. Each batch: ``input_features`` FloatTensor[B, n_mels, n_frames],
    ``labels`` LongTensor[B, L] padded with -100 (no ``decoder_input_ids``: the model derives them by shifting
    the labels right behind <|startoftranscript|>, see labels.py), ``num_samples`` B.
    """

    def __init__(self, sources: StreamSources, settings: StreamSettings, *, num_workers: int,
                 prefetch_factor: int = 2, pin_memory: bool = False):
        self.sources = sources
        self.settings = settings
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self._positions = [start_position() for _ in range(settings.streams_per_rank)]
        self._next_stream = 0
        self._samples_consumed = 0

    def __iter__(self) -> Iterator[dict]:
        streams = BatchStreams(self.sources, self.settings, [dict(position) for position in self._positions],
                               rotation=self._next_stream)
        worker_options = (
            {"persistent_workers": True, "prefetch_factor": self.prefetch_factor,
             "worker_init_fn": _leave_signal_group}
            if self.num_workers > 0 else {}
        )
        loader = DataLoader(streams, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                            **worker_options)
        for batch in loader:
            position = batch.pop("_position")
            if position["stream"] != self._next_stream:  # would mean DataLoader stopped taking turns in order
                raise RuntimeError(f"data stream {position['stream']} answered out of turn "
                                   f"(expected {self._next_stream}); the saved position would be wrong")
            self._positions[self._next_stream] = {key: position[key] for key in ("epoch", "cursor", "skipped")}
            self._next_stream = (self._next_stream + 1) % self.settings.streams_per_rank
            self._samples_consumed += batch["num_samples"]
            yield batch

    def _topology(self) -> dict:
        return {
            "world_size": self.settings.world_size,
            "streams_per_rank": self.settings.streams_per_rank,
            "num_samples": len(self.sources.catalog),
            "seed": self.settings.seed,
            "shuffle": self.settings.shuffle,
        }

    def state_dict(self) -> dict:
        """Position of this rank: epoch (the oldest one a stream is still in), samples consumed, per stream."""
        return {
            "version": STATE_VERSION,
            "rank": self.settings.rank,
            **self._topology(),
            "epoch": min(position["epoch"] for position in self._positions),
            "samples_consumed": self._samples_consumed,
            "next_stream": self._next_stream,
            "streams": [
                {"epoch": p["epoch"], "cursor": p["cursor"], "skipped": dict(p["skipped"])} for p in self._positions
            ],
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``; with another topology (world size, workers, dataset, seed, shuffle), start
        the epoch after the saved one instead: then any rank's saved state will do, e.g. for ranks added."""
        if state.get("version") != STATE_VERSION:
            raise UserError(f"data loader state version {state.get('version')!r} is not {STATE_VERSION}: "
                            "the checkpoint was written by another trainer version")
        changed = [key for key in TOPOLOGY_KEYS if state[key] != self._topology()[key]]
        if not changed and state["rank"] != self.settings.rank:
            raise UserError(f"data loader state of rank {state['rank']} loaded into rank {self.settings.rank}: "
                            "each rank must load its own position")
        self._samples_consumed = int(state["samples_consumed"])
        if not changed:
            self._positions = [
                {"epoch": int(s["epoch"]), "cursor": int(s["cursor"]), "skipped": dict(s["skipped"])}
                for s in state["streams"]
            ]
            self._next_stream = int(state["next_stream"])
            return
        next_epoch = max(int(s["epoch"]) for s in state["streams"]) + 1
        LOG.warning(
            "data position saved with %s cannot carry over to %s: this rank starts epoch %d from its beginning "
            "(samples of the interrupted epoch may be missed or repeated once)",
            {key: state[key] for key in changed}, {key: self._topology()[key] for key in changed}, next_epoch,
        )
        carried = Counter()
        for saved in state["streams"]:
            carried.update(saved["skipped"])
        self._positions = [{"epoch": next_epoch, "cursor": 0, "skipped": {}} for _ in self._positions]
        self._positions[0]["skipped"] = dict(carried)
        self._next_stream = 0

    def stats(self) -> dict[str, int]:
        """Skipped samples of this rank by reason (every reason, zeros included), summed over its streams
        (workers), counted up to the last batch the trainer received."""
        total = Counter(dict.fromkeys(SKIP_REASONS, 0))
        for position in self._positions:
            total.update(position["skipped"])
        return dict(sorted(total.items()))


def _leave_signal_group(_worker_id: int) -> None:
    """Move a data-loader worker out of the trainer's process group.

    The kubelet's (and torchrun's) SIGTERM reaches the whole process group. A worker that receives it exits at
    once, and the trainer then fails with "DataLoader worker exited unexpectedly" before it can write its
    SIGTERM checkpoint. In a group of its own the worker keeps serving batches until the trainer has saved;
    it still ends with the trainer (torch's workers watch their parent process).
    """
    os.setpgrp()
