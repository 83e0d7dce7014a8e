"""One interface for every attention protocol, and the registry that names them.

A protocol decides three things: how the prompt is rendered (and which token spans are
addressable), how generated text turns into the :class:`~dac.protocol.grammar.Directive` in
force, and what part of the output is the answer that gets scored. The engines and the planner
only see a :class:`~dac.protocol.context.PromptLayout` and a parser, so a protocol can change
its tags or its prompt without touching them; ``layout.protocol`` names the protocol that built
a layout, so the runtime picks the matching parser with
``get_protocol(layout.protocol).parser(layout)``.

Registered protocols: ``brackets`` (the project's ``[[...]]`` dialect), ``da`` (tags and
magic chunks, :mod:`dac.protocol.da`) and ``vanilla`` (no directives, :mod:`dac.protocol.vanilla`).
"""

from __future__ import annotations

import re
import typing
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from .context import PromptLayout, Span, split_sections
from .context import build_prompt as build_brackets_prompt
from .grammar import Directive, ProtocolEvent
from .parser import StreamingParser, strip_directives
from .prompt import SYSTEM_PROMPT

if TYPE_CHECKING:  # the planner imports the protocol, not the reverse
    from ..planning.blocks import PlanConfig


class DirectiveParser(typing.Protocol):
    """What the runtime needs from a parser: fed generated text only, one delta per step."""

    current: Directive
    events: list[ProtocolEvent]

    def feed(self, text: str, step: int) -> list[ProtocolEvent]: ...

    def finish(self, step: int) -> list[ProtocolEvent]: ...


class Protocol(ABC):
    """An attention protocol: prompt rendering, directive parsing and answer extraction."""

    name: ClassVar[str]
    #: the text that teaches the model the protocol ("" if there is none)
    instruction: ClassVar[str] = ""

    @abstractmethod
    def build_prompt(self, tokenizer: Any, context: str | Sequence[str], question: str,
                     **options: Any) -> PromptLayout:
        """Render the prompt and record its spans.

        A ``str`` context is cut by the protocol's own segmenter; a sequence gives one section
        per item (documents, turns, passages), so natural boundaries are kept."""

    @abstractmethod
    def parser(self, layout: PromptLayout) -> DirectiveParser:
        """A fresh parser for one generation over ``layout``."""

    @abstractmethod
    def answer(self, text: str) -> str:
        """The part of the generated ``text`` that is scored."""

    def plan_config(self, config: PlanConfig) -> PlanConfig:
        """What a non-global mode keeps besides its region under this protocol (``config``
        as given: the brackets dialect's own knobs)."""
        return config


# -- the answer convention shared by ``da`` and ``vanilla`` --------------------------------

#: How the final answer is written, by kind of question.
ANSWER_FORMAT = """\
Put the final answer inside <answer>...</answer> at the very end. Its form depends on the \
question:

| Kind of question | What goes in <answer> | Example |
|---|---|---|
| multiple choice | the letter alone | <answer>B</answer> |
| cloze (<mask-N>) | the missing word or words | <answer>Lisbon</answer> |
| short fact | just the value | <answer>12 May 1998</answer> |
| summary | two or three sentences | <answer>The council approved the budget in June and \
postponed the bridge vote to the autumn.</answer> |

Stop writing after </answer>."""

_ANSWER = re.compile(r"<answer\s*>(.*?)</answer\s*>", re.IGNORECASE | re.DOTALL)
_ANSWER_OPEN = re.compile(r"<answer\s*>", re.IGNORECASE)
_DA_TAG = re.compile(r"</?\s*(?:global|focus|local|answer)\b[^<>]*>", re.IGNORECASE)


def has_answer(text: str) -> bool:
    """Whether a ``da`` or ``vanilla`` response holds a closed ``<answer>...</answer>``."""
    return _ANSWER.search(text) is not None


