"""Magic-chunk segmentation: cut a long context into addressable pieces of about a target size.

The context is tokenized once with character offsets; every size is a token count measured
through those offsets, and every cut is a character position, so the chunks are real
substrings of the input. Nothing is ever decoded from token slices, which is what keeps a
multibyte character from being split, and the chunks concatenate back to the exact input.

Units are packed greedily, in order, up to ``target`` tokens. Only a unit longer than ``cap``
tokens is split, and at the coarsest boundary it contains, each cut falling right after the
delimiter so the whitespace stays with the text before it:

1. a blank line (a newline, one or more whitespace-only lines);
2. a newline;
3. a sentence end: ``.``, ``!`` or ``?`` followed by whitespace;
4. a clause end: ``;``, ``:`` or ``,`` followed by whitespace;
5. whitespace between words.

The pieces of a split unit are split again only if they are still over the cap, at the next
finer boundary. A run without whitespace has no boundary and is never cut: it becomes one
chunk of its own, over the cap if need be (a base64 blob, a long URL). A context that fits in
``cap`` tokens is one chunk.

An empty or whitespace-only context becomes the single chunk :data:`EMPTY_CHUNK`, so a prompt
always has at least one addressable chunk (the only case where the chunks do not concatenate
back to the input).
"""

from __future__ import annotations

import bisect
import re
from typing import Any

#: The one chunk an empty or whitespace-only context becomes.
EMPTY_CHUNK = "(the document is empty)"

#: Boundaries from coarsest to finest; a cut goes at the end of each match.
BOUNDARIES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("blank line", re.compile(r"\n(?:[^\S\n]*\n)+")),
    ("newline", re.compile(r"\n")),
    ("sentence end", re.compile(r"[.!?]\s+")),
    ("clause end", re.compile(r"[;:,]\s+")),
    ("space", re.compile(r"\s+")),
)


def segment_spans(text: str, tokenizer: Any, target: int = 2048,
                  cap: int = 2560) -> list[tuple[int, int]]:
    """Character ranges ``[start, end)`` of the chunks of ``text`` (see the module docstring).

    They tile ``text`` exactly. An empty or whitespace-only ``text`` gives ``[]``: the caller
    decides what stands in for it (:func:`segment` uses :data:`EMPTY_CHUNK`)."""
    if target < 1 or cap < target:
        raise ValueError(f"need 1 <= target <= cap, got target={target}, cap={cap}")
    if not text.strip():
        return []
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("a fast (Rust) tokenizer is required: segmentation needs offsets")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = sorted(s for s, _ in enc["offset_mapping"])

    def count(a: int, b: int) -> int:
        # every token is counted once, in the piece its first character falls in
        return bisect.bisect_left(starts, b) - bisect.bisect_left(starts, a)

    def units(a: int, b: int, level: int) -> list[tuple[int, int]]:
        if count(a, b) <= cap:
            return [(a, b)]
        for lvl in range(level, len(BOUNDARIES)):
            pattern = BOUNDARIES[lvl][1]
            cuts = [m.end() for m in pattern.finditer(text, a, b) if a < m.end() < b]
            if cuts:
                out: list[tuple[int, int]] = []
                edges = [a, *cuts, b]
                for x, y in zip(edges, edges[1:]):
                    out.extend(units(x, y, lvl + 1))
                return out
        return [(a, b)]  # no whitespace inside: atomic, even over the cap

    chunks: list[tuple[int, int]] = []
    start, size = 0, 0
    for a, b in units(0, len(text), 0):
        n = count(a, b)
        if size and size + n > target:
            chunks.append((start, a))
            start, size = a, 0
        size += n
    chunks.append((start, len(text)))
    return chunks


def segment(text: str, tokenizer: Any, target: int = 2048, cap: int = 2560) -> list[str]:
    """The magic chunks of ``text``: about ``target`` tokens each, never cut inside a word.

    ``"".join(segment(text, tok)) == text`` for any text with a non-whitespace character; an
    empty or whitespace-only text gives ``[EMPTY_CHUNK]``."""
    spans = segment_spans(text, tokenizer, target, cap)
    return [text[a:b] for a, b in spans] if spans else [EMPTY_CHUNK]
