"""`evaluate`: WER and CER of a Whisper checkpoint on a Common Voice 11 split, Whisper-normalised."""

from __future__ import annotations

import argparse

NAME = "evaluate"
HELP = "WER/CER of a checkpoint (HF folder, MindSpeed-MM .pth or Megatron folder) on a Common Voice split"
ORDER = 61
EXAMPLES = """
  python -m whisper_k8s evaluate --model runs/demo/hf --dataset runs/demo/cv --language en --split train
  python -m whisper_k8s evaluate --model /outputs/checkpoints --processor /outputs/processor \\
      --dataset /data/common_voice_11_0 --language hi --split test --limit 500 --out hi-test.jsonl
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="Hugging Face folder, MindSpeed-MM .pth, or Megatron checkpoint folder")
    parser.add_argument("--dataset", required=True, metavar="CV_DIR",
                        help="Common Voice 11 root (audio/, transcript/, n_shards.json)")
    parser.add_argument("--language", required=True, help="Common Voice locale, e.g. hi, en, zh-CN")
    parser.add_argument("--split", default="test", help="train, dev, test, ... (default test)")
    parser.add_argument("--processor", metavar="DIR", help="Whisper processor folder (default: the model folder)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N usable samples")
    parser.add_argument("--out", metavar="FILE", help="per-sample results as JSON lines")
    parser.add_argument("--batch-size", type=int, default=8, help="clips decoded together (default 8)")
    parser.add_argument("--num-beams", type=int, default=1, help="beam width; 1 = greedy (default)")
    parser.add_argument("--max-new-tokens", type=int, metavar="N",
                        help="text tokens per 30 s window (default 224, at most 444)")
    parser.add_argument("--model-config", metavar="JSON",
                        help="model.json for a .pth/Megatron checkpoint that matches no preset")
    parser.add_argument("--device", default="auto", choices=("auto", "npu", "cuda", "cpu"))


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
