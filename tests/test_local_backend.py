"""The local backend runs what the chart rendered: operator env per replica, volumes, restarts, state on disk.

The jobs here are the chart's real PyTorchJob with the trainer's arguments swapped for a short Python script
(the launcher, init containers, volumes and env stay the chart's), so each test takes about a second.
The full path with the real trainer is in tests/test_collect.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from whisper_k8s.backends import AppRequest, Deleted, get_scheduler
from whisper_k8s.backends.local_plan import rewrite_paths
from whisper_k8s.chart import render
from whisper_k8s.errors import UserError
from whisper_k8s.operators import get_contract

ROOT = Path(__file__).resolve().parents[1]


def local_request(name, dataset, *, nodes=2, script=None, outputs=None, backoff=None, grace=None,
                  operator="pytorchjob", keep_claims=True):
    """The chart's documents for a CPU job; ``script`` replaces the trainer command (python -c)."""
    storage = {"dataset": {"type": "hostPath", "hostPath": str(dataset)}, "keepClaims": keep_claims}
    if outputs:
        storage["outputs"] = {"type": "hostPath", "hostPath": str(outputs)}
    values = {"fullnameOverride": name, "nodes": nodes, "accelerator": {"type": "cpu"},
              "model": {"preset": "tiny"}, "data": {"processor": str(dataset)}, "storage": storage,
              "operator": operator}
    documents = render(values, name)
    for doc in documents:
        if doc["kind"] == "TrainJob" and script is not None:
            doc["spec"]["trainer"]["args"] = ["python", "-c", textwrap.dedent(script)]
        if doc["kind"] != "PyTorchJob":
            continue
        if backoff is not None:
            doc["spec"]["runPolicy"]["backoffLimit"] = backoff
        for spec in doc["spec"]["pytorchReplicaSpecs"].values():
            pod = spec["template"]["spec"]
            if grace is not None:
                pod["terminationGracePeriodSeconds"] = grace
            if script is not None:
                pod["containers"][0]["args"] = ["python", "-c", textwrap.dedent(script)]
    return AppRequest(name=name, values=values, documents=documents, operator=operator)


@pytest.fixture
def scheduler(tmp_path):
    local = get_scheduler("local", state_dir=tmp_path / "state")
    yield local
    for job in local.list():  # never leave a test's processes running
        if not job.is_terminal:
            local.cancel(job.name)


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "cv"
    path.mkdir()
    return path


def in_fresh_process(state_dir, code):
    """Run ``code`` (with ``scheduler`` bound) in a new Python process, as a later CLI command would."""
    prelude = (f"from whisper_k8s.backends import get_scheduler\n"
               f"scheduler = get_scheduler('local', state_dir={str(state_dir)!r})\n")
    result = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


DUMP_ENV = """
    import json, os
    rank = os.environ["PET_NODE_RANK"]
    keep = {k: v for k, v in os.environ.items() if k.startswith(("PET_", "MASTER_")) or k in
            ("PYTHONUNBUFFERED", "WORLD_SIZE", "RANK", "HOME", "WHISPER_DIST_BACKEND")}
    keep["model.json"] = json.load(open("/config/model.json"))["d_model"]
    keep["data.json"] = json.load(open("/config/data.json"))["dataset_param"]
    json.dump(keep, open(f"/outputs/env-{rank}.json", "w"))
    print("dumped", rank)
"""


def test_each_replica_gets_the_operator_env(scheduler, dataset, tmp_path):
    request = local_request("envjob", dataset, script=DUMP_ENV)
    job = get_contract("pytorchjob").read_job(request.documents)
    scheduler.submit(request)
    status = scheduler.wait("envjob", timeout=60, poll_seconds=0.2)
    assert status.state == "Succeeded", status
    outputs = scheduler.outputs_dir("envjob")
    ports = set()
    for replica in job.replicas:
        seen = json.loads((outputs / f"env-{replica.node_rank}.json").read_text())
        for name, value in replica.env.items():  # exactly the operator's env, with the master made local
            if name in ("MASTER_ADDR", "PET_MASTER_ADDR"):
                assert seen[name] == "127.0.0.1"
            elif name in ("MASTER_PORT", "PET_MASTER_PORT"):
                ports.add(seen[name])
            else:
                assert seen[name] == value, name
        assert seen["PYTHONUNBUFFERED"] == "0" and seen["WORLD_SIZE"] == "2"
        assert seen["RANK"] == seen["PET_NODE_RANK"] == str(replica.node_rank)
        # the container's own env is kept, with mount paths (HOME=/home/whisper) mapped to local folders
        assert seen["WHISPER_DIST_BACKEND"] == "gloo"
        assert Path(seen["HOME"]).is_dir() and str(tmp_path) in seen["HOME"]
        assert seen["model.json"] == 64
        # the ConfigMap's /data became the hostPath folder; host paths under /tmp are left alone
        assert seen["data.json"]["basic_parameters"]["dataset_name_or_path"] == str(dataset)
        assert seen["data.json"]["preprocess_parameters"]["processor_name_or_path"] == str(dataset)
    assert len(ports) == 1 and ports != {"29501"}
    assert [p.name for p in status.pods] == ["envjob-master-0", "envjob-worker-0"]


