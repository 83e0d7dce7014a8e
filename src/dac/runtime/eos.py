"""End-of-sequence token ids, gathered the same way by every engine."""

from __future__ import annotations

from typing import Any


def eos_token_ids(tokenizer: Any, generation_config: Any = None, config: Any = None) -> set[int]:
    """EOS ids from the generation config, the model config and the tokenizer (union)."""
    ids: set[int] = set()
    for src in (generation_config, config, tokenizer):
        e = getattr(src, "eos_token_id", None) if src is not None else None
        if e is None:
            continue
        ids.update(e if isinstance(e, (list, tuple)) else [e])
    return {int(i) for i in ids}


def model_eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """:func:`eos_token_ids` of a loaded transformers model."""
    return eos_token_ids(tokenizer, getattr(model, "generation_config", None), model.config)
