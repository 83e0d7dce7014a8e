"""An example of a paper source (:mod:`dac.eval.sources`) as an evaluation item.

The runner and the records read a suite :class:`~dac.tasks.Sample`'s fields; a source example
has no generator behind it, no ideal directive and no known evidence position, so
:class:`SourceItem` gives the same fields with those left empty, and scores with the source's
native metric (:mod:`dac.eval.scoring`).

A response with no ``<answer>...</answer>`` under a protocol that asks for one (da, vanilla)
is a format failure (:func:`format_failure`) and scores 0, as in the paper, for a source's
example and a suite task alike; the record says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..protocol.context import PromptLayout, Span

if TYPE_CHECKING:
    from .sources import SourceExample

#: protocols whose prompt asks for the answer inside ``<answer>`` tags
ANSWER_TAG_PROTOCOLS = ("da", "vanilla")


def format_failure(output: str, protocol: str) -> bool:
    """Whether a response under ``protocol`` lacks the ``<answer>`` its prompt asks for."""
    from ..protocol.base import has_answer

    return protocol in ANSWER_TAG_PROTOCOLS and not has_answer(output)


@dataclass(frozen=True)
class SourceItem:
    """One selected example of a source, in the cell ``(source, budget, arm)``."""

    example: SourceExample
    budget: int  # the selection's context budget in tokens: the cell's "length"
    context_tokens: int  # measured with the evaluated model's tokenizer

    directive = None  # no ideal declaration is known for a source's example
    evidence: tuple = ()
    lead = ""

    @property
    def task(self) -> str:
        return self.example.source

    @property
    def length(self) -> int:
        return self.budget

    @property
    def seed(self) -> int:
        return 0

    @property
    def id(self) -> str:
        return f"{self.example.source}-{self.example.id}"

    @property
    def family(self) -> str:
        return self.example.span  # the paper's split: single-span or multi-span

    @property
    def answers(self) -> list[str]:
        return list(self.example.answers)

    @property
    def question(self) -> str:
        return self.example.prompt_question()

    @property
    def sections(self) -> list[str]:
        return list(self.example.chunks) if self.example.chunks else [self.example.context]

    def context_for(self, protocol: str) -> str | list[str]:
        """What a protocol's ``build_prompt`` gets: the file's chunks when it gives them,
        else the context as one string (cut into magic chunks by the protocol)."""
        return list(self.example.chunks) if self.example.chunks else self.example.context

    def layout(self, tokenizer: Any, **kwargs: Any) -> PromptLayout:
        from ..protocol.context import build_prompt
        from ..protocol.chunks import segment

        sections = list(self.example.chunks) if self.example.chunks else segment(
            self.example.context, tokenizer, target=512, cap=640)
        return build_prompt(tokenizer, sections, self.question, **kwargs)

    def evidence_spans(self, layout: PromptLayout) -> list[Span]:
        return []

    def score_answer(self, answer: str, output: str, protocol: str) -> float:
        if format_failure(output, protocol):
            return 0.0
        from .scoring import score_example

        return float(score_example(self.example, answer))

    def extra_fields(self, output: str, protocol: str) -> dict[str, Any]:
        """Fields a source record adds: what a judge needs, and the format check."""
        ex = self.example
        return {"source": ex.source, "question": ex.question, "choices": ex.choices,
                "metric": ex.metric, "context_tokens": self.context_tokens}
