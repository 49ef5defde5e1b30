"""``demo``: the end-to-end demo (what ``make demo`` runs)."""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = "run the end-to-end demo: synthetic Common Voice -> local 2-node training -> collect -> evaluate"
ORDER = 90
EXAMPLES = """
  python -m whisper_k8s demo                      # outputs under runs/demo/
  python -m whisper_k8s demo --iterations 600     # train longer
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from whisper_k8s.demo import DemoSettings

    defaults = DemoSettings()
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--nodes", type=int, default=defaults.nodes, help="local nodes (pods)")
    parser.add_argument("--iterations", type=int, default=defaults.iterations, help="training iterations")
    parser.add_argument("--train-clips", type=int, default=defaults.train_clips, help="training sentences")


def run(args: argparse.Namespace) -> int:
    from whisper_k8s.demo import DemoSettings, run_demo

    run_demo(args.out, DemoSettings(nodes=args.nodes, iterations=args.iterations, train_clips=args.train_clips))
    return 0
