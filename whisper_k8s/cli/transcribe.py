"""`transcribe`: speech to text with a trained (or converted) Whisper, for audio files of any length."""

from __future__ import annotations

import argparse
import json

from whisper_k8s.cli._model_options import add_model_options, decoding_arguments

NAME = "transcribe"
HELP = "transcribe MP3/WAV/FLAC files with a Whisper checkpoint (HF folder, MindSpeed-MM .pth or Megatron folder)"
ORDER = 60
EXAMPLES = """
  python -m whisper_k8s transcribe --model runs/demo/hf talk.mp3 interview.flac
  python -m whisper_k8s transcribe --model runs/models/whisper-tiny.en --format srt --out subtitles/ talk.mp3
  python -m whisper_k8s transcribe --model /outputs/checkpoints --processor /outputs/processor \\
      --language hi --device npu clip.wav
  python -m whisper_k8s transcribe --model runs/demo/outputs/checkpoints --processor runs/demo/processor \\
      --format json *.wav > transcripts.jsonl
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("audio", nargs="+", metavar="AUDIO", help="MP3, WAV or FLAC files (any length)")
    add_model_options(parser, batch_help="windows decoded together, across files (default 8)")
    parser.add_argument("--language", help="language code such as en or hi (default: detected per file; "
                                           "English-only models need none)")
    parser.add_argument("--task", choices=("transcribe", "translate"), default="transcribe",
                        help="translate: speech in any language to English text (multilingual models)")
    parser.add_argument("--condition-on-previous-text", action="store_true",
                        help="give each window the text decoded so far as context (Whisper's option: more "
                             "consistent style, but a mistake can repeat)")
    parser.add_argument("--format", choices=("txt", "json", "srt", "vtt"), default="txt",
                        help="txt: text (one segment per line in files); json: segments with start, end and "
                             "average log-prob; srt/vtt: subtitles")
    parser.add_argument("--out", metavar="DIR",
                        help="write one file per input, DIR/<name>.<format> (default: print to stdout)")


def run(args: argparse.Namespace) -> int:
    from whisper_k8s.errors import UserError
    from whisper_k8s.inference.output import output_paths, render, write_results
    from whisper_k8s.inference.transcribe import load_model, load_processor, transcribe_files

    paths = output_paths(args.audio, args.format, args.out) if args.out else None
    if paths is None and args.format in ("srt", "vtt") and len(args.audio) > 1:
        raise UserError(f"--format {args.format} for {len(args.audio)} files: pass --out DIR (one file per input)")
    model = load_model(args.model, args.device, dtype=args.dtype, config=args.model_config)
    processor = load_processor(args.model, args.processor)
    results = transcribe_files(model, processor, args.audio, language=args.language, task=args.task,
                               condition_on_previous_text=args.condition_on_previous_text,
                               **decoding_arguments(args))
    if paths is not None:
        write_results(results, args.format, paths)
        for result, path in zip(results, paths, strict=True):
            print(f"{result.path} -> {path} ({len(result.segments)} segments, {result.duration_s:.1f} s)")
        return 0
    for result in results:
        if args.format == "json":
            print(json.dumps(result.as_dict(), ensure_ascii=False))
        elif args.format == "txt":
            how = "detected" if result.language_detected else "English-only model" if result.english_only else "given"
            print(f"{result.path} [{result.language}, {how}, {result.duration_s:.1f} s]: {result.text}")
        else:
            print(render(result, args.format), end="")
    return 0
