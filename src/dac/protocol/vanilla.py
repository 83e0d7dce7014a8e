"""The vanilla protocol: the raw context inline, step-by-step reasoning, full attention.

The baseline arm for the DA protocol: the same system turn position, the same ``<answer>``
convention and answer formats, but no magic chunks and no directives. The document goes into
one user turn through the tokenizer's chat template (plain text without a template), then the
question and :data:`VANILLA_INSTRUCTION`. Its parser never leaves global mode: tags the model
writes are ordinary text.

The layout still records where the context lies (one section per context item, the whole
context for a ``str``) so evidence spans can be located; nothing masks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from .base import (
    ANSWER_FORMAT,
    Protocol,
    check_question,
    extract_answer,
    fill_layout,
    register_protocol,
    render_turn,
    slot,
)
from .chunks import EMPTY_CHUNK
from .context import PromptLayout
from .grammar import Directive, ProtocolEvent
from .parser import GLOBAL

#: The system turn, so the first prompt tokens are fixed text here too.
VANILLA_SYSTEM = ("You are a careful assistant. You answer questions about long documents "
                  "using only what they say.")

VANILLA_INSTRUCTION = """\
Instructions
Answer the question from the document above alone. Think it through step by step before \
answering.

""" + ANSWER_FORMAT


class VanillaParser:
    """A parser that never changes mode: full attention for the whole generation."""

    def __init__(self) -> None:
        self.current: Directive = GLOBAL
        self.events: list[ProtocolEvent] = []

    def feed(self, text: str, step: int) -> list[ProtocolEvent]:
        return []

    def finish(self, step: int) -> list[ProtocolEvent]:
        return []


class VanillaProtocol(Protocol):
    """Inline context, reasoning, ``<answer>``: the baseline without directives."""

    name: ClassVar[str] = "vanilla"
    instruction: ClassVar[str] = VANILLA_INSTRUCTION

    def build_prompt(self, tokenizer: Any, context: str | Sequence[str], question: str, *,
                     thinking: bool = False, system: str = VANILLA_SYSTEM) -> PromptLayout:
        """Render the document inline (items of a sequence separated by blank lines)."""
        q = check_question(question)
        items = [context] if isinstance(context, str) else list(context)
        items = [c if c.strip() else EMPTY_CHUNK for c in items] or [EMPTY_CHUNK]
        doc = "\n\n".join(slot(f"c{k}") for k in range(1, len(items) + 1))
        user = f"Document:\n{doc}\n\nQuestion:\n{slot('q')}\n\n{VANILLA_INSTRUCTION}"
        rendered, templated = render_turn(tokenizer, system, user, thinking)
        layout = fill_layout(tokenizer, rendered, items, q, templated=templated,
                             protocol=self.name, delivery="inline")
        return layout

    def parser(self, layout: PromptLayout) -> VanillaParser:
        return VanillaParser()

    def answer(self, text: str) -> str:
        return extract_answer(text)


register_protocol(VanillaProtocol())
