"""Which transformers models the engines compute exactly (a clear refusal for the rest), and the
few facts about a loaded model that the HF and fast engines both need."""

from __future__ import annotations

from typing import Any

import torch


class UnsupportedModelError(ValueError):
    pass


def _text_config(config: Any) -> Any:
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


#: what a layer type of ``config.layer_types`` is to DAC: ``global`` layers read the kept
#: blocks; ``window`` (sliding) and ``linear`` (e.g. Gated DeltaNet) layers run as the model
#: defines them, their per-step read bounded by the window or the recurrent state
LAYER_KINDS = {"full_attention": "global", "sliding_attention": "window",
               "linear_attention": "linear"}
ALL_KINDS = frozenset(LAYER_KINDS.values())


def layer_kinds(model: Any) -> list[str]:
    """The kind of each decoder layer (all ``global`` for a model without ``layer_types``)."""
    cfg = _text_config(model.config)
    types = getattr(cfg, "layer_types", None) or []
    if not types:
        return ["global"] * int(getattr(cfg, "num_hidden_layers", 0) or 0)
    return [LAYER_KINDS.get(t, t) for t in types]


def global_layers(model: Any) -> set[int]:
    """Indices of the layers whose attention reads the kept blocks."""
    return {i for i, k in enumerate(layer_kinds(model)) if k == "global"}


def check_supported(model: Any, kinds: frozenset[str] = ALL_KINDS, *,
                    engine: str = "the reference engine", sinks: bool = True) -> None:
    """Raise :class:`UnsupportedModelError` if DAC decode would not be exact for ``model``.

    DAC swaps the attention function of the full-attention (global) decoder layers; sliding-
    window and linear-attention layers of a hybrid run as the model defines them (``kinds``:
    the layer kinds the calling engine runs; ``sinks``: whether its kernel computes learned
    attention sinks). Models whose attention does something that function does not reproduce
    are refused rather than computed wrongly.
    """
    cfg = _text_config(model.config)
    name = type(model).__name__
    if getattr(cfg, "is_encoder_decoder", False):
        raise UnsupportedModelError(f"{name}: encoder-decoder models are not supported")
    if getattr(cfg, "attn_logit_softcapping", None):
        raise UnsupportedModelError(
            f"{name}: attention logit soft-capping is not supported by the DAC kernels")
    layer_types = getattr(cfg, "layer_types", None) or []
    unknown = sorted({t for t in layer_types if t not in LAYER_KINDS})
    if unknown:
        raise UnsupportedModelError(
            f"{name}: layers of type {', '.join(unknown)} are not supported (DAC runs "
            "full-attention layers, and leaves sliding-window and linear-attention ones alone)")
    missing = sorted({LAYER_KINDS[t] for t in layer_types} - set(kinds))
    if missing:
        what = {"window": "sliding-window", "linear": "linear-attention"}
        raise UnsupportedModelError(
            f"{name}: {engine} runs full-attention layers only, and this model has "
            f"{' and '.join(what.get(k, k) for k in missing)} layers: use the reference "
            "engine (dac.engines.hf.generate)")
    if layer_types and "full_attention" not in layer_types:
        raise UnsupportedModelError(f"{name}: no full-attention layer, so nothing to mask")
    window = getattr(cfg, "sliding_window", None)
    # with layer_types, the window applies to the sliding layers alone
    if window and getattr(cfg, "use_sliding_window", True) and not layer_types:
        raise UnsupportedModelError(
            f"{name}: every layer uses sliding-window attention (window {window}), so there "
            "is no global layer to mask")
    if getattr(cfg, "alibi", False) or getattr(cfg, "position_embedding_type", "") == "alibi":
        raise UnsupportedModelError(f"{name}: ALiBi position biases are not supported")
    can_set = getattr(model, "_can_set_attn_implementation", None)
    if callable(can_set) and not can_set():
        raise UnsupportedModelError(
            f"{name}: the model does not dispatch attention through transformers' AttentionInterface")
    modules = attention_modules(model)
    if not modules:
        raise UnsupportedModelError(
            f"{name}: no self-attention layers that transformers' attention functions serve "
            "were found")
    if not sinks and any(isinstance(getattr(m, "sinks", None), torch.nn.Parameter)
                         for m in modules):
        raise UnsupportedModelError(
            f"{name}: learned attention sinks (a per-head logit that takes softmax mass, as in "
            f"gpt-oss) are not computed by {engine}, so decoding would not be exact: use the "
            "reference engine (dac.engines.hf.generate)")


def attention_modules(model: Any) -> list[Any]:
    """The self-attention modules the attention function will be called with (each decoder
    layer's ``...Attention`` module, which carries its ``layer_idx``)."""
    return [m for m in model.modules()
            if hasattr(m, "layer_idx") and type(m).__name__.endswith("Attention")]


def max_positions(model: Any) -> int | None:
    """The model's position limit (``max_position_embeddings``), if it declares one."""
    return getattr(_text_config(model.config), "max_position_embeddings", None)


def pad_token_id(tokenizer: Any) -> int:
    """The id that pads a batch: the tokenizer's pad token, else EOS, else 0."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def model_costs(model: Any) -> dict[str, Any] | None:
    """:func:`dac.costs.cost_constants` of a loaded model (``None`` when its config has no
    cost model: a layer type without one)."""
    from ..costs import cost_constants

    try:
        return cost_constants(model.config.to_dict())
    except (ValueError, KeyError, TypeError):
        return None
