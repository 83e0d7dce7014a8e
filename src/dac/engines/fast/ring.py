"""Sliding-window layers in the fast engine: a ring buffer of ``window`` slots per row.

A sliding layer's query at position ``p`` sees the keys at ``(p - W, p]``: ``W`` tokens, itself
included (transformers' ``sliding_window_overlay``: ``kv_idx > q_idx - sliding_window``). So
``W`` slots hold all a decode step needs; the token at ``p`` goes to slot ``p % W``. RoPE is
applied before caching, so the order of the slots does not matter: before the ring wraps,
slots ``[0, p]`` are valid, after it every slot is. The valid-slot mask is computed on the
device from the step's positions, so the step stays capturable in a CUDA graph.

Prefill (one row at a time) is causal + sliding over the prompt, by query chunks, so memory
grows with ``chunk x (chunk + W)`` and not with the square of the prompt; then the last ``W``
positions are stored into the ring.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: queries per prefill chunk of a sliding layer (the mask is ``chunk x (chunk + W - 1)``)
PREFILL_CHUNK = 2048


def _expand(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x if x.shape[1] == heads else x.repeat_interleave(heads // x.shape[1], dim=1)


def window_prefill(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, window: int,
                   scaling: float | None, chunk: int = PREFILL_CHUNK) -> torch.Tensor:
    """Causal sliding-window attention of a prompt: ``query [1, H, n, d]`` over ``key/value
    [1, Hk, n, d]``; returns ``[1, n, H, d]``."""
    h, n = query.shape[1], query.shape[2]
    key, value = _expand(key, h), _expand(value, h)
    outs = []
    for q0 in range(0, n, chunk):
        q1 = min(n, q0 + chunk)
        k0 = max(0, q0 - window + 1)
        qi = torch.arange(q0, q1, device=query.device)[:, None]
        ki = torch.arange(k0, q1, device=query.device)[None]
        mask = (ki <= qi) & (ki > qi - window)
        outs.append(F.scaled_dot_product_attention(
            query[:, :, q0:q1], key[:, :, k0:q1], value[:, :, k0:q1], attn_mask=mask,
            scale=scaling))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2)


def store_prompt(ring: torch.Tensor, row: int, states: torch.Tensor) -> None:
    """Write the last ``W`` of a prompt's ``states [Hk, n, d]`` into ``ring[row]`` (slot
    ``p % W`` for position ``p``)."""
    w, n = ring.shape[2], states.shape[1]
    first = max(0, n - w)
    slots = torch.arange(first, n, device=ring.device) % w
    ring[row, :, slots] = states[:, first:n].to(ring.dtype)


def ring_decode(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                valid: torch.Tensor, scaling: float | None) -> torch.Tensor:
    """One decode token ``query [B, H, 1, d]`` over the ring ``key/value [B, Hk, W, d]`` and
    its valid slots ``valid [B, W]`` (bool). The query heads of a GQA group are folded into
    the query axis, so no K/V is repeated. Returns ``[B, 1, H, d]``."""
    b, h, _, d = query.shape
    hk = key.shape[1]
    qf = query.reshape(b, hk, h // hk, d)
    out = F.scaled_dot_product_attention(qf, key, value, attn_mask=valid[:, None, None, :],
                                         scale=scaling)
    return out.reshape(b, h, 1, d).transpose(1, 2)
