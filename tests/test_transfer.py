"""Uploads into a volume through the real protocol: a receiver process, real pipes, real files, a real tmpfs.

Every test runs ``python -m whisper_k8s.transfer.receive`` as a child process (the local backend's transport;
docker and the Kubernetes exec stream carry the same bytes) and looks at the destination afterwards: every
file under its final name is whole, the manifest matches the bytes, a rerun sends only what is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from whisper_k8s.checksum import sha256_file
from whisper_k8s.dataset.tree_check import check_tree, require_tree
from whisper_k8s.errors import ClusterError, UserError
from whisper_k8s.transfer.manifest import STATE_DIR, VolumeManifest, check_relative_path
from whisper_k8s.transfer.send import scan, upload
from whisper_k8s.transfer.transport import Channel, Transport, local_transport

BIG = 6 << 20


@pytest.fixture
def source(tmp_path, cv_dataset) -> Path:
    """The synthetic Common Voice tree plus one large file, so that a transfer can be cut inside a file."""
    src = tmp_path / "src"
    shutil.copytree(cv_dataset, src)
    (src / "extra").mkdir()
    (src / "extra" / "big.bin").write_bytes(os.urandom(BIG))
    return src


def final_files(dest: Path) -> dict[str, Path]:
    return {p.relative_to(dest).as_posix(): p for p in dest.rglob("*")
            if p.is_file() and STATE_DIR not in p.relative_to(dest).parts}


def assert_whole(src: Path, dest: Path) -> set[str]:
    """Every file under a final name equals its source and is in the manifest with its sha256."""
    records = VolumeManifest.load(dest).files
    found = final_files(dest)
    for name, path in found.items():
        assert path.read_bytes() == (src / name).read_bytes(), name
        assert records[name].sha256 == sha256_file(path), name
    return set(found)


class _CutChannel(Channel):
    """Forwards to a real receiver; once ``after`` bytes went through, runs ``cut`` (kill it, or Ctrl-C)."""

    def __init__(self, inner: Channel, after: int, cut):
        self.inner, self.after, self.cut, self.sent = inner, after, cut, 0

    def write(self, data: bytes) -> None:
        self.inner.write(data)
        self.sent += len(data)
        if self.sent >= self.after and self.cut:
            cut, self.cut = self.cut, None
            self.inner.flush()
            cut(self.inner)

    def flush(self):
        self.inner.flush()

    def readline(self):
        return self.inner.readline()

    def close(self, *, abort=False):
        return self.inner.close(abort=abort)


class _CutTransport(Transport):
    def __init__(self, after: int, cut):
        self.inner, self.after, self.cut = local_transport("claim test"), after, cut
        self.where = self.inner.where

    def open(self, module, args):
        return _CutChannel(self.inner.open(module, args), self.after, self.cut)


def _kill_receiver(channel) -> None:
    channel.process.send_signal(signal.SIGKILL)
    channel.process.wait()


def test_upload_then_rerun_sends_nothing_and_reports_the_tree(source, tmp_path):
    dest = tmp_path / "volume" / "cv"
    transport = local_transport("claim test")
    first = upload(source, transport, str(dest), check="common-voice", quiet=True)
    files = scan(source)
    assert first.stored_files == len(files) and first.stored_bytes == sum(f.size for f in files)
    assert assert_whole(source, dest) == {f.path for f in files}
    assert first.tree["held"] == {"en": ["train", "test"]} and not first.tree["problems"]
    assert not list((dest / STATE_DIR / "partial").glob("*"))

    again = upload(source, transport, str(dest), quiet=True)
    assert (again.stored_files, again.stored_bytes, again.kept_files) == (0, 0, len(files))


def test_killed_receiver_leaves_nothing_that_looks_complete_and_a_rerun_sends_only_the_rest(source, tmp_path):
    dest = tmp_path / "cv"
    files = {f.path: f for f in scan(source)}
    before_big = sum(f.size for f in scan(source)[:[f.path for f in scan(source)].index("extra/big.bin")])
    cut = _CutTransport(before_big + (BIG // 2), _kill_receiver)
    with pytest.raises(ClusterError, match="stopped.*run the same command again, it resumes") as err:
        upload(source, cut, str(dest), quiet=True)
    assert "\n" not in str(err.value)
    stored = assert_whole(source, dest)
    assert "extra/big.bin" not in stored and stored < set(files)
    partial = [p for p in (dest / STATE_DIR / "partial").iterdir() if p.suffix != ".json"]
    received = partial[0].stat().st_size if len(partial) == 1 else -1
    assert 0 < received < BIG

    resumed = upload(source, local_transport("claim test"), str(dest), quiet=True)
    rest = sum(files[name].size for name in set(files) - stored)
    assert resumed.resumed_files == 1 and resumed.kept_files == len(stored)
    assert resumed.stored_bytes == rest - received
    assert assert_whole(source, dest) == set(files)
    assert not list((dest / STATE_DIR / "partial").iterdir())


def test_ctrl_c_on_the_sender_keeps_finished_files_and_the_partial(source, tmp_path):
    dest = tmp_path / "cv"

    def interrupt(channel):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upload(source, _CutTransport(BIG // 3, interrupt), str(dest), quiet=True)
    stored = assert_whole(source, dest)
    assert len(stored) < len(scan(source))
    again = upload(source, local_transport("claim test"), str(dest), quiet=True)
    assert again.kept_files == len(stored) and assert_whole(source, dest) == {f.path for f in scan(source)}


def test_a_damaged_file_on_the_volume_is_sent_again(source, tmp_path):
    dest = tmp_path / "cv"
    transport = local_transport("claim test")
    upload(source, transport, str(dest), quiet=True)
    shard = dest / "audio/en/train/en_train_0.tar"
    truncated = dest / "transcript/en/test.tsv"
    truncated.write_bytes(truncated.read_bytes()[:-5])  # size and mtime change: the quick check sees it
    stat = shard.stat()
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0xFF  # a flipped bit that keeps size and mtime: only --verify (re-hashing) sees it
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    quick = upload(source, transport, str(dest), quiet=True)
    assert quick.stored_files == 1 and truncated.read_bytes() == (source / "transcript/en/test.tsv").read_bytes()
    assert shard.read_bytes() != (source / "audio/en/train/en_train_0.tar").read_bytes()
    verified = upload(source, transport, str(dest), verify=True, quiet=True)
    assert verified.stored_files == 1 and assert_whole(source, dest)


def test_a_changed_source_file_replaces_the_stored_one(source, tmp_path):
    dest = tmp_path / "cv"
    transport = local_transport("claim test")
    upload(source, transport, str(dest), quiet=True)
    (source / "transcript/en/train.tsv").write_text("client_id\tpath\tsentence\n")
    assert upload(source, transport, str(dest), quiet=True).stored_files == 1
    assert (dest / "transcript/en/train.tsv").read_text() == "client_id\tpath\tsentence\n"


@pytest.fixture
def small_volume(tmp_path):
    """A real 2 MiB tmpfs (root only: CI and this machine run as root)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_volume_too_small_is_refused_before_sending(source, small_volume):
    with pytest.raises(UserError, match="claim test has .* free but .* need") as err:
        upload(source, local_transport("claim test"), str(small_volume / "cv"), quiet=True)
    assert "larger --size" in str(err.value) and not final_files(small_volume / "cv")


