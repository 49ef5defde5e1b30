"""Entry point of ``python -m whisper_k8s``: builds the parser from the subcommand modules and runs one."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from types import ModuleType

from whisper_k8s import __version__
from whisper_k8s.errors import WhisperK8sError

_NOT_SUBCOMMANDS = {"main"}


def _subcommand_modules() -> list[ModuleType]:
    import whisper_k8s.cli as package

    modules = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_") or info.name in _NOT_SUBCOMMANDS:
            continue
        module = importlib.import_module(f"whisper_k8s.cli.{info.name}")
        if hasattr(module, "add_arguments") and hasattr(module, "run"):
            modules.append(module)
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.NAME))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m whisper_k8s",
        description="Pretrain Whisper on Kubernetes (Ascend NPU, NVIDIA GPU or CPU) in MindSpeed-MM formats.",
    )
    parser.add_argument("--version", action="version", version=f"whisper-k8s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _subcommand_modules():
        examples = getattr(module, "EXAMPLES", "").strip("\n")
        child = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=module.HELP,
            epilog=f"examples:\n{examples}" if examples else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(child)
        child.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    if not args.debug:  # a failed call is explained in one line; the client's retry warnings would repeat it
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except WhisperK8sError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
