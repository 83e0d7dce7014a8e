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


def check_supported(model: Any) -> None:
    """Raise :class:`UnsupportedModelError` if DAC decode would not be exact for ``model``.

    DAC swaps the attention function of full-attention decoder layers. Models whose attention
    does something that function does not reproduce are refused rather than computed wrongly.
    """
    cfg = _text_config(model.config)
    name = type(model).__name__
    if getattr(cfg, "is_encoder_decoder", False):
        raise UnsupportedModelError(f"{name}: encoder-decoder models are not supported")
    if getattr(cfg, "attn_logit_softcapping", None):
        raise UnsupportedModelError(
            f"{name}: attention logit soft-capping is not supported by the DAC kernels")
    layer_types = getattr(cfg, "layer_types", None) or []
    other = sorted({t for t in layer_types if t != "full_attention"})
    if other:
        raise UnsupportedModelError(
            f"{name}: layers of type {', '.join(other)} (e.g. sliding-window or linear attention) "
            "are not supported; only full-attention decoders are")
    window = getattr(cfg, "sliding_window", None)
    # with layer_types, the window applies to sliding layers only (none, per the check above)
    if window and getattr(cfg, "use_sliding_window", True) and not layer_types:
        raise UnsupportedModelError(
            f"{name}: sliding-window attention (window {window}) is not supported")
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
    if any(isinstance(getattr(m, "sinks", None), torch.nn.Parameter) for m in modules):
        raise UnsupportedModelError(
            f"{name}: learned attention sinks (a per-head logit that takes softmax mass, as in "
            "gpt-oss) are not computed by the DAC kernels, so decoding would not be exact")


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