def extract_answer(text: str) -> str:
    """The scored answer of a ``da`` or ``vanilla`` response.

    The content of the last ``<answer>...</answer>``; else, when generation stopped inside an
    unclosed ``<answer>``, what follows the last ``<answer>``; else the whole text. Any
    protocol tag left in what is returned is removed, and the result is stripped."""
    found = _ANSWER.findall(text)
    if found:
        body = found[-1]
    else:
        opens = list(_ANSWER_OPEN.finditer(text))
        body = text[opens[-1].end():] if opens else text
    return _DA_TAG.sub("", body).strip()


# -- rendering through a chat template with exact spans -------------------------------------

def slot(key: str) -> str:
    """A placeholder that stands in for user text while a chat template renders.

    Plain ASCII with no whitespace at its ends, so a template that trims or reformats message
    content leaves it alone; :func:`fill_slots` then puts the real text in its place."""
    return f"@@dac-slot-{key}@@"


def fill_slots(rendered: str, values: dict[str, str]) -> tuple[str, dict[str, tuple[int, int]]]:
    """Replace each slot of ``values`` (it must occur exactly once) by its text.

    Returns the final text and each value's character range in it. The text of a value goes
    in verbatim: its position comes from where the template put the slot, never from searching
    the text, so a document that repeats a header or the question cannot confuse the spans."""
    found: list[tuple[int, str]] = []
    for key in values:
        s = slot(key)
        i = rendered.find(s)
        if i < 0 or rendered.find(s, i + 1) >= 0:
            raise SlotError(f"the chat template did not render {key!r} exactly once")
        found.append((i, key))
    found.sort()
    parts: list[str] = []
    ranges: dict[str, tuple[int, int]] = {}
    pos = length = 0
    for i, key in found:
        parts.append(rendered[pos:i])
        length += i - pos
        ranges[key] = (length, length + len(values[key]))
        parts.append(values[key])
        length += len(values[key])
        pos = i + len(slot(key))
    parts.append(rendered[pos:])
    return "".join(parts), ranges


class SlotError(ValueError):
    """A chat template dropped, repeated or rewrote a placeholder."""


def render_chat(tokenizer: Any, messages: list[dict[str, Any]], *,
                tools: list[dict[str, Any]] | None = None, thinking: bool = False) -> str:
    """``apply_chat_template`` with a generation prompt and thinking on or off.

    A template that refuses a system turn (Gemma-style templates without a system role) gets
    the system text folded into the first user turn instead."""
    kwargs: dict[str, Any] = dict(tokenize=False, add_generation_prompt=True,
                                  enable_thinking=thinking)
    if tools:
        kwargs["tools"] = tools
    try:
        return tokenizer.apply_chat_template(messages, **kwargs)
    except Exception:
        if len(messages) < 2 or messages[0]["role"] != "system" or messages[1]["role"] != "user":
            raise
        first = dict(messages[1], content=messages[0]["content"] + "\n\n" + messages[1]["content"])
        return tokenizer.apply_chat_template([first, *messages[2:]], **kwargs)


def render_turn(tokenizer: Any, system: str, user: str, thinking: bool) -> tuple[str, bool]:
    """A system + user exchange through the tokenizer's chat template (with a generation
    prompt), or as plain text without one; and whether a template rendered it."""
    if getattr(tokenizer, "chat_template", None):
        return render_chat(tokenizer, [{"role": "system", "content": system},
                                       {"role": "user", "content": user}],
                           thinking=thinking), True
    return f"{system}\n\n{user}\n", False


def fill_layout(tokenizer: Any, rendered: str, items: Sequence[str], question: str, *,
                templated: bool, protocol: str, delivery: str,
                headers: Sequence[int] | None = None) -> PromptLayout:
    """Put the items (slots ``c1``.. ``cN``) and the question (``q``) into ``rendered``,
    tokenize once, and make item ``k`` section ``k`` (``headers``: characters of a header
    before each item that belong to its section)."""
    values = {f"c{k}": c for k, c in enumerate(items, 1)}
    values["q"] = question
    text, ranges = fill_slots(rendered, values)
    layout = tokenize_text(tokenizer, text, add_special_tokens=not templated,
                           protocol=protocol, delivery=delivery)
    place_sections(layout, [ranges[f"c{k}"] for k in range(1, len(items) + 1)], headers)
    return layout


