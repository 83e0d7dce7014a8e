"""The paper's selection: drop contexts over a token budget, then draw up to N with a seed.

Length is measured with the *evaluated model's* tokenizer (a file's stored ``length`` counts
words or another model's tokens). The draw depends only on the kept ids and the seed, so every
arm of a run gets the same examples; what was dropped is returned, never hidden.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import SourceExample


@dataclass(frozen=True)
class Selection:
    kept: list[SourceExample]  # the drawn examples, in draw order
    dropped: list[tuple[str, int]]  # (id, context tokens) of each example over the budget
    tokens: dict[str, int] = field(default_factory=dict)  # id -> context tokens, all examples

    @property
    def considered(self) -> int:
        return len(self.tokens)


def context_tokens(tokenizer: Any, example: SourceExample) -> int:
    """The context's length in the evaluated model's tokens (chunks counted as given)."""
    texts = example.chunks if example.chunks else [example.context]
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def select(examples: Sequence[SourceExample], tokenizer: Any, budget: int, n: int,
           seed: int) -> Selection:
    """Examples whose context is at most ``budget`` tokens, then up to ``n`` of them drawn
    with ``random.Random(seed)``: the same ids and seed give the same draw."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"duplicate example id {dup!r}: the draw needs unique ids")
    tokens = {ex.id: context_tokens(tokenizer, ex) for ex in examples}
    fit = sorted((ex for ex in examples if tokens[ex.id] <= budget), key=lambda ex: ex.id)
    dropped = [(ex.id, tokens[ex.id]) for ex in examples if tokens[ex.id] > budget]
    kept = random.Random(seed).sample(fit, min(n, len(fit)))
    return Selection(kept, dropped, tokens)
