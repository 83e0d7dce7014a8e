"""A batch of sequences decoded together under one policy: the host side of a decode step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..planning.blocks import PlanConfig
from ..planning.policies import Policy
from ..protocol.context import PromptLayout, Span
from .results import GenerationResult
from .sequence import SequenceRuntime


class BatchRuntime:
    """Per-row :class:`SequenceRuntime` plus the rows' KV lengths and this step's plans.

    An engine calls :meth:`start` after prefill, :meth:`advance` with each step's input tokens
    (it returns the kept blocks per row), runs the forward, then :meth:`record` (and
    :meth:`observe` with the logits for policies that watch them), and :meth:`results` at the
    end."""

    def __init__(self, layouts: Sequence[PromptLayout], tokenizer: Any, eos_ids: set[int],
                 policy: Policy, config: PlanConfig,
                 evidence: Sequence[Sequence[Span]] | None = None, record_blocks: bool = True,
                 costs: dict[str, Any] | None = None):
        evidence = evidence if evidence is not None else [[] for _ in layouts]
        if len(evidence) != len(layouts):
            raise ValueError("evidence must have one entry per layout")
        self.policy = policy
        self.config = config
        self.costs = costs  # the model's cost constants, passed on to the results
        self.seqs = [SequenceRuntime(lay, tokenizer, eos_ids, ev, row=b,
                                     record_blocks=record_blocks)
                     for b, (lay, ev) in enumerate(zip(layouts, evidence))]
        self.lengths = [lay.prompt_len for lay in layouts]
        self.plans: list[list[int]] = [[] for _ in layouts]
        self._ahead: tuple[list[tuple], list[list[int]]] | None = None
        self.reused = False  # this step's plans were made ahead (see plan_ahead)

    def __len__(self) -> int:
        return len(self.seqs)

    def start(self, prompt_lengths: Sequence[int] | None = None) -> None:
        """After prefill: KV lengths are the prompt lengths; the policy starts afresh."""
        if prompt_lengths is not None:
            self.lengths = list(prompt_lengths)
        self.policy.reset(len(self.seqs))
        self._ahead = None

    def _keys(self) -> list[tuple]:
        return [(s.parser.current, n, s.generated - 1) for s, n in zip(self.seqs, self.lengths)]

    def advance(self, tokens: Sequence[int]) -> list[list[int]]:
        """Feed each row's input token (the one sampled last), grow every row by one KV token
        and plan this step. A plan made by :meth:`plan_ahead` is reused when its inputs held."""
        for s, tok in zip(self.seqs, tokens):
            s.push(tok)
        self.lengths = [n + 1 for n in self.lengths]
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == self._keys():
            self.plans = ahead[1]
            self.reused = True
        else:
            self.plans = [s.plan(self.policy, self.config, n)
                          for s, n in zip(self.seqs, self.lengths)]
            self.reused = False
        return self.plans

    def plan_ahead(self) -> tuple[list[list[int]], list[int]]:
        """Plan the next step assuming its tokens complete no directive and stop no row (true
        for most steps), e.g. while the device runs this one: (plans, lengths)."""
        lengths = [n + 1 for n in self.lengths]
        keys = [(s.parser.current, n, s.generated - (1 if s.stopped else 0))
                for s, n in zip(self.seqs, lengths)]
        plans = [self.policy.plan(s.state(n, k[2]), s.config(self.config))
                 for s, n, k in zip(self.seqs, lengths, keys)]
        self._ahead = (keys, plans)
        return plans, lengths

    def observe(self, logits: Any) -> None:
        """Hand each active row's next-token logits ``[vocab]`` to the policy."""
        for b, s in enumerate(self.seqs):
            if not s.stopped:
                self.policy.observe(b, logits[b])

    def record(self, reads: Sequence[float] | None = None,
               recalls: Sequence[float | None] | None = None,
               shares: Sequence[dict[int, float]] | None = None) -> None:
        """Account this step: from the plans, or from per-row ``reads`` (and ``recalls``,
        ``shares`` of layers and heads per block) measured by a per-head selection."""
        bs = self.config.block_size
        for b, (s, n) in enumerate(zip(self.seqs, self.lengths)):
            if reads is None:
                s.record_plan(self.plans[b], n, bs)
            else:
                s.record(n, reads[b], None if recalls is None else recalls[b],
                         share=None if shares is None else shares[b])

    def results(self, generated: Sequence[Sequence[int]]) -> list[GenerationResult]:
        """Finish every row on its generated ids (the last sampled token was never fed)."""
        out = []
        for b, (s, ids) in enumerate(zip(self.seqs, generated)):
            s.finish(ids)
            res = s.result(policy_report=self.policy.report(b), token_ids=list(ids))
            res.costs = self.costs
            out.append(res)
        return out

