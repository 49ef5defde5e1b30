"""`assets`: write the offline Whisper assets the jobs need: the Hugging Face processor folder, and a Hugging
Face model folder from a CTranslate2 (faster-whisper) model."""

from __future__ import annotations

import argparse

NAME = "assets"
HELP = "write offline Whisper assets (processor folder; HF model from faster-whisper) without network access"
ORDER = 60
EXAMPLES = """
  python -m whisper_k8s assets processor --out runs/processor/whisper-large-v3
  python -m whisper_k8s assets processor --out runs/processor/whisper-tiny.en --variant en
  python -m whisper_k8s assets from-ctranslate2 /models/faster-whisper-tiny.en --out runs/models/whisper-tiny.en
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
    ct2 = sub.add_parser(
        "from-ctranslate2",
        help="a CTranslate2/faster-whisper model folder (model.bin) -> Hugging Face Whisper folder with processor",
    )
    ct2.add_argument("src", metavar="SRC", help="faster-whisper model folder (model.bin, config.json) or model.bin")
    ct2.add_argument("--out", required=True, help="Hugging Face folder to write (created atomically)")
    ct2.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), help="cast the weights (default: keep)")
    ct2.add_argument("--sha256", metavar="HEX", help="refuse a model.bin whose sha256 differs")
    ct2.add_argument("--force", action="store_true", help="replace a non-empty --out folder")


def run(args: argparse.Namespace) -> int:
    if args.asset == "from-ctranslate2":
        from whisper_k8s.assets.ctranslate2 import convert_ctranslate2

        out = convert_ctranslate2(args.src, args.out, dtype=args.dtype, force=args.force,
                                  expected_sha256=args.sha256)
        print(f"wrote Hugging Face Whisper model (with its processor) from {args.src} to {out}")
        return 0
    from whisper_k8s.assets.processor import vocab_size, write_processor

    out = write_processor(args.out, variant=args.variant, overwrite=args.force)
    print(f"wrote Whisper {args.variant} processor (vocabulary {vocab_size(args.variant)}) to {out}")
    return 0
