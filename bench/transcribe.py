"""Benchmark: transcription quality and speed, ours against transformers' own Whisper generation.

Same machine, same model, same audio, same text normalisation (Whisper's English normaliser), run in one
process with the measurements interleaved (a shared machine's load changes between runs; medians of
``--repeats``):

- long: one recording of ``--sentences`` flite sentences with pauses (~2.5 min for 39, several sentences
  across the 30 s window edges), transcribed as one file:
  - ours: ``transcribe_audio`` with its defaults (sequential long-form decoding with timestamps, greedy,
    temperature fallback, no-speech skipping);
  - transformers: ``model.generate(full-length features, attention_mask, return_timestamps=True)``, the
    sequential long-form generation that its ASR pipeline runs for audio over 30 s;
  - ours in plain 30 s windows (``timestamps=False``): the previous behaviour, for reference;
  - both with the previous text as context (Whisper's own default; ours and transformers' default is off):
    ours with ``condition_on_previous_text=True``, transformers with ``condition_on_prev_tokens=True`` and
    Whisper's temperature fallback and thresholds (ours has them on by default);
- short: every sentence as its own clip (``--batch-size`` clips decoded together):
  - ours: ``transcribe_audio`` on the clips (default settings);
  - transformers: ``model.generate`` on the clips' padded 30 s features (its short-form default).

Reported per case: WER and CER, median wall seconds (features included) and real-time factor (seconds of
processing per second of audio; below 1 is faster than real time), and the same for the process's CPU time
(on a shared machine the wall time swings with the neighbours' load; ``--threads 1`` keeps it steadiest). The model is OpenAI's tiny.en from the
pinned package (``whisper_k8s.assets.pretrained``) unless ``--model`` names another Hugging Face folder. Prints
one summary line and writes bench/results/transcribe.json, with our long-form segments (the README shows them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "trainer")]
from host import host_info  # noqa: E402 (bench/, the script's own folder)

RESULTS = ROOT / "bench" / "results" / "transcribe.json"


# Whisper's safeguards as transformers' generate takes them (its defaults leave them off).
WHISPER_SETTINGS = {"temperature": (0.0, 0.2, 0.4, 0.6, 0.8, 1.0), "compression_ratio_threshold": 2.4,
                    "logprob_threshold": -1.0, "no_speech_threshold": 0.6}


def transformers_long(model, processor, audio, **settings) -> str:
    import torch

    device, dtype = model.device, model.dtype
    features = processor.feature_extractor(audio, sampling_rate=16_000, return_tensors="pt", truncation=False,
                                           padding="longest", return_attention_mask=True)
    with torch.inference_mode():
        out = model.generate(features.input_features.to(device, dtype), attention_mask=features.attention_mask.to(device),
                             return_timestamps=True, **settings)
    return processor.batch_decode(out, skip_special_tokens=True)[0]


def transformers_short(model, processor, clips, batch_size: int) -> list[str]:
    import torch

    texts = []
    for start in range(0, len(clips), batch_size):
        features = processor.feature_extractor(clips[start : start + batch_size], sampling_rate=16_000,
                                               return_tensors="pt").input_features
        with torch.inference_mode():
            out = model.generate(features.to(model.device, model.dtype))
        texts += processor.batch_decode(out, skip_special_tokens=True)
    return texts


def timed(fn):
    """``fn()``, its wall seconds and the process's CPU seconds (all threads; on a shared machine the CPU time
    is what varies least with the neighbours' load)."""
    import torch

    start, cpu_start = time.perf_counter(), time.process_time()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start, time.process_time() - cpu_start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="Hugging Face Whisper folder (default: OpenAI tiny.en, pinned)")
    parser.add_argument("--sentences", type=int, default=39)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "npu"))
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)

    import torch

    from whisper_k8s.assets.pretrained import tiny_en
    from whisper_k8s.dataset.recording import build_recording
    from whisper_k8s.inference.metrics import wer_cer
    from whisper_k8s.inference.transcribe import load_model, load_processor, transcribe_audio

    torch.set_num_threads(args.threads)
    model_dir = Path(args.model) if args.model else tiny_en(ROOT / "runs" / "models")
    model = load_model(model_dir, args.device, dtype=args.dtype)
    processor = load_processor(model_dir)
    recording = build_recording(args.sentences, seed=args.seed)
    clips = recording.clips()
    short_seconds = sum(c.size for c in clips) / 16_000

    cases = {
        ("long", "ours"): lambda: transcribe_audio(model, processor, [recording.audio])[0],
        ("long", "transformers"): lambda: transformers_long(model, processor, recording.audio),
        ("long", "ours_plain_windows"): lambda: transcribe_audio(model, processor, [recording.audio],
                                                                 timestamps=False)[0],
        ("long", "ours_condition_on_previous_text"): lambda: transcribe_audio(
            model, processor, [recording.audio], condition_on_previous_text=True)[0],
        ("long", "transformers_condition_on_previous_text"): lambda: transformers_long(
            model, processor, recording.audio, condition_on_prev_tokens=True, **WHISPER_SETTINGS),
        ("short", "ours"): lambda: transcribe_audio(model, processor, clips, batch_size=args.batch_size),
        ("short", "transformers"): lambda: transformers_short(model, processor, clips, args.batch_size),
    }
    seconds: dict = {case: [] for case in cases}
    cpu_seconds: dict = {case: [] for case in cases}
    outputs: dict = {}
    for _ in range(args.repeats):
        for case, fn in cases.items():
            outputs[case], took, cpu = timed(fn)
            seconds[case].append(took)
            cpu_seconds[case].append(cpu)

    def text(out):
        return out.text if hasattr(out, "text") else out

    result = {"machine": {**host_info(), "device": str(model.device), "dtype": str(model.dtype).removeprefix("torch."),
                          "torch_threads": args.threads},
              "config": {"model": str(model_dir.name), "sentences": args.sentences, "seed": args.seed,
                         "long_audio_s": round(recording.duration_s, 2), "short_audio_s": round(short_seconds, 2),
                         "repeats": args.repeats, "batch_size": args.batch_size},
              "long": {}, "short": {}}
    for (kind, who), out in outputs.items():
        if kind == "long":
            wer, cer = wer_cer([recording.text], [text(out)], "en")
            audio_s = recording.duration_s
        else:
            wer, cer = wer_cer(recording.sentences, [text(o) for o in out], "en")
            audio_s = short_seconds
        median, cpu = statistics.median(seconds[(kind, who)]), statistics.median(cpu_seconds[(kind, who)])
        result[kind][who] = {"wer": round(wer, 4), "cer": round(cer, 4), "seconds": round(median, 2),
                             "rtf": round(median / audio_s, 4), "cpu_seconds": round(cpu, 2),
                             "cpu_rtf": round(cpu / audio_s, 4),
                             "all_seconds": [round(s, 2) for s in seconds[(kind, who)]]}
    long_ours = outputs[("long", "ours")]
    result["long"]["ours"]["segments"] = [{"start": s.start, "end": s.end, "text": s.text} for s in long_ours.segments]
    result["reference_sentences"] = [{"start": round(a, 2), "end": round(b, 2), "text": t}
                                     for (a, b), t in zip(recording.spans, recording.sentences, strict=True)]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    long, short = result["long"], result["short"]
    print(f"transcribe {result['config']['model']} on {result['machine']['device']}: long {recording.duration_s:.0f} s "
          f"WER ours {long['ours']['wer']:.3f} (RTF {long['ours']['rtf']:.3f}, CPU {long['ours']['cpu_rtf']:.3f}) vs "
          f"transformers {long['transformers']['wer']:.3f} (RTF {long['transformers']['rtf']:.3f}, CPU "
          f"{long['transformers']['cpu_rtf']:.3f}), plain windows "
          f"{long['ours_plain_windows']['wer']:.3f}; with previous text ours "
          f"{long['ours_condition_on_previous_text']['wer']:.3f} vs transformers "
          f"{long['transformers_condition_on_previous_text']['wer']:.3f}; per sentence WER ours {short['ours']['wer']:.3f} "
          f"(RTF {short['ours']['rtf']:.3f}, CPU {short['ours']['cpu_rtf']:.3f}) vs transformers "
          f"{short['transformers']['wer']:.3f} (RTF {short['transformers']['rtf']:.3f}, CPU "
          f"{short['transformers']['cpu_rtf']:.3f}) -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
