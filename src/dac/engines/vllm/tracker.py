"""One request's DAC state: generated tokens in, the kept blocks of each decode step out.

The same class runs in two places: in the vLLM worker, where its plans reach the attention
metadata, and in the front end (engine / server), which replays it over the final token ids to
report the directive timeline and the KV read. Both feed the same tokens to the same parser and
planner (the Hugging Face engine's :class:`~dac.protocol.parser.StreamingParser`,
:class:`~dac.protocol.detok.IncrementalDetokenizer` and policy), so what is reported is what was
applied.

Step convention (identical to :class:`dac.engines.hf.session.DACSession`): the forward pass that
processes generated token ``t`` (0-based) sees the parser after tokens ``0..t`` and plans for a
sequence of ``prompt_len + t + 1`` KV tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ...planning.blocks import coverage, tokens_in_blocks
from ...planning.policies import SequenceState
from ...protocol.context import PromptLayout, Span
from ...protocol.detok import IncrementalDetokenizer
from ...protocol.parser import StreamingParser
from ..hf.session import StepRecord
from .options import DACOptions


@dataclass
class RequestTracker:
    """Parser, detokenizer and plan of one request."""

    options: DACOptions
    layout: PromptLayout
    tokenizer: Any
    eos_ids: set[int] = field(default_factory=set)
    evidence: list[Span] = field(default_factory=list)
    record: bool = True  # keep per-step records (the worker only needs the plan)

    def __post_init__(self) -> None:
        self.parser = StreamingParser(self.layout.num_sections)
        self.detok = IncrementalDetokenizer(self.tokenizer)
        self.fed = 0  # generated tokens consumed (EOS included)
        self.stopped = False  # an EOS was seen: nothing more is parsed
        self.steps: list[StepRecord] = []
        self.blocks: list[list[int]] = []
        self.masked = False  # some step read less than everything

    @property
    def prompt_len(self) -> int:
        return self.layout.prompt_len

    def advance(self, output_ids: list[int], upto: int | None = None) -> None:
        """Feed generated tokens not yet seen (those before index ``upto`` when given)."""
        end = len(output_ids) if upto is None else min(upto, len(output_ids))
        for k in range(self.fed, end):
            tok = output_ids[k]
            self.fed += 1
            if self.stopped:
                continue
            if int(tok) in self.eos_ids:
                self.stopped = True
                continue
            step = len(self.detok.ids)  # index of this token among the generated ones
            self.parser.feed(self.detok.push([int(tok)]), step)

    def plan(self, length: int) -> list[int]:
        """Kept DAC blocks for a decode step over ``length`` KV tokens."""
        state = SequenceState(self.layout, self.parser.current, length, len(self.detok.ids) - 1)
        return self.options.policy.plan(state, self.options.config)

    def step(self, output_ids: list[int], length: int, upto: int | None = None) -> list[int]:
        """Advance through ``output_ids[:upto]`` and plan this step; records its KV read."""
        self.advance(output_ids, upto)
        blocks = self.plan(length)
        bs = self.options.config.block_size
        read = tokens_in_blocks(blocks, length, bs)
        rec = coverage(blocks, self.evidence, bs) if self.evidence else None
        if self.record and not self.stopped:
            self.steps.append(StepRecord(len(self.detok.ids) - 1, length, float(read), rec))
            self.blocks.append(blocks)
        if read < length:
            self.masked = True
        return blocks

    def finish(self, output_ids: Iterable[int]) -> str:
        """Feed the rest, close the parser; return the generated text (directives included)."""
        self.advance(list(output_ids))
        tail = self.detok.flush()
        if tail:
            self.parser.feed(tail, len(self.detok.ids) - 1)
        self.parser.finish(len(self.detok.ids))
        return self.tokenizer.decode(self.detok.ids, skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False)


def replay(options: DACOptions, layout: PromptLayout, tokenizer: Any, output_ids: list[int],
           eos_ids: set[int], evidence: list[Span] | None = None) -> tuple[RequestTracker, str]:
    """Re-run the worker's tracker over a finished request's tokens (for the response)."""
    tr = RequestTracker(options, layout, tokenizer, set(eos_ids), list(evidence or []))
    n = len(output_ids)
    for t in range(n - 1):  # every generated token but the last went through a forward pass
        if int(output_ids[t]) in tr.eos_ids:
            break
        tr.step(output_ids, layout.prompt_len + t + 1, upto=t + 1)
    text = tr.finish(output_ids)
    return tr, text


def eos_token_ids(tokenizer: Any, generation_config: Any = None, hf_config: Any = None) -> set[int]:
    """EOS ids as the Hugging Face engine gathers them (generation config, config, tokenizer)."""
    ids: set[int] = set()
    for src in (generation_config, hf_config, tokenizer):
        e = getattr(src, "eos_token_id", None) if src is not None else None
        if e is None:
            continue
        ids.update(e if isinstance(e, (list, tuple)) else [e])
    return {int(i) for i in ids}
