"""Chart values from files, flags and --set: merged by the real helm (checked against `helm template` itself),
precedence, schema errors in one line that name the field and the fix, and the kept values file."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from whisper_k8s import chart, values
from whisper_k8s.errors import UserError

SET_CASES = [
    "a.b=1,c={x,2},d[1].e=true,f=1.5,g=010,h=null,i=a\\,b,j\\.k=v,n=-3,t=TRUE,z=0",
    "list[0].name=first,list[2]=third,empty={}",
]


def helm_values(helm_bin, chart_dir, sets, set_strings=()):
    args = [helm_bin, "template", "x", str(chart_dir)]
    args += [a for s in sets for a in ("--set", s)] + [a for s in set_strings for a in ("--set-string", s)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("values: "))[8:])


@pytest.mark.parametrize("expression", SET_CASES)
def test_set_parses_like_real_helm(expression, echo_chart, helm_bin):
    ours = values.build_values(sets=[expression], set_strings=["s=5,u=true"])
    assert ours == helm_values(helm_bin, echo_chart, [expression], ["s=5,u=true"])


def test_set_typing_follows_helm():
    assert values.build_values(sets=["a=1,b=1.5,c=true,d=null,e=0,f=007,g=x=y"]) == {
        "a": 1, "b": "1.5", "c": True, "d": None, "e": 0, "f": "007", "g": "x=y"}
    assert values.build_values(sets=["a.b[2].c=1"]) == {"a": {"b": [None, None, {"c": 1}]}}


@pytest.mark.parametrize("bad, message", [
    ("nodes", "is not key=value"), ("a[x]=1", "error parsing index"), ("a..b=1", 'key map "a" has no value'),
    ("=1", "is not key=value"),
])
def test_malformed_set_names_the_expression(bad, message):
    with pytest.raises(UserError, match=message) as err:
        values.build_values(sets=["nodes=2", bad])
    assert f"--set {bad!r}" in str(err.value) and "\n" not in str(err.value)


def test_precedence_files_then_flags_then_set(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("nodes: 4\ntraining:\n  lr: 2.0e-5\n  trainIters: 10\n")
    second.write_text("training:\n  trainIters: 20\n")
    built = values.build_values([first, second], {"nodes": 8, "accelerator": None}, ["training.trainIters=30"])
    assert built == {"nodes": 8, "training": {"lr": 2.0e-5, "trainIters": 30}}


def test_flags_map_onto_the_charts_values_layout():
    built = values.build_values(flags={
        "nodes": 2, "npus_per_node": 8, "accelerator": "ascend", "image": "localhost:5000/whisper-k8s:0.2",
        "dataset": "cv-claim", "pretrained": "whisper-large-v3", "language": "hi", "preset": "tiny",
    })
    assert built == {
        "nodes": 2, "accelerator": {"perNode": 8, "type": "ascend"},
        "image": {"repository": "localhost:5000/whisper-k8s", "tag": "0.2"},
        "storage": {"dataset": {"type": "existingClaim", "existingClaim": "cv-claim"}},
        "model": {"pretrained": {"enabled": True, "path": "whisper-large-v3"}, "preset": "tiny"},
        "data": {"language": "hi"},
    }
    assert values.build_values(flags={"image": "localhost:5000/whisper-k8s"}) == {
        "image": {"repository": "localhost:5000/whisper-k8s"}}
    assert values.build_values(flags={"dataset": "/srv/cv11"})["storage"]["dataset"] == {
        "type": "hostPath", "hostPath": "/srv/cv11"}
    # the flags keep their types through Helm (--set-json), a comma in a value included
    assert values.build_values(flags={"language": "hi,en", "image": "n"}) == {
        "data": {"language": "hi,en"}, "image": {"repository": "n"}}
    # every key a flag can produce exists in the chart (a renamed value breaks this test, not a user's job)
    defaults = chart.default_values()
    for dest, to_values in values.FLAG_VALUES.items():
        for key in to_values("/x" if dest == "dataset" else "x:1"):
            node = defaults
            for part in key.split("."):
                assert part in node, f"--{dest} sets {key}, which is not in helm/values.yaml"
                node = node[part]


def test_schema_errors_name_every_bad_field():
    with pytest.raises(UserError) as err:
        chart.validate_values(values.build_values(sets=["nodes=0", "accelerator.type=tpu", "bogus=1"]))
    message = str(err.value)
    assert "nodes: 0 is less than the minimum of 1 (use 1 or more)" in message
    assert "accelerator.type: 'tpu' is not one of" in message
    assert "'bogus' was unexpected (remove it or check its spelling" in message
    assert "\n" not in message  # one line
    with pytest.raises(UserError, match=r"training.lr: '0.001' is not of type 'number' \(--set passes a decimal"):
        chart.validate_values(values.build_values(sets=["training.lr=0.001"]))
    chart.validate_values(values.build_values(flags={"nodes": 2, "accelerator": "cpu"}))  # valid: no error


def test_values_files_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        values.build_values([tmp_path / "missing.yaml"])
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(UserError, match="list.yaml must hold a map"):
        values.build_values([tmp_path / "list.yaml"])
    (tmp_path / "broken.yaml").write_text("a: [\n")
    with pytest.raises(UserError, match="broken.yaml is not valid YAML"):
        values.build_values([tmp_path / "broken.yaml"])


def test_written_values_round_trip_and_leave_no_temp_files(tmp_path):
    built = values.build_values(flags={"nodes": 2}, sets=["training.lr=1e-5"])
    path = values.write_values(built, values.default_values_path("job-a", tmp_path))
    assert path == tmp_path / "job-a" / "values.yaml"
    assert yaml.safe_load(path.read_text()) == built == values.build_values([path])
    assert [p.name for p in path.parent.iterdir()] == ["values.yaml"]


def test_written_values_keep_their_types_when_helm_reads_them(tmp_path, go_yaml_read):
    """Helm parses YAML 1.1, where a bare n or y is a boolean: a job named "n" must stay a string."""
    written = {"fullnameOverride": "n", "a": ["y", "N", "yes", "off", "010", "1e3", ".5", "0x1F", "1_000", "12:30",
                                              "inf", "~", "", "whisper-n", "3.10"], "b": 1, "c": True, "d": 1e-5}
    assert go_yaml_read(values.write_values(written, tmp_path / "values.yaml")) == written


def test_rendered_documents_keep_their_strings_for_go_parsers(tmp_path, go_yaml_read):
    """The dry run's YAML (what `kubectl apply -f` reads) quotes what YAML 1.1 would misread, as values do."""
    from whisper_k8s.backends.base import yaml_documents

    document = {"metadata": {"name": "n", "labels": {"app.kubernetes.io/instance": "n", "tier": "on"}},
                "data": {"model.json": "{\n  \"d_model\": 1280\n}\n", "port": "29500", "plain": "whisper-n"}}
    text = yaml_documents([document])
    assert "name: 'n'" in text and "model.json: |" in text  # quoted; multi-line kept as a readable block
    path = tmp_path / "doc.yaml"
    path.write_text(text.removeprefix("---\n"))
    assert go_yaml_read(path) == document


