"""Backends: where a rendered job runs. ``get_scheduler(name, **kw)`` imports the one asked for lazily,
so the CLI starts without the `kubernetes` client (or torch) being imported.
"""

from __future__ import annotations

import importlib
from typing import Any

from whisper_k8s.backends.base import (
    AppRequest,
    Deleted,
    DryRunInfo,
    JobCondition,
    JobState,
    JobStatus,
    PodLogLine,
    PodStatus,
    Scheduler,
    make_handle,
    parse_handle,
)
from whisper_k8s.errors import UserError

# backend name -> (module, class); modules are imported only when their backend is used.
BACKENDS: dict[str, tuple[str, str]] = {
    "kubernetes": ("whisper_k8s.backends.kubernetes", "KubernetesScheduler"),
    "local": ("whisper_k8s.backends.local", "LocalScheduler"),
    "docker": ("whisper_k8s.backends.docker", "DockerScheduler"),
}

DEFAULT_BACKEND = "kubernetes"


def get_scheduler(name: str = DEFAULT_BACKEND, **kwargs: Any) -> Scheduler:
    """Build the backend called ``name`` with its constructor keywords (``namespace=...``, injected clients)."""
    try:
        module_name, class_name = BACKENDS[name]
    except KeyError:
        raise UserError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}") from None
    module = importlib.import_module(module_name)
    return getattr(module, class_name)(**kwargs)


__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "AppRequest",
    "Deleted",
    "DryRunInfo",
    "JobCondition",
    "JobState",
    "JobStatus",
    "PodLogLine",
    "PodStatus",
    "Scheduler",
    "get_scheduler",
    "make_handle",
    "parse_handle",
]
