"""Common Voice 11 shards -> Whisper training batches, sharded over ranks and workers, resumable exactly.

Modules: ``catalog`` (CV layout, transcript rows, tar member index), ``audio`` (MP3 -> 16 kHz, as librosa),
``features`` (batched log-mel equal to WhisperFeatureExtractor), ``labels`` (Whisper decoder targets),
``stream`` (who reads what in which order; worker batches), ``prepared`` (features stored once by
``dataset prepare``, read instead of decoding), ``loader`` (DataLoader wrapper with a saveable
position). ``build_dataloader`` wires them for one rank.
"""

from __future__ import annotations

import logging
from collections import Counter

from whisper_k8s.errors import UserError
from whisper_trainer.data.catalog import build_catalog
from whisper_trainer.data.features import N_FRAMES, mel_filters
from whisper_trainer.data.labels import LabelEncoder
from whisper_trainer.data.loader import ResumableLoader
from whisper_trainer.data.prepared import (
    PreparedSources,
    is_prepared_root,
    load_prepared_catalog,
    processor_identity,
)
from whisper_trainer.data.stream import StreamSettings, StreamSources

__all__ = ["ResumableLoader", "build_dataloader"]
LOG = logging.getLogger("whisper_trainer.data")


def build_dataloader(dataset_root: str, languages: list[str], split: str, processor_dir: str, *,
                     n_mels: int, rank: int, world_size: int, micro_batch_size: int, num_workers: int,
                     seed: int, shuffle: bool = True, max_label_tokens: int = 448,
                     task: str = "transcribe", prefetch_factor: int = 2, pin_memory: bool = False,
                     return_paths: bool = False, n_frames: int = N_FRAMES,
                     compact_features: bool = False) -> ResumableLoader:
    """The data loader of rank ``rank`` of ``world_size``.

    ``dataset_root`` is a Common Voice 11 root (decoded on the fly) or a folder written by ``dataset prepare``
    (recognised by its manifest; stored features, checked against ``n_mels``, ``n_frames``, the processor and
    ``task``): both give the same batches. ``languages`` are Common Voice locales (a comma-separated string is accepted too). ``num_workers`` 0 reads
    in the calling process. ``prefetch_factor`` batches wait per worker in shared memory (/dev/shm: ~12 MB each
    at batch 8 x 128 mels, so pods need a memory-backed /dev/shm larger than Kubernetes' 64 MB default).
    ``return_paths`` adds each batch's TSV paths under ``paths`` (tests, debugging). ``n_frames`` is the
    model's window, 2 x max_source_positions (3000 = 30 s for every Whisper size; MindSpeed-MM's encoder
    refuses any other length): clips longer than it are skipped as too_long. ``compact_features`` replaces
    ``input_features`` by ``input_frames`` [n_mels, sum T], ``frame_lengths`` [B] and ``pad_values`` [B] (the
    frames that carry signal and each clip's constant tail): ``features.expand_features(batch, n_frames,
    device)`` builds the usual batch on the accelerator, sparing the workers the padded 12 MB per batch.
    """
    if isinstance(languages, str):
        languages = [language.strip() for language in languages.split(",") if language.strip()]
    _check_counts(rank=rank, world_size=world_size, micro_batch_size=micro_batch_size, num_workers=num_workers,
                  n_mels=n_mels, max_label_tokens=max_label_tokens, seed=seed, n_frames=n_frames)
    encoder = LabelEncoder(processor_dir, task)
    for language in languages:
        encoder.language_id(language)  # refuse an unknown locale before any worker starts
    filters = mel_filters(str(processor_dir), n_mels)
    if is_prepared_root(dataset_root):
        catalog = load_prepared_catalog(dataset_root, languages, split, n_mels=n_mels, n_frames=n_frames,
                                        processor=processor_identity(encoder, filters), task=task)
        sources = PreparedSources(catalog)
    else:
        catalog = build_catalog(dataset_root, languages, split)
        sources = StreamSources(catalog, encoder, filters)
    settings = StreamSettings(
        micro_batch_size=micro_batch_size,
        max_label_tokens=max_label_tokens, seed=seed, shuffle=shuffle, rank=rank, world_size=world_size,
        streams_per_rank=max(1, num_workers), return_paths=return_paths, n_frames=n_frames,
        compact_features=compact_features,
    )
    _check_enough_samples(catalog, settings)
    LOG.info(
        "data: %d samples of %s/%s in %d %s shard(s), %d already known bad; rank %d of %d reads about %d per epoch "
        "with %d worker(s)", len(catalog), ",".join(languages), split, len(catalog.shards),
        "prepared-feature" if isinstance(sources, PreparedSources) else "audio",
        len(catalog) - catalog.usable_count(), rank, world_size, len(catalog) // world_size, num_workers,
    )
    return ResumableLoader(sources, settings, num_workers=num_workers, prefetch_factor=prefetch_factor,
                           pin_memory=pin_memory)


def _check_counts(**counts: int) -> None:
    minimum = {"rank": 0, "num_workers": 0, "seed": 0}
    for name, value in counts.items():
        if not isinstance(value, int) or value < minimum.get(name, 1):
            raise UserError(f"{name}={value!r} is invalid: give an integer >= {minimum.get(name, 1)}")
    if counts["rank"] >= counts["world_size"]:
        raise UserError(f"rank {counts['rank']} is outside world_size {counts['world_size']}")


def _check_enough_samples(catalog, settings: StreamSettings) -> None:
    if catalog.usable_count() == 0:
        reasons = Counter(catalog.problems)
        raise UserError(
            f"no usable sample in {catalog.root} ({','.join(catalog.languages)}/{catalog.split}): all "
            f"{len(catalog)} are bad ({', '.join(f'{reason} {count}' for reason, count in sorted(reasons.items()))})"
        )
    if len(catalog) < settings.consumers:
        raise UserError(
            f"{catalog.root} ({','.join(catalog.languages)}/{catalog.split}) has {len(catalog)} samples but "
            f"{settings.world_size} ranks x {settings.streams_per_rank} workers = {settings.consumers} readers: "
            "lower --num-workers or the number of ranks, or use a larger split"
        )
