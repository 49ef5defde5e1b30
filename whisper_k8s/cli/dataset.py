"""`dataset`: make Common Voice 11 trees (`synth`) and precompute their features for training (`prepare`)."""

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
    _add_prepare(sub)


def _add_prepare(sub) -> None:
    from whisper_k8s.chart import presets_text
    from whisper_k8s.dataset.prepare import DEFAULT_SHARD_SIZE

    prepare = sub.add_parser(
        "prepare",
        help="compute log-mel features and labels once into shards the trainer reads instead of decoding MP3 "
             "(multi-epoch pretraining); point data.json's dataset_name_or_path at --out",
    )
    prepare.add_argument("--source", required=True, help="Common Voice 11 root (audio/, transcript/, n_shards.json)")
    prepare.add_argument("--out", required=True,
                         help="folder for the prepared shards; re-running with the same arguments resumes")
    prepare.add_argument("--lang", required=True, help="Common Voice locale(s), comma list")
    prepare.add_argument("--split", default="train", help="split(s), comma list (default train)")
    prepare.add_argument("--processor", required=True, help="Hugging Face Whisper processor folder")
    geometry = prepare.add_mutually_exclusive_group()
    geometry.add_argument("--preset", help=f"chart model preset giving n_mels and the window: "
                                           f"{presets_text()} (default large-v3)")
    geometry.add_argument("--n-mels", type=int, help="mel bins (the model's num_mel_bins; 30 s window)")
    prepare.add_argument("--task", default="transcribe", choices=("transcribe", "translate"))
    prepare.add_argument("--workers", type=int, help="processes (default: all cores)")
    prepare.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                         help=f"transcript rows per shard (default {DEFAULT_SHARD_SIZE})")


def run(args: argparse.Namespace) -> int:
    if args.dataset_command == "prepare":
        return _run_prepare(args)
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


def _run_prepare(args: argparse.Namespace) -> int:
    from whisper_k8s.dataset.prepare import prepare, preset_geometry

    n_mels, n_frames = (args.n_mels, 3000) if args.n_mels else preset_geometry(args.preset or "large-v3")
    result = prepare(args.source, args.out, languages=args.lang, splits=args.split, processor_dir=args.processor,
                     n_mels=n_mels, n_frames=n_frames, task=args.task, workers=args.workers,
                     shard_size=args.shard_size)
    skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(result.skipped.items())) or "none"
    print(f"prepared {result.usable} of {result.samples} samples ({n_mels} mels, {n_frames} frames) in "
          f"{result.seconds:.1f} s: {result.shards_written} shard(s) written, {result.shards_kept} kept from an "
          f"earlier run, {result.feature_bytes / 2**20:.1f} MiB, "
          f"{1000 * result.shard_cpu_seconds / max(1, result.samples_written):.1f} ms CPU per sample written; "
          f"skipped: {skipped}")
    print(f"wrote {result.root}; set dataset_name_or_path in data.json to it")
    return 0
