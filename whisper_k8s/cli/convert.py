"""`convert`: Hugging Face <-> MindSpeed-MM checkpoints (streaming, verified, idempotent) and `inspect`."""

from __future__ import annotations

import argparse

NAME = "convert"
HELP = "convert Whisper checkpoints between Hugging Face and MindSpeed-MM (.pth / Megatron), or inspect one"
ORDER = 50
EXAMPLES = """
  python -m whisper_k8s convert hf-to-mm /models/whisper-large-v3 /outputs/pretrained/whisper.pth
  python -m whisper_k8s convert hf-to-mm /models/whisper-large-v3 runs/pretrained-megatron --megatron --dtype bf16
  python -m whisper_k8s convert mm-to-hf runs/demo/outputs/checkpoints runs/demo/hf-converted --config helm/files/model-presets/tiny.json \\
      --processor runs/processor/whisper-large-v3
  python -m whisper_k8s convert inspect runs/demo/outputs/checkpoints/iter_0000300
"""
DTYPE_CHOICES = ("fp32", "bf16", "fp16")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, help="cast floating tensors (default: keep)")
    parser.add_argument("--force", action="store_true",
                        help="convert even if the marker says the output is current; replace a foreign DST")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--fsync", action="store_true",
                        help="wait until the output is on disk before renaming it into place (survives a power "
                             "loss; slower by the time the disk needs to write it)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="direction", metavar="ACTION", required=True)
    to_mm = sub.add_parser("hf-to-mm", help="Hugging Face folder/weights -> MindSpeed-MM .pth or Megatron folder")
    to_mm.add_argument("src", help="HF folder (model.safetensors[.index.json] / pytorch_model.bin) or file")
    to_mm.add_argument("dst", help="output .pth (model.json ckpt_path), or a folder with --megatron")
    to_mm.add_argument("--megatron", action="store_true",
                       help="write a Megatron save folder (release/mp_rank_00/model_optim_rng.pt + tracker)")
    to_mm.add_argument("--config", help="model.json/config.json when SRC carries no config.json")
    _common(to_mm)
    to_hf = sub.add_parser("mm-to-hf", help="MindSpeed-MM .pth / Megatron checkpoint -> Hugging Face folder")
    to_hf.add_argument("src", help=".pth, Megatron save folder (tracker), iter_* folder or model_optim_rng.pt")
    to_hf.add_argument("dst", help="output Hugging Face folder")
    to_hf.add_argument("--config", help="MindSpeed-MM model.json or HF config.json (needed when SRC has none "
                                        "and matches no chart preset)")
    to_hf.add_argument("--processor", help="processor folder to copy into DST (tokenizer, feature extractor)")
    _common(to_hf)
    look = sub.add_parser("inspect", help="format, tensors, parameters, dtype, model size and problems")
    look.add_argument("path", help="any checkpoint convert reads")
    look.add_argument("--config", help="check against this model.json/config.json")


def run(args: argparse.Namespace) -> int:
    from whisper_k8s import convert

    if args.direction == "inspect":
        report = convert.inspect_checkpoint(args.path, config=args.config)
        print("\n".join(report.lines()))
        return 1 if report.problems else 0
    if args.direction == "hf-to-mm":
        result = convert.convert_hf_to_mm(args.src, args.dst, dtype=args.dtype, megatron_layout=args.megatron,
                                          config=args.config, force=args.force, quiet=args.quiet,
                                          durable=args.fsync)
    else:
        result = convert.convert_mm_to_hf(args.src, args.dst, config=args.config, processor=args.processor,
                                          dtype=args.dtype, force=args.force, quiet=args.quiet,
                                          durable=args.fsync)
    print(result.summary())
    return 0
