"""Block-sparse decode with FlexAttention: the kept KV blocks as a BlockMask over a static cache.

The contract is the one of :func:`dac.kernels.reference.attend_kept` (read only the kept
positions), expressed for a static cache where row ``b`` holds its tokens at physical
positions ``[0, lengths[b])``:

* :class:`KeptBlocks` owns fixed-shape tensors (kept-block table, block counts and indices,
  lengths) and one :class:`~torch.nn.attention.flex_attention.BlockMask` built over them once.
  Every step rewrites those tensors in place (``copy_``), so the compiled kernel sees the same
  shapes and objects and never recompiles, and a CUDA graph that captured it stays valid.
* Kept blocks are passed as ordinary (partial) blocks, never as ``full_kv_*``: full blocks split
  the work by logical length and measured ~4x slower at 10% density on an H100.
* The ``mask_mod`` encodes the selection itself (``keep[b, h, kv // bs] & (kv < length[b])``):
  eager FlexAttention (CPU, tests) ignores ``kv_indices`` and evaluates ``mask_mod`` only, so
  without it eager mode would silently compute dense attention.

Heads: ``heads=1`` shares one kept set across all heads and runs FlexAttention with
``enable_gqa`` (the decode kernel needs a block mask with head dim 1 then). FlexAttention's
decode kernel takes GQA groups of a power of two only (otherwise the compiled call fails on
64-token blocks); other groups (dac-tiny: 6 query heads on 2 KV heads) are folded into the
query-length axis instead, a mask built with ``q_len=`` :func:`shared_q_len`. ``heads=Hk`` keeps
one set per KV head (query-aware policies): the query heads of each GQA group are folded into
the query-length axis, so each KV head is one FlexAttention head with its own blocks.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention

#: ``mask_mod`` of the compiled kernel: ``"length"`` (cut at the row length; the blocks come
#: from ``kv_indices``) or ``"keep"`` (also look the block up in the kept table, like eager).
KERNEL_MASK = "length"
#: FlexAttention ``kernel_options`` of the compiled decode kernel. The default decode config
#: (1 stage, 2 warps) ran 12% slower on an H100 (torch 2.11) than 3 stages / 4 warps, the best
#: of a sweep (docs/gpu.md, bench/gpu_decode.py ``tune``).
KERNEL_OPTIONS: dict[str, Any] = {"num_stages": 3, "num_warps": 4}
#: head sizes above 256 (Gemma-4's global layers: 512) overflow shared memory with those
#: options; one stage of half-width KV tiles fits
WIDE_HEAD_OPTIONS: dict[str, Any] = {"num_stages": 1, "num_warps": 8, "BLOCK_N": 32}


#: the smallest kept block the compiled kernel can read: its KV tiles (``BLOCK_N``) must
#: divide the block and Triton's dot products need at least 16 rows
MIN_KERNEL_BLOCK = 16


def kernel_options(head_dim: int, block_size: int | None = None) -> dict[str, Any]:
    """The compiled decode kernel's options for a head size (KV tiles no wider than a block)."""
    opts = dict(WIDE_HEAD_OPTIONS) if head_dim > 256 else dict(KERNEL_OPTIONS)
    if block_size is not None and opts.get("BLOCK_N", 0) > block_size:
        opts["BLOCK_N"] = block_size
    return opts


def check_kernel_block(block_size: int) -> None:
    """Refuse, before any compile or capture, a block size the compiled kernel cannot read."""
    if block_size < MIN_KERNEL_BLOCK or block_size & (block_size - 1):
        raise ValueError(f"the compiled GPU decode kernel reads blocks of a power of two of at "
                         f"least {MIN_KERNEL_BLOCK} tokens; got block_size {block_size} "
                         "(use --block-size 64, the default, or run on the CPU)")

#: KV length granularity of a static cache (the flex kernels tile KV by up to 128 tokens).
CACHE_ALIGN = 128

_compiled: Any = None


#: compiled variants of ``flex_attention`` a process may hold (one per cache shape, batch,
#: head size and kernel options); past dynamo's default of 8, it would silently fall back to
#: the eager kernel, which is slow and cannot be captured in a CUDA graph
RECOMPILE_LIMIT = 64


def compiled_flex_attention() -> Any:
    """``flex_attention`` compiled once per process (static shapes: no dynamic recompiles;
    each new shape compiles one more variant, up to :data:`RECOMPILE_LIMIT`)."""
    global _compiled
    if _compiled is None:
        import torch._dynamo.config as dynamo_config

        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
        _compiled = torch.compile(flex_attention, dynamic=False)
    return _compiled


def shared_q_len(query_heads: int, kv_heads: int) -> int:
    """Query rows of a shared (``heads=1``) mask for one decode token: 1 when the GQA group is
    a power of two (``enable_gqa``), else the group, folded into the query-length axis."""
    g = query_heads // kv_heads
    return 1 if g & (g - 1) == 0 else g


