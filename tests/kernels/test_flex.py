"""The FlexAttention decode path equals the reference kernels on random keep-sets (eager, CPU)."""

from __future__ import annotations

import pytest
import torch

from dac.kernels.flex import (KeptBlocks, cache_length, flex_decode, keep_to_blocks,
                              shared_q_len)
from dac.kernels.reference import attend_kept, dense_masked_reference, positions_from_blocks
from dac.planning.blocks import normalize, num_blocks


def _random_blocks(gen: torch.Generator, length: int, bs: int, density: float) -> list[int]:
    nb = num_blocks(length, bs)
    pick = (torch.rand(nb, generator=gen) < density).nonzero().flatten().tolist()
    return normalize(pick, length, bs)  # adds the (possibly partial) tail block


def _dense_keep(blocks: list[list[int]], lengths: list[int], n: int, bs: int) -> torch.Tensor:
    keep = torch.zeros(len(blocks), 1, n, dtype=torch.bool)
    for b, (blk, ln) in enumerate(zip(blocks, lengths)):
        for j in blk:
            keep[b, 0, j * bs: min((j + 1) * bs, ln)] = True
    return keep


@pytest.mark.parametrize("bs,lengths,density", [
    (16, [100, 37, 64], 0.3),  # partial tails, one exact multiple, per-row lengths
    (32, [250, 1], 0.5),  # a one-token row
    (64, [257, 300], 0.1),  # sparse: mostly the tail and a few blocks
])
def test_shared_blocks_match_reference(bs, lengths, density):
    gen = torch.Generator().manual_seed(bs + len(lengths))
    b, h, hk, d = len(lengths), 8, 2, 16
    n = cache_length(max(lengths), bs)
    q = torch.randn(b, h, 1, d, generator=gen)
    k = torch.randn(b, hk, n, d, generator=gen)
    v = torch.randn(b, hk, n, d, generator=gen)
    blocks = [_random_blocks(gen, ln, bs, density) for ln in lengths]
    mask = KeptBlocks(b, 1, n, bs)
    mask.set_blocks(blocks, lengths)
    out = flex_decode(q, k, v, mask, None)
    ref = dense_masked_reference(q, k, v, _dense_keep(blocks, lengths, n, bs), None)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # and the gather kernel the HF engine uses
    index, valid = positions_from_blocks(blocks, lengths, [0] * b, bs)
    torch.testing.assert_close(out, attend_kept(q, k, v, index, valid, None), rtol=1e-5, atol=1e-5)
    # the state is rewritten in place: a second, different selection on the same objects
    blocks2 = [_random_blocks(gen, ln, bs, 0.6) for ln in lengths]
    before = (mask.block_mask, mask.kv_indices.data_ptr())
    mask.set_blocks(blocks2, lengths)
    assert (mask.block_mask, mask.kv_indices.data_ptr()) == before
    out2 = flex_decode(q, k, v, mask, 0.3)
    ref2 = dense_masked_reference(q, k, v, _dense_keep(blocks2, lengths, n, bs), 0.3)
    torch.testing.assert_close(out2, ref2, rtol=1e-5, atol=1e-5)
    assert keep_to_blocks(mask.keep[:, 0]) == blocks2


def test_a_group_of_three_is_folded_into_the_query_rows():
    """dac-tiny's 6 query heads on 2 KV heads: FlexAttention's decode kernel takes power-of-two
    groups only, so a shared mask is built for 3 folded query rows; same attention."""
    assert [shared_q_len(h, hk) for h, hk in [(8, 8), (8, 2), (32, 8), (6, 2), (12, 2)]] == [
        1, 1, 1, 3, 6]
    gen = torch.Generator().manual_seed(3)
    b, h, hk, d, bs = 2, 6, 2, 16, 64
    lengths = [200, 517]
    n = cache_length(max(lengths), bs)
    q = torch.randn(b, h, 1, d, generator=gen)
    k = torch.randn(b, hk, n, d, generator=gen)
    v = torch.randn(b, hk, n, d, generator=gen)
    blocks = [_random_blocks(gen, ln, bs, 0.5) for ln in lengths]
    folded = KeptBlocks(b, 1, n, bs, q_len=shared_q_len(h, hk))
    plain = KeptBlocks(b, 1, n, bs)
    for m in (folded, plain):
        m.set_blocks(blocks, lengths)
    out = flex_decode(q, k, v, folded, None)
    ref = dense_masked_reference(q, k, v, _dense_keep(blocks, lengths, n, bs), None)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, flex_decode(q, k, v, plain, None), rtol=1e-5, atol=1e-5)


