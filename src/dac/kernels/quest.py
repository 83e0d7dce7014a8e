"""Quest's block bound, the one implementation the Quest policy and the fast engine share.

A block's keys are summarised by their per-channel minimum and maximum; for a query ``q`` the
block's largest possible score is ``sum_d max(q_d * min_d, q_d * max_d)``, written as two
matmuls: ``relu(q) @ max + min(q, 0) @ min``.
"""

from __future__ import annotations

import torch


def block_bounds(keys: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block key minimum and maximum ``[..., n_blocks, d]`` of keys ``[..., n, d]``
    (a last, partial block is summarised over its real keys only)."""
    *lead, n, d = keys.shape
    nb = -(-n // block_size)
    pad = nb * block_size - n
    lo = torch.nn.functional.pad(keys, (0, 0, 0, pad), value=float("inf"))
    hi = torch.nn.functional.pad(keys, (0, 0, 0, pad), value=float("-inf"))
    lo = lo.view(*lead, nb, block_size, d).amin(-2)
    hi = hi.view(*lead, nb, block_size, d).amax(-2)
    return lo, hi


def upper_bound(query: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor) -> torch.Tensor:
    """Block score upper bounds ``[..., G, n_blocks]`` (float32) for queries ``[..., G, d]``
    against block bounds ``[..., n_blocks, d]``."""
    up = query.clamp(min=0) @ kmax.transpose(-1, -2)
    down = query.clamp(max=0) @ kmin.transpose(-1, -2)
    return up.float() + down.float()