def cache_length(max_len: int, block_size: int) -> int:
    """Physical cache length for ``max_len`` tokens: a multiple of the block and of 128."""
    align = block_size * CACHE_ALIGN // _gcd(block_size, CACHE_ALIGN)
    return -(-max_len // align) * align


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


class KeptBlocks:
    """Fixed-shape kept-block state of one decode batch and its BlockMask (updated in place)."""

    def __init__(self, batch: int, heads: int, cache_len: int, block_size: int, *,
                 q_len: int = 1, device: torch.device | str = "cpu"):
        if cache_len % block_size:
            raise ValueError(f"cache length {cache_len} is not a multiple of block size {block_size}")
        if heads < 1 or batch < 1:
            raise ValueError("batch and heads must be positive")
        self.batch, self.heads, self.block_size = batch, heads, block_size
        self.cache_len = cache_len
        self.num_blocks = cache_len // block_size
        self.q_len = q_len
        dev = torch.device(device)
        nb = self.num_blocks
        h = heads
        # indices, counts and lengths live in one int32 buffer: one host->device copy per step
        self._packed = torch.zeros(batch * h * nb + batch * h + batch, dtype=torch.int32, device=dev)
        o1, o2 = batch * h * nb, batch * h * nb + batch * h
        self.kv_indices = self._packed[:o1].view(batch, h, 1, nb)
        self.kv_num_blocks = self._packed[o1:o2].view(batch, h, 1)
        self.lengths = self._packed[o2:].view(batch)
        self.kv_num_blocks.fill_(1)
        self.lengths.fill_(1)
        self.keep = torch.zeros(batch, h, nb, dtype=torch.bool, device=dev)
        self.keep[:, :, 0] = True
        self._pinned = dev.type == "cuda"
        self._hosts: list[_HostBuffers] = []
        self._committed = 0  # the host buffer last copied to the device
        self._staged: int | None = None
        self._iota = torch.arange(nb, dtype=torch.int32, device=dev)
        keep, lengths, bs = self.keep, self.lengths, block_size
        if heads == 1:
            def mask_mod(b, h, q_idx, kv_idx):
                return keep[b, 0, kv_idx // bs] & (kv_idx < lengths[b])
        else:
            def mask_mod(b, h, q_idx, kv_idx):
                return keep[b, h, kv_idx // bs] & (kv_idx < lengths[b])

        def length_mod(b, h, q_idx, kv_idx):
            return kv_idx < lengths[b]

        self.mask_mod = mask_mod
        #: evaluates the selection in ``mask_mod`` itself: exact in eager mode too
        self.block_mask = BlockMask.from_kv_blocks(
            self.kv_num_blocks, self.kv_indices, BLOCK_SIZE=(128, block_size), mask_mod=mask_mod,
            seq_lengths=(q_len, cache_len), compute_q_blocks=False)
        #: the same blocks for the compiled kernel, which visits only ``kv_indices``: its
        #: ``mask_mod`` need only cut the partial tail block at the row's length
        self.kernel_block_mask = BlockMask.from_kv_blocks(
            self.kv_num_blocks, self.kv_indices, BLOCK_SIZE=(128, block_size),
            mask_mod=length_mod, seq_lengths=(q_len, cache_len), compute_q_blocks=False)

    # -- updates (in place; shapes and objects never change) -------------------------------
    def set_blocks(self, blocks: Sequence[Sequence[int]], lengths: Sequence[int]) -> None:
        """Kept blocks (sorted, unique; logical = physical) and lengths per row, all heads."""
        self.stage(blocks, lengths)
        self.commit()

    def stage(self, blocks: Sequence[Sequence[int]], lengths: Sequence[int]) -> None:
        """Fill the next host buffer (pinned on GPU) with a selection, without copying it yet:
        a decoder can plan step ``t + 1`` while the GPU still runs step ``t``.

        Two host buffers alternate. A buffer is refilled two steps after its copy was queued;
        callers synchronize once per step (reading the sampled token), so that copy is done."""
        if len(blocks) != self.batch or len(lengths) != self.batch:
            raise ValueError(f"expected {self.batch} rows of blocks and lengths")
        if not self._hosts:
            self._hosts = [_HostBuffers(self.batch, self.heads, self.num_blocks, self._pinned)
                           for _ in range(2)]
        nxt = 1 - self._committed
        hb = self._hosts[nxt]
        for b, (blk, n) in enumerate(zip(blocks, lengths)):
            if not 0 < n <= self.cache_len:
                raise ValueError(f"row {b}: length {n} outside (0, {self.cache_len}]")
            k = len(blk)
            if k == 0:
                raise ValueError(f"row {b}: no kept blocks")
            if blk[0] < 0 or blk[-1] * self.block_size >= n:
                raise ValueError(f"row {b}: kept block outside the sequence of {n} tokens")
            t = np.asarray(blk, dtype=np.int32)
            hb.np_keep[b] = False
            hb.np_keep[b, t] = True
            hb.np_idx[b, :, :k] = t
            hb.np_count[b] = k
            hb.np_lengths[b] = n
        self._staged = nxt

    def commit(self) -> None:
        """Copy the staged selection into the mask state (asynchronously on GPU)."""
        if self._staged is None:
            raise RuntimeError("nothing staged")
        hb = self._hosts[self._staged]
        self._packed.copy_(hb.packed, non_blocking=True)
        if self.keep_read_on_device():
            self.keep.copy_(hb.keep[:, None].expand(-1, self.heads, -1), non_blocking=True)
        self._committed, self._staged = self._staged, None

    def keep_read_on_device(self) -> bool:
        """Whether the kept-block table must be uploaded: eager kernels read it (CPU and
        ``KERNEL_MASK == "keep"``); the compiled kernel with the length mask does not."""
        return not self._pinned or KERNEL_MASK == "keep"

    @property
    def host_keep(self) -> torch.Tensor | None:
        """The last committed selection ``[B, num_blocks]`` on the host."""
        return self._hosts[self._committed].keep if self._hosts else None

    def set_lengths(self, lengths: torch.Tensor) -> None:
        """Lengths only (device tensor), for selections made on the device."""
        self.lengths.copy_(lengths)

    def set_keep(self, keep: torch.Tensor) -> None:
        """Per-head kept blocks ``[B, heads, num_blocks]`` (bool, on device): derive the block
        counts and sorted indices on the device, so it can run inside a captured graph."""
        self.keep.copy_(keep)
        self.kv_num_blocks.copy_(keep.sum(-1, dtype=torch.int32)[..., None])
        # kept block ids first, ascending: sort the keys (not kept, block id)
        key = (~keep).to(torch.int32) * self.num_blocks + self._iota
        self.kv_indices.copy_(key.sort(dim=-1).values.remainder(self.num_blocks)[:, :, None])


def _eager_flex(*args: Any, **kwargs: Any) -> torch.Tensor:
    """Unfused flex_attention (CPU tests, reference checks): quiet about not being compiled."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(*args, **kwargs)


class _HostBuffers:
    """Reusable host-side staging for :meth:`KeptBlocks.set_blocks` (pinned on GPU)."""

    def __init__(self, batch: int, heads: int, num_blocks: int, pinned: bool):
        n = batch * heads * num_blocks + batch * heads + batch
        self.packed = torch.zeros(n, dtype=torch.int32)
        self.keep = torch.zeros(batch, num_blocks, dtype=torch.bool)
        if pinned:
            self.packed, self.keep = self.packed.pin_memory(), self.keep.pin_memory()
        # numpy views of the same memory: filling them costs microseconds, not torch op calls
        flat = self.packed.numpy()
        o1, o2 = batch * heads * num_blocks, batch * heads * num_blocks + batch * heads
        self.np_idx = flat[:o1].reshape(batch, heads, num_blocks)
        self.np_count = flat[o1:o2].reshape(batch, heads)
        self.np_lengths = flat[o2:]
        self.np_keep = self.keep.numpy()


def flex_decode(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: KeptBlocks,
                scaling: float | None, *, compiled: bool | None = None) -> torch.Tensor:
    """Decode attention of ``query [B, H, 1, d]`` over the kept blocks of ``key/value
    [B, Hk, S, d]`` (static cache, ``S == mask.cache_len``). Returns ``[B, 1, H, d]``."""
    b, h, q, d = query.shape
    hk = key.shape[1]
    if key.shape[2] != mask.cache_len:
        raise ValueError(f"cache length {key.shape[2]} != mask length {mask.cache_len}")
    if compiled is None:
        compiled = query.is_cuda
    if compiled:
        # inside a compiled model the outer compile traces flex_attention itself
        fn = flex_attention if torch.compiler.is_compiling() else compiled_flex_attention()
        bm = mask.kernel_block_mask if KERNEL_MASK == "length" else mask.block_mask
        opts = kernel_options(d, mask.block_size)
        extra = {"kernel_options": opts} if opts else {}
    else:
        fn, bm, extra = _eager_flex, mask.block_mask, {}
    g = h // hk
    if mask.heads == 1:
        if q == 1 and g > 1 and mask.q_len == g:  # the group folded into the query rows
            out = fn(query.reshape(b, hk, g, d), key, value, block_mask=bm, scale=scaling,
                     **extra)
            return out.reshape(b, h, 1, d).transpose(1, 2)
        if mask.q_len != q:
            raise ValueError(f"mask built for {mask.q_len} query tokens, got {q}")
        out = fn(query, key, value, block_mask=bm, scale=scaling, enable_gqa=h != hk, **extra)
        return out.transpose(1, 2)
    if mask.heads != hk or q != 1:
        raise ValueError("per-head masks need one mask head per KV head and one query token")
    if mask.q_len != g:
        raise ValueError(f"per-head mask built for {mask.q_len} folded query rows, need {g}")
    qf = query.reshape(b, hk, g, d)
    out = fn(qf, key, value, block_mask=bm, scale=scaling, **extra)
    return out.reshape(b, h, 1, d).transpose(1, 2)


def keep_to_blocks(keep: torch.Tensor) -> list[list[int]]:
    """``[B, nb]`` bool -> sorted kept block ids per row (tests and accounting)."""
    return [row.nonzero().flatten().tolist() for row in keep.cpu()]
