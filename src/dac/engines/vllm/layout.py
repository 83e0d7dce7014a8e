"""Rebuild a :class:`PromptLayout` from a prompt's token ids (server requests without spans).

A client of the OpenAI server sends text, not token spans. When a DAC request carries no
``dac_sections``, the prompt is decoded, re-encoded with character offsets (which must give back
the same ids), and the sections are found by their markers ``[S1]``, ``[S2]``, ... in order, as
rendered by :func:`dac.protocol.context.build_prompt` (after ``Document:``): section ``k`` runs from its marker to the
blank line before marker ``k + 1``; the last one ends at the blank line before ``Question:``.
A document that itself contains the next marker's text would be cut there: clients that need
exact spans send ``dac_sections`` (token offsets) instead.
"""

from __future__ import annotations

from typing import Any

from ...protocol.context import PromptLayout, Span
from ...protocol.prompt import section_marker
from .errors import DACOptionError

QUESTION = "\n\nQuestion:"
DOCUMENT = "Document:\n"


def marker_starts(text: str) -> list[int]:
    """Character offsets of the markers ``[S1]``, ``[S2]``, ... of a prompt, in order (those
    after ``Document:`` when it has one: the system prompt itself names ``[S1]``)."""
    starts: list[int] = []
    doc = text.find(DOCUMENT)
    pos = doc + len(DOCUMENT) if doc >= 0 else 0
    while True:
        j = text.find(section_marker(len(starts) + 1), pos)
        if j < 0:
            break
        starts.append(j)
        pos = j + 1
    return starts


def layout_from_markers(tokenizer: Any, prompt_ids: list[int]) -> PromptLayout:
    """The layout of a prompt rendered by ``build_prompt`` (raises :class:`DACOptionError`)."""
    if not getattr(tokenizer, "is_fast", False):
        raise DACOptionError("finding sections needs a fast tokenizer; send dac_sections")
    ids = list(prompt_ids)
    text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"]) != ids:
        raise DACOptionError("the prompt does not re-tokenize to the same ids, so its sections "
                             "cannot be located; send dac_sections (token offsets)")
    starts = marker_starts(text)
    if not starts:
        raise DACOptionError("no section markers ([S1], [S2], ...) in the prompt; send "
                             "dac_sections (token offsets) or build the prompt with sections")
    q = text.find(QUESTION, starts[-1])
    if q < 0:
        raise DACOptionError("no 'Question:' after the last section marker; send dac_sections")
    ends = []
    for k, s in enumerate(starts):
        stop = starts[k + 1] if k + 1 < len(starts) else q
        ends.append(len(text[s:stop].rstrip()) + s)
    layout = PromptLayout(ids, [], Span(0, 0), [], text, [tuple(o) for o in enc["offset_mapping"]])
    layout.sections = [layout.char_span_to_tokens(a, b) for a, b in zip(starts, ends)]
    layout.preamble = Span(0, layout.sections[0].start)
    q_tok = layout.char_span_to_tokens(q, q + 1).start
    layout.protected = [Span(max(q_tok, layout.sections[-1].end), len(ids))]
    return layout
