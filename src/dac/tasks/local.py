"""Local / recent tasks: the answer is in the last part of the context, among earlier decoys.

Gauge readings are spread through a prose haystack; the last three sit in the final section
(a short closing paragraph of its own), so the ideal declaration is ``[[local]]``.
"""

from __future__ import annotations

import random

from . import sources as src
from .core import Draft, insert_at_depths

TAIL_WORDS = 40  # prose words after the last reading (it stays inside the last section)


def _log(rng: random.Random, n: int) -> tuple[list[str], list[int], list[str], str, int]:
    gauge = src.distinct_keys(rng, 1)[0]
    decoys = max(2, min(12, n // 150 + 2))
    values = [str(v) for v in rng.sample(range(100, 1000), decoys + 3)]
    texts = [f"Log entry: the {gauge} gauge read {v}." for v in values]
    depths = sorted(rng.uniform(0.0, 0.8) for _ in range(decoys))
    body = src.prose(rng.random(), n)
    units, pos = insert_at_depths(body, texts[:decoys], depths)
    tail = src.prose(rng.random(), TAIL_WORDS)
    # the last three readings, interleaved with a few closing sentences
    last = []
    for i, t in enumerate(texts[decoys:]):
        last.append(len(units))
        units.append(t)
        if i < len(tail):
            units.append(tail[i])
    units.extend(tail[3:])
    return units, last, values[decoys:], gauge, len(units) - last[0]


def tail_last(rng: random.Random, n: int, length: int) -> Draft:
    """The most recent of many gauge readings."""
    units, last, values, gauge, tail = _log(rng, n)
    q = (f"What was the most recent reading of the {gauge} gauge in the document? "
         "Answer with the number only.")
    return Draft(units, [(last[-1], 0, len(units[last[-1]]))], q, [values[-1]], values[-1],
                 tail=tail)


def tail_sum(rng: random.Random, n: int, length: int) -> Draft:
    """The sum of the last three gauge readings."""
    units, last, values, gauge, tail = _log(rng, n)
    total = str(sum(int(v) for v in values))
    q = (f"What is the sum of the last three readings of the {gauge} gauge in the document? "
         "Answer with the number only.")
    return Draft(units, [(u, 0, len(units[u])) for u in last], q, [total], total, tail=tail)
