"""``FastEngine``: the fast decoder behind the :class:`~dac.engines.base.Engine` interface.

``dac eval --engine fast`` and ``python -m dac.train.evaluate --engine fast`` run through it.
A :class:`FastDecoder` is built per batch shape, policy and plan (its cache and CUDA graph are
fixed-shape) and kept for later calls; its length is rounded up to a power of two so that one
decoder serves every prompt of a run.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ...planning import Policy, get_policy
from ...planning.blocks import PlanConfig
from ...protocol.context import PromptLayout, Span
from ...runtime import GenerationResult, Sampling, check_fits
from ..support import max_positions
from .decoder import FastDecoder

#: decoders kept at once (each holds a static KV cache of its shape)
KEEP_DECODERS = 4


class FastEngine:
    """Greedy generation on :class:`FastDecoder` (CUDA graphs on a GPU, eager on a CPU)."""

    name = "fast"

    def __init__(self, model: Any, tokenizer: Any, *, compile_model: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.compile_model = compile_model
        self._decoders: OrderedDict[tuple, FastDecoder] = OrderedDict()

    def decoder(self, batch: int, needed: int, policy: Policy, config: PlanConfig
                ) -> FastDecoder:
        """A decoder for ``batch`` rows of up to ``needed`` tokens (built or reused)."""
        limit = max_positions(self.model)
        max_len = 1 << max(needed - 1, 1).bit_length()
        if limit is not None:
            max_len = min(max_len, limit)
        key = (batch, max_len, repr(policy), config)
        dec = self._decoders.pop(key, None)
        if dec is None:
            while len(self._decoders) >= KEEP_DECODERS:
                self._decoders.popitem(last=False)
            dec = FastDecoder(self.model, batch_size=batch, max_len=max_len, policy=policy,
                              config=config, compile_model=self.compile_model)
        self._decoders[key] = dec
        return dec

    def generate(self, layouts: list[PromptLayout], *, policy: str | Policy = "dac",
                 config: PlanConfig | None = None, max_new_tokens: int = 64,
                 evidence: list[list[Span]] | None = None, bound_sections: bool = True,
                 sampling: Sampling | Mapping[str, Any] | None = None
                 ) -> list[GenerationResult]:
        """As the reference engine's ``generate``; ``config`` and ``sampling`` default to the
        model's own (:func:`dac.models.model_defaults`)."""
        policy = get_policy(policy)
        if config is None or sampling is None:
            from ...models import model_defaults

            defaults = model_defaults(self.model)
            config = defaults.plan if config is None else config
            sampling = defaults.sampling if sampling is None else sampling
        check_fits(layouts, max_new_tokens, max_positions(self.model))
        needed = max(lay.prompt_len for lay in layouts) + max_new_tokens
        dec = self.decoder(len(layouts), needed, policy, config)
        return dec.generate(self.tokenizer, layouts, max_new_tokens=max_new_tokens,
                            evidence=evidence, bound_sections=bound_sections,
                            sampling=Sampling.of(sampling))
