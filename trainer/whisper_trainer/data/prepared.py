"""Features computed once by ``python -m whisper_k8s dataset prepare``: the shard format and its reader.

A prepared root holds ``manifest.json`` (written last: its presence means the folder is complete) and, per
language and split, shards ``<lang>/<split>/shard-NNNNN.wmel``. A shard covers consecutive transcript rows and
keeps every row, bad ones included (with their skip reason), so the prepared catalogue has exactly the rows,
in exactly the order, of the Common Voice catalogue it came from: the same seed gives the same epoch order and
the same batches as the streaming path.

Shard file: for each usable sample a block of float32 log-mel frames [n_mels, T] (final values, row-major)
followed by its int32 label ids; then a JSON index (columns: path, skip reason, block offset, T, label count,
tail value) and a 16-byte trailer (index length, magic). Only the T frames whose STFT window reaches the clip
are stored: every later frame of Whisper's 30 s window equals the clip's tail value in every mel bin (the log
of zero padding floored at peak - 8; see features.py), so ``assemble`` rebuilds the full [n_mels, n_frames]
features exactly. A 6 s clip takes 600 x 128 x 4 B = 300 KB instead of 1.5 MB.

Everything the trainer must agree with is in the manifest: n_mels, n_frames, the processor's identity (hash of
its vocabulary and of the mel filter bank) and the task; ``load_prepared_catalog`` refuses a mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from whisper_k8s.errors import UserError
from whisper_trainer.data.catalog import Catalog, MemberLocation
from whisper_trainer.data.features import CompactFeatures, assemble
from whisper_trainer.data.stream import SampleReader

FORMAT = "whisper-k8s-prepared-features"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_SUFFIX = ".wmel"
MAGIC = b"WMELIDX1"
TRAILER = struct.Struct("<Q8s")  # index length, magic
INDEX_COLUMNS = ("paths", "skipped", "offsets", "frames", "labels", "pad_values")


def is_prepared_root(root: str | os.PathLike) -> bool:
    """A folder written by ``dataset prepare`` (its manifest names our format)."""
    manifest = Path(root) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("format") == FORMAT
    except (ValueError, OSError, AttributeError):
        return False


def shard_file(lang: str, split: str, number: int) -> str:
    """Shard path relative to the prepared root."""
    return f"{lang}/{split}/shard-{number:05d}{SHARD_SUFFIX}"


def processor_identity(encoder, filters: np.ndarray) -> dict[str, str]:
    """What the stored labels and features depend on in a processor: its vocabulary and its mel filter bank.

    Hashes of content, not of files, so a processor folder saved again (other JSON layout) still matches.
    """
    vocabulary = sorted(encoder.tokenizer.get_vocab(with_added_tokens=True).items())
    return {
        "vocabulary_sha256": hashlib.sha256(json.dumps(vocabulary).encode()).hexdigest(),
        "mel_filters_sha256": hashlib.sha256(np.ascontiguousarray(filters, dtype=np.float32).tobytes()).hexdigest(),
    }


class ShardWriter:
    """Writes one shard to an open binary file: ``add`` per row in order, then ``finish``."""

    def __init__(self, handle):
        self.handle = handle
        self.offset = 0
        self.index = {column: [] for column in INDEX_COLUMNS}

    def add(self, path: str, *, skipped: str | None = None, frames=None, labels=None, pad_value: float = 0.0):
        """One transcript row: a skipped one (``skipped`` = reason) or its frames [n_mels, T] and label ids."""
        offset, frame_count, label_count = 0, 0, 0
        if skipped is None:
            block = np.ascontiguousarray(frames, dtype=np.float32).tobytes() + np.asarray(labels, np.int32).tobytes()
            self.handle.write(block)
            offset, frame_count, label_count = self.offset, frames.shape[1], len(labels)
            self.offset += len(block)
        for column, value in zip(INDEX_COLUMNS, (path, skipped, offset, frame_count, label_count, float(pad_value)),
                                 strict=True):
            self.index[column].append(value)

    def finish(self) -> Counter:
        """Write the index and trailer; the skip reasons counted."""
        index = json.dumps(self.index, separators=(",", ":")).encode()
        self.handle.write(index + TRAILER.pack(len(index), MAGIC))
        return Counter(reason for reason in self.index["skipped"] if reason is not None)


def read_shard_index(path: str | os.PathLike) -> dict[str, list]:
    """The index of one shard; UserError naming the file when it is not a whole shard."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if size < TRAILER.size:
            raise _bad_shard(path, "shorter than its trailer")
        handle.seek(size - TRAILER.size)
        length, magic = TRAILER.unpack(handle.read(TRAILER.size))
        if magic != MAGIC or length > size - TRAILER.size:
            raise _bad_shard(path, "no index trailer at its end")
        handle.seek(size - TRAILER.size - length)
        try:
            index = json.loads(handle.read(length))
        except ValueError:
            raise _bad_shard(path, "its index is not valid JSON") from None
    if not isinstance(index, dict) or any(column not in index for column in INDEX_COLUMNS):
        raise _bad_shard(path, f"its index lacks one of the columns {', '.join(INDEX_COLUMNS)}")
    return index


def _bad_shard(path: Path, why: str) -> UserError:
    return UserError(f"prepared shard {path} is damaged ({why}): run `python -m whisper_k8s dataset prepare` again "
                     "with the same arguments; it redoes shards that do not verify")


def read_manifest(root: str | os.PathLike) -> dict:
    manifest_path = Path(root) / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {manifest_path} ({err}): the prepared dataset is incomplete; run "
                        "`python -m whisper_k8s dataset prepare` again") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise UserError(f"{manifest_path}: format {manifest.get('format')!r} version {manifest.get('version')!r} "
                        f"is not {FORMAT} version {FORMAT_VERSION}: prepare the dataset again with this version")
    return manifest


