"""Answer tokens trained under the mask their directive implies.

At inference the runtime parses the model's own text; from the step whose token completes a
directive (``]]``), attention reads only the blocks :func:`~dac.planning.blocks.plan_dac`
keeps for that directive at that length. Training applies the same rule: the query at
position ``q >= d`` (``d`` = the token that closes the directive) sees exactly the positions of
``plan_dac(directive, layout, q + 1, cfg)`` up to ``q``; every other row is ordinary causal
attention (the prompt is prefilled densely, the directive is written under ``global``). A
target that declares several times (``[[local]] ... [[global]][[focus S3]] ...``) is read by
:func:`directive_schedule`, the inference parser fed token by token, and each row follows the
declaration in force at its position (:func:`schedule_mask`).

Two forms of the same mask, both run through SDPA on CPU and GPU alike (no compilation):

- :func:`dense_mask`, a boolean ``[B, 1, L, L]`` tensor: the reference, simple to check;
- :func:`row_mask`, what training uses: every row runs plain causal attention (SDPA's
  ``is_causal`` path, FlashAttention on a GPU), then only the answer rows, a few dozen per
  example, are recomputed under their block mask and put in place. At 8K tokens the dense form
  is 64M mask entries per example; this one is ``R x L`` per example and the same numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..engines.support import attention_modules
from ..planning.blocks import PlanConfig, num_blocks, plan_dac
from ..protocol.context import PromptLayout
from ..protocol.detok import IncrementalDetokenizer
from ..protocol.grammar import Directive, Mode
from ..protocol.parser import StreamingParser
from ..runtime import bind, bound

ATTN_IMPLEMENTATION = "dac_train"


@dataclass
class AnswerMask:
    """Kept KV blocks for query rows ``start, start + 1, ...`` (``rows[i]`` is for ``start + i``).

    ``start = -1`` (no rows) means the whole sequence is plain causal."""

    start: int
    rows: list[list[int]]


def directive_schedule(tokenizer: Any, target_ids: list[int], num_sections: int | None,
                       parser: Any = None) -> list[tuple[int, Directive]]:
    """``(i, directive in force)`` for each declaration the inference parser completes while
    ``target_ids`` are generated, ``i`` the index of the token that completes it. The same
    incremental detokenizer and parser as decoding (``parser``: a protocol's, e.g.
    ``get_protocol("da").parser(layout)``; default the brackets dialect's
    :class:`~dac.protocol.parser.StreamingParser`), so a malformed declaration falls back to
    ``global`` here exactly as it does there."""
    parser = parser if parser is not None else StreamingParser(num_sections)
    detok = IncrementalDetokenizer(tokenizer)
    out: list[tuple[int, Directive]] = []
    for i, t in enumerate(target_ids):
        for ev in parser.feed(detok.push([t]), i):
            if ev.applied is not None:
                out.append((i, ev.applied))
    return out


def schedule_mask(schedule: list[tuple[int, Directive]], layout: PromptLayout, offset: int,
                  end: int, cfg: PlanConfig) -> AnswerMask:
    """Rows for queries from the first declaration (at ``offset + i``) to ``end - 1``, each
    under the declaration in force there (the last one when a step completes several);
    no rows when nothing but ``global`` is ever declared."""
    if not schedule or all(d.mode is Mode.GLOBAL for _, d in schedule):
        return AnswerMask(-1, [])
    start = offset + schedule[0][0]
    rows: list[list[int]] = []
    k, current = 0, schedule[0][1]
    for q in range(start, end):
        while k < len(schedule) and offset + schedule[k][0] <= q:
            current = schedule[k][1]
            k += 1
        rows.append(plan_dac(current, layout, q + 1, cfg))
    return AnswerMask(start, rows)


def keep_table(masks: list[AnswerMask], width: int, block_size: int, device: Any = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``starts [B]``, ``counts [B]`` and ``keep [B, R, n_blocks]`` (bool) for a padded batch."""
    nb = num_blocks(width, block_size)
    r = max([len(m.rows) for m in masks] + [1])
    keep = torch.zeros(len(masks), r, nb, dtype=torch.bool)
    starts = torch.full((len(masks),), width, dtype=torch.long)
    counts = torch.zeros(len(masks), dtype=torch.long)
    for b, m in enumerate(masks):
        if m.start < 0:
            continue
        starts[b] = m.start
        counts[b] = len(m.rows)
        for i, blocks in enumerate(m.rows):
            keep[b, i, blocks] = True
    return starts.to(device), counts.to(device), keep.to(device)


