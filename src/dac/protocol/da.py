"""The Declarative Attention protocol ("da"): XML-like mode tags over numbered magic chunks.

The model writes its reasoning in three modes and the tags say which context it reads:

* ``<global>...</global>``: every magic chunk (the default state; the tag only gives the
  text structure and changes nothing);
* ``<focus magic_chunks="K">VALUE</focus>``, also ``"K,M"`` and ``"K-M"``: only the named
  chunks;
* ``<local>...</local>``: no chunk at all;
* ``<answer>...</answer>``: the final answer (no change of mode either).

Always visible, whatever the mode: the attention sink (the first :data:`SINK_TOKENS` prompt
tokens), the preamble before chunk 1 (system text, tool declaration, first request), the
question with the instruction after it, and everything generated so far.

**Prompt.** The context is cut into magic chunks (:mod:`dac.protocol.chunks`) and delivered
through the tokenizer's own chat template as a simulated tool-use conversation: a system turn
with :data:`DA_SYSTEM`, a user turn asking for the document chunk by chunk, then per chunk an
assistant call to ``get_magic_chunk`` (declared with ``apply_chat_template(tools=...)``) and a
tool result headed ``Magic Chunk N``; the last user turn holds the question and then
:data:`DA_INSTRUCTION`. Thinking is turned off through the template (``enable_thinking``)
unless asked for: models did not keep to the protocol inside thinking blocks. Chunks are
numbered from 1, like the headers the model reads and the 1-based sections of
:class:`~dac.protocol.context.PromptLayout`, so ``magic_chunks="3"`` is ``sections[2]``.

A template that cannot carry the transcript (rendering with tools raises, or a tool call or
tool result is missing from the output, as with templates that drop tool messages) gets the
chunks inline instead: one user turn, each chunk under its ``Magic Chunk N`` header, then the
question and the instruction. ``layout.delivery`` records which (``"tools"`` or ``"inline"``).
A tokenizer without a template gets the same inline text as plain text.

**Spans.** The template renders placeholders (:func:`~dac.protocol.base.slot`) where the chunk
texts and the question go; the real texts are then put in their place, so each chunk's
character range is known from the rendering itself and the chunk arrives byte for byte even
under templates that trim message content. One tokenization with offsets maps the ranges to
tokens. ``sections[k-1]`` covers ``Magic Chunk k`` and its text (the header travels with the
chunk, as section markers do in the brackets dialect); the turn markup between chunks is read
in global mode only. ``preamble`` is everything before chunk 1; ``protected`` runs from the
end of the last chunk to the end of the prompt (question, instruction, generation prompt).

**Sink.** :data:`DA_SYSTEM` is 23 words and punctuation marks, so about as many tokens in
common BPE vocabularies: with the template's turn header before it, it fills the first 16
positions, and the sink holds fixed text and no document token. A template that puts something of its own first (a BOS
token, a turn header, Gemma folding the system text into the first user turn, Qwen 3.5 listing
the tools before the system text) shifts the instruction right: the sink then holds that
template text, which is just as fixed. What :meth:`DAProtocol.build_prompt` enforces is the
part that matters: no chunk token lies in the sink (a ValueError otherwise, which no real
template comes near, since the system turn and the first request come before chunk 1).
"""

from __future__ import annotations

from dataclasses import replace

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from .base import (
    ANSWER_FORMAT,
    Protocol,
    SlotError,
    check_question,
    extract_answer,
    fill_layout,
    fill_slots,
    register_protocol,
    render_chat,
    render_turn,
    slot,
)
from .chunks import EMPTY_CHUNK, segment
from .context import PromptLayout
from .grammar import MAX_SECTION_SPAN, Directive, Mode, ProtocolEvent
from .parser import GLOBAL

if TYPE_CHECKING:  # the planner imports the protocol, not the reverse
    from ..planning.blocks import PlanConfig

#: Prompt positions every mode keeps: the attention sink.
SINK_TOKENS = 16
TOOL_NAME = "get_magic_chunk"

#: The system turn: fixed text that fills the attention sink.
DA_SYSTEM = ("You are a careful assistant. You answer questions about long documents, "
             "which you read one magic chunk at a time.")

#: The first user turn of the tool-use transcript.
BOOTSTRAP = ("Please fetch the document with the tool, one magic chunk at a time, from the "
             "first to the last.")

#: Opens the single user turn of inline delivery.
INLINE_INTRO = ("Here is the document, cut into magic chunks; each one starts with its "
                "Magic Chunk header.")

