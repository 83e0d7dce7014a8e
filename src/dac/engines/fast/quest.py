"""Quest on the device, inside the captured decode step.

Per layer, per-block key bounds ``[B, Hk, n_blocks, d]`` are kept up to date as each step
writes its key; each layer then scores the blocks from its query
(:func:`dac.kernels.quest.upper_bound`, the Quest policy's own bound) and keeps the row's
base blocks plus its top blocks per KV head. Ranks beyond the row's budget are dropped, so one
static top-k serves every length and the step stays capturable in a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...kernels.flex import KeptBlocks
from ...kernels.quest import block_bounds, upper_bound
from ...planning.blocks import PlanConfig, num_blocks
from ...planning.policies import QuestPolicy


class DeviceQuest:
    """Key bounds, the per-row budget and the per-layer selection of one decode batch."""

    def __init__(self, policy: QuestPolicy, config: PlanConfig, *, batch: int,
                 layers: int | Sequence[int],
                 kv_heads: int, query_heads: int, head_dim: int, num_blocks: int, max_len: int,
                 dtype: torch.dtype, device: torch.device, account: bool = True):
        self.policy, self.config = policy, config
        self.batch, self.hk, self.hq, self.d = batch, kv_heads, query_heads, head_dim
        self.num_blocks = num_blocks
        shape = (batch, kv_heads, num_blocks, head_dim)
        # ``layers``: how many (all global), or which layers select (a hybrid's global ones)
        ids = range(layers) if isinstance(layers, int) else layers
        self.kmin = {i: torch.zeros(shape, dtype=dtype, device=device) for i in ids}
        self.kmax = {i: torch.zeros(shape, dtype=dtype, device=device) for i in ids}
        self.base = torch.zeros(batch, num_blocks, dtype=torch.bool, device=device)
        self.extra = torch.zeros(batch, dtype=torch.long, device=device)
        self._h_extra = torch.zeros(batch, dtype=torch.long)
        if device.type == "cuda":
            self._h_extra = self._h_extra.pin_memory()
        self.topk = min(num_blocks, policy.budget_blocks(max_len, config))
        self._iota = torch.arange(num_blocks, device=device)
        self._rank = torch.arange(self.topk, device=device)
        self._bidx = torch.arange(batch, device=device)
        self.account = account
        self.reads = torch.zeros(batch, dtype=torch.float32, device=device)

    def fill(self, row: int, keys: Sequence[torch.Tensor | None], length: int) -> None:
        """Bounds of ``row`` from its first ``length`` cached keys (``keys[layer]``:
        ``[B, Hk, S, d]``, ``None`` for a layer that does not select), after a prefill."""
        nb = num_blocks(length, self.config.block_size)
        for layer, k in enumerate(keys):
            if k is None or layer not in self.kmin:
                continue
            lo, hi = block_bounds(k[row, :, :length], self.config.block_size)
            self.kmin[layer][row, :, :nb] = lo
            self.kmax[layer][row, :, :nb] = hi

    def stage(self, blocks: Sequence[Sequence[int]], lengths: Sequence[int],
              host_keep: torch.Tensor) -> None:
        """Send the rows' base blocks and how many top blocks each may add (its budget)."""
        bs = self.config.block_size
        for b, (blk, n) in enumerate(zip(blocks, lengths)):
            budget = min(num_blocks(n, bs), self.policy.budget_blocks(n, self.config))
            self._h_extra[b] = max(0, budget - len(blk))
        self.base.copy_(host_keep, non_blocking=True)
        self.extra.copy_(self._h_extra, non_blocking=True)

    def select(self, layer: int, query: torch.Tensor, knew: torch.Tensor, pos: torch.Tensor,
               mask: KeptBlocks) -> None:
        """Fold this step's key into its block's bounds, then set ``mask`` to the layer's
        per-head selection (and add its reads when accounting)."""
        bs, b = self.config.block_size, self.batch
        blk = pos // bs
        first = (pos % bs == 0)[:, None, None]
        kmin, kmax = self.kmin[layer], self.kmax[layer]
        rows = self._bidx
        kmin[rows, :, blk] = torch.where(first, knew, torch.minimum(kmin[rows, :, blk], knew))
        kmax[rows, :, blk] = torch.where(first, knew, torch.maximum(kmax[rows, :, blk], knew))
        lengths = mask.lengths
        valid = self._iota[None] * bs < lengths[:, None]  # [B, nb]
        if layer < self.policy.dense_layers:
            keep = valid[:, None].expand(b, self.hk, self.num_blocks)
        else:
            q = query.reshape(b, self.hk, self.hq // self.hk, self.d)
            s = upper_bound(q, kmin, kmax).amax(2)  # [B, Hk, nb]
            base = self.base[:, None]
            s = s.masked_fill(base | ~valid[:, None], float("-inf"))
            top = s.topk(self.topk, dim=-1).indices  # [B, Hk, K], best first
            take = (self._rank[None, None] < self.extra[:, None, None]).expand_as(top)
            keep = base | torch.zeros_like(s, dtype=torch.bool).scatter_(-1, top, take)
        mask.set_keep(keep)
        if self.account:
            per_block = (lengths[:, None] - self._iota[None] * bs).clamp(0, bs)  # [B, nb]
            self.reads += (keep * per_block[:, None]).sum(-1).float().mean(1)
