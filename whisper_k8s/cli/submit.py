"""`submit`: build the chart values (Helm merges them), render the chart (which validates them once), keep
the values and start the job."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from whisper_k8s import chart
from whisper_k8s.cli import _jobs
from whisper_k8s.operators import CONTRACTS, DEFAULT_OPERATOR

NAME = "submit"
HELP = "start (or upgrade) a Whisper pretraining job from chart values, flags and --set"
ORDER = 10
EXAMPLES = """
  python -m whisper_k8s submit --name whisper-hi --nodes 2 --npus-per-node 8 --language hi \\
      --image registry.example.com/whisper-k8s:0.1.0 --dataset common-voice-pvc
  python -m whisper_k8s submit --name demo --local --nodes 2 --accelerator cpu -f examples/tiny.yaml \\
      --dataset "$PWD/runs/data/common_voice_11_0" --follow
  python -m whisper_k8s submit --name demo --backend docker --nodes 2 --accelerator cpu \\
      --image localhost:5000/whisper-k8s:0.1.0-cpu --dataset /srv/common_voice_11_0 --follow
  python -m whisper_k8s submit --name whisper-hi -f runs/whisper-hi/values.yaml --set training.trainIters=600
  python -m whisper_k8s submit --name whisper-hi --nodes 16 --dry-run | kubectl apply --dry-run=server -f -
  python -m whisper_k8s submit --name whisper-v2 --nodes 2 --operator trainjob   # Kubeflow Trainer v2
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", type=_jobs.job_name, help="job/release name (default: whisper-<UTC time>)")
    parser.add_argument("--nodes", type=int, help="number of nodes (pods); 1 master + nodes-1 workers")
    parser.add_argument("--npus-per-node", type=int, help="accelerators (processes) per node")
    parser.add_argument("--accelerator", choices=("ascend", "nvidia", "cpu"), help="device type of the nodes")
    parser.add_argument("--image", help="training image, e.g. registry:5000/whisper-k8s:0.1.0")
    parser.add_argument("--dataset", help="Common Voice 11 root: an existing PVC name, or an absolute host path")
    parser.add_argument("--pretrained", help="pretrained HF model folder under /models to start from")
    parser.add_argument("--preset", help=f"model preset: {chart.presets_text()} (the chart's "
                                         "files/model-presets)")
    parser.add_argument("--language", help="Common Voice locale(s), e.g. hi or hi,en")
    parser.add_argument("--operator", choices=list(CONTRACTS),
                        help="job kind: PyTorchJob (training-operator v1) or TrainJob (Kubeflow Trainer v2); "
                             f"default: the one the cluster serves (local runs and dry runs: {DEFAULT_OPERATOR})")
    parser.add_argument("-f", "--values", dest="values_files", action="append", default=[], metavar="FILE",
                        help="chart values file (repeatable; later files win)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="set a chart value, Helm syntax: a.b=1, list[0]=x, a={x,y} (repeatable)")
    parser.add_argument("--set-string", dest="set_strings", action="append", default=[], metavar="KEY=VALUE",
                        help="like --set but the value is always a string")
    parser.add_argument("--values-out", metavar="FILE",
                        help="where to keep the values (default: runs/<name>/values.yaml)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the rendered manifests (what would be applied) and start nothing")
    parser.add_argument("--follow", action="store_true", help="stream the merged logs until the job ends")
    _jobs.add_backend_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from whisper_k8s import places, values
    from whisper_k8s.backends import AppRequest
    from whisper_k8s.cli.logs import stream

    name = args.name or datetime.now(timezone.utc).strftime("whisper-%Y%m%d-%H%M%S")
    user_values = values.build_values(args.values_files, vars(args), args.sets, args.set_strings)
    user_values.setdefault("fullnameOverride", name)  # the job is named like the release
    scheduler = _jobs.scheduler(args)
    if not args.dry_run:
        _jobs.choose_operator(scheduler, user_values)
    documents = chart.render(user_values, name, args.namespace)  # the one schema check
    values_file = Path(args.values_out) if args.values_out else values.default_values_path(name)
    request = AppRequest(name=name, namespace=args.namespace, values=user_values, documents=documents,
                         operator=user_values.get("operator", DEFAULT_OPERATOR), values_file=values_file)
    info = scheduler.dryrun(request)  # refuses what cannot run (e.g. a missing host folder) before any write
    values.write_values(user_values, values_file)
    if args.dry_run:
        print(info, end="")
        return 0
    place = _jobs.place_of(args, scheduler)
    kept = scheduler.deleted_job(name) or next(
        (p.kept for p in places.recorded(name) if p.key == place.key and p.deleted), ())
    handle = scheduler.schedule(info)
    places.record_submit(name, place)
    print(f"submitted {handle} (values kept in {values_file})", file=sys.stderr)
    if kept:
        print(f"resuming: job {name} mounts the outputs kept when it was deleted before ({'; '.join(kept)}); the "
              "trainer starts from their latest checkpoint (to start afresh, delete it with --purge-outputs and "
              "submit again)", file=sys.stderr)
    if not args.follow:
        print(f"next: `{_jobs.hint(scheduler, 'logs', name, '-f')}` | `{_jobs.hint(scheduler, 'status', name)}`",
              file=sys.stderr)
        return 0
    return stream(scheduler, name, follow=True, wait=True)
