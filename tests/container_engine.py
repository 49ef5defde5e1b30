"""This machine's container-engine facts, for the tests that build and run the images (marked ``docker``).

Kept here, not in the product: how an engine is found or started, how the air-gapped CPU image is built.

* Docker: an engine that already answers (``docker info``) is used as it is. Otherwise, as root, Debian's
  ``docker.io`` package is installed when ``dockerd`` is missing, and a ``dockerd`` is started in the
  background (no systemd here) on a private socket, with its data under ``.tools/docker`` (a cache, like the
  wheelhouse: images built there speed up the next run; ``make clean`` removes it), and stopped by its PID at
  the end of the session. Where none can start, the tests skip with the reason.
* The CPU image is built as docker/README.md's air-gapped section writes it (:func:`readme_build` reads its
  commands), in a copy of the repository as a user would copy it: no base image can be pulled here, so the base
  is Debian bookworm made with ``debootstrap --variant=minbase`` from the mirror apt uses, with python3 (3.11),
  venv, libsndfile and CA certificates, imported under the README's tag (the tarball is cached under
  ``.tools/images``); inside containers HTTPS goes through an intercepting proxy, so the packages come from the
  README's ``make wheelhouse`` run on the host (cached under ``.tools/wheelhouse`` by its inputs), and the
  README's ``make image`` builds offline from it, with no build argument of the tests' own.
* Podman (``WHISPER_K8S_TEST_ENGINE=podman``) needs, on these machines, the runc runtime, the cgroupfs
  cgroup manager and ulimits within the hard limits: :data:`PODMAN_ARGS` / :func:`podman_ulimits`.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".tools"
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "libsndfile1", "ca-certificates")
PODMAN_ARGS = ["--runtime", "runc", "--cgroup-manager", "cgroupfs"]


def podman_ulimits() -> list[str]:
    """podman's default nofile/nproc ulimits exceed this machine's hard limits: ask for the hard limits."""
    args = []
    for name, limit in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        soft, hard = resource.getrlimit(limit)
        if hard != resource.RLIM_INFINITY:
            args += ["--ulimit", f"{name}={min(soft, hard) if soft != resource.RLIM_INFINITY else hard}:{hard}"]
    return args


@dataclass
class Engine:
    """A container engine the tests may use: its CLI, the environment that reaches it, what we started."""

    cli: str
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    daemon_pid: int | None = None  # the dockerd we started (stopped by its PID at the end)
    run_dir: Path | None = None

    @property
    def ours(self) -> bool:
        return self.daemon_pid is not None

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.cli, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and proc.returncode:
            raise AssertionError(f"{self.cli} {' '.join(args[:4])} failed ({proc.returncode}):\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def answers(self) -> bool:
        try:
            return self.run("info", check=False, timeout=20).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False


def _apt_install(*packages: str) -> str | None:
    """Install Debian packages as root; the reason it cannot, or None."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{', '.join(packages)} missing and not root with apt-get to install them"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    proc = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
        proc = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                              capture_output=True, text=True, env=env)
    return None if proc.returncode == 0 else f"apt-get install {' '.join(packages)} failed: {proc.stderr[-500:]}"


