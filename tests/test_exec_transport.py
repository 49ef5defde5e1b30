"""Uploads through the Kubernetes exec API: the real kubernetes client's websocket stream against a loopback
endpoint that speaks the exec wire protocol (tests/k8s_exec_server.py) and runs the real receiver."""

from __future__ import annotations

import pytest
from k8s_exec_server import ExecServer
from kubernetes import client

from whisper_k8s.dataset.upload import upload_dataset
from whisper_k8s.errors import ClusterError
from whisper_k8s.transfer.exec_channel import ExecTransport
from whisper_k8s.transfer.manifest import STATE_DIR
from whisper_k8s.transfer.send import scan


@pytest.fixture
def exec_server():
    server = ExecServer()
    yield server
    server.shutdown()


def transport(server: ExecServer) -> ExecTransport:
    configuration = client.Configuration(host=server.host)
    return ExecTransport(client.ApiClient(configuration), "cv11-upload-x1y2z", "team-a", "upload", "claim cv11")


def same(src, dest) -> bool:
    return all((dest / f.path).read_bytes() == f.full.read_bytes() for f in scan(src))


def test_upload_through_the_exec_stream(cv_dataset, tmp_path, exec_server):
    dest = tmp_path / "data" / "common_voice_11_0"
    result = upload_dataset(cv_dataset, transport(exec_server), str(dest), quiet=True)
    assert result.stored_files == len(scan(cv_dataset)) and same(cv_dataset, dest)
    assert result.tree["held"] == {"en": ["train", "test"]}
    assert exec_server.sessions == [[exec_server.sessions[0][0], "-m", "whisper_k8s.transfer.receive", str(dest),
                                     "--check", "common-voice"]]
    again = upload_dataset(cv_dataset, transport(exec_server), str(dest), quiet=True)
    assert (again.stored_files, again.kept_files) == (0, result.stored_files)


def test_a_receiver_killed_in_the_pod_is_one_line_and_the_rerun_resumes(cv_dataset, tmp_path, exec_server):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(bytes(range(256)) * (12 << 12))  # 12 MiB
    dest = tmp_path / "data" / "models"
    exec_server.kill_after_stdin(5 << 20)
    with pytest.raises(ClusterError, match="the transfer to claim cv11 stopped.*run the same command again") as err:
        upload_dataset(src, transport(exec_server), str(dest), any_folder=True, quiet=True)
    assert "\n" not in str(err.value) and not (dest / "big.bin").exists()
    partial = [p for p in (dest / STATE_DIR / "partial").iterdir() if p.suffix != ".json"]
    received = partial[0].stat().st_size
    assert 0 < received < 12 << 20
    result = upload_dataset(src, transport(exec_server), str(dest), any_folder=True, quiet=True)
    assert result.resumed_files == 1 and result.stored_bytes == (12 << 20) - received and same(src, dest)
