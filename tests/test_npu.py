"""The NPU attention path (whisper_trainer.npu) on CPU, with the documented kernel's reference standing in.

No NPU is reachable here. ``tests/npu_reference.py`` implements ``torch_npu.npu_fusion_attention`` from its
documentation (layouts, scale, mask polarity True = masked, sparse modes); our attention function, which turns
Hugging Face's masks and causality into the kernel's arguments, must then equal PyTorch's SDPA (forward and
backward) for each of Whisper's three attention kinds, and a whole model switched to it must train like SDPA.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import npu_reference
import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from whisper_trainer import kernels, npu
from whisper_trainer.config import validate_model_fields
from whisper_trainer.model import build_model, loss_on_batch

from whisper_k8s.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def reference_kernel(monkeypatch) -> list[dict]:
    """The stand-in in the kernel's place; returns the list of calls (their keyword arguments) made through it."""
    calls: list[dict] = []

    def kernel(*args, **kwargs):
        calls.append({"layout": args[4], **kwargs})
        return npu_reference.npu_fusion_attention(*args, **kwargs)

    monkeypatch.setattr(npu, "fusion_attention_kernel", lambda: kernel)
    return calls


class Attention(torch.nn.Module):
    """What the attention function reads from Hugging Face's attention module: causality and training."""

    def __init__(self, is_causal: bool):
        super().__init__()
        self.is_causal = is_causal


def qkv(batch: int, heads: int, q_len: int, kv_len: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, length, 16, generator=g, dtype=torch.float64, requires_grad=True)
            for length in (q_len, kv_len, kv_len)]


def padding_mask(batch: int, q_len: int, kv_len: int) -> torch.Tensor:
    """SDPA/Hugging Face polarity (True = attend): the second sample's last third of keys is padding."""
    keep = torch.ones(batch, 1, q_len, kv_len, dtype=torch.bool)
    keep[1, :, :, 2 * kv_len // 3:] = False
    return keep


CASES = {  # name: (causal module, query length, key length, mask)
    "encoder self-attention": (False, 30, 30, None),
    "decoder causal self-attention": (True, 12, 12, None),
    "cross-attention with padding (boolean mask)": (False, 12, 30, padding_mask(2, 12, 30)),
    "cross-attention with padding (additive mask)": (
        False, 12, 30, torch.zeros(2, 1, 12, 30, dtype=torch.float64).masked_fill(~padding_mask(2, 12, 30), -1e9)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_attention_through_the_kernel_equals_sdpa_forward_and_backward(reference_kernel, case):
    causal, q_len, kv_len, mask = CASES[case]
    module = Attention(causal)
    ours_in, sdpa_in = qkv(2, 3, q_len, kv_len), qkv(2, 3, q_len, kv_len)
    ours, _ = npu.attention_forward(module, *ours_in, mask, scaling=0.3)
    expected, _ = sdpa_attention_forward(module, *sdpa_in, mask, scaling=0.3)
    assert ours.shape == expected.shape == (2, q_len, 3, 16)  # [B, S, N, D], what Whisper's attention reshapes
    torch.testing.assert_close(ours, expected)
    weights = torch.randn(expected.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (ours * weights).sum().backward()
    (expected * weights).sum().backward()
    for name, a, b in zip("qkv", ours_in, sdpa_in, strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=f"{case}: gradient of {name}")


def test_reference_kernel_masks_where_the_mask_is_true_in_every_layout():
    """The stand-in's own polarity and layouts: a mask hiding every key but the first returns that key's value."""
    q, k, v = (t.detach() for t in qkv(2, 3, 5, 7))
    hide_all_but_first = torch.ones(5, 7, dtype=torch.bool)
    hide_all_but_first[:, 0] = False
    out = npu_reference.npu_fusion_attention(q, k, v, 3, "BNSD", atten_mask=hide_all_but_first, scale=0.5)[0]
    torch.testing.assert_close(out, v[:, :, :1, :].expand(-1, -1, 5, -1))
    for layout, move in {"BSND": lambda t: t.transpose(1, 2), "BSH": lambda t: t.transpose(1, 2).flatten(2),
                         "SBH": lambda t: t.permute(2, 0, 1, 3).flatten(2)}.items():
        moved = npu_reference.npu_fusion_attention(*(move(t) for t in (q, k, v)), 3, layout, scale=0.5)[0]
        torch.testing.assert_close(moved, move(npu_reference.npu_fusion_attention(q, k, v, 3, "BNSD", scale=0.5)[0]))
    with pytest.raises(ValueError, match="compressed 2048"):  # causal modes refuse a full-size mask
        npu_reference.npu_fusion_attention(q, k, v, 3, "BNSD", atten_mask=hide_all_but_first, sparse_mode=2)


def test_whisper_on_the_npu_kernel_trains_like_sdpa(reference_kernel):
    """A whole (small) Whisper switched to the kernel: same loss and same gradients as with SDPA."""
    fields = {**json.loads((ROOT / "helm/files/model-presets/demo.json").read_text()), "max_source_positions": 40}
    config = validate_model_fields(fields)
    sdpa, fused = build_model(config, seed=3).double(), build_model(config, seed=3).double()
    kernels.use_attention(fused, "npu")
    assert fused.config._attn_implementation == npu.ATTENTION_NAME
    g = torch.Generator().manual_seed(4)
    features = torch.randn(2, fields["num_mel_bins"], 80, generator=g, dtype=torch.float64)
    labels = torch.randint(220, 50000, (2, 9), generator=g)
    labels[:, 0] = fields["decoder_start_token_id"]
    losses = [loss_on_batch(model, features, labels, model.config) for model in (sdpa, fused)]
    torch.testing.assert_close(losses[1], losses[0])
    # Every attention went through the kernel: encoder self, decoder causal self (sparse mode 2), cross.
    modes = [call.get("sparse_mode", 0) for call in reference_kernel]
    assert len(modes) == fields["encoder_layers"] + 2 * fields["decoder_layers"]
    assert modes.count(npu.LEFT_UP_CAUSAL) == fields["decoder_layers"]
    assert {call["layout"] for call in reference_kernel} == {"BNSD"}
    for loss in losses:
        loss.backward()
    for (name, a), b in zip(sdpa.named_parameters(), fused.parameters(), strict=True):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, msg=name)


def test_auto_picks_the_npu_kernel_on_an_npu_only():
    npu_device = types.SimpleNamespace(type="npu")  # torch.device("npu") exists only once torch_npu is imported
    assert kernels.choose_attention("auto", npu_device) == "npu"
    assert kernels.choose_attention("auto", torch.device("cpu")) == "auto"
    with pytest.raises(UserError, match="--attention-backend npu needs an Ascend NPU"):
        kernels.choose_attention("npu", torch.device("cuda", 0))
