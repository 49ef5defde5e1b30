"""`evaluate`: WER and CER of a Whisper checkpoint on a Common Voice 11 split, Whisper-normalised."""

from __future__ import annotations

import argparse

from whisper_k8s.cli._model_options import add_model_options, decoding_arguments

NAME = "evaluate"
HELP = "WER/CER of a checkpoint (HF folder, MindSpeed-MM .pth or Megatron folder) on a Common Voice split"
ORDER = 61
EXAMPLES = """
  python -m whisper_k8s evaluate --model runs/demo/hf --dataset runs/demo/dataset --language en --split train
  python -m whisper_k8s evaluate --model /outputs/checkpoints --processor /outputs/processor \\
      --dataset /data/common_voice_11_0 --language hi --split test --limit 500 --out hi-test.jsonl
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser, batch_help="clips decoded together (default 8)")
    parser.add_argument("--dataset", required=True, metavar="CV_DIR",
                        help="Common Voice 11 root (audio/, transcript/, n_shards.json)")
    parser.add_argument("--language", required=True, help="Common Voice locale, e.g. hi, en, zh-CN")
    parser.add_argument("--split", default="test", help="train, dev, test, ... (default test)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N usable samples")
    parser.add_argument("--out", metavar="FILE",
                        help="per-sample results as JSON lines (texts, errors, segments with start/end times)")


def run(args: argparse.Namespace) -> int:
    from whisper_k8s.inference.evaluate import evaluate_dataset

    summary = evaluate_dataset(
        args.model, args.dataset, args.language, args.split, processor_dir=args.processor, limit=args.limit,
        out_path=args.out, device=args.device, dtype=args.dtype, model_config=args.model_config,
        **decoding_arguments(args),
    )
    print(summary.line())
    return 0