def test_disk_full_mid_file_is_one_line_and_leaves_nothing_that_looks_complete(source, small_volume):
    dest = small_volume / "cv"
    with pytest.raises(UserError, match="claim test is full .*larger --size.*send the rest") as err:
        upload(source, local_transport("claim test"), str(dest), check_space=False, quiet=True)
    assert "\n" not in str(err.value)
    stored = assert_whole(source, dest)
    assert "extra/big.bin" not in stored
    assert not [p for p in (dest / STATE_DIR / "partial").iterdir() if p.suffix != ".json"]


def test_common_voice_tree_check_names_what_is_missing(cv_dataset, tmp_path):
    tree = tmp_path / "cv"
    shutil.copytree(cv_dataset, tree)
    (tree / "audio/en/test/en_test_0.tar").unlink()
    report = check_tree(tree)
    assert report.held == {"en": ["train"]}
    assert report.problems == ["en/test: audio/en/test/en_test_0.tar is missing"]
    assert report.missing(["en", "hi"], ["train"]) == ["hi/train"]
    with pytest.raises(UserError, match=r"SRC .* is not a Common Voice 11 tree: no n_shards.json .*--any-folder"):
        require_tree(tmp_path / "cv" / "audio")
    json.loads(json.dumps(report.to_dict()))


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../b", f"{STATE_DIR}/manifest.json", "", "a\\b"])
def test_paths_outside_the_destination_are_refused(bad):
    with pytest.raises(UserError, match="refusing file path"):
        check_relative_path(bad)


