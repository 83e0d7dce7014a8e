"""The engine interface the evaluation runner and server talk to (HF today, vLLM too)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ..planning.blocks import PlanConfig
from ..planning.policies import Policy
from ..protocol.context import PromptLayout, Span
from ..runtime import GenerationResult, Sampling


class Engine(Protocol):
    """Generates for a batch of laid-out prompts under a policy; one result per prompt."""

    name: str
    tokenizer: Any

    def generate(self, layouts: list[PromptLayout], *, policy: str | Policy,
                 config: PlanConfig | None, max_new_tokens: int,
                 evidence: list[list[Span]] | None = None, bound_sections: bool = True,
                 sampling: Sampling | Mapping[str, Any] | None = None
                 ) -> list[GenerationResult]:
        """``bound_sections``: section-bounded decoding (:mod:`dac.protocol.constraint`);
        ``config`` / ``sampling`` ``None``: the model's own (greedy when it says nothing)."""
        ...


class HFEngine:
    """The transformers engine: :func:`dac.engines.hf.generate` on a loaded model."""

    name = "hf"

    def __init__(self, model: Any, tokenizer: Any):
        self.model = model
        self.tokenizer = tokenizer

    def generate(self, layouts, *, policy, config, max_new_tokens, evidence=None,
                 bound_sections=True, sampling=None):
        from .hf.generate import generate

        return generate(self.model, self.tokenizer, layouts, policy=policy, config=config,
                        max_new_tokens=max_new_tokens, evidence=evidence,
                        bound_sections=bound_sections, sampling=sampling)
