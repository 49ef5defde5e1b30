"""The receiver in a pod, reached through the Kubernetes exec API (the helper pod's websocket).

``ExecTransport(api_client, pod, namespace, container)`` runs ``python -m <module> <args>`` in a running pod
with ``kubernetes.stream.stream(connect_get_namespaced_pod_exec, ..., stdin=True, binary=True,
_preload_content=False)``: stdin is channel 0, stdout 1, stderr 2, and the exit status arrives as a Status
object on channel 3 when the process ends. :class:`ExecChannel` adapts that stream to the transfer's
:class:`Channel`: writes go out as stdin frames from the sender's thread; ``readline`` runs in the sender's
reply thread and is the only reader of the socket (websocket-client sends and receives under separate locks).
Creating and deleting the helper pod is the Kubernetes backend's part.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from whisper_k8s.transfer.transport import Channel, Ended, Transport

STDOUT, STDERR = 1, 2
FRAME = 1 << 20  # stdin bytes per websocket frame


class ExecChannel(Channel):
    def __init__(self, ws: Any):
        self.ws = ws
        self._stdout = b""
        self._stderr: deque[str] = deque(maxlen=20)
        self._stderr_tail = b""
        self._reading = threading.Lock()  # one reader of the socket at a time (the reply thread, or close)
        self._ended = False

    def _open(self) -> bool:
        return not self._ended and self.ws.is_open()

    def write(self, data: bytes) -> None:
        from websocket import WebSocketException

        if not self._open():
            raise BrokenPipeError("the exec stream to the pod is closed")
        try:
            for start in range(0, len(data), FRAME):
                self.ws.write_stdin(data[start:start + FRAME])
        except (WebSocketException, OSError) as err:
            raise BrokenPipeError(f"the exec stream to the pod ended ({err})") from None

    def flush(self) -> None:
        pass  # every write is sent at once

    def _pump(self, timeout: float) -> None:
        from websocket import WebSocketException

        with self._reading:
            if not self._open():
                return
            try:
                self.ws.update(timeout=timeout)
            except (WebSocketException, OSError):
                self._ended = True  # the connection dropped without a close frame
            self._stdout += self.ws.read_channel(STDOUT) or b""
            errors = self._stderr_tail + (self.ws.read_channel(STDERR) or b"")
            *lines, self._stderr_tail = errors.split(b"\n")
            self._stderr.extend(line.decode(errors="replace") for line in lines)

    def readline(self) -> bytes:
        while True:
            with self._reading:
                if b"\n" in self._stdout:
                    line, _, self._stdout = self._stdout.partition(b"\n")
                    return line + b"\n"
                if not self._open():
                    rest, self._stdout = self._stdout, b""
                    return rest
            self._pump(timeout=1.0)

    def close(self, *, abort: bool = False) -> Ended:
        if not abort:
            for _ in range(60):
                if not self._open():
                    break
                self._pump(timeout=1.0)
        try:
            code = self.ws.returncode if not self.ws.is_open() else None
        except (TypeError, KeyError, ValueError, IndexError):
            code = None  # the stream ended without a status (connection lost)
        self.ws.close()
        if self._stderr_tail:
            self._stderr.append(self._stderr_tail.decode(errors="replace"))
            self._stderr_tail = b""
        return Ended(code, "\n".join(self._stderr))


class ExecTransport(Transport):
    """Receivers started with ``python -m`` in container ``container`` of a running pod."""

    def __init__(self, api_client: Any, pod: str, namespace: str, container: str, where: str,
                 python: str = "python"):
        self.api_client, self.pod, self.namespace, self.container = api_client, pod, namespace, container
        self.where, self.python = where, python

    def open(self, module: str, args: list[str]) -> Channel:
        from kubernetes import client
        from kubernetes.stream import stream

        core = client.CoreV1Api(self.api_client)
        ws = stream(core.connect_get_namespaced_pod_exec, self.pod, self.namespace,
                    command=[self.python, "-m", module, *args], container=self.container, stdin=True, stdout=True,
                    stderr=True, tty=False, binary=True, _preload_content=False)
        return ExecChannel(ws)