def test_trainjob_replicas_get_the_v2_env(scheduler, dataset):
    scheduler.submit(local_request("v2job", dataset, script=DUMP_ENV, operator="trainjob"))
    status = scheduler.wait("v2job", timeout=60, poll_seconds=0.2)
    assert status.state == "Succeeded", status
    assert [p.name for p in status.pods] == ["v2job-node-0-0", "v2job-node-0-1"]
    for rank in (0, 1):
        seen = json.loads((scheduler.outputs_dir("v2job") / f"env-{rank}.json").read_text())
        assert {k: v for k, v in seen.items() if k.startswith("PET_")} == {
            "PET_NNODES": "2", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": str(rank),
            "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": seen["PET_MASTER_PORT"]}
        assert seen["PET_MASTER_PORT"] != "29500" and "MASTER_ADDR" not in seen and "RANK" not in seen
    assert "[node-1] dumped 1" in list(scheduler.log_iter("v2job"))


def test_dry_run_writes_nothing_and_shows_the_mapping(scheduler, dataset, tmp_path):
    info = scheduler.dryrun(local_request("dry", dataset, script="print(1)"))
    text = str(info)
    assert f"volume /data -> {dataset}" in text
    assert "volume /outputs -> " + str(tmp_path / "state" / "dry" / "volumes" / "dry-outputs") in text
    assert "PET_NODE_RANK=1" in text and "kind: PyTorchJob" in text
    import yaml

    assert [doc["kind"] for doc in yaml.safe_load_all(text)] == [doc["kind"] for doc in info.documents]
    assert not (tmp_path / "state").exists()


def test_mount_paths_are_rewritten_as_whole_components():
    mounts = {"/data": "/srv/cv", "/outputs": "/o", "/outputs/processor": "/p"}
    assert rewrite_paths("--data /data --x /dataset /x/data /data/en", mounts) == \
        "--data /srv/cv --x /dataset /x/data /srv/cv/en"
    assert rewrite_paths('{"p": "/outputs/processor", "s": "/outputs/checkpoints"}', mounts) == \
        '{"p": "/p", "s": "/o/checkpoints"}'


def test_missing_host_folder_is_refused_by_name(scheduler, tmp_path):
    with pytest.raises(UserError, match="hostPath .*missing-cv is not an existing directory"):
        scheduler.dryrun(local_request("nodata", tmp_path / "missing-cv", script="print(1)"))


FAIL_ONCE = """
    import os, pathlib, sys
    marker = pathlib.Path("/outputs/failed-once")
    print("attempt on rank", os.environ["PET_NODE_RANK"], flush=True)
    if os.environ["PET_NODE_RANK"] == "1" and not marker.exists():
        marker.write_text("x")
        sys.exit(3)
"""


def test_a_failed_pytorchjob_replica_restarts_in_place_within_backoff_limit(scheduler, dataset):
    """training-operator v1.9, restartPolicy OnFailure: only the failed pod's container restarts."""
    scheduler.submit(local_request("flaky", dataset, script=FAIL_ONCE))
    status = scheduler.wait("flaky", timeout=60, poll_seconds=0.2)
    assert status.state == "Succeeded"
    assert [(p.replica, p.restarts) for p in status.pods] == [("master-0", 0), ("worker-0", 1)]
    job = json.loads((scheduler.root / "flaky" / "job.json").read_text())
    assert job["history"] == [{"replica": "worker-0", "attempt": 0, "exit_code": 3}] and job["restarts"] == 1
    lines = list(scheduler.log_iter("flaky"))
    assert lines.count("[worker-0] attempt on rank 1") == 2  # both runs' logs are kept, the restart marked between
    worker = [line for line in lines if line.startswith("[worker-0]")]
    assert worker == ["[worker-0] attempt on rank 1", "[worker-0] --- restart 1 (previous attempt ended: exit code 3) ---",
                      "[worker-0] attempt on rank 1"]
    assert lines.count("[master-0] attempt on rank 0") == 1  # the master was not restarted


