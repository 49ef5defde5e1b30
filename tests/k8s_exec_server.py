"""A loopback stand-in for the API server's pod exec endpoint, speaking the real wire protocol.

``GET /api/v1/namespaces/NS/pods/POD/exec?command=...&stdin=true&stdout=true&stderr=true`` with a websocket
upgrade (RFC 6455) and the ``v4.channel.k8s.io`` subprotocol, as the kubernetes client's ``stream()`` sends
it; the command runs here as a process (``python`` is this interpreter). Frames carry one channel byte first:
0 stdin (client to server), 1 stdout, 2 stderr, 3 the exit status as a ``metav1.Status`` (``Success``, or
``Failure`` with reason ``NonZeroExitCode`` and a cause ``{"reason": "ExitCode", "message": "<code>"}``, as
the kubelet writes it and ``WSClient.returncode`` reads it), then a close frame. No recording of an exec
stream exists in tests/fixtures/reference; these shapes are the documented ones the client parses.

``kill_after_stdin(n)`` makes the next session SIGKILL its process once n stdin bytes went through (a helper
pod killed mid-transfer).
"""

from __future__ import annotations

import base64
import hashlib
import json
import socketserver
import struct
import subprocess
import sys
import threading
import urllib.parse

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BINARY, CLOSE = 0x2, 0x8


def _frame(payload: bytes, opcode: int = BINARY) -> bytes:
    head = bytes([0x80 | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([size])
    elif size < 1 << 16:
        head += bytes([126]) + struct.pack(">H", size)
    else:
        head += bytes([127]) + struct.pack(">Q", size)
    return head + payload


def _read_exact(stream, count: int) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise EOFError
    return data


def _read_frame(stream) -> tuple[int, bytes]:
    first, second = _read_exact(stream, 2)
    size = second & 0x7F
    if size == 126:
        size = struct.unpack(">H", _read_exact(stream, 2))[0]
    elif size == 127:
        size = struct.unpack(">Q", _read_exact(stream, 8))[0]
    mask = _read_exact(stream, 4) if second & 0x80 else None
    payload = _read_exact(stream, size)
    if mask:
        key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
        payload = (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big")
    return first & 0x0F, payload


class _Session(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        request = self.rfile.readline().decode()
        headers = {}
        while (line := self.rfile.readline().decode().strip()):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.split()[1]).query)
        command = [sys.executable if part == "python" else part for part in query["command"]]
        accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + GUID).encode()).digest()).decode()
        self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n")
                         .encode())
        self.server.sessions.append(command)
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lock = threading.Lock()

        def send(payload: bytes, opcode: int = BINARY) -> None:
            with lock:
                try:
                    self.wfile.write(_frame(payload, opcode))
                    self.wfile.flush()
                except OSError:
                    pass

        def forward(stream, channel: int) -> None:
            while chunk := stream.read1(65536):
                send(bytes([channel]) + chunk)

        pumps = [threading.Thread(target=forward, args=(process.stdout, 1)),
                 threading.Thread(target=forward, args=(process.stderr, 2))]
        for pump in pumps:
            pump.start()
        threading.Thread(target=self._stdin, args=(process,), daemon=True).start()
        code = process.wait()
        for pump in pumps:
            pump.join()
        status = ({"metadata": {}, "status": "Success"} if code == 0 else
                  {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                   "message": f"command terminated with non-zero exit code: exit status {code}",
                   "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}})
        send(b"\x03" + json.dumps(status).encode())
        send(struct.pack(">H", 1000), CLOSE)

    def _stdin(self, process: subprocess.Popen) -> None:
        received, limit = 0, self.server.kill_after
        self.server.kill_after = None
        try:
            while True:
                opcode, payload = _read_frame(self.rfile)
                if opcode == CLOSE:
                    break
                if payload[:1] == b"\x00":
                    process.stdin.write(payload[1:])
                    process.stdin.flush()
                    received += len(payload) - 1
                    if limit is not None and received >= limit:
                        process.kill()
                        break
        except (EOFError, OSError, ValueError):
            pass
        finally:
            try:
                process.stdin.close()  # the client went away: the process reads the end of its stdin
            except OSError:
                pass


class ExecServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Session)
        self.sessions: list[list[str]] = []
        self.kill_after: int | None = None
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def kill_after_stdin(self, count: int) -> None:
        self.kill_after = count
