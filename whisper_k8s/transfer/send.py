"""The sender: plan what the volume lacks from the receiver's manifest, stream it, report what arrived.

``upload(src, transport, dest)`` scans ``src``, starts the receiver through ``transport``, reads its hello
(the manifest and partial files on the volume) and sends every file that is missing or differs (quick check:
same size and modification time, as rsync's; ``checksum=True`` compares sha256 instead). A partial file of
the same source is continued from where it stopped. Each file's sha256 is computed while it is sent and the
receiver renames it into place only when its own digest agrees.

Acknowledgements are read by a thread while the files stream, so the transfer never waits on a round trip
per file (a websocket to a pod is slow to answer, fast to stream).
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from whisper_k8s.checksum import sha256_file
from whisper_k8s.errors import ClusterError, UserError
from whisper_k8s.transfer import protocol
from whisper_k8s.transfer.manifest import STATE_DIR, check_relative_path, local_source_id
from whisper_k8s.transfer.store import TransferResult, human_size
from whisper_k8s.transfer.transport import Channel, Transport

RECEIVER = "whisper_k8s.transfer.receive"
_CHANGED = "0" * 64  # the digest announced for a file that changed while it was read: the receiver rejects it


@dataclass(frozen=True)
class LocalFile:
    path: str  # relative POSIX path, the name on the volume
    full: Path
    size: int
    source: str


def scan(src: Path) -> list[LocalFile]:
    """Regular files below ``src`` (links to files followed, the kit's state folder skipped), sorted."""
    files = []
    for folder, dirs, names in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not (Path(folder) == src and d == STATE_DIR))
        for name in sorted(names):
            full = Path(folder) / name
            try:
                stat = full.stat()
            except OSError as err:
                raise UserError(f"SRC file {full} cannot be read ({err.strerror}): fix or remove it") from None
            if not full.is_file():
                continue
            relative = check_relative_path(full.relative_to(src).as_posix())
            files.append(LocalFile(relative, full, stat.st_size, local_source_id(stat.st_size, stat.st_mtime_ns)))
    return files


def plan(files: list[LocalFile], hello: dict, *, checksum: bool = False):
    """(files to send with their offsets, files the volume already holds)."""
    remote, partial = hello.get("files", {}), hello.get("partial", {})
    send, kept = [], []
    for file in files:
        record = remote.get(file.path)
        same = record is not None and record["size"] == file.size and (
            record["sha256"] == sha256_file(file.full) if checksum else record["source"] == file.source)
        if same:
            kept.append(file)
            continue
        started = partial.get(file.path)
        resumable = started and started["source"] == file.source and started["size"] == file.size
        send.append((file, int(started["received"]) if resumable else 0))
    return send, kept


class _Replies:
    """The receiver's answers, read by a thread into a queue (None marks the end of its stdout)."""

    def __init__(self, channel: Channel):
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(channel,), daemon=True)
        self.thread.start()

    def _read(self, channel: Channel) -> None:
        try:
            while (message := protocol.decode(channel.readline())) is not None:
                self.queue.put(message)
        except (protocol.ProtocolError, OSError, ValueError) as err:
            self.queue.put({"type": "fatal", "kind": "protocol", "why": str(err)})
        self.queue.put(None)

    def next(self, timeout: float | None = None) -> dict | None:
        return self.queue.get(timeout=timeout)

    def poll(self) -> dict | None | bool:
        """The next answer if one is waiting, else False."""
        try:
            return self.queue.get_nowait()
        except queue.Empty:
            return False

    def last_fatal(self, timeout: float = 10.0) -> dict | None:
        """The receiver's fatal message, if it sent one before its stdout ended."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if message is None or message["type"] == "fatal":
                return message


def _send_file(channel: Channel, file: LocalFile, offset: int, bar) -> None:
    """Header, the bytes from ``offset``, the trailer with the whole file's sha256."""
    try:
        handle = open(file.full, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as err:
        raise UserError(f"SRC file {file.full} cannot be read ({err.strerror}): fix its permissions or remove "
                        "it, then run the same command again") from None
    channel.write(protocol.encode("file", path=file.path, size=file.size, source=file.source, offset=offset))
    digest, left = hashlib.sha256(), file.size - offset
    with handle:
        while handle.tell() < offset and (chunk := handle.read(min(protocol.CHUNK, offset - handle.tell()))):
            digest.update(chunk)
        while left:
            chunk = handle.read(min(protocol.CHUNK, left)) or b"\0" * min(protocol.CHUNK, left)
            digest.update(chunk)
            channel.write(chunk)
            left -= len(chunk)
            bar.update(len(chunk))
    stat = file.full.stat()
    unchanged = local_source_id(stat.st_size, stat.st_mtime_ns) == file.source
    channel.write(protocol.encode("end", sha256=digest.hexdigest() if unchanged else _CHANGED))


def upload(src: str | os.PathLike, transport: Transport, dest: str, *, checksum: bool = False,
           verify: bool = False, check: str | None = None, check_space: bool = True,
           quiet: bool = False) -> TransferResult:
    """Send ``src`` into ``dest`` (a path where the receiver runs); see the module doc."""
    started = time.monotonic()
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"SRC {src} is not a folder: give the folder to upload")
    files = scan(src)
    args = [dest] + (["--verify"] if verify else []) + (["--check", check] if check else [])
    channel = transport.open(RECEIVER, args)
    replies, result, finished = _Replies(channel), TransferResult(), False
    try:
        hello = replies.next()
        if hello is None or hello.get("type") != "hello":
            raise _stopped(transport, channel, "the receiver did not start", hello)
        todo, kept = plan(files, hello, checksum=checksum)
        result.kept_files, result.kept_bytes = len(kept), sum(f.size for f in kept)
        result.resumed_files = sum(1 for _, offset in todo if offset)
        needed = sum(f.size - offset for f, offset in todo)
        if check_space and needed > hello.get("free", needed):
            raise UserError(f"{transport.where} has {human_size(hello['free'])} free but {len(todo)} files need "
                            f"{human_size(needed)}: give it more room (a larger --size) and run this again")
        _stream(channel, replies, todo, result, transport, quiet=quiet, desc=f"upload {src.name}")
        channel.write(protocol.encode("finish"))
        channel.flush()
        done = _until(replies, {"done"}, transport, channel, result)
        finished = True
    except OSError:  # a broken pipe: the receiver ended; its last message says why
        raise _stopped(transport, channel, "the receiver went away", replies.last_fatal(), result) from None
    finally:
        if not finished:
            channel.close(abort=True)
    channel.close()
    result.files_on_volume, result.tree = done["files"], done.get("tree")
    result.seconds = time.monotonic() - started
    if result.rejected:
        raise ClusterError(f"{len(result.rejected)} file(s) did not verify on {transport.where} "
                           f"({result.rejected[0]}): run the same command again to resend them")
    return result


