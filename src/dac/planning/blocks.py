"""Block arithmetic and the DAC mask planner: directive + prompt layout -> kept KV blocks.

Block ``j`` covers logical token positions ``[j * block_size, (j + 1) * block_size)`` of one
sequence. Every kept set is sorted, unique, within ``[0, ceil(length / block_size))`` and
always holds the tail block (the one being written), so a decode step is never empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..protocol.context import PromptLayout, Span
from ..protocol.grammar import Directive, Mode


@dataclass(frozen=True)
class PlanConfig:
    """What a non-global mode keeps besides its own region (all sizes in tokens)."""

    block_size: int = 64
    sink_tokens: int = 64  # the first tokens (attention sinks) are always read
    keep_preamble: bool = True  # instructions before the first section, in focus/local mode
    window: int = 256  # recent tokens (the model's own text) kept in focus mode
    local_window: int = 1024  # recent tokens kept by [[local]] without an explicit size
    #: the whole response so far is kept in every mode (the paper's scaffold), not only the
    #: recent window
    keep_response: bool = False

    def __post_init__(self) -> None:
        for name in ("block_size", "window", "local_window"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.sink_tokens < 0:
            raise ValueError(f"sink_tokens must be >= 0, got {self.sink_tokens}")


def num_blocks(length: int, block_size: int) -> int:
    return -(-length // block_size)


def span_blocks(start: int, end: int, length: int, block_size: int) -> range:
    """Blocks covering ``[start, end)`` clipped to ``[0, length)``, rounded outward."""
    start, end = max(0, start), min(end, length)
    if end <= start:
        return range(0)
    return range(start // block_size, num_blocks(end, block_size))


def normalize(blocks: Iterable[int], length: int, block_size: int) -> list[int]:
    """Sorted unique blocks within the cache, with the tail block added."""
    nb = num_blocks(length, block_size)
    kept = {b for b in blocks if 0 <= b < nb}
    if nb:
        kept.add(nb - 1)
    return sorted(kept)


def tokens_in_blocks(blocks: Iterable[int], length: int, block_size: int) -> int:
    """KV tokens a kernel reads for these blocks (the tail block may be partial).

    Runs every decode step for every row, so a kept set within the cache is counted with
    three C-level scans instead of a Python loop (0.4 ms for 2,049 blocks on a slow core)."""
    if not isinstance(blocks, (list, tuple)):
        blocks = list(blocks)
    if not blocks:
        return 0
    nb = num_blocks(length, block_size)
    if min(blocks) >= 0 and max(blocks) < nb:  # every block whole but the tail one
        return len(blocks) * block_size - blocks.count(nb - 1) * (nb * block_size - length)
    return sum(max(0, min(block_size, length - b * block_size)) for b in blocks)


def plan_dac(directive: Directive, layout: PromptLayout, length: int, cfg: PlanConfig) -> list[int]:
    """Kept blocks for one sequence of ``length`` KV tokens under ``directive``."""
    bs = cfg.block_size
    if directive.mode is Mode.GLOBAL:
        return list(range(num_blocks(length, bs)))
    spans: list[Span] = [Span(0, cfg.sink_tokens)]
    if cfg.keep_preamble:
        spans.append(layout.preamble)
    spans.extend(layout.protected)
    if cfg.keep_response:
        spans.append(Span(layout.prompt_len, length))
    if directive.mode is Mode.FOCUS:
        spans.extend(layout.section_spans(directive.sections()))
        window = cfg.window
    else:
        window = directive.window or cfg.local_window
    spans.append(Span(length - window, length))
    kept: set[int] = set()
    for s in spans:
        kept.update(span_blocks(s.start, s.end, length, bs))
    return normalize(kept, length, bs)


def coverage(blocks: Iterable[int], spans: Iterable[Span], block_size: int) -> float:
    """Share of the tokens in ``spans`` that lie inside ``blocks`` (1.0 for no tokens)."""
    kept = set(blocks)
    total = hit = 0
    for s in spans:
        if s.end <= s.start:  # empty or inverted: no tokens (and no negative hits)
            continue
        total += len(s)
        for j in range(s.start // block_size, num_blocks(s.end, block_size)):
            if j in kept:
                hit += min(s.end, (j + 1) * block_size) - max(s.start, j * block_size)
    return 1.0 if total == 0 else hit / total
