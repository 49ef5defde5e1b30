"""This machine's container-engine facts, for the tests that build and run the images (marked ``docker``).

Kept here, not in the product: how an engine is found or started, how the air-gapped CPU image is built.

* Docker: an engine that already answers (``docker info``) is used as it is. Otherwise, as root, Debian's
  ``docker.io`` package is installed when ``dockerd`` is missing, and a ``dockerd`` is started in the
  background (no systemd here) on a private socket, with its data under ``.tools/docker`` (a cache, like the
  wheelhouse: images built there speed up the next run; ``make clean`` removes it), and stopped by its PID at
  the end of the session. Where none can start, the tests skip with the reason.
* No registry is reachable, so no base image can be pulled: the CPU image's base is Debian bookworm made with
  ``debootstrap --variant=minbase`` from the mirror apt uses, with python3 (3.11), venv, libsndfile and CA
  certificates, imported with ``docker import`` (the tarball is cached under ``.tools/images``).
* Inside containers HTTPS goes through an intercepting proxy, so the image's packages come from a wheelhouse
  downloaded on the host (``scripts/wheelhouse.sh``, cached under ``.tools/wheelhouse`` by its inputs).
* Podman (``WHISPER_K8S_TEST_ENGINE=podman``) needs, on these machines, the runc runtime, the cgroupfs
  cgroup manager and ulimits within the hard limits: :data:`PODMAN_ARGS` / :func:`podman_ulimits`.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".tools"
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "libsndfile1", "ca-certificates")
BASE_PYTHON = "3.11"  # Debian bookworm's python3; the product images target 3.10 (docker/README.md)
TEST_IMAGE = "localhost/whisper-k8s-test:0.1.0-cpu"
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


def torch_version() -> str:
    """The torch release of the test environment (its wheel is what pip finds here for the base's Python)."""
    return metadata.version("torch").split("+")[0]


def wheelhouse() -> Path:
    """The CPU image's wheelhouse for the base's Python, downloaded on the host; cached by its inputs."""
    inputs = [(ROOT / "docker/requirements" / name).read_text() for name in ("build.txt", "train.txt")]
    torch_index = os.environ.get("TORCH_INDEX_URL", "")
    key = _key(BASE_PYTHON, os.uname().machine, torch_version(), torch_index, *inputs,
               (ROOT / "scripts/wheelhouse.sh").read_text())
    folder = CACHE / "wheelhouse" / f"cpu-{key}"
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    for old in folder.parent.iterdir():  # one wheelhouse at a time: all of them are in the build context
        shutil.rmtree(old, ignore_errors=True)
    partial = folder.with_name(folder.name + ".partial")
    env = dict(os.environ, VARIANT="cpu", WHEELHOUSE=str(partial), PYTHON_VERSION=BASE_PYTHON,
               TORCH_VERSION=torch_version(), TORCH_INDEX_URL=torch_index, PIP_PYTHON=sys.executable)
    subprocess.run([str(ROOT / "scripts/wheelhouse.sh")], check=True, env=env, capture_output=True)
    partial.rename(folder)
    return folder


def build_cpu_image(engine: Engine) -> tuple[str, float, str]:
    """``make image VARIANT=cpu`` on the local base from the wheelhouse; (tag, seconds it took, base tag)."""
    base, wheels = base_image(engine), wheelhouse()
    registry, rest = TEST_IMAGE.split("/", 1)
    name, tag = rest.split(":")
    build_args = (f"--build-arg BASE_IMAGE={base} --build-arg PYTHON_VERSION={BASE_PYTHON} "
                  f"--build-arg TORCH_VERSION={torch_version()} --build-arg TORCH_INDEX_URL= "
                  f"--build-arg WHEELHOUSE_CONTEXT={wheels.relative_to(ROOT)}")
    started = time.monotonic()
    proc = subprocess.run(["make", "--no-print-directory", "image", "VARIANT=cpu", f"CONTAINER_ENGINE={engine.cli}",
                           f"REGISTRY={registry}", f"IMAGE={name}", f"TAG={tag.removesuffix('-cpu')}",
                           f"BUILD_ARGS={build_args}"],
                          cwd=ROOT, capture_output=True, text=True, env=engine.env)
    if proc.returncode:
        raise AssertionError(f"make image failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    return TEST_IMAGE, time.monotonic() - started, base


def remove_images(engine: Engine, *tags: str) -> None:
    """Remove the tags we made, unless the daemon is ours (its data under .tools/docker is the build cache)."""
    if not engine.ours:
        engine.run("rmi", *tags, check=False)


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
    """The CPU test image, built once per session; its tags are removed at exit (see remove_images)."""
    if "image" not in _SESSION:
        image, seconds, base = build_cpu_image(engine)
        _SESSION["image"] = (image, seconds)
        # registered after stop_engine, so it runs before it (atexit is last in, first out)
        atexit.register(remove_images, engine, image, base)
    return _SESSION["image"]  # type: ignore[return-value]
