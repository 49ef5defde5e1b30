"""The Common Voice 11 tree as a flat, ordered list of samples, each pointing at its bytes inside a tar shard.

Why an index instead of streaming the tars front to back: sample-level sharding (needed when there are fewer
shards than ranks x workers) means every consumer wants a scattered subset of every shard. Reading only the tar
headers once (512 bytes per member, data skipped by seeking) gives each sample's byte range, so a worker reads
exactly its own members with one ``pread`` each; nothing is unpacked to disk and no consumer reads another's
audio.

The layout itself (paths, n_shards.json, member base name = TSV ``path``) comes from
``whisper_k8s.dataset.common_voice_layout``, shared with the synthetic generator.

Problems found here (undecodable text, a row without columns, a member absent from every shard, a member cut
off by a truncated tar) do not drop the row: the sample keeps its place in the order with a ``problem`` so the
one worker it is assigned to counts and reports it, exactly once per epoch over the whole job.
"""

from __future__ import annotations

import logging
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from whisper_k8s.dataset import common_voice_layout as cv
from whisper_k8s.errors import UserError

LOG = logging.getLogger("whisper_trainer.data")

# Skip reasons decided while reading the catalogue; the worker adds the audio/text ones (see stream.py).
BAD_TEXT_ENCODING = "bad_text_encoding"
MALFORMED_ROW = "malformed_row"
MISSING_FILE = "missing_file"
TRUNCATED_TAR = "truncated_tar"
EMPTY_TEXT = "empty_text"
PROBLEM_DETAILS = {
    BAD_TEXT_ENCODING: "the TSV sentence is not valid UTF-8",
    MALFORMED_ROW: "the TSV row is too short to hold the path and sentence columns",
    MISSING_FILE: "no tar shard of this language and split holds a member of that name",
    TRUNCATED_TAR: "the tar shard ends inside this member (an interrupted download or copy)",
    EMPTY_TEXT: "the TSV sentence is empty or only whitespace",
}


@dataclass(frozen=True)
class MemberLocation:
    """Where one member's bytes lie inside a tar file."""

    shard: int
    offset: int
    size: int
    truncated: bool = False


@dataclass
class Catalog:
    """All samples of the requested languages and split, in a fixed order (languages as given, TSV row order).

    Columns rather than one object per sample keep a 1M-sample split small and cheap to hand to workers.
    """

    root: Path
    split: str
    languages: list[str]
    shards: list[str] = field(default_factory=list)  # tar paths; MemberLocation.shard indexes this list
    language_index: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    texts: list[str | None] = field(default_factory=list)
    locations: list[MemberLocation | None] = field(default_factory=list)
    problems: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, index: int) -> str:
        """``en/train/common_voice_en_1.mp3`` (plus its shard): how warnings name a sample."""
        where = f"{self.languages[self.language_index[index]]}/{self.split}/{self.paths[index]}"
        location = self.locations[index]
        if location is not None:
            where += f" (in {os.path.basename(self.shards[location.shard])})"
        return where

    def usable_count(self) -> int:
        return sum(problem is None for problem in self.problems)


def build_catalog(dataset_root: str | os.PathLike, languages: list[str], split: str) -> Catalog:
    """Read every transcript and index every shard of ``languages``/``split`` under ``dataset_root``."""
    root = Path(dataset_root)
    if not root.is_dir():
        raise UserError(
            f"dataset folder {root} does not exist: set dataset_name_or_path in data.json to a Common Voice 11 "
            "root (holding audio/ and transcript/)"
        )
    if not languages:
        raise UserError("no language given: set basic_parameters.language in data.json (a Common Voice locale)")
    catalog = Catalog(root=root, split=split, languages=list(languages))
    for language_number, language in enumerate(languages):
        members = _index_shards(catalog, root, language, split)
        for path, text, problem in _read_transcript(cv.transcript_path(root, language, split)):
            location = members.get(cv.clip_file_of_member(path)) if path else None  # TSV path may hold a folder
            if problem is None and location is None:
                problem = MISSING_FILE
            if problem is None and location.truncated:
                problem = TRUNCATED_TAR
            if problem is None and not text.strip():
                problem = EMPTY_TEXT
            catalog.language_index.append(language_number)
            catalog.paths.append(path)
            catalog.texts.append(text.strip() if text is not None else None)
            catalog.locations.append(location)
            catalog.problems.append(problem)
    if not catalog.paths:
        raise UserError(
            f"{root} has no samples for languages {','.join(languages)} split {split}: the transcripts are empty"
        )
    return catalog


def _index_shards(catalog: Catalog, root: Path, language: str, split: str) -> dict[str, MemberLocation]:
    shards = cv.shard_paths(root, language, split)
    if not shards:
        raise UserError(
            f"{root / cv.N_SHARDS_FILE} lists no {split} shard for {language}: check basic_parameters.language "
            f"and the split (--split), or the dataset"
        )
    members: dict[str, MemberLocation] = {}
    for shard in shards:
        catalog.shards.append(str(shard))
        if not shard.is_file():
            LOG.warning("tar shard %s listed in %s is absent: its samples count as missing_file",
                        shard, cv.N_SHARDS_FILE)
            continue
        members.update(index_tar(shard, len(catalog.shards) - 1))
    return members


def index_tar(path: Path, shard_number: int) -> dict[str, MemberLocation]:
    """Base name -> byte range of every regular member of one tar, reading headers only.

    A truncated tar keeps the members that are whole; a member whose data runs past the end of the file is
    marked truncated, and members after the cut are simply absent (they count as missing).
    """
    file_size = path.stat().st_size
    members: dict[str, MemberLocation] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                truncated = member.offset_data + member.size > file_size
                members[cv.clip_file_of_member(member.name)] = MemberLocation(
                    shard_number, member.offset_data, member.size, truncated
                )
                if truncated:
                    break
    except tarfile.ReadError as err:
        LOG.warning("cannot read tar shard %s (%s): its samples count as missing_file", path, err)
    if any(location.truncated for location in members.values()):
        LOG.warning("tar shard %s is truncated (%d bytes): samples past the cut are skipped", path, file_size)
    return members


def _read_transcript(tsv: Path):
    """Yield (path, sentence, problem) per data row of a Common Voice TSV, in file order.

    Unlike ``common_voice_layout.read_transcript`` (which drops unreadable rows), a bad row is kept with its
    problem: it still takes its place in the order and is counted as a skipped sample by its reader. Only the
    ``path`` and ``sentence`` cells are decoded; a row too short to hold them is malformed.
    """
    if not tsv.is_file():
        raise UserError(f"transcript {tsv} is missing: check the dataset path, language and split")
    lines = tsv.read_bytes().split(b"\n")
    header = lines[0].rstrip(b"\r").decode("utf-8", errors="replace").split("\t")
    try:
        path_column, sentence_column = header.index("path"), header.index("sentence")
    except ValueError:
        raise UserError(f"{tsv} has no 'path' and 'sentence' columns in its header row: {header}") from None
    needed = max(path_column, sentence_column) + 1
    for line in lines[1:]:
        line = line.rstrip(b"\r")
        if not line.strip():
            continue
        cells = line.split(b"\t")
        path = cells[path_column].decode("utf-8", errors="replace") if len(cells) > path_column else ""
        if len(cells) < needed:
            yield path, None, MALFORMED_ROW
            continue
        try:
            yield path, cells[sentence_column].decode("utf-8"), None
        except UnicodeDecodeError:
            yield path, None, BAD_TEXT_ENCODING
