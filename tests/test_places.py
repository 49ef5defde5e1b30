"""The CLI knows where a job runs: submit records the place, the commands after it find the job by name,
a flag given wins, an ambiguous name lists the command for each place, and a recorded cluster that cannot be
reached is the one-line cluster error."""

from __future__ import annotations

import shlex

import pytest
from test_cluster_errors import closed_port, kubeconfig

from whisper_k8s import places
from whisper_k8s.cli.main import main


def test_a_job_recorded_in_an_unreachable_cluster_is_the_one_line_cluster_error(tmp_path, capsys):
    port = closed_port()
    places.record_submit("demo", places.Place("kubernetes", namespace="team-a",
                                              kubeconfig=kubeconfig(tmp_path, f"https://127.0.0.1:{port}")))
    for command in (["status", "demo"], ["logs", "demo"], ["delete", "demo"]):
        assert main(command) == 3
        err = capsys.readouterr().err
        # the recorded kubeconfig and namespace were used: the error names that cluster
        assert err.startswith(f"error: cluster https://127.0.0.1:{port} (context lab): cannot reach the API server")
        assert err.count("\n") == 1


def test_an_explicit_backend_wins_over_the_record(tmp_path, capsys):
    places.record_submit("demo", places.Place("kubernetes", kubeconfig=kubeconfig(tmp_path, f"https://127.0.0.1:{closed_port()}")))
    assert main(["status", "demo", "--local"]) == 2
    assert capsys.readouterr().err.startswith("error: no job demo in namespace default on the local backend")


def test_an_ambiguous_name_lists_the_command_for_each_place(tmp_path, capsys):
    local = places.Place("local", state_dir=str(tmp_path / "state"))
    cluster = places.Place("kubernetes", namespace="team-a", context="prod")
    places.record_submit("demo", local)
    places.record_submit("demo", cluster)
    assert main(["status", "demo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "job demo was submitted to 2 places" in err
    commands = [part.split("`")[1] for part in err.split("; ") if "`" in part]
    assert commands == ["python -m whisper_k8s status demo --local",
                        "python -m whisper_k8s status demo --backend kubernetes -n team-a --context prod"]
    # each listed command selects its place: the local one is looked up locally
    assert main(shlex.split(commands[0])[3:]) == 2
    assert "no job demo in namespace default on the local backend" in capsys.readouterr().err
    # a deleted place gives way to the live one
    places.record_delete("demo", cluster, ["outputs (claim demo-outputs)"])
    assert places.choose("demo", "status", backend=None, namespace=None, kubeconfig=None, context=None) == \
        places.recorded("demo")[0]
    assert places.recorded("demo")[0].backend == "local" and places.recorded("demo")[1].deleted


def test_a_deleted_place_is_remembered_with_what_it_kept_until_the_name_is_submitted_again():
    place = places.Place("docker", state_dir="/srv/state")
    places.record_submit("demo", place)
    places.record_delete("demo", place, [])
    (deleted,) = places.recorded("demo")
    assert deleted.deleted and deleted.kept == () and deleted.key == place.key
    places.record_submit("demo", place)
    assert [p.deleted for p in places.recorded("demo")] == [""]


@pytest.mark.parametrize("backend", ["kubernetes", "local", "docker"])
def test_printed_commands_carry_the_flags_only_a_cluster_needs(backend):
    from whisper_k8s.backends import get_scheduler

    kwargs = {"context": "prod"} if backend == "kubernetes" else {}
    scheduler = get_scheduler(backend, namespace="team-a", **kwargs)
    from whisper_k8s.cli._jobs import hint

    expected = {"kubernetes": " -n team-a --context prod", "local": "", "docker": ""}[backend]
    assert hint(scheduler, "logs", "demo", "-f") == f"python -m whisper_k8s logs demo -f{expected}"


@pytest.mark.slow
def test_a_failed_local_job_prints_commands_that_run(tmp_path, monkeypatch, capsys, cv_dataset, processor_dir):
    """submit --follow of a job that fails (a trainer flag that does not exist, no restart allowed): the status
    command it names runs; submitting the name again names the delete that makes room, which runs too."""
    monkeypatch.chdir(tmp_path)
    submit = ["submit", "--name", "broken", "--local", "--nodes", "1", "--accelerator", "cpu", "--dataset",
              str(cv_dataset), "--set", f"data.processor={processor_dir}", "--set", "runPolicy.backoffLimit=0",
              "--set", "training.extraArgs={--no-such-flag}"]
    assert main([*submit, "--follow"]) == 4
    err = capsys.readouterr().err
    (status,) = [part.split("`")[1] for part in err.splitlines() if part.startswith("error: job local://")]
    assert status == "python -m whisper_k8s status broken"
    assert main(shlex.split(status)[3:]) == 0 and "state Failed" in capsys.readouterr().out
    assert main(submit) == 2
    (delete,) = [part.split("`")[1] for part in capsys.readouterr().err.splitlines() if "already exists" in part]
    assert delete == "python -m whisper_k8s delete broken --local"
    assert main(shlex.split(delete)[3:]) == 0
    assert "deleted local://default/broken" in capsys.readouterr().out
