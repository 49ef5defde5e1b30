"""``dataset prepare``'s options and run: one process, N local processes (``--parallel``), or one share of an
Indexed Job (``--count N`` with ``--index`` or $JOB_COMPLETION_INDEX), and ``--finalize``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_prepare(sub) -> None:
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
    geometry.add_argument("--preset", help=f"chart model preset giving n_mels and the window: {presets_text()} "
                                           "(default large-v3)")
    geometry.add_argument("--n-mels", type=int, help="mel bins (the model's num_mel_bins; 30 s window)")
    prepare.add_argument("--task", default="transcribe", choices=("transcribe", "translate"))
    prepare.add_argument("--workers", type=int, help="processes per share (default: all cores, divided by --parallel)")
    prepare.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                         help=f"transcript rows per shard (default {DEFAULT_SHARD_SIZE})")
    share = prepare.add_mutually_exclusive_group()
    share.add_argument("--parallel", type=int, metavar="N",
                       help="N independent processes, each preparing and verifying every N-th shard; the manifest "
                            "is written once all N verified theirs")
    share.add_argument("--count", type=int, metavar="N",
                       help="prepare one share of N (an Indexed Job's pod; the index from --index or "
                            "$JOB_COMPLETION_INDEX)")
    prepare.add_argument("--index", type=int, help="this share's index, 0..N-1 (with --count)")
    prepare.add_argument("--finalize", action="store_true",
                         help="with --count N: write the manifest if all N shares verified theirs (idempotent)")


def _forwarded(args: argparse.Namespace) -> list[str]:
    """The options every share of a ``--parallel`` run gets."""
    forwarded = ["--source", args.source, "--out", args.out, "--lang", args.lang, "--split", args.split,
                 "--processor", args.processor, "--task", args.task, "--shard-size", str(args.shard_size)]
    return forwarded + (["--n-mels", str(args.n_mels)] if args.n_mels else ["--preset", args.preset or "large-v3"])


def run_prepare(args: argparse.Namespace) -> int:
    from whisper_k8s.dataset import prepare_parallel as parallel
    from whisper_k8s.dataset.prepare import PrepareResult, plan_preparation, prepare, preset_geometry
    from whisper_k8s.errors import UserError

    n_mels, n_frames = (args.n_mels, 3000) if args.n_mels else preset_geometry(args.preset or "large-v3")
    options = dict(source=args.source, out=args.out, languages=args.lang, splits=args.split,
                   processor_dir=args.processor, n_mels=n_mels, n_frames=n_frames, task=args.task,
                   shard_size=args.shard_size)
    if (args.index is not None or args.finalize) and not args.count:
        raise UserError("--index and --finalize go with --count N (the number of shares)")
    if args.parallel is not None and args.parallel < 1 or args.count is not None and args.count < 1:
        raise UserError("--parallel/--count must be at least 1")
    if args.parallel:
        for output in parallel.run_local(args.parallel, _forwarded(args), workers=args.workers):
            print(output.splitlines()[0])
        totals = parallel.read_result(args.out)
        print(f"prepared {totals['usable']} of {totals['samples']} samples ({n_mels} mels, {n_frames} frames) with "
              f"{args.parallel} processes: {totals['shards']} shard(s), {totals['bytes'] / 2**20:.1f} MiB")
    elif args.finalize:
        result = PrepareResult(root=args.out)
        parallel.finalize(plan_preparation(workers=args.workers, **options), args.count, result)
        print(f"all {args.count} shares verified: wrote {args.out}/manifest.json ({result.usable} of "
              f"{result.samples} samples usable)")
    elif args.count:
        index = parallel.check_share(args.index, args.count)
        result = parallel.prepare_index(index, args.count, workers=args.workers, **options)
        print(f"share {index} of {args.count}: {result.shards_written} shard(s) written and "
              f"{result.shards_kept} kept, all verified, in {result.seconds:.1f} s")
    else:
        result = prepare(workers=args.workers, **options)
        skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(result.skipped.items())) or "none"
        print(f"prepared {result.usable} of {result.samples} samples ({n_mels} mels, {n_frames} frames) in "
              f"{result.seconds:.1f} s: {result.shards_written} shard(s) written, {result.shards_kept} kept from an "
              f"earlier run, {result.feature_bytes / 2**20:.1f} MiB, "
              f"{1000 * result.shard_cpu_seconds / max(1, result.samples_written):.1f} ms CPU per sample written; "
              f"skipped: {skipped}")
    if (Path(args.out) / "manifest.json").is_file():
        print(f"wrote {args.out}; set dataset_name_or_path in data.json to it")
    else:
        print(f"{args.out}: the manifest follows when every share has verified its shards")
    return 0
