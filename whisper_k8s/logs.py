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
``instance`` string, which starts a new reader, so nothing of the restart is missed or read twice.
"""

from __future__ import annotations

import heapq
import queue
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

    @property
    def replica(self) -> str:
        return replica_name(self.role, self.index)

    @property
    def sort_key(self) -> tuple[int, str]:
        return (self.rank, self.name)


Line = tuple[datetime | None, str]
StreamOpener = Callable[[ReplicaRef, bool], Iterable[Line]]


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
        lines = [_to_log_line(replica, line) for line in open_stream(replica, False)]
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
        self.running = 0
        self.lock = threading.Lock()

    def start(self, replica: ReplicaRef) -> None:
        key = (replica.name, replica.instance)
        if key in self.started:
            return
        self.started.add(key)
        with self.lock:
            self.running += 1
        threading.Thread(target=self._read, args=(replica,), daemon=True,
                         name=f"logs-{replica.replica}").start()

    def _read(self, replica: ReplicaRef) -> None:
        try:
            for line in self.open_stream(replica, True):
                if self.stop.is_set():
                    return
                self.lines.put(_to_log_line(replica, line))
        except Exception as err:  # a broken stream must not kill the other replicas' output
            self.lines.put(_to_log_line(replica, (None, f"(log stream ended: {err})")))
        finally:
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