MERGE_CORPUS = [  # (-f files, --set, --set-string): nulls over defaults, lists, escapes, later-wins
    (["first", "second"], ["training.seed=7,data.split=validated"], ["podLabels.team=1"]),
    (["second", "first", "cpu"], ["training.extraArgs={--foo,bar}", "podAnnotations.a\\.b=c"], []),
    (["cpu"], ["nodes=3,training.clipGrad=null", "accelerator.tolerations[1].key=x"], ["data.language=en"]),
]


def test_submit_merges_values_exactly_as_helm_does(tmp_path, helm_bin, capsys):
    """The dry run's documents equal `helm template -f ... --set ...` of the same arguments: Helm merges."""
    from whisper_k8s.cli.main import main

    files = {"first": "training:\n  globalBatchSize: null\n  minLr: 0\n  decayStyle: constant\n",
             "second": "nodes: 4\ntraining:\n  trainIters: 7\n  lr: 2.0e-5\n  clipGrad: null\n",
             "cpu": "accelerator:\n  type: cpu\n  tolerations: [{key: a, operator: Exists}]\nmodel: {preset: tiny}\n"}
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    for names, sets, set_strings in MERGE_CORPUS:
        arguments = [a for n in names for a in ("-f", str(tmp_path / f"{n}.yaml"))]
        arguments += [a for s in sets for a in ("--set", s)] + [a for s in set_strings for a in ("--set-string", s)]
        assert main(["submit", "--name", "same", "--values-out", str(tmp_path / "kept.yaml"), "--dry-run",
                     *arguments]) == 0
        ours = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
        helm = subprocess.run([helm_bin, "template", "same", str(chart.chart_dir()), "--namespace", "default",
                               *arguments, "--set", "fullnameOverride=same"],
                              capture_output=True, text=True, check=True).stdout
        assert ours == [d for d in yaml.safe_load_all(helm) if d], (names, sets, set_strings)