#: The tool the transcript pretends to call (declared through the template, never run).
MAGIC_CHUNK_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": ("Return one magic chunk of the document. Magic chunks are arbitrary "
                        "retrieval splits of roughly equal size, cut without regard to the "
                        "document's own sections or chapters."),
        "parameters": {
            "type": "object",
            "properties": {"index": {"type": "integer",
                                     "description": "Number of the magic chunk, from 1."}},
            "required": ["index"],
        },
    },
}

DA_INSTRUCTION = """\
Instructions
Answer the question above from the document alone. The get_magic_chunk results above hold \
the whole document, in order, from Magic Chunk 1 on. The magic chunks are arbitrary cuts made \
for retrieval: they do not follow the document's own sections or chapters. Everything has been \
fetched, so do not call get_magic_chunk again.

Work through the document in three attention modes. The mode you are writing in decides which \
magic chunks you can see:

| Mode | What you can see | When to use it |
|---|---|---|
| <global> (the default) | every magic chunk | to decide which magic chunk to read next |
| <focus magic_chunks="K"> | magic chunk K only, plus what you have written | to copy an exact \
value out of magic chunk K |
| <local> | no magic chunk: the question and what you have written | to plan, or to combine \
values you have already copied |

Global mode: write <global>...</global> to pick the next magic chunk, saying in a sentence why \
it should hold what you need. Do not work out the answer here.

Focus mode: write <focus magic_chunks="K">VALUE</focus> to read magic chunk K alone. Name \
several with magic_chunks="K,M" (or a range, "K-M"). VALUE is what the chunk says that you \
need, copied word for word: a name, a number, a date or a short phrase of 1 to 12 words. Close \
the tag right after it. When the document reached you without Magic Chunk headers (inline, in \
one piece), focus mode is unavailable: use global and local only.

Local mode: write <local>...</local> to reason without the document. You see the question and \
everything you have written, nothing else, and a magic chunk cannot be read from inside it. \
Refer to the values you copied by name; there is no need to repeat them. If a value is still \
missing, close </local>, open <global> and choose the magic chunk to focus on next.

Use the modes in any order, as often as you need, then give the answer. Three habits matter most:
1. Focus at least once. Reading the exact value beats answering from memory; guessing is the \
most common mistake.
2. Close with a <local> block that states the one value, phrase or summary your answer will \
hold. This commits you to what the question actually asks.
3. Inside <local>, never rely on what you remember of a magic chunk: you cannot see it there. \
If you need something you did not copy, go back to <global>.

Orders that work:
- <local> -> <global> -> <focus> -> <local> -> <answer>: plan, find, copy, conclude (most \
questions).
- <global> -> <focus> -> <local> -> <answer>: a single fact whose magic chunk is easy to spot.
- <global> -> <focus> -> <global> -> <focus> -> <local> -> <answer>: facts in different magic \
chunks.
- <global> -> <focus> -> <local> -> <global> -> <focus> -> <local> -> <answer>: copy, check, \
fetch what is still missing, commit.

""" + ANSWER_FORMAT


def chunk_header(index: int) -> str:
    """The header that opens magic chunk ``index`` (1-based)."""
    return f"Magic Chunk {index}"


# -- the streaming state machine ------------------------------------------------------------

#: A candidate tag longer than this (from ``<`` to ``>``) is ordinary text.
MAX_TAG_CHARS = 160
_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_TAG = re.compile(rf"<(/?)({_NAME})([\s/][^<>]*)?>")
_TAG_PREFIX = re.compile(rf"<(?:/?(?:({_NAME})(?:[\s/][^<>]*)?)?)?")
_ATTR = re.compile(r"""([^\s=/"']+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s"']+))?""")
_ITEM = re.compile(r"([0-9]+)(?:\s*-\s*([0-9]+))?")
_REGION_TAGS = ("focus", "local")