def test_a_damaged_partial_file_is_sent_again_from_the_start(source, tmp_path):
    dest = tmp_path / "cv"
    with pytest.raises(ClusterError):
        upload(source, _CutTransport(BIG // 2, _kill_receiver), str(dest), quiet=True)
    partial = next(p for p in (dest / STATE_DIR / "partial").iterdir() if p.suffix != ".json")
    data = bytearray(partial.read_bytes())
    data[0] ^= 0xFF
    partial.write_bytes(bytes(data))
    result = upload(source, local_transport("claim test"), str(dest), quiet=True)
    assert result.resumed_files == 1 and not result.rejected
    assert assert_whole(source, dest) == {f.path for f in scan(source)}


def test_dataset_upload_refuses_a_folder_that_is_not_a_tree_unless_asked(cv_dataset, tmp_path):
    from whisper_k8s.dataset.upload import summary, upload_dataset

    with pytest.raises(UserError, match="is not a Common Voice 11 tree.*--any-folder"):
        upload_dataset(cv_dataset / "audio", local_transport("claim test"), str(tmp_path / "a"), quiet=True)
    assert not (tmp_path / "a").exists()
    plain = upload_dataset(cv_dataset / "audio", local_transport("claim test"), str(tmp_path / "a"),
                           any_folder=True, quiet=True)
    assert plain.stored_files == 2 and plain.tree is None
    tree = upload_dataset(cv_dataset, local_transport("claim test"), str(tmp_path / "cv"), quiet=True)
    assert summary(tree, "claim test").splitlines()[1] == "claim test: Common Voice 11 tree with en: train, test"


def test_one_transfer_at_a_time_per_destination(source, tmp_path):
    from whisper_k8s.transfer.store import VolumeStore

    with VolumeStore(tmp_path / "cv"):
        with pytest.raises(ClusterError, match="stopped.*another upload or fetch into .* is running"):
            upload(source, local_transport("claim test"), str(tmp_path / "cv"), quiet=True)
    assert upload(source, local_transport("claim test"), str(tmp_path / "cv"), quiet=True).stored_files


def test_dataset_check_command(cv_dataset, capsys):
    from whisper_k8s.cli.main import main

    assert main(["dataset", "check", str(cv_dataset)]) == 0
    assert capsys.readouterr().out.strip() == "Common Voice 11 tree with en: train, test"
    assert main(["dataset", "check", str(cv_dataset), "--lang", "en,hi", "--split", "train"]) == 2
    assert "incomplete: hi: not in n_shards.json (it lists en)" in capsys.readouterr().out


def test_an_unreadable_source_file_is_named(source, tmp_path):
    (source / "gone").symlink_to(tmp_path / "nowhere")  # a dangling link (root would read a mode-000 file)
    with pytest.raises(UserError, match=r"SRC file .*gone cannot be read \(No such file"):
        upload(source, local_transport("claim test"), str(tmp_path / "cv"), quiet=True)
