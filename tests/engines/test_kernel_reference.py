import torch

from dac.kernels.reference import attend_kept, dense_masked_reference, positions_from_blocks


def test_gather_equals_dense_mask_random_keep_sets():
    torch.manual_seed(0)
    b, h, hk, d, n, bs = 3, 4, 2, 16, 150, 16
    q = torch.randn(b, h, 1, d)
    k = torch.randn(b, hk, n, d)
    v = torch.randn(b, hk, n, d)
    lengths = [150, 97, 33]
    offsets = [0, 150 - 97, 150 - 33]  # left padding
    blocks = []
    for L in lengths:
        nb = -(-L // bs)
        keep = sorted(set(torch.randint(0, nb, (4,)).tolist()) | {nb - 1})
        blocks.append(keep)
    index, valid = positions_from_blocks(blocks, lengths, offsets, bs)
    out = attend_kept(q, k, v, index, valid, 0.25)
    keep = torch.zeros(b, 1, n, dtype=torch.bool)
    for i, (blk, L, off) in enumerate(zip(blocks, lengths, offsets)):
        for j in blk:
            lo, hi = j * bs, min((j + 1) * bs, L)
            keep[i, 0, off + lo:off + hi] = True
    ref = dense_masked_reference(q, k, v, keep, 0.25)
    assert (out - ref).abs().max() < 1e-6


def test_per_head_index_equals_dense_mask():
    torch.manual_seed(1)
    b, h, hk, d, n = 2, 4, 2, 8, 64
    q, k, v = torch.randn(b, h, 1, d), torch.randn(b, hk, n, d), torch.randn(b, hk, n, d)
    keep = torch.rand(b, hk, n) < 0.3
    keep[..., -1] = True
    width = int(keep.sum(-1).max())
    index = torch.zeros(b, hk, width, dtype=torch.long)
    valid = torch.zeros(b, hk, width, dtype=torch.bool)
    for i in range(b):
        for j in range(hk):
            pos = keep[i, j].nonzero().flatten()
            index[i, j, :len(pos)] = pos
            valid[i, j, :len(pos)] = True
    out = attend_kept(q, k, v, index, valid, None)
    ref = dense_masked_reference(q, k, v, keep, None)
    assert (out - ref).abs().max() < 1e-6


def test_keep_all_equals_plain_sdpa():
    torch.manual_seed(2)
    q, k, v = torch.randn(1, 4, 1, 16), torch.randn(1, 4, 100, 16), torch.randn(1, 4, 100, 16)
    index, valid = positions_from_blocks([list(range(7))], [100], [0], 16)
    out = attend_kept(q, k, v, index, valid, None)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)
    assert (out - ref).abs().max() < 1e-6
