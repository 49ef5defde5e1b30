"""Merge the logs of a job's replicas into one stream, stern-like: ``[master-0] ...``, ``[worker-0] ...``.

Backends only say *which* replicas exist and *how* to read one; this module does the rest once for all of
them: filtering by role/rank, one reader thread per replica instance, following replicas that restart or
appear later, a time-ordered merge when not following, and a clean stop on Ctrl-C.

A backend provides:

* ``snapshots``: an iterable of replica lists. Without ``follow`` it yields one list; with ``follow`` it
  keeps yielding the current list whenever something changes (the Kubernetes backend folds a pod watch into
  it, the local backend polls its state folder) and ends when the job has ended.
* ``open_stream(replica, follow)``: the lines of one replica instance, as ``(timestamp | None, text)``.

A replica *instance* is what one container run writes: a restarted container or a re-created pod gets a new
``instance`` string, which starts a new reader, so nothing of the restart is missed or read twice. An instance
with ``attempt`` > 0 is a restart: its lines are preceded by a marker naming the attempt and why the previous
one ended (``--- restart 1 (previous attempt ended: exit code 137, SIGKILL) ---``), and when following, a
replica's instances are read one after the other, so its lines stay in time order across attempts.
"""

from __future__ import annotations

import heapq
import queue
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from whisper_k8s.backends.base import PodLogLine
from whisper_k8s.operators import replica_name

_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class ReplicaRef:
    """One replica instance whose log can be read.

    ``role``, ``index`` and ``rank`` say which replica it is (its name ``worker-0`` and its node rank);
    ``name`` is its pod (container, local process group); ``instance`` changes when it restarts or is
    re-created (e.g. ``<pod uid>/<restart count>``); ``ready`` is False while there is nothing to read yet
    (pod not scheduled, container waiting for its image).
    """

    role: str
    index: int
    rank: int
    name: str
    instance: str = ""
    ready: bool = True
    attempt: int = 0
    previous_end: str = ""  # why the attempt before this one ended (restart_marker)
    started: datetime | None = None  # when this attempt started, where known (orders its marker)
    previous: bool = False  # a finished earlier attempt whose log the backend keeps apart (Kubernetes)

    @property
    def replica(self) -> str:
        return replica_name(self.role, self.index)

    @property
    def sort_key(self) -> tuple[int, int, str]:
        return (self.rank, self.attempt, self.name)


Line = tuple[datetime | None, str]
StreamOpener = Callable[[ReplicaRef, bool], Iterable[Line]]


def ended_because(exit_code: int | None, reason: str = "") -> str:
    """Why a run ended, as a container's status says it: ``exit code 137, SIGKILL``, ``exit code 137,
    OOMKilled`` (the runtime's reason when it is more than Error/Completed)."""
    if exit_code is None:
        return reason or "unknown"
    words = [f"exit code {exit_code}"]
    if reason and reason not in ("Error", "Completed"):
        words.append(reason)
    elif exit_code > 128:
        try:
            words.append(signal.Signals(exit_code - 128).name)
        except ValueError:
            pass
    return ", ".join(words)


def restart_marker(replica: ReplicaRef) -> str:
    why = f" (previous attempt ended: {replica.previous_end})" if replica.previous_end else ""
    return f"--- restart {replica.attempt}{why} ---"


def _with_marker(replica: ReplicaRef, lines: Iterable[Line]) -> Iterator[Line]:
    """The instance's lines, preceded by its restart marker (timed like its first line, or its start)."""
    lines = iter(lines)
    if replica.attempt <= 0:
        yield from lines
        return
    first = next(lines, None)
    yield (first[0] if first and first[0] else replica.started), restart_marker(replica)
    if first is not None:
        yield first
        yield from lines


def matches(replica: ReplicaRef, role: str | None, rank: int | None) -> bool:
    """Whether a replica passes the ``--role``/``--rank`` filters."""
    return (role is None or replica.role == role) and (rank is None or replica.rank == rank)


def parse_timestamped(line: str) -> Line:
    """Split a ``kubectl logs --timestamps`` line (``2026-11-25T21:25:40.913149123Z text``)."""
    stamp, sep, text = line.partition(" ")
    if sep and stamp.endswith("Z") and "T" in stamp:
        head, _, frac = stamp[:-1].partition(".")
        try:
            when = datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")
        except ValueError:
            return None, line
        return when, text
    return None, line