def test_a_failed_trainjob_node_restarts_every_node(scheduler, dataset):
    """JobSet failurePolicy: a failed node recreates all of them, up to maxRestarts."""
    scheduler.submit(local_request("flaky-v2", dataset, script=FAIL_ONCE, operator="trainjob"))
    status = scheduler.wait("flaky-v2", timeout=60, poll_seconds=0.2)
    assert status.state == "Succeeded"
    assert [(p.replica, p.restarts) for p in status.pods] == [("node-0", 1), ("node-1", 1)]
    lines = list(scheduler.log_iter("flaky-v2"))
    assert lines.count("[node-1] attempt on rank 1") == 2 and lines.count("[node-0] attempt on rank 0") == 2
    assert "[node-1] --- restart 1 (previous attempt ended: exit code 3) ---" in lines
    assert "[node-0] --- restart 1 (previous attempt ended: stopped: every replica restarts (node-1 exited with " \
           "3)) ---" in lines


def test_backoff_limit_exceeded_fails_the_job(scheduler, dataset):
    script = "import os, sys, time; sys.exit(5) if os.environ['PET_NODE_RANK'] == '1' else time.sleep(60)"
    scheduler.submit(local_request("broken", dataset, script=script, backoff=1))
    status = scheduler.wait("broken", timeout=60, poll_seconds=0.2)
    assert status.state == "Failed"
    # the operator fails the job once the pods' restarts add up to backoffLimit (here: the first restart)
    assert any("worker-0 exited with 5 after 1 restart(s) of the job: restart limit 1 reached" in problem
               and "runPolicy.backoffLimit" in problem for problem in status.problems), status.problems
    assert [p.restarts for p in status.pods] == [0, 1]
    with pytest.raises(UserError, match=r"local job broken already exists \(Failed\).*delete it first"):
        scheduler.submit(local_request("broken", dataset, script="print(1)"))


SLEEPER = """
    import os, pathlib, signal, sys, time
    def stop(signum, frame):
        pathlib.Path(f"/outputs/sigterm-{os.environ['PET_NODE_RANK']}").write_text("checkpointed")
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    time.sleep(120)
"""


def test_status_list_logs_delete_from_fresh_processes(scheduler, dataset, tmp_path):
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    handle = scheduler.submit(local_request("sleeper", dataset, script=SLEEPER, outputs=outputs, grace=20))
    assert handle == "local://default/sleeper"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen = in_fresh_process(scheduler.root, "s = scheduler.describe('sleeper'); print(s.state)\n"
                                "print(sum(p.phase == 'Running' for p in s.pods))\n"
                                "print(len(list(scheduler.log_iter('sleeper'))))")
        if seen.split() == ["Running", "2", "2"]:
            break
        time.sleep(0.5)
    assert seen.split() == ["Running", "2", "2"]
    listed = in_fresh_process(scheduler.root, "print([(s.name, s.state, s.nodes) for s in scheduler.list()])")
    assert "('sleeper', 'Running', 2)" in listed  # NODES in `list --local`: the plan's replicas
    logs = in_fresh_process(scheduler.root, "print('\\n'.join(scheduler.log_iter('sleeper')))")
    assert "[master-0] ready" in logs and "[worker-0] ready" in logs
    job = json.loads((scheduler.root / "sleeper" / "job.json").read_text())
    pids = [r["process"]["pid"] for r in job["replicas"].values()]
    assert scheduler.replica_processes("sleeper", "worker-0")[:1] == pids[1:]
    in_fresh_process(scheduler.root, "scheduler.cancel('sleeper')")
    # SIGTERM reached the trainer processes (they "checkpointed"), then the job and its processes are gone
    assert (outputs / "sigterm-0").read_text() == "checkpointed" and (outputs / "sigterm-1").exists()
    assert scheduler.describe("sleeper") is None
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    # the outputs are a host folder the user named: never removed, and collect still finds them
    assert scheduler.deleted_job("sleeper") == [f"outputs (a host folder you named, never removed): {outputs}"]
    assert scheduler.outputs_dir("sleeper") == outputs
    assert sorted(p.name for p in (scheduler.root / "sleeper").iterdir()) == [
        "deleted.json", "documents.yaml", "plan.json", "volumes"]
    with pytest.raises(UserError, match="local job sleeper is deleted already; its outputs are kept"):
        scheduler.cancel("sleeper")
    assert scheduler.cancel("sleeper", purge_outputs=True).purged == []  # --purge-outputs spares host folders
    assert not (scheduler.root / "sleeper").exists() and (outputs / "sigterm-0").exists()
    with pytest.raises(UserError, match="no local job sleeper"):
        scheduler.cancel("sleeper")


