"""A user's first hour, end to end: the package installed as a wheel, a dry run from an empty folder, a local
job with a killed rank, every command the CLI prints followed as printed, the restart in the logs, delete with
the outputs kept, and a new job that resumes from them.

The installed wheel (tests/test_wheel.py's clean virtual environment, without torch) does the dry run; it
cannot train (no torch there, as the README's laptop install says), so the local job runs with this
environment's CLI, from a temporary folder of its own with the default ``runs/`` layout, through ``main()``
in this process. Every ``python -m whisper_k8s ...`` the CLI prints between backticks is run as printed and
must succeed. The unreachable-cluster case (one line, exit 3, for every command) is tests/test_cluster_errors.py
(and, for a job recorded in an unreachable cluster, tests/test_places.py).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import threading

import pytest
import yaml
from k8s_validation import CRDS, document_errors
from test_faults import iterations_logged, trainer_pid, wait_until
from test_wheel import installed, wheel  # noqa: F401  (the clean environment's fixtures)
from test_wheel import run as run_installed

from whisper_k8s.backends import get_scheduler
from whisper_k8s.cli.main import main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

JOB = "journey"
PRINTED = re.compile(r"`(python -m whisper_k8s [^`]+)`")


def run(capsys, command: str) -> tuple[int, str, str]:
    """A printed command, run as printed (through the CLI's main in this process)."""
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "whisper_k8s"], command
    code = main(argv[3:])
    out, err = capsys.readouterr()
    return code, out, err


def printed(text: str) -> list[str]:
    return PRINTED.findall(text)


def test_a_users_first_hour(installed, tmp_path, monkeypatch, capsys, cv_dataset, processor_dir):  # noqa: F811
    # 1. the installed wheel, from an empty folder: a dry run the CRDs accept
    dry = run_installed(installed, "whisper-k8s", "submit", "--name", JOB, "--nodes", "2", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert all(document_errors(doc, CRDS) == [] for doc in yaml.safe_load_all(dry.stdout) if doc)

    # 2. a local job from a folder of its own (default runs/ layout), 2 nodes, the tiny preset
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for variable in ("WHISPER_K8S_RUNS", "WHISPER_K8S_STATE"):
        monkeypatch.delenv(variable)
    values = work / "tiny.yaml"
    values.write_text(json.dumps({
        "model": {"preset": "tiny"}, "data": {"language": "en", "whisperLanguage": "English",
                                              "processor": str(processor_dir)},
        "training": {"trainIters": 6, "microBatchSize": 1, "numWorkers": 0, "bf16": False, "saveInterval": 2,
                     "logInterval": 1},
        "terminationGracePeriodSeconds": 5, "runPolicy": {"backoffLimit": 3}}))
    code, _, err = run(capsys, f"python -m whisper_k8s submit --name {JOB} --local --nodes 2 --accelerator cpu "
                               f"--dataset {cv_dataset} -f {values}")
    assert code == 0, err
    after_submit = printed(err)
    assert after_submit == [f"python -m whisper_k8s logs {JOB} -f", f"python -m whisper_k8s status {JOB}"]

    # 3. `logs -f` as printed, while rank 1's trainer is SIGKILLed mid-run: both replicas restart in place
    local = get_scheduler("local", state_dir=work / "runs" / "local")
    outputs = work / "runs" / "local" / JOB / "volumes" / f"{JOB}-outputs"

    def kill_rank_1():
        wait_until("iteration 3", lambda: iterations_logged(outputs) >= 3, timeout=600)
        os.kill(trainer_pid(local, JOB, "worker-0"), signal.SIGKILL)

    killer = threading.Thread(target=kill_rank_1, daemon=True)
    killer.start()
    code, followed, err = run(capsys, after_submit[0])
    killer.join(timeout=5)
    assert code == 0, err
    lines = followed.splitlines()
    for replica in ("master-0", "worker-0"):
        mine = [line for line in lines if line.startswith(f"[{replica}] ")]
        markers = [i for i, line in enumerate(mine) if line.startswith(f"[{replica}] --- restart 1 (previous "
                                                                        "attempt ended: exit code ")]
        assert len(markers) == 1, mine[-20:]
        # in time order: everything the killed attempt wrote comes before the marker
        first_attempt = (work / "runs" / "local" / JOB / "logs" / f"{replica}.0.log").read_text().splitlines()
        assert mine[:markers[0]] == [f"[{replica}] {line}" for line in first_attempt]
    assert any("training stopped at iteration 6 (finished)" in line for line in lines)

    code, out, _ = run(capsys, after_submit[1])
    assert code == 0 and f"job local://default/{JOB}" in out and "state Succeeded" in out
    code, out, _ = run(capsys, f"python -m whisper_k8s logs {JOB} --role worker")  # the marker without -f
    assert code == 0 and "[worker-0] --- restart 1 (previous attempt ended: exit code " in out
    code, out, _ = run(capsys, "python -m whisper_k8s list --local")
    assert code == 0 and re.search(rf"^{JOB}\s+pytorchjob\s+Succeeded\s+2\s", out, re.MULTILINE), out

    # 4. collect, then delete: the outputs stay, and delete says where and what to do next
    code, out, err = run(capsys, f"python -m whisper_k8s collect {JOB} --to first-model")
    assert code == 0, err
    code, out, err = run(capsys, f"python -m whisper_k8s delete {JOB}")
    assert code == 0, err
    assert f"kept: outputs (claim {JOB}-outputs): {outputs.resolve()}" in out
    assert (outputs / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == "6"
    collect_kept, resubmit, purge = printed(out)
    assert resubmit == f"python -m whisper_k8s submit --name {JOB} -f runs/{JOB}/values.yaml --local"

    code, out, err = run(capsys, f"python -m whisper_k8s status {JOB}")  # not a job any more; where it went
    assert code == 2 and "was deleted; its outputs are kept" in err and resubmit in err
    code, out, err = run(capsys, collect_kept)  # the kept outputs are still collected
    assert code == 0 and "iteration 6" in out, err
    from transformers import WhisperForConditionalGeneration

    assert WhisperForConditionalGeneration.from_pretrained(work / "runs" / JOB / "hf").config.d_model == 64

    # 5. the same name again resumes from the kept outputs, and says so
    code, _, err = run(capsys, resubmit)
    assert code == 0, err
    assert "resuming: job journey mounts the outputs kept when it was deleted before" in err
    for command in printed(err.split("next:", 1)[1]):  # logs -f until it ends, then status
        code, out, err = run(capsys, command)
        assert code == 0, err
    assert "state Succeeded" in out
    resumed = (work / "runs" / "local" / JOB / "logs" / "master-0.0.log").read_text()
    assert "resumed from" in resumed and "(iteration 6)" in resumed, resumed[-2000:]

    # 6. --purge-outputs, as printed by the first delete: the outputs go; what is left says how to list jobs
    code, out, err = run(capsys, purge)
    assert code == 0 and f"removed (--purge-outputs): outputs (claim {JOB}-outputs)" in out, err
    assert not (work / "runs" / "local" / JOB).exists()
    code, _, err = run(capsys, f"python -m whisper_k8s status {JOB}")
    assert code == 2 and printed(err) == ["python -m whisper_k8s list --local"]
    code, out, err = run(capsys, printed(err)[0])
    assert code == 0 and JOB not in out, err
