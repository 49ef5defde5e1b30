"""whisper_k8s.logs: the merge every backend's log_iter uses (prefixes, filters, restarts, time order)."""

from __future__ import annotations

import pytest

from whisper_k8s.logs import ReplicaRef, merge_logs, parse_timestamped

MASTER = ReplicaRef("master", 0, 0, "job-master-0", "uid-m/0")
WORKER = ReplicaRef("worker", 0, 1, "job-worker-0", "uid-w/0")  # worker index 0 is node rank 1


def reader(logs: dict[tuple[str, str], list[str]], opened: list | None = None):
    def open_stream(replica, follow):
        if opened is not None:
            opened.append((replica.name, replica.instance, follow))
        return [parse_timestamped(line) for line in logs[(replica.name, replica.instance)]]
    return open_stream


def test_snapshot_interleaves_replicas_by_timestamp():
    logs = {("job-master-0", "uid-m/0"): ["2026-11-25T21:25:40.1Z m1", "2026-11-25T21:25:42.000000001Z m2"],
            ("job-worker-0", "uid-w/0"): ["2026-11-25T21:25:41Z w1", "2026-11-25T21:25:43Z w2"]}
    lines = [str(line) for line in merge_logs([[WORKER, MASTER]], reader(logs))]
    assert lines == ["[master-0] m1", "[worker-0] w1", "[master-0] m2", "[worker-0] w2"]


def test_snapshot_without_timestamps_keeps_replica_order_and_filters():
    logs = {("job-master-0", "uid-m/0"): ["a", "b"], ("job-worker-0", "uid-w/0"): ["c"]}
    assert [str(x) for x in merge_logs([[WORKER, MASTER]], reader(logs))] == [
        "[master-0] a", "[master-0] b", "[worker-0] c"]
    assert [str(x) for x in merge_logs([[WORKER, MASTER]], reader(logs), role="worker")] == ["[worker-0] c"]
    assert [str(x) for x in merge_logs([[WORKER, MASTER]], reader(logs), rank=0)] == [
        "[master-0] a", "[master-0] b"]
    # --rank selects by node rank; the prefix is the replica's name (its pod's), not its rank
    assert [str(x) for x in merge_logs([[WORKER, MASTER]], reader(logs), rank=1)] == ["[worker-0] c"]


def test_follow_reads_each_instance_once_and_picks_up_restarts_and_late_replicas():
    waiting = ReplicaRef("worker", 0, 1, "job-worker-0", "uid-w/0", ready=False)
    restarted = ReplicaRef("master", 0, 0, "job-master-0", "uid-m/1")
    logs = {("job-master-0", "uid-m/0"): ["first run"], ("job-master-0", "uid-m/1"): ["after restart"],
            ("job-worker-0", "uid-w/0"): ["worker up"]}
    opened: list = []
    snapshots = [[MASTER, waiting], [MASTER, waiting], [MASTER, WORKER], [restarted, WORKER]]
    lines = sorted(str(x) for x in merge_logs(snapshots, reader(logs, opened), follow=True))
    assert lines == ["[master-0] after restart", "[master-0] first run", "[worker-0] worker up"]
    assert sorted(opened) == [("job-master-0", "uid-m/0", True), ("job-master-0", "uid-m/1", True),
                              ("job-worker-0", "uid-w/0", True)]


def test_follow_reports_a_broken_stream_and_raises_a_discovery_failure():
    def broken(replica, follow):
        raise OSError("connection reset")

    assert [str(x) for x in merge_logs([[MASTER]], broken, follow=True)] == [
        "[master-0] (log stream ended: connection reset)"]

    def failing_snapshots():
        yield [MASTER]
        raise RuntimeError("watch failed")

    with pytest.raises(RuntimeError, match="watch failed"):
        list(merge_logs(failing_snapshots(), reader({("job-master-0", "uid-m/0"): []}), follow=True))


def test_timestamps_are_parsed_to_microseconds_and_other_lines_kept_whole():
    when, text = parse_timestamped("2026-11-25T21:25:40.913149123Z loss 1.5")
    assert (when.isoformat(), text) == ("2026-11-25T21:25:40.913149+00:00", "loss 1.5")
    assert parse_timestamped("plain line with spaces") == (None, "plain line with spaces")


def test_follow_reads_a_replicas_attempts_in_order_with_the_restart_marked():
    """The killed attempt's last lines come before the new attempt's first line, however slow its reader."""
    import time

    killed = ReplicaRef("worker", 0, 1, "job-worker-0", "w/0")
    again = ReplicaRef("worker", 0, 1, "job-worker-0", "w/1", attempt=1, previous_end="exit code 137, SIGKILL")

    def open_stream(replica, follow):
        if replica.instance == "w/0":
            yield None, "step 1"
            time.sleep(0.5)  # the new attempt is discovered meanwhile
            yield None, "step 2"
        else:
            yield None, "resumed"

    lines = [str(x) for x in merge_logs([[killed], [killed, again]], open_stream, follow=True)]
    assert lines == ["[worker-0] step 1", "[worker-0] step 2",
                     "[worker-0] --- restart 1 (previous attempt ended: exit code 137, SIGKILL) ---",
                     "[worker-0] resumed"]