class DAParser:
    """Incremental parser of DA tags in generated text, same duck type as
    :class:`~dac.protocol.parser.StreamingParser` (``feed``, ``finish``, ``current``,
    ``events``).

    Starts in global. The closing ``>`` of ``<focus magic_chunks="...">`` switches to
    ``Directive(Mode.FOCUS, regions)`` (1-based chunk ranges, sorted and merged), that of
    ``<local>`` to ``Directive(Mode.LOCAL)``; the matching ``</focus>`` / ``</local>`` returns to
    global. Each switch is a ``"directive"`` event carrying the step its ``>`` arrived at.
    ``<global>``, ``</global>``, ``<answer>``, ``</answer>`` and unknown tags are ordinary text:
    they change nothing and make no event (so every event is a transition or a fallback).
    Tag names are case-insensitive; a tag split over several deltas is assembled first.

    Accepted ``<focus>`` forms: the ``magic_chunks`` attribute in double quotes, single quotes
    or unquoted (an unquoted value ends at whitespace), spaces around ``=`` and inside the
    value, other attributes in any order (ignored). The value is a comma-separated list of
    ``K`` or ``K-M`` in ASCII digits. Attributes of ``<local>`` and of closing tags are ignored.

    Fallbacks (documented behaviour, never an exception; all land in global):

    * ``unknown_section``: chunks that do not exist (0, or above ``num_chunks``) are dropped
      and the rest applied; with none left, global;
    * ``empty_region``: ``<focus>`` without ``magic_chunks``, an empty value, or a range
      ``K-M`` with ``M < K``;
    * ``garbage``: a value that is not a list of numbers and ranges, ``magic_chunks`` given
      twice, or a self-closing ``<focus .../>`` / ``<local/>``;
    * ``nested``: an opening ``<focus>`` / ``<local>`` while another is open (their closing
      tags then close them without a further event);
    * ``stray_close``: ``</focus>`` / ``</local>`` with no matching open tag (anything open is
      closed);
    * ``unclosed``: generation ended inside an open region, or in the middle of a
      ``<focus``/``<local`` tag (``finish``).

    A ``<`` not followed by a tag name (``x < 3``), or a would-be tag running over
    :data:`MAX_TAG_CHARS` characters, is text.
    """

    def __init__(self, num_chunks: int | None = None):
        self.num_chunks = num_chunks
        self.current: Directive = GLOBAL
        self.events: list[ProtocolEvent] = []
        self._open: list[str] = []  # region tags open, outermost first
        self._buf = ""  # an unfinished tag carried to the next delta
        self._finished = False

    def feed(self, text: str, step: int) -> list[ProtocolEvent]:
        """Consume a text delta generated at ``step``; return the events it completed."""
        if self._finished or not text:
            return []
        data = self._buf + text
        self._buf = ""
        out: list[ProtocolEvent] = []
        i = 0
        while True:
            j = data.find("<", i)
            if j < 0:
                break
            gt = data.find(">", j + 1)
            lt = data.find("<", j + 1)
            if lt >= 0 and (gt < 0 or lt < gt):  # a fresh "<" abandons this candidate
                i = lt
                continue
            if gt < 0:  # unfinished: keep it if it can still become a tag
                if len(data) - j <= MAX_TAG_CHARS and _TAG_PREFIX.fullmatch(data, j):
                    self._buf = data[j:]
                break
            i = gt + 1
            if gt - j > MAX_TAG_CHARS:
                continue
            m = _TAG.fullmatch(data, j, gt + 1)
            if m:
                ev = self._tag(step, m.group(0), bool(m.group(1)), m.group(2).lower(),
                               m.group(3) or "")
                if ev is not None:
                    out.append(ev)
        self.events.extend(out)
        return out

    def finish(self, step: int) -> list[ProtocolEvent]:
        """End of generation: an open region, or a region tag cut short, is ``unclosed``."""
        if self._finished:
            return []
        out: list[ProtocolEvent] = []
        m = _TAG_PREFIX.fullmatch(self._buf) if self._buf else None
        if m and m.group(1) and m.group(1).lower() in _REGION_TAGS and (
                len(self._buf) > len(m.group(1)) + 1 + self._buf.startswith("</")):
            out.append(self._error(step, "unclosed", self._buf, "generation ended inside a tag"))
        if self._open:
            out.append(self._error(step, "unclosed", f"<{self._open[-1]}>",
                                   f"generation ended inside <{self._open[-1]}>"))
        self._open.clear()
        self._buf = ""
        self._finished = True
        self.events.extend(out)
        return out

    # -- helpers ---------------------------------------------------------------------------
    def _tag(self, step: int, text: str, closing: bool, name: str,
             attrs: str) -> ProtocolEvent | None:
        if name not in _REGION_TAGS:
            return None  # <global>, <answer>, unknown tags: structure or plain text
        if closing:
            return self._close(step, text, name)
        if attrs.rstrip().endswith("/"):
            return self._error(step, "garbage", text, f"self-closing <{name}/> opens nothing")
        if self._open:
            outer = self._open[-1]
            self._open.append(name)
            return self._error(step, "nested", text, f"<{name}> opened inside <{outer}>")
        self._open.append(name)
        if name == "local":
            return self._apply(step, text, Directive(Mode.LOCAL))
        return self._focus(step, text, attrs)

    def _close(self, step: int, text: str, name: str) -> ProtocolEvent | None:
        if name not in self._open:
            what = f"</{name}> inside <{self._open[-1]}>" if self._open else f"</{name}>"
            self._open.clear()
            return self._error(step, "stray_close", text, f"{what} closes nothing")
        del self._open[len(self._open) - 1 - self._open[::-1].index(name):]
        if self._open or self.current == GLOBAL:
            return None  # closing a failed or nested region: already in global
        return self._apply(step, text, GLOBAL)

    def _focus(self, step: int, text: str, attrs: str) -> ProtocolEvent:
        values = [v for k, v in _ATTR.findall(attrs) if k.lower() == "magic_chunks"]
        if len(values) > 1:
            return self._error(step, "garbage", text, "magic_chunks given more than once")
        value = values[0] if values else ""
        if value[:1] in "\"'" and value[-1:] == value[:1] and len(value) >= 2:
            value = value[1:-1]
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not parts:
            return self._error(step, "empty_region", text, "focus names no magic chunk")
        regions: list[tuple[int, int]] = []
        for part in parts:
            m = _ITEM.fullmatch(part)
            if not m:
                return self._error(step, "garbage", text, f"bad magic chunk {part!r}")
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
            if hi < lo:
                return self._error(step, "empty_region", text, f"empty range {lo}-{hi}")
            if self.num_chunks is None and hi - lo > MAX_SECTION_SPAN:
                return self._error(step, "garbage", text, f"range {lo}-{hi} is implausibly large")
            regions.append((lo, hi))
        wanted = Directive(Mode.FOCUS, _merge(regions))
        if self.num_chunks is None:
            valid, dropped = _merge([(max(lo, 1), hi) for lo, hi in regions if hi >= 1]), [
                lo for lo, hi in regions if lo < 1]
        else:
            valid, dropped = _clip(regions, self.num_chunks)
        if not dropped:
            return self._apply(step, text, wanted)
        if not valid:
            return self._error(step, "unknown_section", text,
                               f"no magic chunk among {dropped[:8]} exists "
                               f"(the context has {self.num_chunks})", dropped, wanted)
        applied = Directive(Mode.FOCUS, valid)
        self.current = applied
        return ProtocolEvent(step, "unknown_section", text, wanted, applied,
                             f"dropped unknown magic chunks {dropped[:8]}", tuple(dropped))

    def _apply(self, step: int, text: str, d: Directive) -> ProtocolEvent:
        self.current = d
        return ProtocolEvent(step, "directive", text, d, d)

    def _error(self, step: int, kind: str, text: str, message: str,
               dropped: Sequence[int] = (), wanted: Directive | None = None) -> ProtocolEvent:
        self.current = GLOBAL
        return ProtocolEvent(step, kind, text, wanted, GLOBAL, message, tuple(dropped))