def start_engine() -> Engine | str:
    """A working engine, or the reason there is none (the tests skip with it)."""
    if os.environ.get("WHISPER_K8S_TEST_ENGINE") == "podman":
        podman = shutil.which("podman")
        return Engine(podman) if podman else "WHISPER_K8S_TEST_ENGINE=podman but podman is not installed"
    cli = shutil.which("docker")
    if cli and Engine(cli).answers():
        return Engine(cli)
    if not shutil.which("dockerd"):
        reason = _apt_install("docker.io")
        if reason:
            return f"no container engine: {reason}"
    cli = shutil.which("docker") or "/usr/bin/docker"
    if os.geteuid() != 0:
        return "no docker daemon answers and starting dockerd needs root"
    run_dir = Path(tempfile.mkdtemp(prefix="wk8s-dockerd-"))
    socket = f"unix://{run_dir}/docker.sock"
    (CACHE / "docker").mkdir(parents=True, exist_ok=True)
    with open(run_dir / "dockerd.log", "wb") as log:
        daemon = subprocess.Popen(
            ["dockerd", "--host", socket, "--data-root", str(CACHE / "docker"), "--exec-root",
             str(run_dir / "exec"), "--pidfile", str(run_dir / "docker.pid")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    engine = Engine(cli, dict(os.environ, DOCKER_HOST=socket), daemon.pid, run_dir)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and daemon.poll() is None:
        if engine.answers():
            return engine
        time.sleep(1)
    stop_engine(engine)
    return f"dockerd did not start: {(run_dir / 'dockerd.log').read_text()[-800:]}"


def stop_engine(engine: Engine) -> None:
    """Stop the dockerd we started (SIGTERM, then SIGKILL after 30 s), by its PID."""
    if not engine.ours:
        return
    try:
        os.kill(engine.daemon_pid, signal.SIGTERM)
        for _ in range(300):
            os.waitpid(engine.daemon_pid, os.WNOHANG)
            os.kill(engine.daemon_pid, 0)
            time.sleep(0.1)
        os.kill(engine.daemon_pid, signal.SIGKILL)
    except (ProcessLookupError, ChildProcessError):
        pass
    if engine.run_dir:
        shutil.rmtree(engine.run_dir, ignore_errors=True)


def debian_mirror() -> str:
    """The Debian mirror apt uses here (deb822 or one-line sources), else deb.debian.org."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*")) + [Path("/etc/apt/sources.list")]
    for source in sources:
        text = source.read_text() if source.is_file() else ""
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+/debian)/?\s*$", text, re.M):
            return match.group(1)
    return "http://deb.debian.org/debian"


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def base_image(engine: Engine) -> str:
    """The local Debian base (tag ``localhost/whisper-k8s-base:bookworm-<key>``), made when missing."""
    mirror = debian_mirror()
    key = _key(BASE_SUITE, mirror, *BASE_PACKAGES)
    tag = f"localhost/whisper-k8s-base:{BASE_SUITE}-{key}"
    if engine.run("image", "inspect", tag, check=False).returncode == 0:
        return tag
    tarball = CACHE / "images" / f"base-{BASE_SUITE}-{key}.tar"
    if not tarball.is_file():
        if not shutil.which("debootstrap"):
            reason = _apt_install("debootstrap")
            if reason:
                raise RuntimeError(f"cannot make the base image: {reason}")
        tarball.parent.mkdir(parents=True, exist_ok=True)
        rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=tarball.parent))
        try:
            subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                            BASE_SUITE, str(rootfs), mirror], check=True, capture_output=True)
            for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for item in (rootfs / cache).glob("*"):
                    if item.is_file():
                        item.unlink()
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
            partial.rename(tarball)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
    engine.run("import", str(tarball), tag)
    return tag


@dataclass
class ReadmeBuild:
    """The air-gapped CPU build exactly as docker/README.md writes it (its section below)."""

    wheelhouse: list[str]  # `make wheelhouse VARIANT=cpu ...`, on the host with a package index
    debootstrap: str  # the base image's root file system
    base_tag: str  # what `docker import` names it
    image: list[str]  # `make image VARIANT=cpu ...`, on the air-gapped host

    def make_variable(self, name: str) -> str:
        return next(arg.split("=", 1)[1] for arg in self.wheelhouse + self.image if arg.startswith(f"{name}="))


README_SECTION = "## Building without the PyTorch index, or on an air-gapped host"


def readme_build() -> ReadmeBuild:
    """The commands of docker/README.md's air-gapped section, for the CPU image."""
    text = (ROOT / "docker" / "README.md").read_text()
    lines = [line.strip() for line in text.split(README_SECTION, 1)[1].split("\n## ", 1)[0].splitlines()]

    def line(prefix: str) -> str:
        return next(found for found in lines if found.startswith(prefix))

    imported = line("tar -C rootfs -c . | docker import - ")
    return ReadmeBuild(wheelhouse=shlex.split(line("make wheelhouse VARIANT=cpu")), debootstrap=line("debootstrap "),
                       base_tag=imported.rsplit(" ", 1)[1], image=shlex.split(line("make image VARIANT=cpu")))


def copy_checkout(dest: Path) -> Path:
    """The repository as a user copies it to a build host: what make, the scripts and the build context use
    (links kept), with the virtual environment `make setup` made (the python `make wheelhouse` downloads with)."""
    for name in ("Makefile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("whisper_k8s", "trainer", "helm", "docker", "scripts"):
        shutil.copytree(ROOT / name, dest / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    if (ROOT / ".venv").exists():
        (dest / ".venv").symlink_to((ROOT / ".venv").resolve())
    return dest


def _link_tree(source: Path, dest: Path) -> None:
    """Copy a folder of large files as hard links where the file system allows it."""
    try:
        shutil.copytree(source, dest, copy_function=os.link)
    except OSError:
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(source, dest)


def fill_wheelhouse(build: ReadmeBuild, checkout: Path, env: dict[str, str]) -> None:
    """``./wheelhouse`` of the checkout, made by the README's ``make wheelhouse``; cached under .tools/wheelhouse
    by everything it depends on (the command, the requirements, the script, the Dockerfile's arguments)."""
    dockerfile_args = re.findall(r"^ARG .*$", (ROOT / "docker/Dockerfile.cpu").read_text(), re.M)
    inputs = [(ROOT / "docker/requirements" / name).read_text() for name in ("build.txt", "train.txt")]
    key = _key(" ".join(build.wheelhouse), os.uname().machine, *inputs, *dockerfile_args,
               (ROOT / "scripts/image.sh").read_text())
    cached = CACHE / "wheelhouse" / f"cpu-{key}"
    if not cached.is_dir():
        proc = subprocess.run(build.wheelhouse, cwd=checkout, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise AssertionError(f"{shlex.join(build.wheelhouse)} failed:\n{proc.stdout[-3000:]}\n"
                                 f"{proc.stderr[-3000:]}")
        for old in cached.parent.glob("*") if cached.parent.is_dir() else ():  # keep one: they are large
            shutil.rmtree(old, ignore_errors=True)
        partial = cached.with_name(cached.name + ".partial")
        _link_tree(checkout / "wheelhouse", partial)
        partial.rename(cached)
    elif not (checkout / "wheelhouse").exists():
        _link_tree(cached, checkout / "wheelhouse")


def build_cpu_image(engine: Engine) -> tuple[str, float, str]:
    """The CPU image built as docker/README.md's air-gapped section says, in a copy of the repository: its
    ``make wheelhouse``, a debootstrap base tagged as it names it, its ``make image``; (image, seconds, base)."""
    build = readme_build()
    base = base_image(engine)
    engine.run("tag", base, build.base_tag)
    env = dict(engine.env, CONTAINER_ENGINE=engine.cli)  # make's CONTAINER_ENGINE ?= docker takes it
    (CACHE / "build-hosts").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="checkout-", dir=CACHE / "build-hosts") as tmp:
        checkout = copy_checkout(Path(tmp))
        fill_wheelhouse(build, checkout, env)
        started = time.monotonic()
        proc = subprocess.run(build.image, cwd=checkout, capture_output=True, text=True, env=env)
        seconds = time.monotonic() - started
    log = proc.stdout + proc.stderr
    if proc.returncode:
        raise AssertionError(f"{shlex.join(build.image)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    assert_offline_installs(log)
    image = re.search(r"^build: \S+ build -f docker/Dockerfile.cpu -t (\S+) ", proc.stderr, re.M).group(1)
    return image, seconds, build.base_tag


def assert_offline_installs(log: str) -> None:
    """Every build step that runs pip-install either said ``pip-install: offline`` or came from the layer cache.

    A cached layer is keyed by the wheelhouse copied before it, so it was built offline from the same wheels
    (a warm ``.tools/docker`` reuses them and prints no pip-install line at all)."""
    steps = re.split(r"^Step \d+/\d+ : ", log, flags=re.M)[1:]
    installs = [step for step in steps if step.startswith("RUN") and "pip-install" in step.splitlines()[0]]
    assert installs, log[-3000:]
    for step in installs:
        assert "pip-install: from the package index" not in step, step[-3000:]
        assert "pip-install: offline" in step or "---> Using cache" in step, step[-3000:]


def image_reference(build: ReadmeBuild) -> str:
    """The tag the README's ``make image`` gives, as make computes it (``make -n``)."""
    proc = subprocess.run([build.image[0], "-n", *build.image[1:]], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    return re.search(r"IMAGE_REF=(\S+)", proc.stdout).group(1)


def keep_or_remove(engine: Engine, tags: dict[str, str | None]) -> None:
    """After the session, on an engine that is not ours: each tag we made points again at the image it named
    before (its id), or is removed. Ours keeps them (its data under .tools/docker is the build cache)."""
    if engine.ours:
        return
    for tag, previous in tags.items():
        engine.run("tag", previous, tag, check=False) if previous else engine.run("rmi", tag, check=False)


def image_id(engine: Engine, tag: str) -> str | None:
    proc = engine.run("image", "inspect", "--format", "{{.Id}}", tag, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


# ------------------------------------------------------------------ one engine and one image per test session
_SESSION: dict[str, object] = {}


def session_engine() -> Engine | str:
    """The session's engine (started once, stopped at exit), or the reason there is none."""
    if "engine" not in _SESSION:
        engine = start_engine()
        _SESSION["engine"] = engine
        if isinstance(engine, Engine):
            atexit.register(stop_engine, engine)
    return _SESSION["engine"]  # type: ignore[return-value]


def session_image(engine: Engine) -> tuple[str, float]:
    """The CPU image, built once per session as docker/README.md says; its tags are restored at exit."""
    if "image" not in _SESSION:
        build = readme_build()
        tags = [build.base_tag, image_reference(build)]
        before = {tag: image_id(engine, tag) for tag in tags}
        # registered after stop_engine, so it runs before it (atexit is last in, first out)
        atexit.register(keep_or_remove, engine, before)
        image, seconds, _ = build_cpu_image(engine)
        assert image in tags, (image, tags)
        _SESSION["image"] = (image, seconds)
    return _SESSION["image"]  # type: ignore[return-value]