@dataclass
class PreparedCatalog(Catalog):
    """The Common Voice catalogue's rows, read from prepared shards: same order, same bad rows.

    ``locations`` point at each sample's block; ``frame_counts``, ``label_counts`` and ``pad_values`` describe it.
    """

    n_mels: int = 0
    frame_counts: list[int] = field(default_factory=list)
    label_counts: list[int] = field(default_factory=list)
    pad_values: list[float] = field(default_factory=list)


def load_prepared_catalog(root: str | os.PathLike, languages: list[str], split: str, *, n_mels: int,
                          n_frames: int, processor: dict[str, str], task: str) -> PreparedCatalog:
    """Rows of ``languages``/``split`` from a prepared root, after checking it was made for this model and
    processor (UserError naming the manifest field and the fix otherwise)."""
    root = Path(root)
    manifest = read_manifest(root)
    _check_compatible(root, manifest, n_mels=n_mels, n_frames=n_frames, processor=processor, task=task)
    catalog = PreparedCatalog(root=root, split=split, languages=list(languages), n_mels=n_mels)
    for language_number, language in enumerate(languages):
        entry = manifest["languages"].get(language, {}).get(split)
        if entry is None:
            raise UserError(
                f"{root / MANIFEST} has no {language}/{split}: it holds "
                f"{_listing(manifest)}; prepare that language and split, or fix basic_parameters.language / --split"
            )
        for shard in entry["shards"]:
            _add_shard(catalog, root / shard["file"], shard, language_number)
    if not catalog.paths:
        raise UserError(f"{root} has no samples for languages {','.join(languages)} split {split}")
    return catalog


def _check_compatible(root: Path, manifest: dict, **expected) -> None:
    wanted = {"n_mels": expected["n_mels"], "n_frames": expected["n_frames"], "task": expected["task"],
              **{f"processor.{key}": value for key, value in expected["processor"].items()}}
    found = {"n_mels": manifest.get("n_mels"), "n_frames": manifest.get("n_frames"), "task": manifest.get("task"),
             **{f"processor.{key}": manifest.get("processor", {}).get(key) for key in expected["processor"]}}
    changed = [key for key in wanted if wanted[key] != found[key]]
    if changed:
        details = "; ".join(f"{key} is {found[key]!r} there, the trainer needs {wanted[key]!r}" for key in changed)
        raise UserError(
            f"{root / MANIFEST} was prepared for another model or processor ({details}): prepare the dataset again "
            "with this model's --n-mels/--preset and this processor (processor_name_or_path), into a new folder"
        )


def _listing(manifest: dict) -> str:
    return ", ".join(f"{lang}/{split}" for lang, splits in manifest["languages"].items() for split in splits) or "nothing"


def _add_shard(catalog: PreparedCatalog, path: Path, shard: dict, language_number: int) -> None:
    if not path.is_file():
        raise UserError(f"prepared shard {path} listed in {catalog.root / MANIFEST} is missing: copy the whole "
                        "prepared folder, or prepare it again")
    if path.stat().st_size != shard["bytes"]:
        raise _bad_shard(path, f"{path.stat().st_size} bytes, the manifest says {shard['bytes']}")
    index = read_shard_index(path)
    catalog.shards.append(str(path))
    number = len(catalog.shards) - 1
    row_bytes = 4 * catalog.n_mels
    for path_, skipped, offset, frames, labels, pad in zip(*(index[column] for column in INDEX_COLUMNS), strict=True):
        catalog.language_index.append(language_number)
        catalog.paths.append(path_)
        catalog.texts.append(None)
        catalog.problems.append(skipped)
        catalog.locations.append(None if skipped else MemberLocation(number, offset, row_bytes * frames + 4 * labels))
        catalog.frame_counts.append(frames)
        catalog.label_counts.append(labels)
        catalog.pad_values.append(pad)


@dataclass(frozen=True)
class PreparedSources:
    """StreamSources' counterpart for a prepared root: samples are stored features and label ids."""

    catalog: PreparedCatalog

    def reader(self, settings, skipped: Counter):
        return PreparedSampleReader(self.catalog, settings, skipped)

    def featurizer(self, settings):
        if settings.compact_features:
            return lambda inputs: CompactFeatures(torch.cat([frames for frames, _ in inputs], dim=1),
                                                  [frames.shape[1] for frames, _ in inputs],
                                                  [pad for _, pad in inputs]).as_batch()
        return lambda inputs: assemble([frames for frames, _ in inputs], [pad for _, pad in inputs], settings.n_frames)


class PreparedSampleReader(SampleReader):
    """One pread per sample: its frames [n_mels, T] (a tensor over the read buffer) and its label ids."""

    def _load(self, index: int):
        catalog = self.catalog
        if self._too_many_tokens(index, catalog.label_counts[index]):
            return None
        location = catalog.locations[index]
        block = bytearray(location.size)  # writable, so torch can use it without a copy
        if os.preadv(self._descriptor(location.shard), [block], location.offset) != location.size:
            raise _bad_shard(Path(catalog.shards[location.shard]), f"sample {catalog.paths[index]} is cut off")
        values = catalog.n_mels * catalog.frame_counts[index]
        frames = torch.frombuffer(block, dtype=torch.float32, count=values).view(catalog.n_mels, -1)
        labels = np.frombuffer(block, dtype=np.int32, offset=4 * values).tolist()
        return (frames, catalog.pad_values[index]), labels