def _merge(regions: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted, disjoint, non-adjacent ranges covering the same chunks."""
    out: list[list[int]] = []
    for lo, hi in sorted(regions):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def _clip(regions: Sequence[tuple[int, int]], n: int
          ) -> tuple[tuple[tuple[int, int], ...], list[int]]:
    """Ranges cut to chunks ``1..n``, and the written numbers that fell outside."""
    valid: list[tuple[int, int]] = []
    dropped: list[int] = []
    for lo, hi in regions:
        if lo < 1:
            dropped.append(lo)
        if hi > n:
            dropped.append(hi)
        lo, hi = max(lo, 1), min(hi, n)
        if lo <= hi:
            valid.append((lo, hi))
    return _merge(valid), dropped


# -- the protocol ---------------------------------------------------------------------------

class DAProtocol(Protocol):
    """Magic chunks delivered as tool results, ``<global>``/``<focus>``/``<local>`` tags."""

    name: ClassVar[str] = "da"
    instruction: ClassVar[str] = DA_INSTRUCTION

    def build_prompt(self, tokenizer: Any, context: str | Sequence[str], question: str, *,
                     thinking: bool = False, target: int = 2048, cap: int = 2560,
                     delivery: str = "auto", system: str = DA_SYSTEM) -> PromptLayout:
        """Render the DA prompt and map every magic chunk to its token span.

        ``context``: a ``str`` is cut by :func:`~dac.protocol.chunks.segment` (``target`` and
        ``cap`` in tokens); a sequence is one magic chunk per item, uncut (a blank item becomes
        :data:`~dac.protocol.chunks.EMPTY_CHUNK`). ``delivery``: ``"auto"`` (tool results when
        the template can carry them, else inline), ``"tools"`` (a ValueError if it cannot) or
        ``"inline"``. ``thinking``: leave the template's thinking mode on."""
        q = check_question(question)
        if delivery not in ("auto", "tools", "inline"):
            raise ValueError(f"delivery must be 'auto', 'tools' or 'inline', got {delivery!r}")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("a fast (Rust) tokenizer is required to map chunks to token spans")
        if isinstance(context, str):
            chunks = segment(context, tokenizer, target, cap)
        else:
            chunks = [c if c.strip() else EMPTY_CHUNK for c in context] or [EMPTY_CHUNK]
        final = f"Question:\n{slot('q')}\n\n{DA_INSTRUCTION}"
        templated = bool(getattr(tokenizer, "chat_template", None))
        rendered, reason = None, "the tokenizer has no chat template"
        if templated and delivery != "inline":
            rendered, reason = _render_tools(tokenizer, system, len(chunks), final, thinking)
        if rendered is None and delivery == "tools":
            raise ValueError(f"cannot deliver magic chunks as tool results: {reason}")
        used = "tools" if rendered is not None else "inline"
        if rendered is None:
            body = "\n\n".join(f"{chunk_header(k)}\n{slot(f'c{k}')}"
                               for k in range(1, len(chunks) + 1))
            rendered, _ = render_turn(tokenizer, system, f"{INLINE_INTRO}\n\n{body}\n\n{final}",
                                      thinking)
        layout = fill_layout(tokenizer, rendered, chunks, q, templated=templated,
                             protocol=self.name, delivery=used,
                             headers=[len(chunk_header(k)) + 1
                                      for k in range(1, len(chunks) + 1)])
        if layout.sections[0].start < SINK_TOKENS:
            raise ValueError(f"magic chunk 1 starts at token {layout.sections[0].start}, "
                             f"inside the {SINK_TOKENS}-token attention sink")
        return layout

    def parser(self, layout: PromptLayout) -> DAParser:
        return DAParser(layout.num_sections)

    def plan_config(self, config: PlanConfig) -> PlanConfig:
        """The scaffold every mode keeps: the :data:`SINK_TOKENS`-token sink, the question
        to the end of the prompt (the layout's protected span) and the whole response; the
        turn markup between chunks is read only in global mode."""
        bs = config.block_size
        return replace(config, sink_tokens=SINK_TOKENS, keep_preamble=False,
                       keep_response=True, window=bs, local_window=bs)

    def answer(self, text: str) -> str:
        return extract_answer(text)


def _render_tools(tokenizer: Any, system: str, n: int, final: str,
                  thinking: bool) -> tuple[str | None, str]:
    """The tool-use transcript through the template, or ``None`` and why it cannot be used."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system},
                                      {"role": "user", "content": BOOTSTRAP}]
    for k in range(1, n + 1):
        call_id = f"call_{k}"
        messages.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": call_id, "type": "function",
             "function": {"name": TOOL_NAME, "arguments": {"index": k}}}]})
        messages.append({"role": "tool", "tool_call_id": call_id, "name": TOOL_NAME,
                         "content": f"{chunk_header(k)}\n{slot(f'c{k}')}"})
    messages.append({"role": "user", "content": final})
    try:
        rendered = render_chat(tokenizer, messages, tools=[MAGIC_CHUNK_TOOL], thinking=thinking)
    except Exception as e:  # templates without tool roles raise
        return None, f"the chat template refused the transcript ({e})"
    try:
        fill_slots(rendered, {f"c{k}": "" for k in range(1, n + 1)} | {"q": ""})
    except SlotError as e:
        return None, str(e)
    prev = 0
    for k in range(1, n + 1):
        at = rendered.find(slot(f"c{k}"))
        if at < prev or not rendered[:at].endswith(chunk_header(k) + "\n"):
            return None, f"tool result {k} is out of order or lost its header"
        # the declaration and the first call come before chunk 1, one call before each other
        if rendered.count(TOOL_NAME, prev, at) < (2 if k == 1 else 1):
            return None, f"the tool {'declaration or ' if k == 1 else ''}call for chunk {k} " \
                         "is missing"
        prev = at
    return rendered, ""


register_protocol(DAProtocol())
