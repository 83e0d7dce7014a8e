"""Addressable context: numbered sections with visible markers and their exact token spans.

The prompt is rendered once as text (through the tokenizer's chat template when it has one),
tokenized with character offsets, and every section's character range is mapped to a token
span. The mask planner works from these spans, never from re-reading the prompt text, so a
document that happens to contain marker- or directive-like text changes nothing.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .prompt import SYSTEM_PROMPT, section_marker


@dataclass(frozen=True)
class Span:
    """Half-open token range ``[start, end)``."""

    start: int
    end: int

    def __len__(self) -> int:
        return max(0, self.end - self.start)


@dataclass
class PromptLayout:
    """Token ids of a prompt plus the spans the planner needs."""

    input_ids: list[int]
    sections: list[Span]  # section k (1-based) is sections[k - 1]
    preamble: Span  # instructions before the first section
    protected: list[Span]  # always kept outside global mode: the question and what follows
    text: str = ""
    offsets: list[tuple[int, int]] = field(default_factory=list, repr=False)
    section_chars: list[tuple[int, int]] = field(default_factory=list, repr=False)
    #: the protocol that built the prompt, which picks the parser (``dac.protocol.get_protocol``)
    protocol: str = "brackets"
    #: how the context reached the model: ``"tools"`` (simulated tool results), ``"inline"``
    #: (in one user turn or plain text), ``""`` (the protocol has a single way)
    delivery: str = ""

    @property
    def prompt_len(self) -> int:
        return len(self.input_ids)

    @property
    def num_sections(self) -> int:
        return len(self.sections)

    def section_spans(self, indices: list[int]) -> list[Span]:
        """Token spans of 1-based section indices (unknown indices are ignored)."""
        return [self.sections[i - 1] for i in indices if 1 <= i <= len(self.sections)]

    @cached_property
    def _bounds(self) -> tuple[list[int], list[int]]:
        return [s for s, _ in self.offsets], [e for _, e in self.offsets]

    def char_span_to_tokens(self, start: int, end: int) -> Span:
        """Smallest token span covering characters ``[start, end)`` of :attr:`text`."""
        starts, ends = self._bounds
        t0 = bisect.bisect_right(ends, start)
        t1 = bisect.bisect_left(starts, end)
        return Span(t0, max(t0, t1))

    def section_char_span_to_tokens(self, section: int, start: int, end: int) -> Span:
        """Token span of characters ``[start, end)`` inside section ``section``'s own text."""
        base = self.section_chars[section - 1][0]
        return self.char_span_to_tokens(base + start, base + end)

    @classmethod
    def plain(cls, prompt_len: int, sections: list[tuple[int, int]] | None = None,
              question: tuple[int, int] | None = None) -> PromptLayout:
        """A layout from token spans alone (tests, external tokenization)."""
        secs = [Span(a, b) for a, b in (sections or [])]
        first = secs[0].start if secs else prompt_len
        q = [Span(*question)] if question else ([Span(secs[-1].end, prompt_len)] if secs else [])
        return cls(list(range(prompt_len)), secs, Span(0, first), q)


def split_sections(text: str, max_chars: int = 1200) -> list[str]:
    """Split a document into sections on blank lines, merging paragraphs up to ``max_chars``.

    A single paragraph longer than ``max_chars`` is cut at sentence ends (or hard-cut)."""
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    pieces: list[str] = []
    for p in paras:
        while len(p) > max_chars:
            cut = p.rfind(". ", 0, max_chars)
            cut = cut + 1 if cut > max_chars // 3 else max_chars
            pieces.append(p[:cut].strip())
            p = p[cut:].strip()
        if p:
            pieces.append(p)
    sections: list[str] = []
    for p in pieces:
        if sections and len(sections[-1]) + 2 + len(p) <= max_chars:
            sections[-1] = sections[-1] + "\n\n" + p
        else:
            sections.append(p)
    return sections


def render_context(sections: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Context text with markers, and each section's character range (its text, not marker)."""
    parts: list[str] = []
    chars: list[tuple[int, int]] = []
    pos = 0
    for i, sec in enumerate(sections, 1):
        head = section_marker(i) + " "
        if parts:
            parts.append("\n\n")
            pos += 2
        chars.append((pos + len(head), pos + len(head) + len(sec)))
        parts.append(head + sec)
        pos += len(head) + len(sec)
    return "".join(parts), chars


def build_prompt(tokenizer: Any, sections: list[str], question: str, *,
                 system: str = SYSTEM_PROMPT, use_chat_template: bool | None = None,
                 question_first: bool = False) -> PromptLayout:
    """Render system prompt + numbered sections + question and record token spans.

    ``use_chat_template=None`` uses the tokenizer's chat template when it has one.
    ``question_first``: the question also comes before the document (query-aware
    contextualization), so the document is read knowing what is asked; it then sits in the
    preamble, and the question after the document stays the protected tail.
    """
    if not question or not question.strip():
        raise ValueError("the question is empty")
    if not sections:
        raise ValueError("the context has no sections")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("a fast (Rust) tokenizer is required to map sections to token spans")
    context, sec_chars = render_context(sections)
    user = f"Document:\n{context}\n\nQuestion: {question.strip()}"
    if question_first:
        user = f"Question: {question.strip()}\n\n{user}"
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if use_chat_template is None:
        use_chat_template = has_template
    if use_chat_template and has_template:
        try:
            text = tokenizer.apply_chat_template(
                [{"role": "system", "content": system}, {"role": "user", "content": user}],
                tokenize=False, add_generation_prompt=True)
        except Exception:  # templates without a system role (e.g. Gemma's)
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": system + "\n\n" + user}],
                tokenize=False, add_generation_prompt=True)
        add_special = False
    else:
        text = f"{system}\n\n{user}\nAnswer:"
        add_special = True
    base = text.find(context)
    if base < 0:
        raise ValueError("the chat template altered the document text; cannot map sections")
    sec_chars = [(base + a, base + b) for a, b in sec_chars]
    enc = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    layout = PromptLayout(ids, [], Span(0, 0), [], text, offsets, sec_chars)
    spans = [layout.char_span_to_tokens(a, b) for a, b in sec_chars]
    # sections own their marker too, so a focused section is read with its label
    marker_starts = [layout.char_span_to_tokens(a - len(section_marker(i)) - 1, a).start
                     for i, (a, _) in enumerate(sec_chars, 1)]
    layout.sections = [Span(m, s.end) for m, s in zip(marker_starts, spans)]
    layout.preamble = Span(0, layout.sections[0].start)
    q_start = layout.char_span_to_tokens(base + len(context), base + len(context) + 1).start
    layout.protected = [Span(max(q_start, layout.sections[-1].end), len(ids))]
    return layout
