"""The machine a benchmark ran on, as every bench/results/*.json records it."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def host_info() -> dict:
    """Platform, CPU model and count, Python, and the load average when the run started (a shared machine's
    figures are read against it)."""
    cpuinfo = Path("/proc/cpuinfo")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if cpuinfo.exists() else platform.processor()
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
