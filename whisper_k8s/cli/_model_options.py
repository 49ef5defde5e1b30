"""Options shared by the commands that load a Whisper checkpoint and decode with it (transcribe, evaluate)."""

from __future__ import annotations

import argparse


def add_model_options(parser: argparse.ArgumentParser, *, batch_help: str) -> None:
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="Hugging Face folder, MindSpeed-MM .pth, or Megatron checkpoint folder")
    parser.add_argument("--processor", metavar="DIR", help="Whisper processor folder (default: the model folder)")
    parser.add_argument("--batch-size", type=int, default=8, help=batch_help)
    parser.add_argument("--num-beams", type=int, default=1, help="beam width; 1 = greedy (default)")
    parser.add_argument("--max-new-tokens", type=int, metavar="N",
                        help="text tokens per 30 s window (default 224, at most 444)")
    parser.add_argument("--model-config", metavar="JSON",
                        help="model.json for a .pth/Megatron checkpoint that matches no preset")
    parser.add_argument("--device", default="auto", choices=("auto", "npu", "cuda", "cpu"))
