"""Block-table compaction: make a paged-attention kernel read only the kept blocks of a row.

For a decode row the kernel reads ``ceil(seq_len / B)`` entries of the row's block table and
takes the valid length of the last one from ``seq_len``. Writing the kept (full) blocks first,
the tail block last, and ``seq_len' = (k - 1) * B + tail_len`` makes it read exactly the kept
tokens. Positions (RoPE) and the slot mapping (KV writes) are not touched, so the cache is
written as usual and a later step may read any block again.
"""

from __future__ import annotations

import torch

from ...planning.blocks import num_blocks


def kernel_blocks(dac_blocks: list[int], length: int, dac_block: int, kernel_block: int
                  ) -> list[int]:
    """Kernel (vLLM) block indices covered by kept DAC blocks, clipped to the sequence."""
    if dac_block % kernel_block:
        raise ValueError(f"DAC block size {dac_block} is not a multiple of the kernel block "
                         f"size {kernel_block}")
    m = dac_block // kernel_block
    nb = num_blocks(length, kernel_block)
    out: list[int] = []
    for j in dac_blocks:
        out.extend(k for k in range(j * m, (j + 1) * m) if k < nb)
    return out


def compacted_length(kept: list[int], length: int, kernel_block: int) -> int:
    """``seq_len'`` for kept kernel blocks (sorted, tail block last)."""
    nb = num_blocks(length, kernel_block)
    if not kept or kept[-1] != nb - 1:
        raise ValueError("the kept blocks must end with the tail block")
    tail = length - (nb - 1) * kernel_block
    return (len(kept) - 1) * kernel_block + tail


def compact_rows(block_table: torch.Tensor, seq_lens: torch.Tensor,
                 plans: dict[int, list[int]], kernel_block: int,
                 lengths: dict[int, int] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """New (block table, seq_lens) with the rows in ``plans`` compacted.

    ``plans`` maps a row to its kept kernel blocks (sorted, tail last). The inputs are never
    modified (they are the runner's persistent buffers); the caller gets fresh tensors and the
    new lengths of the compacted rows. ``lengths`` (row -> current length, known on the host)
    avoids reading ``seq_lens`` back from the device."""
    bt = block_table.clone()
    sl = seq_lens.clone()
    if lengths is None:
        host = seq_lens.cpu().tolist()
        lengths = {row: int(host[row]) for row in plans}
    new_lengths = []
    for row, kept in plans.items():
        length = int(lengths[row])
        new_len = compacted_length(kept, length, kernel_block)
        idx = torch.tensor(kept, dtype=torch.long, device=bt.device)
        bt[row, : len(kept)] = block_table[row].index_select(0, idx)
        sl[row] = new_len
        new_lengths.append(new_len)
    return bt, sl, new_lengths
