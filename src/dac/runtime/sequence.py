"""One sequence's decode state: generated tokens in, kept blocks and KV reads out.

Step convention (every engine): the forward pass that processes generated token ``t``
(0-based) sees the parser after tokens ``0..t``, so a directive completed by ``t`` applies to
that very step, and plans for a sequence of ``prompt_len + t + 1`` KV tokens. Tokens after the
first EOS are never parsed and their steps are not recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..planning.blocks import PlanConfig, coverage, tokens_in_blocks
from ..planning.policies import Policy, SequenceState
from ..protocol.base import get_protocol
from ..protocol.context import PromptLayout, Span
from ..protocol.detok import IncrementalDetokenizer
from ..protocol.grammar import ProtocolEvent
from .results import GenerationResult, KVReads, StepRecord


class SequenceRuntime(KVReads):
    """Parser, detokenizer, plan and per-step records of one sequence."""

    def __init__(self, layout: PromptLayout, tokenizer: Any, eos_ids: Iterable[int] = (),
                 evidence: Sequence[Span] = (), *, row: int = 0, record_blocks: bool = True):
        self.layout = layout
        self.tokenizer = tokenizer
        self.eos_ids = set(eos_ids)
        self.evidence = list(evidence)
        self.row = row
        self.record_blocks = record_blocks
        #: the protocol that built the prompt: its parser reads the generated text, its
        #: scaffold shapes the plan, its convention says what the answer is
        self.protocol = get_protocol(layout.protocol)
        self.parser = self.protocol.parser(layout)
        self.detok = IncrementalDetokenizer(tokenizer)
        self._configs: dict[PlanConfig, PlanConfig] = {}
        self.fed = 0  # generated tokens consumed (EOS and anything after it included)
        self.stopped = False  # an EOS was seen: nothing more is parsed or recorded
        self.steps: list[StepRecord] = []
        self.blocks: list[list[int]] = []
        self.block_share: list[dict[int, float]] = []
        self.masked = False  # some recorded step read less than everything
        self.text = ""

    @property
    def events(self) -> list[ProtocolEvent]:
        return self.parser.events

    @property
    def generated(self) -> int:
        """Generated tokens parsed so far (EOS excluded)."""
        return len(self.detok.ids)

    def push(self, token: int) -> None:
        """Consume the next generated token."""
        self.fed += 1
        if self.stopped:
            return
        token = int(token)
        if token in self.eos_ids:
            self.stopped = True
            return
        step = len(self.detok.ids)  # index of this token among the generated ones
        self.parser.feed(self.detok.push([token]), step)

    def advance(self, token_ids: Sequence[int], upto: int | None = None) -> None:
        """Consume the tokens of ``token_ids`` not yet seen (those before ``upto`` if given)."""
        end = len(token_ids) if upto is None else min(upto, len(token_ids))
        for k in range(self.fed, end):
            self.push(token_ids[k])

    def state(self, length: int, step: int | None = None) -> SequenceState:
        """What the policy sees for a decode step over ``length`` KV tokens (``step``: the
        generated tokens before this one, by default those parsed so far minus one)."""
        step = len(self.detok.ids) - 1 if step is None else step
        return SequenceState(self.layout, self.parser.current, length, step, self.row)

    def config(self, config: PlanConfig) -> PlanConfig:
        """``config`` under this sequence's protocol (e.g. the DA scaffold)."""
        out = self._configs.get(config)
        if out is None:
            out = self._configs[config] = self.protocol.plan_config(config)
        return out

    def plan(self, policy: Policy, config: PlanConfig, length: int) -> list[int]:
        return policy.plan(self.state(length), self.config(config))

    def record(self, length: int, read: float, recall: float | None = None,
               blocks: list[int] | None = None,
               share: dict[int, float] | None = None) -> None:
        """Account one decode step (ignored once the sequence has stopped): the blocks every
        layer and head read, or for a per-head selection the share that read each block."""
        if self.stopped:
            return
        self.steps.append(StepRecord(len(self.detok.ids) - 1, length, float(read), recall,
                                     self.parser.current.mode.value))
        if blocks is not None and self.record_blocks:
            self.blocks.append(blocks)
        if share is not None and self.record_blocks:
            self.block_share.append(share)
        if read < length:
            self.masked = True

    def record_plan(self, blocks: list[int], length: int, block_size: int) -> None:
        """Account a step that read ``blocks`` in every layer and head."""
        recall = coverage(blocks, self.evidence, block_size) if self.evidence else None
        self.record(length, tokens_in_blocks(blocks, length, block_size), recall, blocks)

    def finish(self, token_ids: Sequence[int]) -> str:
        """Consume the rest of ``token_ids``, close the parser; the text, directives included."""
        self.advance(token_ids)
        tail = self.detok.flush()
        if tail:
            self.parser.feed(tail, len(self.detok.ids) - 1)
        self.parser.finish(len(self.detok.ids))
        self.text = self.tokenizer.decode(self.detok.ids, skip_special_tokens=True,
                                          clean_up_tokenization_spaces=False)
        return self.text

    def result(self, *, policy_report: dict[str, Any] | None = None,
               token_ids: list[int] | None = None,
               logprobs: list[float] | None = None) -> GenerationResult:
        """The :class:`GenerationResult` of a finished sequence."""
        return GenerationResult(
            text=self.text, answer=self.protocol.answer(self.text), events=list(self.events),
            steps=list(self.steps), blocks=list(self.blocks), prompt_tokens=self.layout.prompt_len,
            generated_ids=list(self.detok.ids), policy_report=policy_report or {},
            token_ids=token_ids, logprobs=logprobs, block_share=list(self.block_share),
            terminated=self.stopped, protocol=self.protocol.name)
