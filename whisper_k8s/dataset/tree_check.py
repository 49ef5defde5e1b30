"""Which languages and splits a folder holds as a valid Common Voice 11 tree, and what is missing otherwise.

Cheap enough to run on every upload and in every init container: it reads n_shards.json, the first line of
each transcript and the first tar header of each shard (the ``ustar`` magic), nothing else. A split counts as
held when its transcript has Common Voice's ``path`` and ``sentence`` columns and every shard n_shards.json
lists is there as a non-empty tar. The layout itself is ``common_voice_layout``'s.

``python -m whisper_k8s.dataset.tree_check ROOT [--lang hi] [--split train]`` prints the summary (exit 2 when
the requested languages and splits are not all held).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from whisper_k8s.dataset import common_voice_layout as cv
from whisper_k8s.errors import UserError

_TAR_MAGIC_OFFSET = 257


@dataclass
class TreeReport:
    """``held``: language -> splits complete in the tree; ``problems``: one line per thing missing or broken."""

    root: str
    is_tree: bool = False
    held: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.is_tree:
            return f"{self.root} is not a Common Voice 11 tree: {'; '.join(self.problems)}"
        held = "; ".join(f"{lang}: {', '.join(splits)}" for lang, splits in sorted(self.held.items()))
        text = f"Common Voice 11 tree with {held or 'no complete language/split'}"
        return text + (f" (incomplete: {'; '.join(self.problems)})" if self.problems else "")

    def missing(self, languages: list[str], splits: list[str]) -> list[str]:
        """The requested ``lang/split`` pairs that are not held."""
        return [f"{lang}/{split}" for lang in languages for split in splits if split not in self.held.get(lang, [])]

    def to_dict(self) -> dict:
        return asdict(self)


def _is_tar(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(_TAR_MAGIC_OFFSET)
        return handle.read(5) == b"ustar"


def _split_problems(root: Path, lang: str, split: str, shards: int) -> list[str]:
    problems = []
    transcript = cv.transcript_path(root, lang, split)
    if not transcript.is_file():
        problems.append(f"{transcript.relative_to(root)} is missing")
    else:
        with open(transcript, "rb") as handle:
            header = handle.readline().rstrip(b"\r\n").decode("utf-8", errors="replace").split("\t")
        if "path" not in header or "sentence" not in header:
            problems.append(f"{transcript.relative_to(root)} lacks the 'path' and 'sentence' columns")
    for index in range(shards):
        shard = cv.shard_path(root, lang, split, index)
        if not shard.is_file():
            problems.append(f"{shard.relative_to(root)} is missing")
        elif shard.stat().st_size == 0 or not _is_tar(shard):
            problems.append(f"{shard.relative_to(root)} is not a tar file")
    return problems


def check_tree(root: str | Path, languages: list[str] | None = None, splits: list[str] | None = None) -> TreeReport:
    """Check the tree at ``root`` (only ``languages`` x ``splits`` when given; else what n_shards.json lists)."""
    root = Path(root)
    report = TreeReport(root=str(root))
    if not (root / cv.N_SHARDS_FILE).is_file():
        report.problems.append(f"no {cv.N_SHARDS_FILE} (a Common Voice 11 root holds audio/, transcript/ and "
                               f"{cv.N_SHARDS_FILE})")
        return report
    try:
        counts = cv.read_n_shards(root)
    except UserError as err:
        report.problems.append(str(err))
        return report
    report.is_tree = True
    for lang in languages or sorted(counts):
        if lang not in counts:
            report.problems.append(f"{lang}: not in {cv.N_SHARDS_FILE} (it lists {', '.join(sorted(counts))})")
            continue
        for split in splits or [s for s in cv.SPLITS if int(counts[lang].get(s, 0) or 0) > 0]:
            shards = int(counts[lang].get(split, 0) or 0)
            problems = ([f"{cv.N_SHARDS_FILE} lists no shard for it"] if shards == 0
                        else _split_problems(root, lang, split, shards))
            if problems:
                report.problems.append(f"{lang}/{split}: {', '.join(problems[:3])}"
                                       + (f" and {len(problems) - 3} more" if len(problems) > 3 else ""))
            else:
                report.held.setdefault(lang, []).append(split)
    return report


def require_tree(root: str | Path, *, flag: str = "SRC", any_folder_flag: str | None = "--any-folder") -> TreeReport:
    """The report of ``root``; UserError (one line, with the fix) when it holds no complete language/split."""
    report = check_tree(root)
    if report.is_tree and report.held:
        return report
    fix = "give the Common Voice 11 root (the folder holding audio/, transcript/ and n_shards.json)"
    if any_folder_flag:
        fix += f", or pass {any_folder_flag} to copy it as it is"
    raise UserError(f"{flag} {report.summary()}: {fix}")


def print_check(root: str | Path, languages: list[str] | None = None, splits: list[str] | None = None) -> int:
    """Print the summary; 0 when the tree holds something and every requested language/split, else 2."""
    report = check_tree(root, languages, splits)
    print(report.summary())
    return 0 if report.is_tree and report.held and not report.missing(languages or [], splits or []) else 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m whisper_k8s.dataset.tree_check", description=__doc__)
    parser.add_argument("root")
    parser.add_argument("--lang", help="languages that must be held (comma list)")
    parser.add_argument("--split", help="splits that must be held (comma list)")
    args = parser.parse_args(argv)
    return print_check(args.root, args.lang.split(",") if args.lang else None,
                       args.split.split(",") if args.split else None)


if __name__ == "__main__":
    sys.exit(main())
