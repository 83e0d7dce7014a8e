"""Reference decode kernel: gather the kept KV positions, then SDPA over them only.

This is the seam where a decode step reads KV: it gets the cache and an index of the
positions to read, and nothing else is touched. Faster kernels (FlexAttention over a BlockMask
on GPU) implement the same contract and are checked against this one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attend_kept(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, index: torch.Tensor,
                valid: torch.Tensor, scaling: float | None,
                sinks: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of decode queries over the KV positions in ``index`` only.

    query ``[B, H, q, d]``; key/value ``[B, Hk, N, d]`` (the whole cache, untouched);
    index ``[B, G, P]`` physical positions with ``G`` = 1 (shared by heads) or ``Hk``;
    valid ``[B, G, P]`` marks real entries (rows are padded to a common ``P``);
    sinks ``[H]``: learned per-head sink logits (gpt-oss) that take part in the softmax and
    add nothing to the output, as the model's own attention computes them.
    Returns ``[B, q, H, d]`` like transformers' attention functions.
    """
    b, h, _, d = query.shape
    hk = key.shape[1]
    g = index.shape[1]
    idx = index.expand(b, hk, index.shape[-1]) if g == 1 else index
    gather = idx[..., None].expand(*idx.shape, d)
    k = key.gather(2, gather)
    v = value.gather(2, gather.expand(*idx.shape, value.shape[-1]))
    rep = h // hk
    if rep > 1:
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    mask = valid if g == 1 else valid.repeat_interleave(rep, dim=1)
    if sinks is not None:
        return _with_sinks(query, k, v, mask[:, :, None, :], scaling, sinks)
    out = F.scaled_dot_product_attention(query, k, v, attn_mask=mask[:, :, None, :], scale=scaling)
    return out.transpose(1, 2).contiguous()


def _with_sinks(query: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                scaling: float | None, sinks: torch.Tensor) -> torch.Tensor:
    """Softmax over the kept scores and one sink logit per head; the sink's share is dropped."""
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, k.transpose(2, 3)) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    b, h, q, _ = scores.shape
    sink = sinks.to(scores.dtype).reshape(1, h, 1, 1).expand(b, h, q, 1)
    logits = torch.cat([scores, sink], dim=-1)
    logits = logits - logits.max(dim=-1, keepdim=True).values
    probs = torch.softmax(logits, dim=-1)[..., :-1].to(v.dtype)
    return torch.matmul(probs, v).transpose(1, 2).contiguous()


def dense_masked_reference(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           keep: torch.Tensor, scaling: float | None) -> torch.Tensor:
    """Dense attention over the whole cache with a boolean mask ``keep [B, G, N]`` (tests)."""
    h, hk = query.shape[1], key.shape[1]
    rep = h // hk
    k = key.repeat_interleave(rep, dim=1)
    v = value.repeat_interleave(rep, dim=1)
    mask = keep if keep.shape[1] == 1 else keep.repeat_interleave(rep, dim=1)
    out = F.scaled_dot_product_attention(query, k, v, attn_mask=mask[:, :, None, :], scale=scaling)
    return out.transpose(1, 2).contiguous()


def positions_from_blocks(blocks: list[list[int]], lengths: list[int], offsets: list[int],
                          block_size: int, device: torch.device | str = "cpu"
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row kept blocks (logical) -> padded physical index ``[B, 1, P]`` and valid mask."""
    rows = []
    for blk, n, off in zip(blocks, lengths, offsets):
        bt = torch.as_tensor(blk, dtype=torch.long)
        pos = (bt[:, None] * block_size + torch.arange(block_size)).flatten()
        rows.append(pos[pos < n] + off)
    width = max(len(r) for r in rows)
    index = torch.zeros(len(rows), 1, width, dtype=torch.long)
    valid = torch.zeros(len(rows), 1, width, dtype=torch.bool)
    for i, r in enumerate(rows):
        index[i, 0, : len(r)] = r
        valid[i, 0, : len(r)] = True
    return index.to(device), valid.to(device)
