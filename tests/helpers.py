"""Test helpers: make a random model 'write' chosen text, so directives come from generation."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList


class ForceText(LogitsProcessor):
    """Forces the given token ids, one per step, per batch row (then lets the model choose)."""

    def __init__(self, scripts: list[list[int]], prompt_width: int):
        self.scripts = scripts
        self.width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.width
        for b, script in enumerate(self.scripts):
            if step < len(script):
                scores[b] = float("-inf")
                scores[b, script[step]] = 0.0
        return scores


def forcing(tokenizer, texts: list[str], layouts) -> dict:
    """generate() kwargs that make row b write texts[b] first."""
    scripts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(lay.prompt_len for lay in layouts)
    return {"logits_processor": LogitsProcessorList([ForceText(scripts, width)])}