def tokenize_text(tokenizer: Any, text: str, *, add_special_tokens: bool,
                  protocol: str, delivery: str) -> PromptLayout:
    """A layout holding ``text``'s tokens and offsets, spans still empty."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("a fast (Rust) tokenizer is required to map chunks to token spans")
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    return PromptLayout(list(enc["input_ids"]), [], Span(0, 0), [], text,
                        offsets, [], protocol=protocol, delivery=delivery)


def place_sections(layout: PromptLayout, chars: list[tuple[int, int]],
                   labels: Sequence[int] | None = None) -> PromptLayout:
    """Fill ``layout``'s spans from each section's character range in ``layout.text``.

    ``labels[k]``: characters just before section ``k`` that belong to it (its header), so a
    focused section is read with its label. Sections are made disjoint and ordered; the
    preamble is what precedes section 1, the protected tail what follows the last one."""
    sections: list[Span] = []
    for k, (a, b) in enumerate(chars):
        span = layout.char_span_to_tokens(a - (labels[k] if labels else 0), b)
        start = max(span.start, sections[-1].end if sections else 0)
        sections.append(Span(start, max(start, span.end)))
    layout.sections = sections
    layout.section_chars = list(chars)
    layout.preamble = Span(0, sections[0].start)
    end = chars[-1][1]
    tail = layout.char_span_to_tokens(end, end + 1).start
    layout.protected = [Span(max(tail, sections[-1].end), layout.prompt_len)]
    return layout


def check_question(question: str) -> str:
    if not question or not question.strip():
        raise ValueError("the question is empty")
    return question.strip()


# -- the project's own dialect ------------------------------------------------------------

class BracketsProtocol(Protocol):
    """The ``[[focus S3]]`` dialect: numbered sections, directives in double brackets.

    A thin wrapper: the prompt, parser and answer are exactly those of
    :func:`dac.protocol.context.build_prompt`, :class:`~dac.protocol.parser.StreamingParser`
    and :func:`~dac.protocol.parser.strip_directives`."""

    name: ClassVar[str] = "brackets"
    instruction: ClassVar[str] = SYSTEM_PROMPT

    def build_prompt(self, tokenizer: Any, context: str | Sequence[str], question: str,
                     **options: Any) -> PromptLayout:
        """``options``: ``max_chars`` (for :func:`split_sections`, a ``str`` context only) and
        the keyword options of :func:`dac.protocol.context.build_prompt`."""
        max_chars = options.pop("max_chars", None)
        if isinstance(context, str):
            sections = split_sections(context) if max_chars is None else split_sections(
                context, max_chars)
        else:
            sections = list(context)
        return build_brackets_prompt(tokenizer, sections, question, **options)

    def parser(self, layout: PromptLayout) -> StreamingParser:
        return StreamingParser(layout.num_sections)

    def answer(self, text: str) -> str:
        return strip_directives(text)


# -- registry -----------------------------------------------------------------------------

#: Every protocol by name. ``da`` and ``vanilla`` register themselves when
#: :mod:`dac.protocol` is imported (which importing any of its modules does first).
PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    """Add ``protocol`` under its name (a name is registered once)."""
    if protocol.name in PROTOCOLS and type(PROTOCOLS[protocol.name]) is not type(protocol):
        raise ValueError(f"a protocol named {protocol.name!r} is already registered")
    PROTOCOLS[protocol.name] = protocol
    return protocol


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; a ValueError lists the known names otherwise."""
    try:
        return PROTOCOLS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(PROTOCOLS))
        raise ValueError(f"unknown protocol {name!r}; choose from {known}") from None


register_protocol(BracketsProtocol())
