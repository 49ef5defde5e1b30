"""`evaluate`: WER and CER of a Whisper checkpoint on a Common Voice 11 split, Whisper-normalised."""

from __future__ import annotations

import argparse

from whisper_k8s.cli._model_options import add_model_options

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
    parser.add_argument("--out", metavar="FILE", help="per-sample results as JSON lines")


def run(args: argparse.Namespace) -> int:
    from whisper_k8s.inference.evaluate import evaluate_dataset

    summary = evaluate_dataset(
        args.model, args.dataset, args.language, args.split, processor_dir=args.processor, limit=args.limit,
        out_path=args.out, batch_size=args.batch_size, device=args.device, num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
        model_config=args.model_config,
    )
    print(summary.line())
    return 0
