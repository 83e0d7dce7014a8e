"""Test helpers: make a random model 'write' chosen text, so directives come from generation."""

from __future__ import annotations

from transformers import LogitsProcessorList

from dac.engines.hf.forcing import ForceText

__all__ = ["ForceText", "IdsTokenizer", "forcing"]


class IdsTokenizer:
    """A tokenizer stand-in for tests that read logits and caches, not words: ids are their
    own text, and there is no EOS."""

    eos_token_id = None
    pad_token_id = 0

    def decode(self, ids, **kwargs):
        return " ".join(map(str, ids))

    def convert_ids_to_tokens(self, ids):
        return [str(i) for i in ids]


def forcing(tokenizer, texts: list[str], layouts) -> dict:
    """generate() kwargs that make row b write texts[b] first."""
    scripts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(lay.prompt_len for lay in layouts)
    return {"logits_processor": LogitsProcessorList([ForceText(scripts, width)])}
