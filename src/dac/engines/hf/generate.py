"""The generation API: prompts in, answers plus directive timelines and KV accounting out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from ...planning import Policy
from ...planning.blocks import PlanConfig
from ...protocol.constraint import ban_mask, section_bans
from ...protocol.context import PromptLayout, Span
from ...runtime import ContextTooLongError, GenerationResult, Sampling, check_fits
from ..support import max_positions, pad_token_id
from .session import DACSession

__all__ = ["ContextTooLongError", "GenerationResult", "SectionBound", "batch_inputs",
           "generate", "max_positions", "pad_token_id"]


def batch_inputs(layouts: list[PromptLayout], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask`` for a batch of layouts."""
    width = max(lay.prompt_len for lay in layouts)
    ids = torch.full((len(layouts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(layouts), width), dtype=torch.long)
    for b, lay in enumerate(layouts):
        ids[b, width - lay.prompt_len:] = torch.tensor(lay.input_ids)
        mask[b, width - lay.prompt_len:] = 1
    return ids, mask


class SectionBound(LogitsProcessor):
    """Section-bounded decoding for ``model.generate``: -inf for each row's banned directive
    tokens (:func:`dac.protocol.constraint.section_bans`; rows differ in section count)."""

    def __init__(self, bans: list[frozenset[int]]):
        self.bans = bans
        self._mask: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor
                 ) -> torch.FloatTensor:
        mask = self._mask
        if mask is None or mask.shape != scores.shape or mask.device != scores.device:
            if scores.shape[0] != len(self.bans):
                raise ValueError(f"{scores.shape[0]} rows of scores for {len(self.bans)} prompts")
            mask = self._mask = ban_mask(self.bans, scores.shape[-1], scores.device)
        return scores.masked_fill(mask, float("-inf"))


def generate(model: Any, tokenizer: Any, layouts: list[PromptLayout], *,
             policy: str | Policy = "dac", config: PlanConfig | None = None,
             max_new_tokens: int = 64, evidence: list[list[Span]] | None = None,
             sampling: Sampling | Mapping[str, Any] | None = None, bound_sections: bool = True,
             **generate_kwargs: Any) -> list[GenerationResult]:
    """Generate for a batch of prompts under ``policy``; one result per layout.

    ``bound_sections`` (policies that read directives, e.g. ``dac``): directive tokens naming
    a section the prompt lacks get -inf logits (:mod:`dac.protocol.constraint`). It runs
    before any ``logits_processor`` passed in, so a processor that forces text still wins.
    ``config=None`` / ``sampling=None``: the model's own plan and sampling (its directory's
    ``dac_config.json`` and ``generation_config.json``, :func:`dac.models.model_defaults`),
    as ``dac generate`` uses; greedy for a model without them."""
    if config is None or sampling is None:
        from ...models import model_defaults

        defaults = model_defaults(model)
        config = defaults.plan if config is None else config
        sampling = defaults.sampling if sampling is None else sampling
    sampling = Sampling.of(sampling)
    check_fits(layouts, max_new_tokens, max_positions(model))
    ids, mask = batch_inputs(layouts, pad_token_id(tokenizer))
    width = ids.shape[1]
    device = next(model.parameters()).device
    session = DACSession(model, tokenizer, layouts, policy, config, evidence)
    bans = section_bans(tokenizer, layouts,
                        enabled=bound_sections and session.policy.reads_directives)
    kwargs = sampling.hf_kwargs(width)
    processors = [*kwargs.pop("logits_processor", []),
                  *(generate_kwargs.pop("logits_processor", None) or [])]
    if bans is not None:
        processors.insert(0, SectionBound(bans))
    if processors:
        kwargs["logits_processor"] = LogitsProcessorList(processors)
    kwargs.update(generate_kwargs)
    if sampling.do_sample and sampling.seed is not None:
        torch.manual_seed(sampling.seed)  # model.generate samples from the global generator
    with session, torch.inference_mode():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             max_new_tokens=max_new_tokens,
                             pad_token_id=pad_token_id(tokenizer), **kwargs)
        new = out[:, width:].tolist()
    return session.runtime.results(new)
