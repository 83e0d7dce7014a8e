"""RULER-style scoring functions: ``(prediction, references) -> score in [0, 1]``.

Predictions are compared after removing directives (``[[...]]``), so a scorer sees only the
answer text whether it is given the raw generation or :attr:`GenerationResult.answer`.
"""

from __future__ import annotations

import re

from ..protocol.parser import strip_directives

_INT = re.compile(r"-?\d+")


def _clean(prediction: str) -> str:
    return strip_directives(prediction).lower()


def match_all(prediction: str, references: list[str]) -> float:
    """Share of references found in the prediction (case-insensitive substring)."""
    if not references:
        return 0.0
    p = _clean(prediction)
    return sum(r.lower() in p for r in references) / len(references)


def match_part(prediction: str, references: list[str]) -> float:
    """1 if any reference is found in the prediction (case-insensitive substring)."""
    p = _clean(prediction)
    return float(any(r.lower() in p for r in references))


def first_integer(prediction: str, references: list[str]) -> float:
    """1 if the first integer in the prediction equals the reference (thousands commas ok)."""
    p = _clean(prediction)
    m = _INT.search(re.sub(r"(?<=\d),(?=\d{3}\b)", "", p))
    return float(bool(m) and int(m.group()) == int(references[0]))


SCORERS = {"match_all": match_all, "match_part": match_part, "first_integer": first_integer}
