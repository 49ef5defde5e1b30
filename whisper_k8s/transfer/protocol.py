"""The messages of a transfer: JSON lines for control, raw bytes for file contents, over one pair of streams.

receiver -> sender   {"type": "hello", "version", "files": {path: record}, "partial": {path: {...}}, "free"}
sender -> receiver   {"type": "file", "path", "size", "source", "offset"}  then size - offset raw bytes,
                     then {"type": "end", "sha256"} (of the whole file, prefix included)
receiver -> sender   {"type": "stored", "path"} or {"type": "rejected", "path", "why"} after each file
sender -> receiver   {"type": "finish"}: compact the manifest, check the tree, answer
receiver -> sender   {"type": "done", "files", "tree"}; or at any time {"type": "fatal", "kind", "why"}

The end of the conversation is a message, not the end of a stream, so transports that cannot half-close
(a Kubernetes exec websocket) work the same as pipes. A sender that vanishes mid-file leaves a partial file
the next transfer continues (see ``store``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import BinaryIO

VERSION = 1
CHUNK = 1 << 20


class ProtocolError(RuntimeError):
    """The other side sent something that is not a message of this protocol (or stopped mid-message)."""


def encode(message_type: str, /, **fields) -> bytes:
    return json.dumps({"type": message_type, **fields}, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict | None:
    """The message of one line; None for the end of the stream."""
    if not line:
        return None
    try:
        message = json.loads(line)
    except ValueError:
        raise ProtocolError(f"not a protocol message: {line[:200]!r}") from None
    if not isinstance(message, dict) or "type" not in message:
        raise ProtocolError(f"not a protocol message: {line[:200]!r}")
    return message


def read_message(stream: BinaryIO) -> dict | None:
    return decode(stream.readline())


def read_exact(stream: BinaryIO, count: int) -> Iterator[bytes]:
    """``count`` bytes in chunks; EOFError when the stream ends first."""
    while count:
        chunk = stream.read(min(CHUNK, count))
        if not chunk:
            raise EOFError(f"stream ended {count} bytes early")
        count -= len(chunk)
        yield chunk
