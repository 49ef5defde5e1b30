"""The package as a user installs it: the wheel built from this checkout, installed into a fresh virtual
environment outside the checkout and without torch, submits a dry run from an empty folder.

The wheel is built once per content of the packaged sources (cached under pytest's cache folder). The fresh
environment gets the wheel through pip; its dependencies (pyyaml, jsonschema, kubernetes, tqdm and theirs) are
the ones installed here, made visible to it one distribution at a time, so pip resolves them offline and
nothing else of this environment (torch, the editable checkout) is importable there.
"""

from __future__ import annotations

import email.parser
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from k8s_validation import CRDS, document_errors

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ("pyproject.toml", "README.md", "whisper_k8s", "trainer", "helm")
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")


def _packaged_files() -> list[Path]:
    files = []
    for name in PACKAGED:
        path = ROOT / name
        files += [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    return files


def _digest() -> str:
    sha = hashlib.sha256()
    for path in _packaged_files():
        sha.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()[:16]


@pytest.fixture(scope="module")
def wheel(request, tmp_path_factory) -> Path:
    """The wheel of this checkout: built from a copy of the packaged sources (no build/ left here)."""
    cache = Path(request.config.cache.mkdir("whisper-k8s-wheel"))
    digest = _digest()
    built = sorted((cache / digest).glob("*.whl"))
    if built:
        return built[0]
    source = tmp_path_factory.mktemp("wheel-source")
    for name in PACKAGED:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, symlinks=True, ignore=SKIPPED)
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("wheel-out")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(out), str(source)], check=True, timeout=300)
    for old in cache.iterdir():  # keep only the wheel of the current sources
        shutil.rmtree(old, ignore_errors=True)
    shutil.move(str(out), str(cache / digest))
    return next((cache / digest).glob("*.whl"))


def _requirement_closure(names: list[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``names`` need, transitively (markers evaluated, extras not followed)."""
    from packaging.requirements import Requirement

    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        dist = seen[name] = importlib.metadata.distribution(name)
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(seen.values())


def _link_dependencies(wheel: Path, folder: Path) -> None:
    """Symlink the top-level entries of each dependency distribution of ``wheel`` into ``folder``."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(name).decode())
    base = [Requirement(r).name for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    folder.mkdir()
    for dist in _requirement_closure(base):
        site = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if not (folder / top).exists():
                (folder / top).symlink_to(site / top)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory, helm_bin) -> dict:
    """A fresh venv with the wheel installed by pip; returns the environment to run its commands in."""
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    _link_dependencies(wheel, root / "deps")
    (site / "dependencies.pth").write_text(f"{root / 'deps'}\n")
    # without PYTHONPATH: a checkout on it (its editable egg-info) would make pip think the wheel is installed
    pip_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index",
                    "--disable-pip-version-check", str(wheel)], check=True, timeout=300, env=pip_env)
    env = {"PATH": os.pathsep.join([str(venv / "bin"), str(Path(helm_bin).parent), "/usr/bin", "/bin"]),
           "HOME": str(root), "LANG": "C.UTF-8"}
    return {"env": env, "python": python, "venv": venv, "cwd": root / "elsewhere"}


def run(installed: dict, *argv: str) -> subprocess.CompletedProcess:
    installed["cwd"].mkdir(exist_ok=True)
    return subprocess.run(list(argv), cwd=installed["cwd"], env=installed["env"], capture_output=True, text=True,
                          timeout=120)


def test_the_environment_is_fresh(installed):
    probe = run(installed, str(installed["python"]), "-c",
                "import importlib.util as u, whisper_k8s; print(whisper_k8s.__file__); "
                "print(u.find_spec('torch'), u.find_spec('transformers'))")
    assert probe.returncode == 0, probe.stderr
    location, heavy = probe.stdout.splitlines()
    assert Path(location).is_relative_to(installed["venv"]) and not Path(location).is_relative_to(ROOT)
    assert heavy == "None None"


@pytest.mark.parametrize("command", [["whisper-k8s"], ["python", "-m", "whisper_k8s"]], ids=["script", "module"])
def test_installed_cli_dry_run_is_crd_valid(installed, command):
    result = run(installed, *command, "submit", "--nodes", "2", "--dry-run")
    assert result.returncode == 0, result.stderr
    first, _ = result.stdout.split("\n", 1)
    chart = first.split()[first.split().index("--install") + 2]  # helm upgrade --install NAME CHART ...
    assert Path(chart).is_relative_to(installed["venv"]) and Path(chart).name == "_chart"
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    for document in documents:
        assert document_errors(document, CRDS) == [], document["kind"]
    (job,) = [d for d in documents if d["kind"] == "PyTorchJob"]
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 1
    kept = installed["cwd"] / "runs" / job["metadata"]["name"] / "values.yaml"
    assert yaml.safe_load(kept.read_text())["nodes"] == 2
