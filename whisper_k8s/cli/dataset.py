"""`dataset`: make Common Voice 11 trees (`synth`), check them (`check`) and precompute their features for
training (`prepare`)."""

from __future__ import annotations

import argparse

NAME = "dataset"
HELP = "write Common Voice 11 data trees (synthetic speech) and prepare features for training"
ORDER = 50
EXAMPLES = """
  python -m whisper_k8s dataset synth --out runs/data/common_voice_11_0 --lang en --train 200 --test 20
  python -m whisper_k8s dataset synth --out /tmp/cv-hi --lang hi --train 16 --test 4 --seed 3
  python -m whisper_k8s dataset synth --out /tmp/cv-bad --train 8 --test 2 --broken corrupt_mp3,missing_audio
  python -m whisper_k8s dataset prepare --source /data/common_voice_11_0 --out /data/cv11-hi-v3 --lang hi \\
      --split train,test --processor /models/whisper-large-v3 --preset large-v3
  python -m whisper_k8s dataset check /data/common_voice_11_0 --lang hi --split train,test
  python -m whisper_k8s dataset prepare --source /data/cv11 --out /data/cv11-hi-v3 --lang hi \\
      --processor /models/whisper-large-v3 --preset large-v3 --parallel 4
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from whisper_k8s.dataset.synth import BROKEN_KINDS, DEFAULT_SHARD_SIZE

    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    synth = sub.add_parser(
        "synth",
        help="speak generated sentences with espeak-ng/flite into a Common Voice 11 tree (MP3 48 kHz in tars)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="broken-sample kinds (one extra train row each):\n"
        + "\n".join(f"  {kind:<20} {text}" for kind, text in BROKEN_KINDS.items()),
    )
    synth.add_argument("--out", required=True, help="root folder to create (written atomically)")
    synth.add_argument(
        "--lang", default="en", help="Common Voice locale(s): en, hi, or a comma list (default en)"
    )
    synth.add_argument("--train", type=int, default=16, help="clips in the train split (default 16)")
    synth.add_argument("--test", type=int, default=4, help="clips in the test split (default 4)")
    synth.add_argument("--dev", type=int, default=0, help="clips in the dev split (default 0)")
    synth.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    synth.add_argument("--broken", default="", help="comma list of broken-sample kinds to add (see below)")
    synth.add_argument(
        "--shard-size",
        type=int,
        default=DEFAULT_SHARD_SIZE,
        help=f"clips per tar shard (default {DEFAULT_SHARD_SIZE})",
    )
    synth.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    from whisper_k8s.cli._prepare import add_prepare

    add_prepare(sub)
    check = sub.add_parser("check", help="say which languages and splits a folder holds as a valid Common Voice 11 "
                                         "tree, or what is missing (exit 2 when a requested one is not held)")
    check.add_argument("root", metavar="DIR")
    check.add_argument("--lang", help="languages that must be held (comma list)")
    check.add_argument("--split", help="splits that must be held (comma list)")


def run(args: argparse.Namespace) -> int:
    if args.dataset_command == "check":
        from whisper_k8s.dataset.tree_check import print_check

        return print_check(args.root, args.lang.split(",") if args.lang else None,
                           args.split.split(",") if args.split else None)
    if args.dataset_command == "prepare":
        from whisper_k8s.cli._prepare import run_prepare

        return run_prepare(args)
    from whisper_k8s.dataset.synth import synthesize

    result = synthesize(
        args.out,
        lang=args.lang,
        train=args.train,
        test=args.test,
        dev=args.dev,
        seed=args.seed,
        broken=args.broken,
        shard_size=args.shard_size,
        overwrite=args.force,
    )
    for lang in result.langs:
        rows = ", ".join(f"{split} {n}" for split, n in result.rows[lang].items() if n)
        print(f"{lang}: {rows} clips in {sum(result.n_shards[lang].values())} shard(s)")
    for sample in result.broken:
        print(f"broken {sample['kind']}: {sample['lang']}/{sample['split']} {sample['path']}")
    print(f"wrote Common Voice 11 tree to {result.root}")
    return 0
