"""What a generation returns: the text, the directive timeline and the KV-read accounting."""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any

from ..protocol.context import PromptLayout
from ..protocol.grammar import ProtocolEvent


class ContextTooLongError(ValueError):
    """A prompt plus its answer budget does not fit the model or the engine."""


def check_fits(layouts: Sequence[PromptLayout], max_new_tokens: int, limit: int | None,
               name: str = "the model's limit of {limit} positions") -> None:
    """Refuse an empty batch, a non-positive budget, or a prompt + budget over ``limit``
    (``name`` says what the limit is, with ``{limit}`` in it)."""
    if not layouts:
        raise ValueError("no prompts to generate for")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    for lay in layouts:
        if limit is not None and lay.prompt_len + max_new_tokens > limit:
            raise ContextTooLongError(
                f"prompt of {lay.prompt_len} tokens + {max_new_tokens} new tokens exceeds "
                + name.format(limit=limit))


@dataclass
class StepRecord:
    """One decode step of one sequence."""

    step: int  # index of the generated token this forward processed
    length: int  # KV tokens in the sequence (logical)
    read: float  # KV tokens read, averaged over layers and KV heads
    recall: float | None = None  # share of evidence tokens read (when evidence is given)
    mode: str = "global"  # the mode in force at this step (global, focus, local)


class KVReads:
    """Decoding attention cost of a sequence, from its per-step records (``self.steps``)."""

    steps: list[StepRecord]

    @property
    def kv_read(self) -> float:
        return sum(s.read for s in self.steps)

    @property
    def kv_full(self) -> int:
        return sum(s.length for s in self.steps)

    @property
    def fraction(self) -> float:
        """KV tokens read / KV tokens full attention would read (1.0 with no decode step)."""
        return self.kv_read / self.kv_full if self.kv_full else 1.0


@dataclass
class GenerationResult(KVReads):
    """One sequence's generation under a policy, whatever engine produced it."""

    text: str  # generated text, directives included
    answer: str  # the text with directives removed
    events: list[ProtocolEvent]
    steps: list[StepRecord]
    blocks: list[list[int]] = field(repr=False, default_factory=list)
    prompt_tokens: int = 0
    generated_ids: list[int] = field(repr=False, default_factory=list)  # up to the first EOS
    policy_report: dict[str, Any] = field(default_factory=dict)  # e.g. a safety net firing
    #: every token id the engine produced (EOS and padding included), when it reports them
    token_ids: list[int] | None = field(repr=False, default=None)
    #: log-probability of each sampled token, when the request asked for them (vLLM)
    logprobs: list[float] | None = field(repr=False, default=None)
    #: per-head policies (Quest, the oracle): per step, the share of (layer, KV head) pairs
    #: that read each block ({block: share}; blocks no head read are left out)
    block_share: list[dict[int, float]] = field(repr=False, default_factory=list)
    #: the sequence ended (EOS) within its token budget
    terminated: bool = False
    protocol: str = "brackets"  # the protocol whose prompt and parser produced it
    #: the model's cost constants (:func:`dac.costs.cost_constants`) when the engine knows them
    costs: dict[str, Any] | None = field(repr=False, default=None)

    def stats(self) -> dict[str, Any]:
        """Per-response accounting, as the paper reports it: attended tokens (KV positions read
        over all decode steps), decode steps, the per-step ratio against full attention,
        decode steps per mode, focus attempts and successes (a focus that resolved to at
        least one existing chunk or section), and whether the response ended in budget."""
        modes = {"global": 0, "focus": 0, "local": 0}
        for s in self.steps:
            modes[s.mode] = modes.get(s.mode, 0) + 1
        attempts = [e for e in self.events
                    if e.text.lstrip()[:8].lower().startswith(("[[focus", "<focus"))]
        return {"attended_tokens": round(self.kv_read, 3), "full_tokens": self.kv_full,
                "decode_steps": len(self.steps), "per_step_ratio": round(self.fraction, 6),
                "mode_steps": modes,
                "focus_attempts": len(attempts),
                "focus_success": sum(e.applied is not None and e.applied.mode.value == "focus"
                                     for e in attempts),
                "terminated": self.terminated} | self._bytes()

    def _bytes(self) -> dict[str, Any]:
        """Bytes read while decoding: the global layers' KV (attended tokens x KV bytes per
        token) and, beside it, the fixed per-step read of the sliding-window or
        linear-attention layers of a hybrid (decode steps x their state)."""
        if not self.costs:
            return {}
        return {"global_kv_bytes": round(self.kv_read * self.costs["global_kv_bytes_per_token"]),
                "local_bytes": len(self.steps) * self.costs["local_bytes_per_step"]}

    def timeline(self) -> list[dict[str, Any]]:
        out = []
        for e in self.events:
            a = e.applied
            out.append({
                "step": e.step, "kind": e.kind, "text": e.text,
                "mode": a.mode.value if a else None,
                "sections": a.sections() if a else [],
                "window": a.window if a else None,
                "message": e.message,
            })
        return out

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON schema of ``dac generate --json`` (``schema`` names its version)."""
        return {
            "schema": "dac.generation/1",
            "answer": self.answer,
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": len(self.generated_ids),
            "timeline": self.timeline(),
            "kv": {"read": round(self.kv_read, 3), "full": self.kv_full,
                   "fraction": round(self.fraction, 6), "decode_steps": len(self.steps)},
            "protocol": self.protocol,
            "stats": self.stats(),
        } | ({"policy_report": self.policy_report} if self.policy_report else {})
