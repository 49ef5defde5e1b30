"""A reference implementation of ``torch_npu.npu_fusion_attention`` from its documentation, in plain PyTorch.

It stands in for the Ascend kernel in the tests (no NPU is reachable here), so it follows the documented
contract, not our use of it, and refuses what it does not implement rather than guessing:

- ``input_layout``: "BSH" [B, S, N*D], "SBH" [S, B, N*D], "BSND" [B, S, N, D], "BNSD" [B, N, S, D]; ``head_num`` N.
- result = softmax(mask(scale * Q.K^T)) . V, per batch and head; the output has the input layout.
- ``atten_mask``: boolean, **True = the position does not take part** (masked); shapes [B,N,Sq,Skv],
  [B,1,Sq,Skv], [1,1,Sq,Skv] or [Sq,Skv].
- ``sparse_mode`` 0: ``atten_mask`` as given (or none); 2 ("leftUpCausal"): causal aligned at the top left, key j
  hidden from query i when j > i; 3 ("rightDownCausal"): aligned at the bottom right, hidden when
  j > i + Skv - Sq. Modes 2 and 3 require the compressed 2048 x 2048 mask (True above the diagonal).
- ``keep_prob``: the share of attention probabilities kept by dropout (1 = none dropped).
- Seven outputs; the first is the attention output (the others are the kernel's softmax statistics and the
  dropout seed/offset/count: returned as placeholders here).
Sources: Ascend Extension for PyTorch API reference, ``torch_npu.npu_fusion_attention`` (parameter table and
the sparse_mode table with its mask diagrams).
"""

from __future__ import annotations

import torch

COMPRESSED = 2048


def _to_bnsd(tensor: torch.Tensor, layout: str, heads: int) -> torch.Tensor:
    if layout == "BNSD":
        return tensor
    if layout == "BSND":
        return tensor.transpose(1, 2)
    if layout == "BSH":
        b, s, h = tensor.shape
        return tensor.view(b, s, heads, h // heads).transpose(1, 2)
    if layout == "SBH":
        s, b, h = tensor.shape
        return tensor.view(s, b, heads, h // heads).permute(1, 2, 0, 3)
    raise NotImplementedError(f"input_layout {layout!r}")


def _from_bnsd(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "BNSD":
        return tensor
    if layout == "BSND":
        return tensor.transpose(1, 2)
    b, n, s, d = tensor.shape
    if layout == "BSH":
        return tensor.transpose(1, 2).reshape(b, s, n * d)
    return tensor.permute(2, 0, 1, 3).reshape(s, b, n * d)  # SBH


def npu_fusion_attention(query, key, value, head_num, input_layout, *, pse=None, padding_mask=None,
                         atten_mask=None, scale=1.0, keep_prob=1.0, pre_tockens=2147483647,
                         next_tockens=2147483647, inner_precise=0, prefix=None, actual_seq_qlen=None,
                         actual_seq_kvlen=None, sparse_mode=0, gen_mask_parallel=True, sync=False):
    if pse is not None or padding_mask is not None or prefix is not None or actual_seq_qlen is not None:
        raise NotImplementedError("pse, padding_mask, prefix and varlen are not part of this reference")
    q, k, v = (_to_bnsd(t, input_layout, head_num) for t in (query, key, value))
    if q.shape[1] != head_num:
        raise ValueError(f"head_num {head_num} does not match the query's {q.shape[1]} heads")
    q_len, kv_len = q.shape[2], k.shape[2]
    acc = torch.promote_types(query.dtype, torch.float32)  # the kernel accumulates bf16/fp16 in fp32
    scores = torch.matmul(q.to(acc), k.to(acc).transpose(-1, -2)) * scale
    if sparse_mode in (2, 3):
        if atten_mask is None or tuple(atten_mask.shape) != (COMPRESSED, COMPRESSED) or atten_mask.dtype != torch.bool \
                or not torch.equal(atten_mask.cpu(), torch.triu(torch.ones(COMPRESSED, COMPRESSED, dtype=torch.bool),
                                                                 1)):
            raise ValueError("sparse_mode 2/3 takes the compressed 2048 x 2048 upper-triangular boolean mask")
        shift = 0 if sparse_mode == 2 else kv_len - q_len
        rows = torch.arange(q_len, device=q.device)[:, None]
        cols = torch.arange(kv_len, device=q.device)[None, :]
        hidden = cols > rows + shift
    elif sparse_mode == 0:
        hidden = atten_mask
        if hidden is not None and hidden.dtype != torch.bool:
            raise TypeError("atten_mask must be boolean")
    else:
        raise NotImplementedError(f"sparse_mode {sparse_mode}")
    if hidden is not None:
        scores = scores.masked_fill(hidden, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if keep_prob < 1.0:
        probs = torch.nn.functional.dropout(probs, p=1.0 - keep_prob)
    out = torch.matmul(probs, v.to(acc)).to(query.dtype)
    empty = torch.empty(0, device=query.device)
    return _from_bnsd(out, input_layout), empty, empty, empty, 0, 0, 0
