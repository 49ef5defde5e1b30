"""`assets upload-model`'s sender side: the folder is checked here first, then sent with the verified protocol."""

from __future__ import annotations

import json
import shutil

import pytest

from whisper_k8s.assets.model_folder import upload_model
from whisper_k8s.errors import UserError
from whisper_k8s.preflight import main as preflight
from whisper_k8s.transfer.manifest import VolumeManifest
from whisper_k8s.transfer.transport import local_transport


def test_a_whisper_folder_is_sent_whole_and_passes_the_preflight_there(hf_whisper_tiny, tmp_path):
    dest = tmp_path / "models" / "whisper-tiny"
    result = upload_model(hf_whisper_tiny, local_transport("claim models"), str(dest), preset="tiny", quiet=True)
    names = sorted(p.name for p in hf_whisper_tiny.iterdir())
    assert result.stored_files == len(names) and sorted(VolumeManifest.load(dest).files) == names
    assert all((dest / n).read_bytes() == (hf_whisper_tiny / n).read_bytes() for n in names)
    assert preflight(["--pretrained", str(dest), "--preset", "tiny"]) == 0


def test_a_folder_that_is_not_whisper_or_not_the_preset_is_refused_before_sending(hf_whisper_tiny, tmp_path):
    dest = tmp_path / "models" / "m"
    with pytest.raises(UserError, match=r"SRC .*custom \(d_model 64.*does not match preset large-v3.*another "
                                        r"--preset"):
        upload_model(hf_whisper_tiny, local_transport("claim models"), str(dest), preset="large-v3", quiet=True)
    odd = tmp_path / "odd"
    shutil.copytree(hf_whisper_tiny, odd)
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "encoder_layers": 3}))
    with pytest.raises(UserError, match=r"weights do not match its config.json \(missing: model.encoder.layers.2"):
        upload_model(odd, local_transport("claim models"), str(dest), quiet=True)
    (odd / "model.safetensors").unlink()
    with pytest.raises(UserError, match="not a checkpoint folder.*save_pretrained writes"):
        upload_model(odd, local_transport("claim models"), str(dest), quiet=True)
    assert not dest.exists()
