"""`dataset fetch`'s in-pod fetcher against real servers on loopback: an S3-compatible store and http.server.

The S3 store is moto's standalone server (``.tools/s3-server``, made by `make setup`) with request
authentication on: it checks every SigV4 signature and access key as AWS does, so a wrong secret fails there,
not in a mock. The objects are written by boto3 (another client); our own client only lists and reads.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from whisper_k8s.dataset.tree_check import check_tree
from whisper_k8s.errors import ClusterError, UserError
from whisper_k8s.transfer import fetch as fetch_module
from whisper_k8s.transfer.fetch import fetch
from whisper_k8s.transfer.manifest import STATE_DIR, VolumeManifest
from whisper_k8s.transfer.s3 import Credentials, sign
from whisper_k8s.transfer.store import VolumeStore

ROOT = Path(__file__).resolve().parents[1]
S3_SERVER = Path(os.environ.get("WHISPER_K8S_S3_SERVER", ROOT / ".tools" / "s3-server"))
BIG = 3 << 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@pytest.fixture(scope="module")
def published(tmp_path_factory, cv_dataset) -> Path:
    """What the stores serve: the synthetic Common Voice tree plus one larger file."""
    tree = tmp_path_factory.mktemp("published") / "cv11"
    shutil.copytree(cv_dataset, tree)
    (tree / "extra.bin").write_bytes(os.urandom(BIG))
    return tree


@pytest.fixture(scope="module")
def s3_store(published):
    """(endpoint, access key, secret key) of a running moto server holding s3://datasets/cv11/..."""
    server = S3_SERVER / "bin" / "moto_server"
    if not server.exists():
        pytest.fail(f"no S3 test server at {server}: run `make setup` (it installs moto[server] into .tools)")
    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")  # the seeding user's three IAM calls, then auth
    process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        seeded = subprocess.run([str(S3_SERVER / "bin" / "python"), str(ROOT / "tests" / "s3_seed.py"), endpoint,
                                 "datasets", "cv11", str(published)], capture_output=True, text=True, check=True)
        keys = json.loads(seeded.stdout)
        yield endpoint, keys["access_key"], keys["secret_key"]
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def s3_env(s3_store, monkeypatch):
    endpoint, access, secret = s3_store
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return endpoint


def same_tree(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    theirs = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and STATE_DIR not in p.relative_to(b).parts)
    return files == theirs and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_sigv4_matches_the_published_aws_example():
    """AWS's "GET Object" example of the Authorization-header signature (S3 API reference, SigV4 examples)."""
    headers = sign("GET", "https://examplebucket.s3.amazonaws.com/test.txt", {"Range": "bytes=0-9"},
                   Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"), "us-east-1",
                   now=datetime(2013, 5, 24, tzinfo=timezone.utc))
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")


def test_fetch_from_s3_then_rerun_fetches_nothing(s3_env, published, tmp_path):
    dest = tmp_path / "claim" / "cv11"
    first = fetch("s3://datasets/cv11", str(dest))
    assert first.stored_files == sum(1 for p in published.rglob("*") if p.is_file())
    assert same_tree(published, dest)
    assert check_tree(dest).held == {"en": ["train", "test"]}
    records = VolumeManifest.load(dest).files
    assert records["extra.bin"].size == BIG and len(records) == first.stored_files
    again = fetch("s3://datasets/cv11/", str(dest))
    assert (again.stored_files, again.kept_files) == (0, first.stored_files)


def test_an_interrupted_s3_download_continues_with_a_range_request(s3_env, published, tmp_path):
    dest = tmp_path / "cv11"
    listed = {f.path: f for f in fetch_module.open_source("s3://datasets/cv11").list()}
    extra = listed["extra.bin"]
    with VolumeStore(dest) as store:
        incoming = store.begin("extra.bin", extra.size, extra.source, md5=True)
        incoming.write((published / "extra.bin").read_bytes()[: BIG // 3])
        incoming.suspend()  # what a killed fetch leaves: a partial file, nothing under the final name
    assert not (dest / "extra.bin").exists()
    result = fetch("s3://datasets/cv11", str(dest))
    others = sum(f.size for name, f in listed.items() if name != "extra.bin")
    assert result.stored_bytes == others + BIG - BIG // 3
    assert same_tree(published, dest)


def test_wrong_credentials_name_the_secret(s3_env, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(UserError, match="SignatureDoesNotMatch.*check the Secret given with --secret") as err:
        fetch("s3://datasets/cv11", str(tmp_path / "cv"))
    assert "\n" not in str(err.value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY")
    with pytest.raises(UserError, match="InvalidAccessKeyId"):
        fetch("s3://datasets/cv11", str(tmp_path / "cv"))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(UserError, match="no S3 credentials.*--secret"):
        fetch("s3://datasets/cv11", str(tmp_path / "cv"))
    assert not [p for p in (tmp_path / "cv").rglob("*") if p.is_file() and STATE_DIR not in p.parts]


def test_a_missing_bucket_or_prefix_is_named(s3_env, tmp_path):
    with pytest.raises(UserError, match="s3://nobucket does not exist"):
        fetch("s3://nobucket/cv11", str(tmp_path / "cv"))
    with pytest.raises(UserError, match="holds no objects: check the prefix"):
        fetch("s3://datasets/nothing-here", str(tmp_path / "cv"))


def test_an_unreachable_store_is_one_line_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ClusterError, match=f"cannot reach the object store at {endpoint} .*check the endpoint"):
        fetch("s3://datasets/cv11", str(tmp_path / "cv"), endpoint=endpoint)


def test_the_fetcher_command_exits_with_the_error_class_code(s3_env, tmp_path):
    env = dict(os.environ, AWS_SECRET_ACCESS_KEY="wrong", PYTHONPATH=os.pathsep.join(sys.path))
    run = subprocess.run([sys.executable, "-m", "whisper_k8s.transfer.fetch", "s3://datasets/cv11",
                          str(tmp_path / "cv")], capture_output=True, text=True, env=env)
    assert run.returncode == 2 and run.stderr.startswith("error: the object store at")
    assert len(run.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def http_root(published):
    """http.server on loopback serving the folder above the published tree (no Range support, as is)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(published.parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_a_common_voice_tree_over_http(http_root, published, tmp_path):
    dest = tmp_path / "cv11"
    result = fetch(f"{http_root}/cv11/", str(dest), languages=["en"])
    assert check_tree(dest).held == {"en": ["train", "test"]}
    assert result.stored_files == 4 + 1  # n_shards.json, two transcripts, two shards: what n_shards.json lists
    assert fetch(f"{http_root}/cv11/", str(dest)).stored_files == 0
    with pytest.raises(UserError, match="--lang hi: not in"):
        fetch(f"{http_root}/cv11/", str(dest), languages=["hi"])


def test_fetch_one_file_over_http_restarts_when_the_server_ignores_ranges(http_root, published, tmp_path):
    dest = tmp_path / "one"
    listed = fetch_module.open_source(f"{http_root}/cv11/extra.bin").list()[0]
    with VolumeStore(dest) as store:
        incoming = store.begin("extra.bin", listed.size, listed.source)
        incoming.write(b"x" * 1000)
        incoming.suspend()
    result = fetch(f"{http_root}/cv11/extra.bin", str(dest))
    assert result.stored_bytes == BIG and (dest / "extra.bin").read_bytes() == (published / "extra.bin").read_bytes()
    with pytest.raises(UserError, match="answered 404 .*check the URL"):
        fetch(f"{http_root}/cv11/missing.bin", str(dest))
