"""Options shared by the commands that load a Whisper checkpoint and decode with it (transcribe, evaluate)."""

from __future__ import annotations

import argparse

TIMESTAMP_CHOICES = {"auto": None, "on": True, "off": False}


def add_model_options(parser: argparse.ArgumentParser, *, batch_help: str) -> None:
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="Hugging Face folder, MindSpeed-MM .pth, or Megatron checkpoint folder")
    parser.add_argument("--processor", metavar="DIR", help="Whisper processor folder (default: the model folder)")
    parser.add_argument("--batch-size", type=int, default=8, help=batch_help)
    parser.add_argument("--num-beams", type=int, default=1, help="beam width; 1 = greedy (default)")
    parser.add_argument("--max-new-tokens", type=int, metavar="N",
                        help="tokens per 30 s window (default 224, at most 444)")
    parser.add_argument("--timestamps", choices=tuple(TIMESTAMP_CHOICES), default="auto",
                        help="decode Whisper's timestamp tokens: segments with times, and long audio read where "
                             "the last complete segment ended (auto: when the model predicts them, as OpenAI's "
                             "do; models trained only on <|notimestamps|> labels are read in plain 30 s windows)")
    parser.add_argument("--model-config", metavar="JSON",
                        help="model.json for a .pth/Megatron checkpoint that matches no preset")
    parser.add_argument("--device", default="auto", choices=("auto", "npu", "cuda", "cpu"))
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="auto: fp32 on the CPU; on an accelerator the checkpoint's half precision, else fp16")


def decoding_arguments(args: argparse.Namespace) -> dict:
    """The transcribe_audio keyword arguments these options give."""
    return {"batch_size": args.batch_size, "num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens,
            "timestamps": TIMESTAMP_CHOICES[args.timestamps]}
