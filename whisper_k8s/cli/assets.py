"""`assets`: write the offline Whisper assets the jobs need (today: the Hugging Face processor folder)."""

from __future__ import annotations

import argparse

NAME = "assets"
HELP = "write offline Whisper assets (the Hugging Face processor folder) without network access"
ORDER = 60
EXAMPLES = """
  python -m whisper_k8s assets processor --out runs/processor/whisper-large-v3
  python -m whisper_k8s assets processor --out runs/processor/whisper-tiny.en --variant en
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="asset", metavar="ASSET", required=True)
    processor = sub.add_parser(
        "processor",
        help="tokenizer + feature-extractor folder that WhisperProcessor.from_pretrained loads offline",
    )
    processor.add_argument("--out", required=True, help="folder to write (created atomically)")
    processor.add_argument(
        "--variant",
        default="large-v3",
        choices=["large-v3", "v2", "en"],
        help="large-v3: 100 languages, 128 mel bins (vocab 51866); v2: 99 languages, 80 bins (51865); "
        "en: English-only GPT-2 vocabulary, 80 bins (51864)",
    )
    processor.add_argument("--force", action="store_true", help="replace a non-empty --out folder")


def run(args: argparse.Namespace) -> int:
    from whisper_k8s.assets.processor import vocab_size, write_processor

    out = write_processor(args.out, variant=args.variant, overwrite=args.force)
    print(f"wrote Whisper {args.variant} processor (vocabulary {vocab_size(args.variant)}) to {out}")
    return 0
