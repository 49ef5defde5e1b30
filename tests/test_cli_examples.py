"""Every command a user is shown parses with the CLI's real parser, and every file it reads exists.

The commands come from where users read them: the examples of every subcommand's ``--help``, the shell blocks
and inline commands of the READMEs, and the NOTES.txt that ``helm install`` prints (rendered by the real helm
for each operator and accelerator). Each is split as a shell would (continuation lines, comments, pipes and
redirections), then parsed by ``build_parser()``: nothing is executed. The values of every submit example
whose files exist go through the chart's one schema check, as submit would do.

Files: a relative path a command reads must be in the repository, or be written by another shown command
(``--out``, ``--to``, a destination, the values file submit keeps, the folders the demo writes);
an absolute path must be under the folders the chart mounts in the pods or a host folder of the user.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from whisper_k8s import chart, values
from whisper_k8s.cli.main import _subcommand_modules, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docker/README.md", "helm/README.md"]
PROGRAMS = (("python", "-m", "whisper_k8s"), ("whisper-k8s",))
# What `demo --out DIR` writes under DIR (whisper_k8s/demo.py run_demo; README "What make demo does").
DEMO_LAYOUT = ["dataset", "processor", "outputs/checkpoints", "hf"]
# Absolute paths: the volumes the chart mounts in the pods, and folders of the user's own host.
ABSOLUTE_ROOTS = ["/data", "/models", "/outputs", "/srv", "/tmp"]
# Options (argparse dests) that name files or folders the command reads, or writes.
READS = {"values_files", "model", "processor", "model_config", "model_json", "config", "src", "path", "source",
         "dataset", "kubeconfig", "audio"}
WRITES = {"out", "to", "dst", "values_out"}
AUDIO = re.compile(r"^[^/]*\.(mp3|wav|flac)$")  # transcribe's inputs: the user's own recordings


def shell_lines(text: str) -> list[str]:
    """The lines of a shell snippet, backslash continuations joined."""
    return re.sub(r"\\\n\s*", " ", text).splitlines()


def cli_argv(command: str) -> list[str] | None:
    """The CLI's arguments in a shell command (up to a pipe or redirection, comment dropped), or None.

    The commands run in the repository root: ``$PWD`` is that folder."""
    command = command.strip().removeprefix("$ ").replace("$PWD", str(ROOT))
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # not shell (a block of output with an apostrophe)
        return None
    for end, token in enumerate(tokens):
        if token and set(token) <= set("|&;<>"):
            tokens = tokens[:end]
            break
    for program in PROGRAMS:
        if tuple(tokens[:len(program)]) == program:
            return tokens[len(program):]
    return None


def help_examples() -> list[tuple[str, str]]:
    """(where, command) for each example that ``COMMAND --help`` prints."""
    found = []
    for module in _subcommand_modules():
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            main([module.NAME, "--help"])
        examples = out.getvalue().split("\nexamples:\n", 1)
        assert len(examples) == 2, f"`{module.NAME} --help` shows no examples"
        found += [(f"{module.NAME} --help", line) for line in shell_lines(examples[1]) if line.strip()]
    return found


def doc_commands() -> list[tuple[str, str]]:
    """(where, command) for the CLI commands in the READMEs' shell blocks and inline code.

    An inline span is a sketch when it names a generic COMMAND; its ``<placeholder>`` becomes a word and a
    trailing ``...`` is dropped."""
    found = []
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        for block in re.findall(r"^```(?:bash|sh|console)?\n(.*?)^```", text, re.S | re.M):
            found += [(doc, line) for line in shell_lines(block) if cli_argv(line)]
        for span in re.findall(r"`((?:python -m whisper_k8s|whisper-k8s) [^`]*)`", text):
            if "COMMAND" not in span:
                found.append((doc, re.sub(r"<([^>]+)>", r"\1", span).removesuffix("...")))
    return found


def parse(where: str, command: str):
    argv = cli_argv(command)
    assert argv is not None, f"{where}: not a CLI command: {command}"
    error = io.StringIO()
    try:
        with contextlib.redirect_stderr(error):
            return build_parser().parse_args(argv)
    except SystemExit:
        raise AssertionError(f"{where}: `{command}` does not parse: {error.getvalue().strip()}") from None


SHOWN = help_examples() + doc_commands()


@pytest.mark.parametrize(("where", "command"), SHOWN, ids=[f"{w}: {c[:60]}" for w, c in SHOWN])
def test_every_shown_command_parses(where, command):
    args = parse(where, command)
    assert args.command == cli_argv(command)[0]


def as_list(value) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def files(args, dests: set[str]) -> list[str]:
    """The paths given to these options; those in the repository root (``$PWD``) relative to it."""
    paths = [path for dest in dests for path in as_list(getattr(args, dest, None))]
    return [path.removeprefix(f"{ROOT}/") for path in paths if "/" in path or dest_is_file(path)]


def dest_is_file(path: str) -> bool:
    return bool(re.search(r"\.(ya?ml|json|pth|pt|jsonl|mp3|wav|flac)$", path))


def written(args) -> list[str]:
    if args.command == "demo":
        return [f"{args.out}/{folder}" for folder in DEMO_LAYOUT]
    outputs = files(args, WRITES)
    if args.command == "submit" and args.name and not args.values_out:
        outputs.append(str(values.default_values_path(args.name, "runs")))  # submit keeps the values there
    return outputs


def under(path: str, folders: list[str]) -> bool:
    parts = PurePosixPath(path.removeprefix("./")).parts
    return any(parts[:len(PurePosixPath(f).parts)] == PurePosixPath(f.removeprefix("./")).parts for f in folders)


def test_every_file_a_shown_command_reads_exists_or_is_written_by_one():
    parsed = [(where, command, parse(where, command)) for where, command in SHOWN]
    outputs = [path for _, _, args in parsed for path in written(args)]
    missing = []
    for where, command, args in parsed:
        for path in files(args, READS):
            if path.startswith("/"):
                ok = under(path, ABSOLUTE_ROOTS)
            else:
                ok = (ROOT / path).exists() or under(path, outputs) or (
                    AUDIO.match(path) is not None and path in as_list(getattr(args, "audio", None)))
            if not ok:
                missing.append(f"{where}: {path} in `{command}`")
    assert not missing, "files no command makes:\n" + "\n".join(missing)


def test_values_of_every_submit_example_pass_the_chart_schema():
    """What submit builds from each shown command (its -f files, flags and --set) renders: the schema check."""
    checked = 0
    for where, command in SHOWN:
        args = parse(where, command)
        if args.command != "submit" or not all((ROOT / f).is_file() for f in args.values_files):
            continue
        user_values = values.build_values([str(ROOT / f) for f in args.values_files], vars(args), args.sets,
                                          args.set_strings)
        documents = chart.render(user_values, args.name or "whisper-example", args.namespace)
        assert chart.find(documents, "TrainJob" if args.operator == "trainjob" else "PyTorchJob"), command
        checked += 1
    assert checked >= 5


def test_preset_help_names_every_preset_the_chart_ships():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["submit", "--help"])
    text = " ".join(out.getvalue().split())
    presets = sorted(p.stem for p in (ROOT / "helm/files/model-presets").glob("*.json"))
    assert "demo" in presets and f"model preset: {', '.join(presets)}" in text


def test_help_works_where_no_chart_is_found(monkeypatch, tmp_path):
    monkeypatch.setenv("WHISPER_K8S_CHART", str(tmp_path))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main(["submit", "--help"])
    assert done.value.code == 0 and "set WHISPER_K8S_CHART" in " ".join(out.getvalue().split())


NOTES_CASES = [("pytorchjob", "cpu", 1, "none"), ("pytorchjob", "nvidia", 2, "none"),
               ("pytorchjob", "ascend", 4, "volcano"), ("trainjob", "cpu", 2, "none"),
               ("trainjob", "nvidia", 1, "none"), ("trainjob", "ascend", 2, "coscheduling")]


@pytest.mark.parametrize(("operator", "accelerator", "nodes", "gang"), NOTES_CASES)
def test_notes_commands_parse(operator, accelerator, nodes, gang):
    """NOTES.txt as `helm install` prints it (client-side dry run, no cluster): every CLI command parses and
    names this release and namespace."""
    proc = subprocess.run(
        [chart.helm_binary(), "install", "whisper-notes", str(chart.chart_dir()), "--dry-run=client",
         "--namespace", "team-a", "--set", f"operator={operator}", "--set", f"accelerator.type={accelerator}",
         "--set", f"nodes={nodes}", "--set", f"scheduling.gang={gang}"],
        capture_output=True, text=True, check=True)
    notes = proc.stdout.split("\nNOTES:\n", 1)[1]
    commands = [line for line in notes.splitlines() if cli_argv(line)]
    assert {cli_argv(line)[0] for line in commands} == {"logs", "status", "collect"}, notes
    for command in commands:
        args = parse("NOTES.txt", command)
        assert (args.name, args.namespace, args.backend) == ("whisper-notes", "team-a", "kubernetes"), command
