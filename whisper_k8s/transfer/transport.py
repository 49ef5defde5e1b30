"""How the sender reaches a receiver: a pair of byte streams to a process that runs next to the volume.

A :class:`Transport` starts ``python -m <module> <args>`` where the volume is mounted and returns a
:class:`Channel` (write to its stdin, read lines from its stdout, collect its exit status and stderr).
:class:`CommandTransport` covers every backend whose receiver is a local command: the local backend runs the
module with this interpreter on the claim's folder, the docker backend prefixes ``docker run -i --rm -v
VOLUME:/dest IMAGE python``. The Kubernetes backend adapts the helper pod's exec websocket to the same
:class:`Channel` (stdin channel 0, stdout channel 1, stderr channel 2, exit status on channel 3).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Ended:
    """How a receiver ended: its exit status (None: unknown) and the last lines of its stderr."""

    code: int | None
    stderr: str


class Channel(ABC):
    """One running receiver."""

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Send bytes to the receiver's stdin (OSError when it is gone)."""

    @abstractmethod
    def flush(self) -> None: ...

    @abstractmethod
    def readline(self) -> bytes:
        """One line of the receiver's stdout; b"" when it ended."""

    @abstractmethod
    def close(self, *, abort: bool = False) -> Ended:
        """Wait for the receiver to end (``abort``: stop it first); always releases what the channel holds."""


class Transport(ABC):
    """Starts receivers next to one volume; ``where`` names it in messages (``claim cv11``, ``folder X``)."""

    where: str = ""

    @abstractmethod
    def open(self, module: str, args: list[str]) -> Channel: ...


class ProcessChannel(Channel):
    """A receiver that is a child process of this one (pipes); stderr is drained by a thread."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=env)
        self._stderr: deque[str] = deque(maxlen=20)
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self._stderr.append(line.decode(errors="replace").rstrip())

    def write(self, data: bytes) -> None:
        self.process.stdin.write(data)

    def flush(self) -> None:
        self.process.stdin.flush()

    def readline(self) -> bytes:
        return self.process.stdout.readline()

    def close(self, *, abort: bool = False) -> Ended:
        if abort and self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._drain.join(timeout=5)
        self.process.stdout.close()
        return Ended(code, "\n".join(self._stderr))


class CommandTransport(Transport):
    """Receivers started as ``prefix + ["-m", module, *args]`` (``prefix`` ends with a Python interpreter)."""

    def __init__(self, prefix: list[str], where: str, env: dict[str, str] | None = None):
        self.prefix, self.where, self.env = list(prefix), where, env

    def open(self, module: str, args: list[str]) -> Channel:
        return ProcessChannel([*self.prefix, "-m", module, *args], env=self.env)


def local_transport(where: str) -> CommandTransport:
    """Receivers run by this interpreter on this machine, importing this very copy of the package."""
    package_parent = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=package_parent + (os.pathsep + path if path else ""))
    return CommandTransport([sys.executable], where, env=env)
