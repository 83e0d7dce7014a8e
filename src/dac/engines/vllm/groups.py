"""Which vLLM attention layers and KV-cache groups DAC may compact (no vLLM import at load).

Shared by the metadata builders (:mod:`.backends`) and the worker's check of the engine as
built (:mod:`.worker`), which must agree on it.
"""

from __future__ import annotations

from typing import Any


def is_global_layer(layer: Any) -> bool:
    """A decoder self-attention layer without a window of its own (a full-attention layer)."""
    return getattr(layer, "sliding_window", None) is None and \
        getattr(layer, "attn_type", "decoder") == "decoder"  # AttentionType is a str enum


def compacts(spec: Any, layers: Any) -> bool:
    """Whether a metadata builder over ``spec`` and ``layers`` (``Attention`` layers by name)
    serves full-attention layers only, whose block table DAC may compact.

    False for a sliding-window group (:class:`SlidingWindowSpec`), chunked local attention, a
    merged spec that carries a window (the hybrid KV-cache manager off: sliding and full layers
    share one group), any other spec type (MLA, sinks, encoder, cross attention) and a group
    holding any layer with a window of its own."""
    from vllm.v1.kv_cache_interface import FullAttentionSpec

    if type(spec) is not FullAttentionSpec:
        return False
    if getattr(spec, "sliding_window", None) is not None or \
            getattr(spec, "attention_chunk_size", None) is not None:
        return False
    return bool(layers) and all(is_global_layer(layer) for layer in layers)
