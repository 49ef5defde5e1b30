"""Who reads which sample, in which order, and how one reader turns its samples into batches.

Sharding is at sample level: for every epoch the whole catalogue is permuted with a generator seeded by
(seed, epoch), and consumer c of C = world_size x streams_per_rank takes positions c, c + C, c + 2C, ... of that
permutation. The shares of one epoch are therefore disjoint and together cover every sample once, whatever the
number of tar shards (see tests/test_data_pipeline.py for the check over many topologies).

Each consumer (one dataloader worker of one rank) is an endless stream: it walks its share of epoch e, then of
epoch e + 1, and so on, skipping and counting bad samples; a batch may end in one epoch and continue in the
next, so no sample is dropped and all ranks can draw as many batches as the trainer asks for. Every batch
carries the stream's position after it (epoch, cursor into the share, skip counters), which is what
``ResumableLoader.state_dict`` saves: restarting a stream from that position reproduces the rest bitwise.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from whisper_k8s.errors import UserError
from whisper_trainer.data.audio import CORRUPT_AUDIO, EMPTY_AUDIO, SAMPLE_RATE, TOO_LONG, BadAudio, decode_16k
from whisper_trainer.data.catalog import PROBLEM_DETAILS, Catalog
from whisper_trainer.data.features import HOP_LENGTH, N_FRAMES, LogMel
from whisper_trainer.data.labels import TOO_MANY_TOKENS, LabelEncoder

LOG = logging.getLogger("whisper_trainer.data")
IGNORE_INDEX = -100
# Every reason a sample can be skipped for, so that logged counts always show the same keys.
SKIP_REASONS = tuple(sorted({*PROBLEM_DETAILS, CORRUPT_AUDIO, EMPTY_AUDIO, TOO_LONG, TOO_MANY_TOKENS}))


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The job-wide sample order of one epoch: identical on every rank and worker, fixed by (seed, epoch)."""
    if not shuffle:
        return np.arange(num_samples)
    return np.random.Generator(np.random.PCG64([seed, epoch])).permutation(num_samples)


def consumer_share(num_samples: int, seed: int, epoch: int, shuffle: bool, consumer: int, consumers: int) -> np.ndarray:
    """Catalogue indices consumer ``consumer`` of ``consumers`` reads in ``epoch``, in reading order."""
    return epoch_order(num_samples, seed, epoch, shuffle)[consumer::consumers]


@dataclass(frozen=True)
class StreamSettings:
    """The plain settings of a rank's streams."""

    micro_batch_size: int
    max_label_tokens: int
    seed: int
    shuffle: bool
    rank: int
    world_size: int
    streams_per_rank: int
    return_paths: bool = False
    n_frames: int = N_FRAMES  # the model's window: 2 x max_source_positions
    compact_features: bool = False  # batches carry signal frames + tail values (features.expand_features)

    @property
    def consumers(self) -> int:
        return self.world_size * self.streams_per_rank

    @property
    def max_seconds(self) -> float:
        return self.n_frames * HOP_LENGTH / SAMPLE_RATE


def start_position() -> dict:
    return {"epoch": 0, "cursor": 0, "skipped": {}}


@dataclass(frozen=True)
class StreamSources:
    """What every stream reads with, built once per rank and inherited by the forked dataloader workers.

    This one decodes Common Voice audio; ``whisper_trainer.data.prepared.PreparedSources`` reads features that
    ``dataset prepare`` stored. Both give a ``catalog`` (one row per sample, in the same order), a ``reader``
    of single samples and a ``featurizer`` that turns a batch of them into input features.
    """

    catalog: Catalog
    encoder: LabelEncoder
    filters: np.ndarray  # mel filter bank (201, n_mels)

    def reader(self, settings: StreamSettings, skipped: Counter) -> SampleReader:
        return AudioSampleReader(self, settings, skipped)

    def featurizer(self, settings: StreamSettings):
        log_mel = LogMel(self.filters, settings.n_frames)
        return (lambda waveforms: log_mel.compact(waveforms).as_batch()) if settings.compact_features else log_mel


