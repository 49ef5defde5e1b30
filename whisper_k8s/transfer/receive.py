"""``python -m whisper_k8s.transfer.receive DEST``: the volume side of an upload (see ``protocol``).

Runs where the volume is mounted (a local process, a ``docker run -i`` container, the helper pod), from the
training image: only the standard library and this package. Reads the sender's stream on stdin, answers on
stdout, logs on stderr. Exit status: 0 finished, 1 the sender went away (what arrived is kept for the next
run), 3 the volume is full, 2 bad arguments or a protocol error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict
from typing import BinaryIO

from whisper_k8s.errors import UserError
from whisper_k8s.transfer import protocol
from whisper_k8s.transfer.store import Rejected, VolumeFull, VolumeStore, free_bytes

LOG = logging.getLogger("whisper_k8s.transfer.receive")
EXIT_DONE, EXIT_GONE, EXIT_BAD, EXIT_FULL = 0, 1, 2, 3


def hello(store: VolumeStore, *, verify: bool) -> bytes:
    files = {path: asdict(record) for path, record in store.manifest.present(verify=verify).items()}
    partial = {path: {"size": p.size, "source": p.source, "received": p.received}
               for path, p in store.partials().items()}
    return protocol.encode("hello", version=protocol.VERSION, files=files, partial=partial,
                           free=free_bytes(store.root))


def _receive_file(store: VolumeStore, message: dict, stdin: BinaryIO) -> bytes:
    """Write one announced file; the reply to send (stored/rejected). EOFError when the sender vanished."""
    size, offset = int(message["size"]), int(message.get("offset") or 0)
    try:
        incoming = store.begin(message["path"], size, str(message.get("source", "")), offset)
    except (Rejected, UserError) as err:
        for _ in protocol.read_exact(stdin, size - offset):  # stay in step with the stream
            pass
        protocol.read_message(stdin)
        return protocol.encode("rejected", path=message["path"], why=str(err))
    try:
        for chunk in protocol.read_exact(stdin, size - offset):
            incoming.write(chunk)
        end = protocol.read_message(stdin)
    except EOFError:
        incoming.suspend()
        raise
    if end is None:
        incoming.suspend()
        raise EOFError("stream ended before the end of a file")
    try:
        incoming.finish(sha256=end.get("sha256"))
    except Rejected as err:
        return protocol.encode("rejected", path=incoming.path, why=str(err))
    return protocol.encode("stored", path=incoming.path)


def serve(dest: str, stdin: BinaryIO, stdout: BinaryIO, *, verify: bool = False, check: str | None = None) -> int:
    """Run one transfer into ``dest``; the exit status (see the module doc)."""
    with VolumeStore(dest) as store:
        return _serve(store, stdin, stdout, verify=verify, check=check)


def _serve(store: VolumeStore, stdin: BinaryIO, stdout: BinaryIO, *, verify: bool, check: str | None) -> int:
    dest = store.root
    stdout.write(hello(store, verify=verify))
    stdout.flush()
    try:
        while True:
            message = protocol.read_message(stdin)
            if message is None:
                raise EOFError("the sender closed the stream")
            if message["type"] == "file":
                stdout.write(_receive_file(store, message, stdin))
                stdout.flush()
            elif message["type"] == "finish":
                store.manifest.compact()
                tree = None
                if check == "common-voice":
                    from whisper_k8s.dataset.tree_check import check_tree

                    tree = check_tree(dest).to_dict()
                stdout.write(protocol.encode("done", files=len(store.manifest.files), tree=tree))
                stdout.flush()
                return EXIT_DONE
            else:
                raise protocol.ProtocolError(f"unexpected message {message['type']!r}")
    except EOFError as err:
        LOG.warning("transfer into %s stopped: %s (finished files are recorded; a rerun resumes)", dest, err)
        store.manifest.compact()
        return EXIT_GONE
    except VolumeFull as err:
        store.manifest.compact()
        _try_send(stdout, protocol.encode("fatal", kind="full", why=err.strerror, free=free_bytes(store.root)))
        return EXIT_FULL
    except protocol.ProtocolError as err:
        store.manifest.compact()
        _try_send(stdout, protocol.encode("fatal", kind="protocol", why=str(err)))
        return EXIT_BAD


def _try_send(stdout: BinaryIO, message: bytes) -> None:
    try:
        stdout.write(message)
        stdout.flush()
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m whisper_k8s.transfer.receive", description=__doc__)
    parser.add_argument("dest", help="destination folder on the volume")
    parser.add_argument("--verify", action="store_true",
                        help="re-hash every recorded file before planning (finds damage that kept size and mtime)")
    parser.add_argument("--check", choices=["common-voice"], help="report the tree's state at the end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="receive: %(message)s", stream=sys.stderr)
    try:
        return serve(args.dest, sys.stdin.buffer, sys.stdout.buffer, verify=args.verify, check=args.check)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD


if __name__ == "__main__":
    sys.exit(main())
