"""Entry point: ``torchrun ... -m whisper_trainer --mm-model model.json --mm-data data.json --save DIR ...``.

Also runs without torchrun as a single process. Configuration errors are reported in one line naming the
field (exit 2) before any process group, model or file is created.
"""

from __future__ import annotations

import logging
import sys

from whisper_k8s.errors import WhisperK8sError

log = logging.getLogger("whisper_trainer")


def main(argv: list[str] | None = None, loader_factory=None) -> int:
    from whisper_trainer.config import parse_args

    try:
        cfg = parse_args(argv)
    except WhisperK8sError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code

    from whisper_trainer import parallel
    from whisper_trainer.log import setup_logging
    from whisper_trainer.train import Trainer, default_loader_factory

    try:
        env = parallel.init_distributed(cfg.parallel.device, cfg.parallel.timeout_minutes,
                                        group_for_one=cfg.parallel.strategy == "fsdp")
    except WhisperK8sError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    setup_logging(env.rank, env.node_rank)
    try:
        trainer = Trainer(cfg, env, loader_factory or default_loader_factory)
        with trainer.progress.running():  # an error leaving here marks this rank's heartbeat failed
            trainer.setup()
            trainer.train()
    except WhisperK8sError as err:
        log.error("%s", err)
        return err.exit_code
    finally:
        parallel.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
