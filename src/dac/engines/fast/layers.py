"""The fast engine's layer map: what each decoder layer caches, in which shape, and where.

A hybrid's layers differ in what they keep between steps, so the static step allocates per
layer (never one shape for all):

* ``global`` (full attention): a static ``[B, Hk, S, d]`` K/V cache, read through the kept
  blocks. Gemma-4's global layers have their own head size and KV head count, so ``Hk`` and
  ``d`` are read off each attention module, not the config's defaults.
* ``window`` (sliding attention): a ring of ``window`` slots ``[B, Hk, W, d]`` (see
  :mod:`.ring`): at 128K context a full-length cache per sliding layer would not fit.
* ``linear`` (Gated DeltaNet): transformers' own layer with its conv and recurrent state
  (see :mod:`.linear`); no K/V.

Gemma's KV-sharing layers (``num_kv_shared_layers``) store nothing: they read the cache of
the last earlier layer of their type that does (``source``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..support import UnsupportedModelError, attention_modules, layer_kinds


@dataclass(frozen=True)
class LayerSpec:
    """One decoder layer as the fast engine runs it."""

    index: int
    kind: str  # "global", "window" or "linear"
    kv_heads: int = 0
    head_dim: int = 0
    window: int = 0  # sliding layers: keys visible to a query, itself included
    source: int = -1  # the layer whose cache this one reads (itself unless KV-shared)

    @property
    def stores(self) -> bool:
        """Whether this layer writes a K/V cache of its own."""
        return self.kind != "linear" and self.source == self.index


def text_config(model: Any) -> Any:
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def config_value(cfg: Any, name: str, default: Any = None) -> Any:
    """``cfg.name``, or ``default`` if absent or per-layer (transformers' heterogeneous configs,
    e.g. Gemma-4's, refuse a global read of ``head_dim``)."""
    try:
        value = getattr(cfg, name, default)
    except Exception:  # AmbiguousGlobalPerLayerAttributeError
        return default
    return default if value is None else value


def layer_specs(model: Any) -> list[LayerSpec]:
    """The fast engine's view of every decoder layer of ``model`` (see the module doc)."""
    tc = text_config(model)
    kinds = layer_kinds(model)
    hq = tc.num_attention_heads
    default_hk = config_value(tc, "num_key_value_heads") or hq
    default_d = config_value(tc, "head_dim") or tc.hidden_size // hq
    modules = {m.layer_idx: m for m in attention_modules(model)}
    specs: list[LayerSpec | None] = [None] * len(kinds)
    last_store: dict[str, int] = {}
    for i, kind in enumerate(kinds):
        if kind == "linear":
            specs[i] = LayerSpec(i, kind)
            continue
        m = modules.get(i)
        if m is None:
            raise UnsupportedModelError(
                f"{type(model).__name__}: layer {i} ({kind} attention) has no attention module "
                "the fast engine can serve")
        d = int(getattr(m, "head_dim", None) or default_d)
        groups = getattr(m, "num_key_value_groups", None)
        hk = hq // int(groups) if groups else default_hk
        window = 0
        if kind == "window":
            window = int(getattr(m, "sliding_window", None) or config_value(tc, "sliding_window", 0)
                         or 0)
            if window <= 0:
                raise UnsupportedModelError(
                    f"{type(model).__name__}: sliding layer {i} declares no window")
        source = i
        if getattr(m, "is_kv_shared_layer", False):
            if kind not in last_store:
                raise UnsupportedModelError(
                    f"{type(model).__name__}: KV-shared layer {i} has no earlier {kind} layer "
                    "to read from")
            source = last_store[kind]
        else:
            last_store[kind] = i
        specs[i] = LayerSpec(i, kind, hk, d, window, source)
    return [s for s in specs if s is not None]