def test_per_head_blocks_match_reference():
    gen = torch.Generator().manual_seed(7)
    b, h, hk, d, bs = 2, 8, 4, 16, 16
    lengths = [90, 131]
    n = cache_length(max(lengths), bs)
    nb = n // bs
    q = torch.randn(b, h, 1, d, generator=gen)
    k = torch.randn(b, hk, n, d, generator=gen)
    v = torch.randn(b, hk, n, d, generator=gen)
    keep = torch.rand(b, hk, nb, generator=gen) < 0.4
    for r, ln in enumerate(lengths):
        keep[r, :, num_blocks(ln, bs):] = False
        keep[r, :, num_blocks(ln, bs) - 1] = True
    mask = KeptBlocks(b, hk, n, bs, q_len=h // hk)
    mask.set_keep(keep)
    mask.set_lengths(torch.tensor(lengths, dtype=torch.int32))
    # device-side derivation of counts and sorted indices
    for r in range(b):
        for j in range(hk):
            c = int(mask.kv_num_blocks[r, j, 0])
            assert mask.kv_indices[r, j, 0, :c].tolist() == keep[r, j].nonzero().flatten().tolist()
    out = flex_decode(q, k, v, mask, None)
    dense = keep.repeat_interleave(bs, dim=-1)
    pos = torch.arange(n)
    dense &= pos[None, None] < torch.tensor(lengths)[:, None, None]
    ref = dense_masked_reference(q, k, v, dense, None)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_bad_selection_is_refused():
    mask = KeptBlocks(1, 1, 128, 16)
    with pytest.raises(ValueError, match="outside the sequence"):
        mask.set_blocks([[0, 5]], [40])
    with pytest.raises(ValueError, match="no kept blocks"):
        mask.set_blocks([[]], [40])
    with pytest.raises(ValueError, match="length"):
        mask.set_blocks([[0]], [0])
    with pytest.raises(ValueError, match="multiple"):
        KeptBlocks(1, 1, 100, 16)


def test_cache_length_alignment():
    assert cache_length(1, 64) == 128
    assert cache_length(129, 64) == 256
    assert cache_length(100, 256) == 256


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("h, hk, d", [(32, 8, 128), (6, 2, 64)])  # a Llama-8B layer; dac-tiny
def test_compiled_gpu_matches_reference(h, hk, d):
    gen = torch.Generator(device="cuda").manual_seed(0)
    b, bs = 2, 64
    lengths = [3000, 4097]
    n = cache_length(max(lengths), bs)
    q = torch.randn(b, h, 1, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    k = torch.randn(b, hk, n, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    v = torch.randn(b, hk, n, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    cpu = torch.Generator().manual_seed(1)
    blocks = [_random_blocks(cpu, ln, bs, 0.1) for ln in lengths]
    mask = KeptBlocks(b, 1, n, bs, q_len=shared_q_len(h, hk), device="cuda")
    mask.set_blocks(blocks, lengths)
    out = flex_decode(q, k, v, mask, None).float()
    ref = dense_masked_reference(q.float(), k.float(), v.float(),
                                 _dense_keep(blocks, lengths, n, bs).cuda(), None)
    assert ((out - ref).norm() / ref.norm()).item() < 2e-2


def test_compiled_kernel_has_room_for_many_shapes(monkeypatch):
    """A benchmark or server builds many cache shapes in one process: dynamo's default of 8
    compiled variants would silently drop later ones to the eager kernel (uncapturable)."""
    import torch._dynamo.config as dynamo_config

    from dac.kernels import flex

    monkeypatch.setattr(flex, "_compiled", None)
    with dynamo_config.patch(recompile_limit=8):  # restored on exit
        flex.compiled_flex_attention()
        assert dynamo_config.recompile_limit >= flex.RECOMPILE_LIMIT >= 32


def test_kernel_tiles_fit_the_block_and_small_blocks_are_refused():
    from dac.kernels.flex import check_kernel_block, kernel_options

    assert kernel_options(512, 16)["BLOCK_N"] == 16  # a wide head's 32-token tiles, cut
    assert kernel_options(512, 64)["BLOCK_N"] == 32
    assert "BLOCK_N" not in kernel_options(128, 16)  # inductor clamps its own default
    check_kernel_block(16)
    for bad in (8, 48):
        with pytest.raises(ValueError, match="at least 16"):
            check_kernel_block(bad)
