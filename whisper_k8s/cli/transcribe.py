"""`transcribe`: speech to text with a trained (or converted) Whisper, for audio files of any length."""

from __future__ import annotations

import argparse
import json

from whisper_k8s.cli._model_options import add_model_options

NAME = "transcribe"
HELP = "transcribe MP3/WAV/FLAC files with a Whisper checkpoint (HF folder, MindSpeed-MM .pth or Megatron folder)"
ORDER = 60
EXAMPLES = """
  python -m whisper_k8s transcribe --model runs/demo/hf talk.mp3 interview.flac
  python -m whisper_k8s transcribe --model /outputs/checkpoints --processor /outputs/processor \\
      --language hi --device npu clip.wav
  python -m whisper_k8s transcribe --model runs/demo/outputs/checkpoints --processor runs/demo/processor \\
      --json *.wav > transcripts.jsonl
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("audio", nargs="+", metavar="AUDIO", help="MP3, WAV or FLAC files (any length)")
    add_model_options(parser, batch_help="30 s windows decoded together (default 8)")
    parser.add_argument("--language", help="language code such as en or hi (default: detected per file)")
    parser.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")


def run(args: argparse.Namespace) -> int:
    from whisper_k8s.inference.transcribe import load_model, load_processor, transcribe_files

    model = load_model(args.model, args.device, config=args.model_config)
    processor = load_processor(args.model, args.processor)
    results = transcribe_files(
        model, processor, args.audio, language=args.language, batch_size=args.batch_size,
        num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, task=args.task,
    )
    for result in results:
        if args.json:
            print(json.dumps(result.as_dict(), ensure_ascii=False))
        else:
            how = "detected" if result.language_detected else "given"
            print(f"{result.path} [{result.language}, {how}, {result.duration_s:.1f} s]: {result.text}")
    return 0