COUNT_RUNS = """
    import pathlib
    runs = pathlib.Path("/outputs/runs.txt")
    runs.write_text((runs.read_text() if runs.exists() else "") + "run\\n")
    print("runs on these outputs:", len(runs.read_text().splitlines()), flush=True)
"""


def test_delete_keeps_the_outputs_claim_and_the_same_name_mounts_it_again(scheduler, dataset):
    """storage.keepClaims (the default): helm uninstall keeps the claims the chart created, so delete does."""
    scheduler.submit(local_request("keeper", dataset, nodes=1, script=COUNT_RUNS))
    assert scheduler.wait("keeper", timeout=60, poll_seconds=0.2).state == "Succeeded"
    outputs = scheduler.outputs_dir("keeper")
    assert outputs == scheduler.root / "keeper" / "volumes" / "keeper-outputs"
    deleted = scheduler.cancel("keeper")
    assert deleted.kept == [f"outputs (claim keeper-outputs): {outputs}"] and deleted.purged == []
    assert (outputs / "runs.txt").read_text() == "run\n" and not (scheduler.root / "keeper" / "logs").exists()
    assert scheduler.describe("keeper") is None and scheduler.list() == []
    assert scheduler.deleted_job("keeper") == deleted.kept and scheduler.outputs_dir("keeper") == outputs
    # a new job of the same name mounts the kept claim again (the trainer would resume from its checkpoints)
    scheduler.submit(local_request("keeper", dataset, nodes=1, script=COUNT_RUNS))
    assert scheduler.wait("keeper", timeout=60, poll_seconds=0.2).state == "Succeeded"
    assert "[master-0] runs on these outputs: 2" in list(scheduler.log_iter("keeper"))
    assert scheduler.deleted_job("keeper") == []
    # --purge-outputs removes the outputs claim the chart created, and with it the job's folder
    deleted = scheduler.cancel("keeper", purge_outputs=True)
    assert (deleted.kept, deleted.purged) == ([], [f"outputs (claim keeper-outputs): {outputs}"])
    assert not (scheduler.root / "keeper").exists()


def test_claims_helm_would_not_keep_go_with_the_job(scheduler, dataset):
    scheduler.submit(local_request("unkept", dataset, nodes=1, script=COUNT_RUNS, keep_claims=False))
    assert scheduler.wait("unkept", timeout=60, poll_seconds=0.2).state == "Succeeded"
    assert scheduler.cancel("unkept") == Deleted() and not (scheduler.root / "unkept").exists()


ORPHAN = """
    import os, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    open(f"/outputs/orphan-{os.environ['PET_NODE_RANK']}", "w").write(str(child.pid))
"""


def test_processes_a_replica_leaves_behind_do_not_outlive_the_job(scheduler, dataset):
    """torchrun starts workers in sessions of their own; like a pod's cgroup, the job ends them all."""
    scheduler.submit(local_request("orphans", dataset, script=ORPHAN))
    assert scheduler.wait("orphans", timeout=60, poll_seconds=0.2).state == "Succeeded"
    for rank in (0, 1):
        pid = int((scheduler.outputs_dir("orphans") / f"orphan-{rank}").read_text())
        assert not Path(f"/proc/{pid}").exists()


def test_init_containers_run_first_in_order_without_the_operator_env(scheduler, dataset):
    request = local_request("inits", dataset, nodes=1, script="print(open('/outputs/order').read())")
    job = next(doc for doc in request.documents if doc["kind"] == "PyTorchJob")
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    first = dict(pod["containers"][0], name="first", command=["python", "-c"], args=[
        "import os; open('/outputs/order', 'a').write('first:' + str('PET_NODE_RANK' in os.environ) + ' ')"])
    second = dict(first, name="second", args=["open('/outputs/order', 'a').write('second')"])
    pod["initContainers"] = [first, second]
    scheduler.submit(request)
    assert scheduler.wait("inits", timeout=60, poll_seconds=0.2).state == "Succeeded"
    assert list(scheduler.log_iter("inits")) == [
        "[master-0] (init container first)", "[master-0] (init container second)", "[master-0] first:False second"]