def dense_mask(masks: list[AnswerMask], width: int, block_size: int,
               device: Any = None) -> torch.Tensor:
    """The boolean ``[B, 1, width, width]`` mask (True = attend), built on ``device``."""
    starts, counts, keep = keep_table(masks, width, block_size, device)
    b, r = keep.shape[0], keep.shape[1]
    pos = torch.arange(width, device=device)
    causal = pos[None, :] <= pos[:, None]
    out = causal.expand(b, width, width).clone()
    rows = starts[:, None] + torch.arange(r, device=device)[None, :]  # [B, R]
    valid = (torch.arange(r, device=device)[None, :] < counts[:, None]) & (rows < width)
    bi, ri = valid.nonzero(as_tuple=True)
    q = rows[bi, ri]
    out[bi, q] = keep[bi, ri][:, pos // block_size] & causal[q]
    return out[:, None]


@dataclass
class RowMask:
    """The answer rows of a batch, built once per batch (every layer reads them):
    ``rows [B, R]`` (query positions; 0 where unused, whose result is discarded),
    ``attend [B, 1, R, L]`` (True = attend), ``answer [B, L]`` (True at the answer rows) and
    ``any_rows`` (False: the batch is plain causal, nothing to recompute)."""

    rows: torch.Tensor
    attend: torch.Tensor
    answer: torch.Tensor
    any_rows: bool


def row_mask(masks: list[AnswerMask], width: int, block_size: int,
             device: Any = None) -> RowMask:
    """:func:`dense_mask`'s answer rows alone (the other rows are plain causal)."""
    starts, counts, keep = keep_table(masks, width, block_size, device)
    r = keep.shape[1]
    ar = torch.arange(r, device=device)[None, :]
    rows = starts[:, None] + ar
    valid = (ar < counts[:, None]) & (rows < width)
    rows = torch.where(valid, rows, torch.zeros_like(rows))
    pos = torch.arange(width, device=device)
    causal = pos[None, None, :] <= rows[:, :, None]  # [B, R, L]
    attend = torch.where(valid[:, :, None], keep[:, :, pos // block_size] & causal, causal)
    answer = torch.zeros(len(masks), width, dtype=torch.bool, device=device)
    answer.scatter_(1, rows, valid)  # unused rows write False at position 0, never an answer row
    return RowMask(rows, attend[:, None], answer, any(m.start >= 0 and m.rows for m in masks))


# -- the attention function used while training ------------------------------------------------
def train_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                    value: torch.Tensor, attention_mask: Any, dropout: float = 0.0,
                    scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention under the batch's answer mask (bound to the module by :func:`use_mask`)."""
    mask = bound(module)
    if mask is None:
        raise RuntimeError("train_attention called outside use_mask()")
    sdpa = torch.nn.functional.scaled_dot_product_attention
    groups = query.shape[1] // key.shape[1]
    k = key.repeat_interleave(groups, dim=1)
    v = value.repeat_interleave(groups, dim=1)
    if isinstance(mask, torch.Tensor):
        out = sdpa(query, k, v, attn_mask=mask, scale=scaling)
    else:
        out = sdpa(query, k, v, is_causal=True, scale=scaling)
        if mask.any_rows:
            b, h, _, d = query.shape
            idx = mask.rows[:, None, :, None].expand(b, h, mask.rows.shape[1], d)
            # in float32: only a few dozen rows, so full precision for the masked softmax
            # and its gradient costs little
            fixed = sdpa(query.gather(2, idx).float(), k.float(), v.float(),
                         attn_mask=mask.attend, scale=scaling).to(out.dtype)
            # unused rows point at position 0 (never an answer row) and are masked away
            out = torch.where(mask.answer[:, None, :, None], out.scatter(2, idx, fixed), out)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make ``attn_implementation="dac_train"`` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, train_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)


@contextlib.contextmanager
def use_mask(model: Any, mask: Any) -> Iterator[None]:
    """Run ``model``'s forwards under ``mask``: a boolean ``[B, 1, L, L]`` tensor (True =
    attend) or a :class:`RowMask`. The mask reaches :func:`train_attention` the way every
    engine's state does (:func:`dac.runtime.bind`)."""
    with bind(attention_modules(model), mask):
        yield