def merge_logs(
    snapshots: Iterable[list[ReplicaRef]],
    open_stream: StreamOpener,
    *,
    follow: bool = False,
    role: str | None = None,
    rank: int | None = None,
) -> Iterator[PodLogLine]:
    """The merged log lines of all matching replicas (see the module docstring for the two callables)."""
    if follow:
        yield from _follow(snapshots, open_stream, role, rank)
    else:
        yield from _snapshot(snapshots, open_stream, role, rank)


def _to_log_line(replica: ReplicaRef, line: Line) -> PodLogLine:
    when, text = line
    return PodLogLine(role=replica.role, index=replica.index, rank=replica.rank, text=text.rstrip("\n"),
                      pod=replica.name, timestamp=when)


def _snapshot(snapshots, open_stream, role, rank) -> Iterator[PodLogLine]:
    """Everything written so far, merged by timestamp where lines carry one (replica order otherwise)."""
    replicas = next(iter(snapshots), [])
    chosen = sorted((r for r in replicas if r.ready and matches(r, role, rank)), key=lambda r: r.sort_key)
    streams = []
    for order, replica in enumerate(chosen):
        lines = [_to_log_line(replica, line) for line in _with_marker(replica, open_stream(replica, False))]
        streams.append([((line.timestamp is None, line.timestamp or datetime.min, order, i), line)
                        for i, line in enumerate(lines)])
    if all(key[0] is False for stream in streams for key, _ in stream):
        for _, line in heapq.merge(*streams, key=lambda item: item[0]):
            yield line
    else:
        for stream in streams:
            for _, line in stream:
                yield line


class _Follower:
    """Reader threads feeding one queue; the generator in :func:`_follow` is its only consumer."""

    def __init__(self, open_stream: StreamOpener) -> None:
        self.open_stream = open_stream
        self.lines: queue.Queue[PodLogLine | BaseException | None] = queue.Queue()
        self.stop = threading.Event()
        self.started: set[tuple[str, str]] = set()
        self.last_reader: dict[str, threading.Event] = {}  # per replica: set when its latest reader is done
        self.running = 0
        self.lock = threading.Lock()

    def start(self, replica: ReplicaRef) -> None:
        """Read a new instance, after the replica's earlier instances (time order across restarts)."""
        key = (replica.name, replica.instance)
        if key in self.started:
            return
        self.started.add(key)
        before, done = self.last_reader.get(replica.replica), threading.Event()
        self.last_reader[replica.replica] = done
        with self.lock:
            self.running += 1
        threading.Thread(target=self._read, args=(replica, before, done), daemon=True,
                         name=f"logs-{replica.replica}").start()

    def _read(self, replica: ReplicaRef, before: threading.Event | None, done: threading.Event) -> None:
        try:
            while before is not None and not before.wait(_POLL_SECONDS):
                if self.stop.is_set():
                    return
            for line in _with_marker(replica, self.open_stream(replica, not replica.previous)):
                if self.stop.is_set():
                    return
                self.lines.put(_to_log_line(replica, line))
        except Exception as err:  # a broken stream must not kill the other replicas' output
            self.lines.put(_to_log_line(replica, (None, f"(log stream ended: {err})")))
        finally:
            done.set()
            with self.lock:
                self.running -= 1
            self.lines.put(None)  # wake the consumer so it can notice the end

    def idle(self) -> bool:
        with self.lock:
            return self.running == 0


def _follow(snapshots, open_stream, role, rank) -> Iterator[PodLogLine]:
    follower = _Follower(open_stream)
    discovery_done = threading.Event()
    failures: list[BaseException] = []

    def discover() -> None:
        try:
            for replicas in snapshots:
                if follower.stop.is_set():
                    return
                for replica in sorted(replicas, key=lambda r: r.sort_key):
                    if replica.ready and matches(replica, role, rank):
                        follower.start(replica)
        except Exception as err:
            failures.append(err)
        finally:
            discovery_done.set()
            follower.lines.put(None)

    threading.Thread(target=discover, daemon=True, name="logs-discovery").start()
    try:
        while True:
            try:
                item = follower.lines.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                item = None
            if isinstance(item, PodLogLine):
                yield item
            elif discovery_done.is_set() and follower.idle() and follower.lines.empty():
                break
        if failures:
            raise failures[0]
    finally:
        follower.stop.set()
