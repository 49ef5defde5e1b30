"""`collect`: the latest complete checkpoint of a job as a Hugging Face folder, with a training report."""

from __future__ import annotations

import argparse

from whisper_k8s.cli import _jobs

NAME = "collect"
HELP = ("fetch a job's latest complete checkpoint, convert it to a Hugging Face folder and write a report "
        "(report.md, loss.png)")
ORDER = 40
EXAMPLES = """
  python -m whisper_k8s collect whisper-hi --to ./whisper-hi
  python -m whisper_k8s collect demo --local --to ./demo-model
  python -m whisper_k8s collect whisper-hi --to ./whisper-hi --processor runs/processor/whisper-large-v3 --force
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _jobs.add_job_name(parser)
    parser.add_argument("--to", required=True, metavar="DIR",
                        help="output folder (WhisperForConditionalGeneration.from_pretrained loads it)")
    parser.add_argument("--processor", metavar="DIR",
                        help="WhisperProcessor folder to ship with the model (default: the job's own)")
    parser.add_argument("--model-json", metavar="FILE",
                        help="MindSpeed-MM model.json of the job (default: the job's ConfigMap copy)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --to folder")
    _jobs.add_backend_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from whisper_k8s.collect import collect

    backend = _jobs.job_scheduler(args)
    recorded = args.recorded_place
    if recorded is not None and recorded.deleted and not backend.deleted_job(args.name):
        _jobs.no_such_job(args, backend)  # where the outputs are kept, and how to reach them
    result = collect(backend, args.name, args.to, processor=args.processor,
                     model_json=args.model_json, force=args.force)
    print(f"collected {args.name} ({result.state}, iteration {result.iteration}) into {result.folder}")
    print(f"report: {result.report}")
    return 0
