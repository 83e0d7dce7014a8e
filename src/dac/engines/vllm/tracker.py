"""One request's DAC state: generated tokens in, the kept blocks of each decode step out.

The same class runs in two places: in the vLLM worker, where its plans reach the attention
metadata, and in the front end (engine / server), which replays it over the final token ids to
report the directive timeline and the KV read. Both are the shared decode runtime
(:class:`dac.runtime.SequenceRuntime`: the same parser, detokenizer and planner as every other
engine), so what is reported is what was applied, and the step convention is the runtime's.
"""

from __future__ import annotations

from typing import Any

from ...planning.blocks import tokens_in_blocks
from ...protocol.context import PromptLayout, Span
from ...runtime import SequenceRuntime, eos_token_ids
from .options import DACOptions

__all__ = ["RequestTracker", "eos_token_ids", "replay"]


class RequestTracker(SequenceRuntime):
    """The runtime of one request, with the request's validated options."""

    def __init__(self, options: DACOptions, layout: PromptLayout, tokenizer: Any,
                 eos_ids: set[int] | None = None, evidence: list[Span] | None = None,
                 record: bool = True):
        super().__init__(layout, tokenizer, eos_ids or (), evidence or (), record_blocks=record)
        self.options = options
        self.record_steps = record  # the worker only needs the plan

    @property
    def prompt_len(self) -> int:
        return self.layout.prompt_len

    def step(self, output_ids: list[int], length: int, upto: int | None = None) -> list[int]:
        """Advance through ``output_ids[:upto]`` and plan this step over ``length`` KV tokens."""
        self.advance(output_ids, upto)
        blocks = self.plan(self.options.policy, self.options.config, length)
        if self.record_steps:
            self.record_plan(blocks, length, self.options.config.block_size)
        elif tokens_in_blocks(blocks, length, self.options.config.block_size) < length:
            self.masked = True
        return blocks


def replay(options: DACOptions, layout: PromptLayout, tokenizer: Any, output_ids: list[int],
           eos_ids: set[int], evidence: list[Span] | None = None
           ) -> tuple[RequestTracker, str]:
    """Re-run the worker's tracker over a finished request's tokens (for the response):
    the tracker and the generated text, directives included."""
    tr = RequestTracker(options, layout, tokenizer, set(eos_ids), list(evidence or []))
    for t in range(len(output_ids) - 1):  # every generated token but the last had a forward
        if int(output_ids[t]) in tr.eos_ids:
            break
        tr.step(output_ids, layout.prompt_len + t + 1, upto=t + 1)
    return tr, tr.finish(output_ids)
