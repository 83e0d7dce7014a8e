"""Deepen a trained Llama without changing what it computes (identity blocks, as in LLaMA Pro).

A decoder layer adds ``attn(norm(h))`` and ``mlp(norm(h))`` to its input. A copy of a trained
layer whose two output projections (``o_proj``, ``down_proj``) are zero adds nothing: the deeper
model's logits equal the shallow one's, and training then grows the new blocks from that point
instead of from noise. Used by a curriculum stage's ``grow_layers`` to give a model trained at
one size more depth for the steps that need it (multi-hop answers), keeping all it learned.
"""

from __future__ import annotations

from typing import Any

import torch


def insert_after(layers: int, target: int) -> list[int]:
    """For each of ``layers`` layers, how many new blocks follow it: ``target - layers`` spread
    evenly, the last one after the last layer (6 -> 8: after layers 2 and 5)."""
    if target < layers:
        raise ValueError(f"cannot shrink a model from {layers} to {target} layers")
    add = target - layers
    return [(i + 1) * add // layers - i * add // layers for i in range(layers)]


def deepen(model: Any, target: int) -> Any:
    """A new ``LlamaForCausalLM`` of ``target`` layers computing the same function as
    ``model``: its layers in order, each new block a copy of the layer before it with zeroed
    output projections. Returns ``model`` itself when it already has ``target`` layers."""
    from transformers import LlamaForCausalLM

    cfg = model.config
    n = cfg.num_hidden_layers
    if target == n:
        return model
    plan = insert_after(n, target)
    new_cfg = cfg.__class__.from_dict(cfg.to_dict())
    new_cfg.num_hidden_layers = target
    if getattr(new_cfg, "layer_types", None):
        new_cfg.layer_types = [cfg.layer_types[0]] * target
    src = model.state_dict()
    # the source layer of each target layer, and whether it is a fresh identity block
    order: list[tuple[int, bool]] = []
    for i, extra in enumerate(plan):
        order.append((i, False))
        order += [(i, True)] * extra
    out: dict[str, torch.Tensor] = {k: v for k, v in src.items()
                                    if not k.startswith("model.layers.")}
    for j, (i, fresh) in enumerate(order):
        prefix = f"model.layers.{i}."
        for k, v in src.items():
            if not k.startswith(prefix):
                continue
            name = k[len(prefix):]
            v = v.clone()
            if fresh and name in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
                v.zero_()
            out[f"model.layers.{j}.{name}"] = v
    with torch.device("meta"):
        deep = LlamaForCausalLM(new_cfg)
    deep.load_state_dict(out, assign=True, strict=True)
    if getattr(new_cfg, "tie_word_embeddings", False):
        deep.tie_weights()  # assigned tensors replace the tied pair: tie them again
    _rebuild_buffers(deep, model)
    deep.generation_config = model.generation_config
    return deep.to(next(model.parameters()).dtype)


def _rebuild_buffers(deep: Any, model: Any) -> None:
    """Non-persistent buffers (RoPE's inverse frequencies) are not in the state dict: copy
    them from the source model, which has the same rotary settings."""
    src = dict(model.named_buffers())
    for name, buf in list(deep.named_buffers()):
        if buf.is_meta:
            owner, _, attr = name.rpartition(".")
            mod = deep.get_submodule(owner) if owner else deep
            mod.register_buffer(attr, src[name].clone(), persistent=False)
