"""Fine-tuning that starts from real pretrained weights, the way a cluster job does: the chart's
``convert-pretrained`` init container turns the Hugging Face tiny.en folder on the models volume into the
MindSpeed-MM ``whisper.pth`` the trainer loads (``ckpt_path``), on the local backend (one node, CPU).

Proof that the weights really arrive: a freshly initialised Whisper starts at a loss of ln(51864) = 10.9 per
token; OpenAI's tiny.en, which already transcribes this speech, starts well below it; and after three steps at
a small learning rate the collected model transcribes the clips (three steps from scratch teach nothing).
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.test_collect import cli, local_env
from whisper_k8s.inference.evaluate import evaluate_dataset

# The tiny preset's fields that tiny.en sets differently (its sizes, vocabulary and special ids).
WHISPER_FIELDS = ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
                  "encoder_ffn_dim", "decoder_ffn_dim", "vocab_size", "num_mel_bins", "max_source_positions",
                  "max_target_positions", "num_hidden_layers", "bos_token_id", "eos_token_id", "pad_token_id",
                  "decoder_start_token_id", "begin_suppress_tokens")


@pytest.mark.e2e
@pytest.mark.slow
def test_fine_tuning_starts_from_openai_weights_through_the_conversion_init_container(tmp_path, cv_dataset,
                                                                                      tiny_en_dir):
    config = json.loads((tiny_en_dir / "config.json").read_text())
    values = tmp_path / "finetune.yaml"
    values.write_text(yaml.safe_dump({
        "model": {"preset": "tiny", "overrides": {k: config[k] for k in WHISPER_FIELDS}},
        "storage": {"models": {"type": "hostPath", "hostPath": str(tiny_en_dir.parent)}},
        "data": {"language": "en", "whisperLanguage": "English", "processor": f"/models/{tiny_en_dir.name}"},
        "training": {"trainIters": 3, "microBatchSize": 2, "numWorkers": 0, "bf16": False, "saveInterval": 3,
                     "logInterval": 1, "lr": 1e-5},
    }))
    env = local_env(tmp_path)
    submitted = cli("submit", "--name", "finetune", "--local", "--nodes", "1", "--accelerator", "cpu",
                    "--dataset", str(cv_dataset), "--pretrained", tiny_en_dir.name, "-f", str(values),
                    "--follow", env=env, timeout=600)
    log = submitted.stdout + submitted.stderr
    assert submitted.returncode == 0, log[-4000:]
    losses = [float(x) for x in re.findall(r"iteration\s+\d+/3 \| loss ([0-9.]+)", log)]
    assert len(losses) == 3, log[-3000:]
    # From scratch a Whisper starts at ln(51864) = 10.9. tiny.en starts lower although the trainer's labels hold
    # <|en|><|transcribe|><|notimestamps|>, which an English-only model never predicts after
    # <|startoftranscript|> (most of what is left of its first loss, ~5.5).
    assert losses[0] < 8.0, losses

    collected = cli("collect", "finetune", "--local", "--to", str(tmp_path / "model"),
                    "--processor", str(tiny_en_dir), env=env)
    assert collected.returncode == 0, collected.stderr[-3000:]
    summary = evaluate_dataset(tmp_path / "model", cv_dataset, "en", "train", limit=4, device="cpu")
    assert summary.wer <= 0.25, summary.line()
