"""A model's decode cost constants, read from its config: what each decode step reads.

The paper's cost model charges a response three terms: matmul work, the global layers' KV
(attended tokens x KV bytes per token of the global layers) and a fixed per-step read of the
other layers (a sliding window's KV, or a linear-attention layer's conv and recurrent state).
This module computes the two memory constants from a transformers config (dict or file), for
any architecture whose ``layer_types`` say which layers are which.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: bytes per element of the KV cache and states (bf16)
DTYPE_BYTES = 2


def _text(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg.get("text_config") or cfg


def read_config(path: str | Path) -> dict[str, Any]:
    """A config dict from a ``config.json`` or a model directory holding one."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise FileNotFoundError(f"no config.json at {path}")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p} is not a config object")
    return data


def cost_constants(cfg: dict[str, Any], dtype_bytes: int = DTYPE_BYTES) -> dict[str, Any]:
    """Global layers, their KV bytes per token (K and V of every KV head), and the fixed
    bytes the other layers read per decode step (a full sliding window, or a linear layer's
    recurrent state plus its convolution state)."""
    t = _text(cfg)
    try:
        n = int(t["num_hidden_layers"])
        heads = int(t["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("the config has no num_hidden_layers / num_attention_heads") from None
    types = t.get("layer_types") or ["full_attention"] * n
    hkv = int(t.get("num_key_value_heads") or heads)
    d = int(t.get("head_dim") or int(t["hidden_size"]) // heads)
    # Gemma-4: global layers have their own head size and KV head count
    g_hkv = int(t.get("num_global_key_value_heads") or hkv)
    g_d = int(t.get("global_head_dim") or d)
    counts = {k: types.count(k) for k in set(types)}
    unknown = sorted(set(counts) - {"full_attention", "sliding_attention", "linear_attention"})
    if unknown:
        raise ValueError(f"layer types {', '.join(unknown)} have no cost model here")
    overrides = t.get("per_layer_config") or {}  # a loaded Gemma-4 config keeps them here
    window = int(t.get("sliding_window") or 0)
    per_token = window_bytes = 0
    for i, kind in enumerate(types):
        over = overrides.get(str(i)) or overrides.get(i) or {}  # type: ignore[call-overload]
        full = kind == "full_attention"
        kv_heads = int(over.get("num_key_value_heads") or (g_hkv if full else hkv))
        size = int(over.get("head_dim") or (g_d if full else d))
        if full:
            per_token += 2 * kv_heads * size * dtype_bytes
        elif kind == "sliding_attention":
            window_bytes += window * 2 * kv_heads * size * dtype_bytes
    n_global = counts.get("full_attention", 0)
    linear_bytes = 0
    if counts.get("linear_attention"):
        nk, nv = int(t["linear_num_key_heads"]), int(t["linear_num_value_heads"])
        dk, dv = int(t["linear_key_head_dim"]), int(t["linear_value_head_dim"])
        conv = (2 * nk * dk + nv * dv) * (int(t.get("linear_conv_kernel_dim", 4)) - 1)
        linear_bytes = counts["linear_attention"] * (nv * dk * dv + conv) * dtype_bytes
    return {"layers": n, "global_layers": n_global,
            "sliding_layers": counts.get("sliding_attention", 0),
            "linear_layers": counts.get("linear_attention", 0), "sliding_window": window or None,
            "global_kv_bytes_per_token": per_token,
            "local_bytes_per_step": window_bytes + linear_bytes, "dtype_bytes": dtype_bytes}
