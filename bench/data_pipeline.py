"""Benchmark: training-data throughput per CPU core, our pipeline against the usual Hugging Face path.

Both read the same generated Common Voice 11 shards (real synthetic speech, 48 kHz MP3 in tar) and produce
the same thing, a collated batch of 8: log-mel features [8, 128, 3000] and padded label ids.

- ours: ``whisper_trainer.data.build_dataloader`` in the calling process (``num_workers=0``): tar member
  ``pread``, MP3 decode, soxr resample, batched log-mel that skips the all-zero 30 s padding, ``tokenizers``
  encode, collate.
- baseline (the recipe of the Hugging Face Whisper fine-tuning blog): tar members streamed with ``tarfile``,
  ``librosa.load(sr=16000)``, ``WhisperFeatureExtractor`` per sample, ``WhisperTokenizer`` from the processor
  folder, then stack/pad into the batch.
- decode floor: libsndfile MP3 decode alone (no resampling, features or labels); nothing can beat it.

Every path is measured on the generated clips (~2 s: the headline figures) and again on clips of Common
Voice's typical length (~5-6 s, three generated clips joined), since decoding grows with length while the
baseline's 30 s feature cost does not. One thread (``torch.set_num_threads(1)``, OMP/BLAS
threads 1), one process, timed in CPU seconds of this process (``time.process_time``): samples per CPU-second
is the per-core rate, and it stays meaningful on a machine shared with other work, where wall time does not. Each path runs ``--repeats``
times, interleaved, and the best run counts (the machine may be shared). Features of both paths are compared
sample by sample (max abs diff). From our per-core rate at CV length the script sizes a node of 8 Ascend NPUs: it prints and
stores the CPU request and dataloader workers per rank that keep them fed, using an ASSUMED NPU consumption of
1.5 samples/s per NPU for whisper-large-v3 at micro batch 8 (MindSpeed-MM publishes no figure; the trainer
benchmark may refine it).
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import os
import platform
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "data_pipeline.json"
BATCH = 8
N_MELS = 128
ASSUMED_NPU_SAMPLES_PER_S = 1.5  # whisper-large-v3, micro batch 8, Ascend 910B: an assumption, see docstring
NPUS_PER_NODE = 8
SAFETY = 2.0  # headroom for longer clips, slower disks and the training process's own host work


def read_members(dataset: Path) -> dict[str, bytes]:
    """TSV path -> MP3 bytes of the train split, streamed from the tars (the baseline's reader)."""
    clips = {}
    for shard in sorted((dataset / "audio" / "en" / "train").glob("*.tar")):
        with tarfile.open(shard, mode="r|") as tar:
            for member in tar:
                clips[Path(member.name).name] = tar.extractfile(member).read()
    return clips


def join_into_cv_length_clips(dataset: Path, out: Path, per_clip: int = 3) -> Path:
    """A second tree whose clips join ``per_clip`` consecutive synthetic clips (~5-6 s, Common Voice's typical
    length; the synthetic ones are ~2 s), so per-core rates and node sizing are also measured at real lengths."""
    import numpy as np

    from whisper_k8s.dataset import common_voice_layout as cv
    from whisper_k8s.dataset.speech import decode_mp3, to_common_voice_mp3

    rows = cv.read_transcript(cv.transcript_path(dataset, "en", "train"))
    clips = read_members(dataset)
    shard = cv.shard_path(out, "en", "train", 0)
    shard.parent.mkdir(parents=True)
    lines = ["\t".join(cv.TSV_COLUMNS)]
    with tarfile.open(shard, "w") as tar:
        for number, start in enumerate(range(0, len(rows) - per_clip + 1, per_clip)):
            group = rows[start : start + per_clip]
            audio = np.concatenate([decode_mp3(clips[row["path"]])[0] for row in group])
            data = to_common_voice_mp3(audio, cv.SAMPLE_RATE)
            path = cv.clip_file_name("en", number)
            member = tarfile.TarInfo(cv.member_name("en", "train", 0, path))
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
            lines.append(cv.format_tsv_row({**group[0], "path": path,
                                            "sentence": " ".join(row["sentence"] for row in group)}))
    transcript = cv.transcript_path(out, "en", "train")
    transcript.parent.mkdir(parents=True)
    transcript.write_text("\n".join(lines) + "\n")
    (out / cv.N_SHARDS_FILE).write_text(json.dumps({"en": {"train": 1}}))
    return out


def measure(dataset: Path, processor: Path, repeats: int) -> dict:
    """Best-of-``repeats`` rates of the three paths on one tree, plus the features' max abs difference."""
    from whisper_k8s.dataset.common_voice_layout import read_transcript, transcript_path

    texts = {row["path"]: row["sentence"] for row in read_transcript(transcript_path(dataset, "en", "train"))}
    clips = read_members(dataset)
    rates = {"ours": [], "baseline": [], "decode_floor": []}
    for _ in range(repeats):  # interleaved, so a burst of load on a shared machine hits all three alike
        ours, our_features = run_ours(dataset, processor, len(clips))
        baseline, hf_features = run_baseline(dataset, processor, texts)
        rates["ours"].append(ours)
        rates["baseline"].append(baseline)
        rates["decode_floor"].append(run_decode_floor(clips))
    best = {name: max(values) for name, values in rates.items()}
    return {
        "ours": round(best["ours"], 2),
        "baseline": round(best["baseline"], 2),
        "ratio": round(best["ours"] / best["baseline"], 2),
        "decode_floor": round(best["decode_floor"], 2),
        "ours_share_of_floor": round(best["ours"] / best["decode_floor"], 2),
        "features_max_abs_diff": max(float((our_features[p] - hf_features[p]).abs().max()) for p in hf_features),
        "samples": len(clips),
        "mean_clip_seconds": round(mean_clip_seconds(clips), 2),
        "runs": {name: [round(v, 2) for v in values] for name, values in rates.items()},
    }


def run_ours(dataset: Path, processor: Path, num_samples: int):
    """(samples/s, {path: features}) over exactly one epoch's worth of samples, after one warm-up batch."""
    from whisper_trainer.data import build_dataloader

    loader = build_dataloader(str(dataset), ["en"], "train", str(processor), n_mels=N_MELS, rank=0, world_size=1,
                              micro_batch_size=BATCH, num_workers=0, seed=0, shuffle=False, return_paths=True)
    batches = iter(loader)
    next(batches)  # warm-up: the stream opens its tokenizer and shards
    features, done = {}, 0
    start = time.process_time()
    while done < num_samples:
        batch = next(batches)
        done += batch["num_samples"]
        features.update(zip(batch["paths"], batch["input_features"], strict=True))
    return done / (time.process_time() - start), features


def run_baseline(dataset: Path, processor: Path, texts: dict[str, str]):
    """(samples/s, {path: features}): librosa + WhisperFeatureExtractor + WhisperTokenizer, batches of 8."""
    import librosa
    import torch
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    extractor = WhisperFeatureExtractor.from_pretrained(str(processor))
    tokenizer = WhisperTokenizer.from_pretrained(str(processor), language="en", task="transcribe")
    librosa.load(io.BytesIO(next(iter(read_members(dataset).values()))), sr=16000)  # warm-up: lazy imports
    features, pending = {}, []
    start = time.process_time()
    for shard in sorted((dataset / "audio" / "en" / "train").glob("*.tar")):
        with tarfile.open(shard, mode="r|") as tar:
            for member in tar:
                path = Path(member.name).name
                audio, _ = librosa.load(io.BytesIO(tar.extractfile(member).read()), sr=16000)
                feats = extractor(audio, sampling_rate=16000, return_tensors="pt").input_features[0]
                labels = torch.tensor(tokenizer(texts[path]).input_ids[1:])
                pending.append((path, feats, labels))
                if len(pending) == BATCH:
                    _collate_baseline(pending, features)
                    pending = []
    if pending:
        _collate_baseline(pending, features)
    return len(features) / (time.process_time() - start), features


def _collate_baseline(pending, features: dict) -> dict:
    import torch
    from torch.nn.utils.rnn import pad_sequence

    batch = {"input_features": torch.stack([f for _, f, _ in pending]),
             "labels": pad_sequence([lab for _, _, lab in pending], batch_first=True, padding_value=-100)}
    features.update((path, feats) for (path, _, _), feats in zip(pending, batch["input_features"], strict=True))
    return batch


def run_decode_floor(clips: dict[str, bytes]) -> float:
    import soundfile

    start = time.process_time()
    for data in clips.values():
        soundfile.read(io.BytesIO(data), dtype="float32")
    return len(clips) / (time.process_time() - start)


def mean_clip_seconds(clips: dict[str, bytes]) -> float:
    import soundfile

    return sum(soundfile.info(io.BytesIO(d)).duration for d in clips.values()) / len(clips)


def node_sizing(ours_per_core_at_cv_length: float) -> dict:
    """CPU request and dataloader workers per rank for 8 NPUs, from our per-core rate on CV-length clips."""
    node_demand = ASSUMED_NPU_SAMPLES_PER_S * NPUS_PER_NODE
    # At least 2 workers per rank so one decodes while the other's batch is consumed (prefetch never runs dry).
    workers = max(2, math.ceil(SAFETY * ASSUMED_NPU_SAMPLES_PER_S / ours_per_core_at_cv_length))
    return {
        "assumed_npu_samples_per_s": ASSUMED_NPU_SAMPLES_PER_S,
        "assumption": "whisper-large-v3, micro batch 8, Ascend 910B: assumed (MindSpeed-MM publishes no figure; "
                      "the trainer benchmark may refine it)",
        "node_demand_samples_per_s": node_demand,
        "data_cores_needed": round(node_demand / ours_per_core_at_cv_length, 2),
        "recommended_num_workers": workers,
        "recommended_cpu_per_8_npus": NPUS_PER_NODE * (workers + 1),  # + 1 core per rank for the trainer itself
        "recommended_shm_mib_per_8_npus": shared_memory_mib(workers),
        "sizing_rule": f"workers/rank = max(2, ceil({SAFETY} x NPU rate / per-core rate at CV clip length)); "
                       "CPUs = 8 x (workers + 1 for the rank's training process)",
    }


def shared_memory_mib(workers: int, prefetch_factor: int = 2) -> int:
    """/dev/shm a node needs: each rank's workers hold prefetch_factor batches each, plus one in hand, in shared
    memory; twice that, in 256 MiB steps (Kubernetes gives pods 64 MiB unless the chart mounts more)."""
    batch_bytes = BATCH * N_MELS * 3000 * 4
    needed = NPUS_PER_NODE * (workers * prefetch_factor + 1) * batch_bytes
    return math.ceil(2 * needed / 2**28) * 256


def machine() -> dict:
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"platform": platform.platform(), "cpu": model, "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=96, help="train clips to generate (default 96)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each path; the best counts (default 3)")
    parser.add_argument("--dataset", type=Path, help="an existing Common Voice tree (en/train) instead of a new one")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")  # before numpy/torch load: every path runs on one core
    import torch

    torch.set_num_threads(1)
    from whisper_k8s.assets.processor import write_processor
    from whisper_k8s.dataset.synth import synthesize

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        dataset = args.dataset or Path(synthesize(Path(tmp) / "cv", lang="en", train=args.samples, test=0, seed=0))
        processor = Path(tmp) / "processor"
        write_processor(processor, variant="large-v3")
        info = machine()
        generated = measure(dataset, processor, args.repeats)
        cv_length = measure(join_into_cv_length_clips(dataset, Path(tmp) / "cv-length"), processor, args.repeats)

    max_diff = max(generated["features_max_abs_diff"], cv_length["features_max_abs_diff"])
    result = {
        "name": "data_pipeline",
        "unit": "samples per CPU-second of one single-threaded process (= per core), best of repeats",
        **{key: generated[key] for key in ("ours", "baseline", "ratio", "decode_floor")},
        "generated_clips": generated,
        "cv_length_clips": cv_length,
        "batch": BATCH,
        "n_mels": N_MELS,
        "baseline_description": "tarfile stream + librosa.load(sr=16000) + WhisperFeatureExtractor + "
                                "WhisperTokenizer per sample, stacked/padded in batches of 8",
        "target": "ratio >= 3 with features equal (max abs diff < 1e-4)",
        "target_met": generated["ratio"] >= 3 and max_diff < 1e-4,
        **node_sizing(cv_length["ours"]),
        "machine": info,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"data_pipeline: ours {result['ours']} samples/s/core vs HF {result['baseline']} "
          f"(x{result['ratio']}), MP3 decode floor {result['decode_floor']} ({generated['mean_clip_seconds']} s "
          f"clips); at CV length ({cv_length['mean_clip_seconds']} s) ours {cv_length['ours']} vs HF "
          f"{cv_length['baseline']} (x{cv_length['ratio']}), floor {cv_length['decode_floor']}; "
          f"features max diff {max_diff:.1e}; "
          f"8 NPUs at an assumed {ASSUMED_NPU_SAMPLES_PER_S}/s each need {result['data_cores_needed']} data cores: "
          f"recommend {result['recommended_num_workers']} workers/rank, "
          f"{result['recommended_cpu_per_8_npus']} CPUs and {result['recommended_shm_mib_per_8_npus']} MiB /dev/shm per 8-NPU node")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