class SampleReader:
    """Reads single samples of one worker: rows the catalogue marks bad are logged, counted and skipped here,
    the rest is loaded by the subclass (``_load``), which may skip too."""

    def __init__(self, catalog, settings: StreamSettings, skipped: Counter):
        self.catalog = catalog
        self.settings = settings
        self.skipped = skipped
        self._descriptors: dict[int, int] = {}
        self.last_skip: str | None = None  # reason of the latest skip (dataset prepare records it per row)

    def read(self, index: int):
        """(feature input, label ids) of catalogue sample ``index``, or None when it is skipped."""
        problem = self.catalog.problems[index]
        if problem is not None:
            return self._skip(index, problem, PROBLEM_DETAILS.get(problem, "found bad when the dataset was prepared"))
        return self._load(index)

    def _load(self, index: int):
        raise NotImplementedError

    def _too_many_tokens(self, index: int, count: int) -> bool:
        if count <= self.settings.max_label_tokens:
            return False
        self._skip(index, TOO_MANY_TOKENS, f"{count} label tokens, over the cap of {self.settings.max_label_tokens}")
        return True

    def _pread(self, index: int) -> bytes:
        location = self.catalog.locations[index]
        return os.pread(self._descriptor(location.shard), location.size, location.offset)

    def _descriptor(self, shard: int) -> int:
        # Opened lazily in the worker process itself: descriptors are not shared across fork/spawn.
        if shard not in self._descriptors:
            self._descriptors[shard] = os.open(self.catalog.shards[shard], os.O_RDONLY)
        return self._descriptors[shard]

    def _skip(self, index: int, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        self.last_skip = reason
        LOG.warning("skipping %s: %s (%s)", self.catalog.describe(index), reason, detail)
        return None

    def close(self) -> None:
        for descriptor in self._descriptors.values():
            os.close(descriptor)
        self._descriptors.clear()


class AudioSampleReader(SampleReader):
    """Common Voice samples: transcript -> label ids, tar member -> 16 kHz waveform."""

    def __init__(self, sources: StreamSources, settings: StreamSettings, skipped: Counter):
        super().__init__(sources.catalog, settings, skipped)
        self.encoder = sources.encoder
        self.language_ids = [self.encoder.language_id(language) for language in self.catalog.languages]

    def _load(self, index: int):
        catalog = self.catalog
        labels = self.encoder.encode(catalog.texts[index], self.language_ids[catalog.language_index[index]])
        if self._too_many_tokens(index, len(labels)):
            return None
        try:
            waveform = decode_16k(self._pread(index), self.settings.max_seconds)
        except BadAudio as bad:
            return self._skip(index, bad.reason, str(bad))
        return waveform, labels


def collate(feature_inputs, label_lists, featurize) -> dict:
    """Batch dict: features [B, n_mels, n_frames] (or their compact entries) and labels padded with -100 (the
    model shifts them itself)."""
    longest = max(len(labels) for labels in label_lists)
    labels = np.full((len(label_lists), longest), IGNORE_INDEX, dtype=np.int64)
    for row, ids in enumerate(label_lists):
        labels[row, : len(ids)] = ids
    features = featurize(feature_inputs)
    batch = features if isinstance(features, dict) else {"input_features": features}
    return {**batch, "labels": torch.from_numpy(labels), "num_samples": len(label_lists)}


def stream_batches(sources: StreamSources, settings: StreamSettings, stream: int, position: dict):
    """Endless batches of logical stream ``stream`` of this rank, starting at ``position``.

    Each batch has a ``_position`` entry: the stream number and its position after the batch.
    """
    consumer = settings.rank * settings.streams_per_rank + stream
    epoch, cursor = position["epoch"], position["cursor"]
    skipped = Counter(position["skipped"])
    catalog = sources.catalog
    reader = sources.reader(settings, skipped)
    featurize = sources.featurizer(settings)
    share = consumer_share(len(catalog), settings.seed, epoch, settings.shuffle, consumer, settings.consumers)
    # Spinning forever on a stream whose samples are all bad must not happen: a complete epoch without a usable
    # sample, before this stream ever found one, is an error. (A later unlucky epoch of a tiny, partly bad
    # dataset is not: the stream has seen good samples, so reshuffled epochs will bring them again.)
    whole_epoch_seen, usable_seen = cursor == 0, 0
    inputs, label_lists, paths = [], [], []
    try:
        while True:
            if cursor >= len(share):
                if whole_epoch_seen and usable_seen == 0:
                    raise _nothing_usable(catalog, settings, stream, epoch, len(share), skipped)
                epoch, cursor = epoch + 1, 0
                share = consumer_share(len(catalog), settings.seed, epoch, settings.shuffle, consumer, settings.consumers)
                whole_epoch_seen = True
                continue
            index = int(share[cursor])
            cursor += 1
            sample = reader.read(index)
            if sample is None:
                continue
            usable_seen += 1
            inputs.append(sample[0])
            label_lists.append(sample[1])
            paths.append(catalog.paths[index])
            if len(inputs) == settings.micro_batch_size:
                batch = collate(inputs, label_lists, featurize)
                if settings.return_paths:
                    batch["paths"] = paths
                batch["_position"] = {"stream": stream, "epoch": epoch, "cursor": cursor, "skipped": dict(skipped)}
                yield batch
                inputs, label_lists, paths = [], [], []
    finally:
        reader.close()


def _nothing_usable(catalog, settings, stream, epoch, share_size, skipped) -> UserError:
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items()))
    return UserError(
        f"rank {settings.rank} data stream {stream} found no usable sample among its {share_size} samples of "
        f"epoch {epoch} in {catalog.root} ({','.join(catalog.languages)}/{catalog.split}); skipped so far: "
        f"{reasons}. Fix the dataset (the warnings above name each bad file) or, if it is tiny, use fewer "
        "dataloader workers or ranks"
    )


class BatchStreams(IterableDataset):
    """Dataloader worker w of this rank serves logical stream (w + rotation) mod W.

    The rotation lets a resumed loader, whose DataLoader again starts its round robin at worker 0, continue
    with the stream that was next when the state was saved.
    """

    def __init__(self, sources: StreamSources, settings: StreamSettings, positions: list[dict], rotation: int):
        self.sources = sources
        self.settings = settings
        self.positions = positions
        self.rotation = rotation

    def __iter__(self):
        info = get_worker_info()
        stream = ((info.id if info is not None else 0) + self.rotation) % self.settings.streams_per_rank
        return stream_batches(self.sources, self.settings, stream, self.positions[stream])

