"""Test helpers: make a random model 'write' chosen text, so directives come from generation."""

from __future__ import annotations

from transformers import LogitsProcessorList

from dac.engines.hf.forcing import ForceText

__all__ = ["ForceText", "forcing"]


def forcing(tokenizer, texts: list[str], layouts) -> dict:
    """generate() kwargs that make row b write texts[b] first."""
    scripts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(lay.prompt_len for lay in layouts)
    return {"logits_processor": LogitsProcessorList([ForceText(scripts, width)])}
