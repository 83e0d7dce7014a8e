"""The generation API: prompts in, answers plus directive timelines and KV accounting out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from ...planning.blocks import PlanConfig
from ...planning.policies import Policy
from ...protocol.constraint import section_bans
from ...protocol.context import PromptLayout, Span
from ...protocol.grammar import ProtocolEvent
from ...protocol.parser import strip_directives
from .session import DACSession, KVReads, StepRecord


class ContextTooLongError(ValueError):
    pass


@dataclass
class GenerationResult(KVReads):
    text: str  # generated text, directives included
    answer: str  # the text with directives removed
    events: list[ProtocolEvent]
    steps: list[StepRecord]
    blocks: list[list[int]] = field(repr=False, default_factory=list)
    prompt_tokens: int = 0
    generated_ids: list[int] = field(repr=False, default_factory=list)
    policy_report: dict[str, Any] = field(default_factory=dict)  # e.g. a safety net firing

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
        } | ({"policy_report": self.policy_report} if self.policy_report else {})


def max_positions(model: Any) -> int | None:
    cfg = model.config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return getattr(cfg, "max_position_embeddings", None)


def pad_token_id(tokenizer: Any) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def batch_inputs(layouts: list[PromptLayout], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask`` for a batch of layouts."""
    width = max(lay.prompt_len for lay in layouts)
    ids = torch.full((len(layouts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(layouts), width), dtype=torch.long)
    for b, lay in enumerate(layouts):
        ids[b, width - lay.prompt_len:] = torch.tensor(lay.input_ids)
        mask[b, width - lay.prompt_len:] = 1
    return ids, mask


def ban_mask(bans: list[frozenset[int]], vocab: int, device: Any) -> torch.Tensor:
    """``[rows, vocab]`` bool, True where a row's token is banned (ids past ``vocab`` ignored)."""
    mask = torch.zeros(len(bans), vocab, dtype=torch.bool)
    for b, ids in enumerate(bans):
        idx = [t for t in ids if 0 <= t < vocab]
        if idx:
            mask[b, idx] = True
    return mask.to(device)


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
             do_sample: bool = False, bound_sections: bool = True,
             **generate_kwargs: Any) -> list[GenerationResult]:
    """Generate for a batch of prompts under ``policy``; one result per layout.

    ``bound_sections`` (policies that read directives, e.g. ``dac``): directive tokens naming
    a section the prompt lacks get -inf logits (:mod:`dac.protocol.constraint`). It runs
    before any ``logits_processor`` passed in, so a processor that forces text still wins."""
    if not layouts:
        raise ValueError("no prompts to generate for")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    limit = max_positions(model)
    for lay in layouts:
        if limit is not None and lay.prompt_len + max_new_tokens > limit:
            raise ContextTooLongError(
                f"prompt of {lay.prompt_len} tokens + {max_new_tokens} new tokens exceeds the "
                f"model's limit of {limit} positions")
    ids, mask = batch_inputs(layouts, pad_token_id(tokenizer))
    width = ids.shape[1]
    device = next(model.parameters()).device
    session = DACSession(model, tokenizer, layouts, policy, config, evidence)
    bans = section_bans(tokenizer, layouts,
                        enabled=bound_sections and session.policy.reads_directives)
    if bans is not None:
        user = generate_kwargs.pop("logits_processor", None) or []
        generate_kwargs["logits_processor"] = LogitsProcessorList([SectionBound(bans), *user])
    with session, torch.inference_mode():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             max_new_tokens=max_new_tokens, do_sample=do_sample,
                             pad_token_id=pad_token_id(tokenizer), **generate_kwargs)
        new = out[:, width:].tolist()
        session.finish(new)
    results = []
    for b, (tr, lay) in enumerate(zip(session.traces, layouts)):
        results.append(GenerationResult(
            text=tr.text, answer=strip_directives(tr.text), events=list(tr.events),
            steps=list(tr.steps), blocks=list(tr.blocks), prompt_tokens=lay.prompt_len,
            generated_ids=list(tr.detok.ids), policy_report=session.policy.report(b)))
    return results