class _Round:
    """The files of one pass that await an answer, and what the answers decide."""

    def __init__(self, result: TransferResult, bar, may_retry: bool):
        self.result, self.bar, self.may_retry = result, bar, may_retry
        self.pending: dict[str, tuple[LocalFile, int]] = {}
        self.retry: list[tuple[LocalFile, int]] = []

    def settle(self, reply: dict) -> None:
        file, offset = self.pending.pop(reply["path"])
        if reply["type"] == "stored":
            self.result.stored_files += 1
            self.result.stored_bytes += file.size - offset
        elif offset and self.may_retry:
            self.retry.append((file, 0))
            self.bar.total += file.size
        else:
            self.result.rejected.append(f"{file.path}: {reply.get('why')}")


def _stream(channel: Channel, replies: _Replies, todo: list, result: TransferResult, transport: Transport,
            *, quiet: bool, desc: str) -> None:
    """Send every planned file, settling answers as they come; resend from the start, once, each resumed
    file whose whole did not verify (its partial prefix was not what the sender has)."""
    from whisper_k8s.collect import transfer_bar

    answers = {"stored", "rejected"}
    with transfer_bar(sum(f.size - offset for f, offset in todo), desc, quiet) as bar:
        for may_retry in (True, False):
            round_ = _Round(result, bar, may_retry)
            for number, (file, offset) in enumerate(todo):
                bar.set_postfix_str(f"file {number + 1}/{len(todo)}", refresh=False)
                _send_file(channel, file, offset, bar)
                round_.pending[file.path] = (file, offset)
                while (reply := replies.poll()) is not False:
                    round_.settle(_expect(reply, answers, transport, channel, result))
            channel.flush()
            while round_.pending:
                round_.settle(_until(replies, answers, transport, channel, result))
            todo = round_.retry
            if not todo:
                return


def _until(replies: _Replies, kinds: set[str], transport: Transport, channel: Channel,
           result: TransferResult) -> dict:
    return _expect(replies.next(), kinds, transport, channel, result)


def _expect(message: dict | None, kinds: set[str], transport: Transport, channel: Channel,
            result: TransferResult) -> dict:
    if message is None or message["type"] == "fatal":
        raise _stopped(transport, channel, "the receiver stopped", message, result)
    if message["type"] not in kinds:
        raise ClusterError(f"the receiver on {transport.where} answered {message['type']!r} where "
                           f"{'/'.join(sorted(kinds))} was due: is the image's whisper-k8s the same version?")
    return message


def _stopped(transport: Transport, channel: Channel, what: str, message: dict | None,
             result: TransferResult | None = None):
    """The one-line error for a transfer that ended early (full volume, lost receiver, failed start)."""
    ended = channel.close(abort=True)
    stored = f"{result.stored_files} file(s) stored and kept" if result else "nothing was sent"
    if message and message.get("kind") == "full":
        return UserError(f"{transport.where} is full ({message['why']}; {human_size(message.get('free', 0))} free); "
                         f"{stored}: give it more room (a larger --size) and run the same command again to send "
                         "the rest")
    detail = (message or {}).get("why") or ended.stderr.strip().splitlines()[-1:] or [f"exit {ended.code}"]
    detail = detail if isinstance(detail, str) else detail[0]
    return ClusterError(f"the transfer to {transport.where} stopped: {what} ({detail}); {stored}: run the same "
                        "command again, it resumes where it stopped")
