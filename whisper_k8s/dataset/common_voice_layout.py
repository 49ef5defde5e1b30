"""The Common Voice 11 folder layout (as Hugging Face hosts it and MindSpeed-MM's guide shows it): one source.

    <root>/n_shards.json                                  {"<lang>": {"train": 1, "dev": 0, "test": 1, ...}}
    <root>/audio/<lang>/<split>/<lang>_<split>_<k>.tar    MP3 clips, 48 kHz mono
    <root>/transcript/<lang>/<split>.tsv                  one row per clip, CV's columns, tab separated

Inside shard ``<lang>_<split>_<k>.tar`` every clip sits in a folder of the shard's name:
``<lang>_<split>_<k>/common_voice_<lang>_<id>.mp3``. The TSV's ``path`` column holds only the file name, so a
reader joins rows and tar members on the member's base name (as the Hugging Face loading script does). The
synthetic generator and the trainer's data reader both use these helpers, so they cannot drift apart.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path, PurePosixPath

from whisper_k8s.errors import UserError

log = logging.getLogger(__name__)

# The header of Common Voice 8+ releases, CV 11 included ("accent" became "accents" in 8.0; Hugging Face's
# loader renames it back to "accent" for its features). Readers need only "path" and "sentence".
TSV_COLUMNS = (
    "client_id",
    "path",
    "sentence",
    "up_votes",
    "down_votes",
    "age",
    "gender",
    "accents",
    "locale",
    "segment",
)
SPLITS = ("train", "dev", "test", "other", "invalidated")
SAMPLE_RATE = 48_000
N_SHARDS_FILE = "n_shards.json"


def shard_name(lang: str, split: str, index: int) -> str:
    return f"{lang}_{split}_{index}"


def shard_path(root: Path | str, lang: str, split: str, index: int) -> Path:
    return Path(root) / "audio" / lang / split / f"{shard_name(lang, split, index)}.tar"


def transcript_path(root: Path | str, lang: str, split: str) -> Path:
    return Path(root) / "transcript" / lang / f"{split}.tsv"


def clip_file_name(lang: str, clip_id: int) -> str:
    """The TSV ``path`` value of a clip, e.g. ``common_voice_en_19121553.mp3``."""
    return f"common_voice_{lang}_{clip_id}.mp3"


def member_name(lang: str, split: str, index: int, clip_file: str) -> str:
    """The tar member name of a clip inside shard ``index``."""
    return f"{shard_name(lang, split, index)}/{clip_file}"


def clip_file_of_member(name: str) -> str:
    """The TSV ``path`` value a tar member belongs to (its base name)."""
    return PurePosixPath(name).name


def read_n_shards(root: Path | str) -> dict[str, dict[str, int]]:
    path = Path(root) / N_SHARDS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(
            f"{path} is missing: dataset_name_or_path must point at a Common Voice 11 root "
            f"(the folder holding audio/, transcript/ and {N_SHARDS_FILE})"
        ) from None
    except ValueError as err:
        raise UserError(f"{path} is not valid JSON ({err}): restore it from the dataset") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UserError(f'{path} must map each language to its split counts, e.g. {{"en": {{"train": 2}}}}')
    return data


def shard_paths(root: Path | str, lang: str, split: str) -> list[Path]:
    """Every shard of one split, in order, as ``n_shards.json`` lists them."""
    counts = read_n_shards(root)
    if lang not in counts:
        raise UserError(
            f"language {lang!r} is not in {Path(root) / N_SHARDS_FILE} (it has {', '.join(sorted(counts))}): "
            "fix basic_parameters.language or the dataset path"
        )
    return [shard_path(root, lang, split, k) for k in range(int(counts[lang].get(split, 0)))]


def format_tsv_row(row: dict[str, object]) -> str:
    """One TSV line (no newline) in CV's column order; refuses values that would break the columns."""
    cells = []
    for column in TSV_COLUMNS:
        value = str(row.get(column, ""))
        if "\t" in value or "\n" in value or "\r" in value:
            raise ValueError(f"TSV column {column!r} may not contain tabs or line breaks: {value!r}")
        cells.append(value)
    return "\t".join(cells)


def read_transcript(path: Path | str, *, strict: bool = True) -> list[dict[str, str]]:
    """Rows of a CV transcript TSV as dicts.

    A row that is not UTF-8 or has the wrong number of cells raises a UserError naming the file and line; with
    ``strict=False`` such rows are logged and skipped instead, so one bad row does not stop a long run.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"transcript {path} is missing: check the dataset path, language and split")
    lines = path.read_bytes().split(b"\n")
    header = lines[0].rstrip(b"\r").decode("utf-8", errors="replace").split("\t")
    if "path" not in header or "sentence" not in header:
        raise UserError(f"{path}:1: header {header} lacks the 'path' and 'sentence' columns of Common Voice")
    rows = []
    for line_no, raw in enumerate(lines[1:], start=2):
        raw = raw.rstrip(b"\r")
        if not raw:
            continue
        try:
            cells = raw.decode("utf-8").split("\t")
            if len(cells) != len(header):
                raise ValueError(f"{len(cells)} cells where the header has {len(header)}")
        except ValueError as err:  # UnicodeDecodeError is a ValueError
            problem = f"{path}:{line_no}: unreadable transcript row ({err})"
            if strict:
                raise UserError(f"{problem}: fix or remove the row") from None
            log.warning("skipping %s", problem)
            continue
        rows.append(dict(zip(header, cells, strict=True)))
    return rows
