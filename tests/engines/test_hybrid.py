"""Hybrid models: DAC masks the full-attention layers only.

Tiny random Gemma-3 and Gemma-4 (sliding-window + global layers; Gemma-4's global layers
with their own head size), Qwen-3.5 (Gated DeltaNet linear attention + gated full attention)
and gpt-oss (sliding + full, learned sinks, a mixture of experts: the reference engine
computes its sinks, the fast engine refuses them). The reference is independent of
the engine: transformers' own decoding loop with an attention function that applies an
explicit boolean mask in the global layers and leaves every other layer as the model runs it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from transformers import AttentionInterface, AutoConfig, AutoModelForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from dac.engines.fast import FastDecoder
from dac.engines.hf import DACSession, UnsupportedModelError, check_supported, generate
from dac.engines.support import global_layers, layer_kinds
from dac.kernels.reference import dense_masked_reference
from dac.planning import PlanConfig, Policy, normalize, num_blocks
from dac.protocol.context import PromptLayout
from tests.helpers import IdsTokenizer

BS = 8
CFG = PlanConfig(block_size=BS, sink_tokens=8, window=8, local_window=16)
COMMON = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
              head_dim=16, intermediate_size=128, vocab_size=128, max_position_embeddings=512)
SWA = ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"]
CONFIGS = {
    "gemma3_text": dict(COMMON, sliding_window=16, layer_types=SWA),
    "gemma4_text": dict(COMMON, sliding_window=16, global_head_dim=32, layer_types=SWA),
    "qwen3_5_text": dict(COMMON, layer_types=["linear_attention"] * 3 + ["full_attention"],
                         linear_num_key_heads=2, linear_num_value_heads=4,
                         linear_key_head_dim=8, linear_value_head_dim=8,
                         linear_conv_kernel_dim=4),
}

#: learned attention sinks and a mixture of experts: the reference engine computes the sinks;
#: the fast engine refuses them
SINK_CONFIGS = {
    "gpt_oss": dict(COMMON, num_local_experts=4, num_experts_per_tok=2, sliding_window=16,
                    layer_types=SWA),
}
REFERENCE_CONFIGS = {**CONFIGS, **SINK_CONFIGS}


def build(name: str) -> Any:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(name,
                                                                  **REFERENCE_CONFIGS[name]))
    for m in model.modules():  # random sinks, so that they matter (they start at zero)
        if isinstance(getattr(m, "sinks", None), torch.nn.Parameter):
            torch.nn.init.normal_(m.sinks, std=1.0)
    return model.eval()


def layout(n: int = 96) -> PromptLayout:
    lay = PromptLayout.plain(n, [(8, 36), (36, 64), (64, 88)])
    g = torch.Generator().manual_seed(1)
    lay.input_ids = torch.randint(4, 120, (n,), generator=g).tolist()
    return lay


@dataclass
class RandomPolicy(Policy):
    """A third of the blocks, a different third every step (a mode switch at each step)."""

    name: ClassVar[str] = "random-test"

    def plan(self, state, cfg):
        rng = random.Random(state.length * 31)
        nb = num_blocks(state.length, cfg.block_size)
        return normalize(rng.sample(range(nb), k=max(1, nb // 3)), state.length, cfg.block_size)


_REF: dict[str, Any] = {"keep": None, "global": set()}


def _masked(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    keep = _REF["keep"]
    masking = keep is not None and query.shape[2] == 1 and module.layer_idx in _REF["global"]
    if kwargs.get("s_aux") is not None:  # sinks: the model's own eager attention, masked
        import sys

        eager = sys.modules[type(module).__module__].eager_attention_forward
        add = torch.zeros(query.shape[0], 1, query.shape[2], key.shape[2])
        if attention_mask is not None:
            add = add.masked_fill(~attention_mask.bool(), float("-inf"))
        if masking:
            add = add.masked_fill(~keep[:, :, None, :key.shape[2]], float("-inf"))
        return eager(module, query, key, value, add, dropout=dropout, scaling=scaling, **kwargs)
    if not masking:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    return dense_masked_reference(query, key, value, keep[:, :, :key.shape[2]], scaling), None


AttentionInterface.register("dac_hybrid_reference", _masked)
AttentionMaskInterface.register("dac_hybrid_reference", sdpa_mask)


def reference(model, ids: list[int], blocks: list[list[int]]):
    """Logits per step and the final cache of a plain decode loop over ``ids``, masking the
    global layers' attention at decode step ``t`` to ``blocks[t]``."""
    prev = model.config._attn_implementation
    model.set_attn_implementation("dac_hybrid_reference")
    _REF["global"] = global_layers(model)
    n0 = len(ids) - len(blocks)
    try:
        with torch.no_grad():
            _REF["keep"] = None
            out = model(input_ids=torch.tensor([ids[:n0]]), use_cache=True)
            cache, logits = out.past_key_values, [out.logits[0, -1]]
            for t, kept in enumerate(blocks):
                length = n0 + t + 1
                keep = torch.zeros(1, 1, length, dtype=torch.bool)
                for j in kept:
                    keep[..., j * BS:(j + 1) * BS] = True
                _REF["keep"] = keep
                out = model(input_ids=torch.tensor([[ids[length - 1]]]), past_key_values=cache,
                            position_ids=torch.tensor([[length - 1]]), use_cache=True)
                cache = out.past_key_values
                logits.append(out.logits[0, -1])
    finally:
        _REF["keep"] = None
        model.set_attn_implementation(prev)
    return logits, cache


def dac_run(model, lay, policy, steps=8):
    ids = torch.tensor([lay.input_ids])
    kw = dict(max_new_tokens=steps, min_new_tokens=steps, do_sample=False, output_logits=True,
              return_dict_in_generate=True, pad_token_id=0)
    with torch.no_grad(), DACSession(model, IdsTokenizer(), [lay], policy, CFG) as s:
        out = model.generate(ids, **kw)
        s.finish(out.sequences[:, ids.shape[1]:].tolist())
    return out, s


def cache_tensors(cache) -> list[torch.Tensor]:
    """Every tensor a cache holds: each layer's keys and values, or conv and recurrent state."""
    out = []
    for layer in cache.layers:
        for name in ("keys", "values", "conv_states", "recurrent_states"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                out.append(t)
    return out


@pytest.mark.parametrize("name", list(REFERENCE_CONFIGS))
def test_layer_map_from_the_config(name):
    model = build(name)
    kinds = layer_kinds(model)
    assert kinds[-1] == "global" and global_layers(model) == {3}
    assert set(kinds[:3]) == ({"linear"} if name.startswith("qwen") else {"window"})
    check_supported(model)


@pytest.mark.parametrize("name", list(REFERENCE_CONFIGS))
def test_keep_all_equals_plain_decoding(name):
    model, lay = build(name), layout()
    ids = torch.tensor([lay.input_ids])
    with torch.no_grad():
        plain = model.generate(ids, max_new_tokens=6, do_sample=False, output_logits=True,
                               return_dict_in_generate=True, pad_token_id=0)
    out, s = dac_run(model, lay, "full", steps=6)
    for a, b in zip(out.logits, plain.logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert s.traces[0].fraction == 1.0


@pytest.mark.parametrize("name", list(REFERENCE_CONFIGS))
def test_random_keep_sets_equal_a_dense_reference_in_the_global_layers_only(name):
    """Same logits at every step, and the same caches afterwards: KV of every attention
    layer, sliding windows, and the linear layers' conv and recurrent states (masking
    changes what is read, never what is stored)."""
    model, lay = build(name), layout()
    out, s = dac_run(model, lay, RandomPolicy())
    blocks = s.traces[0].blocks
    assert any(len(b) < num_blocks(lay.prompt_len + i + 1, BS) for i, b in enumerate(blocks))
    ids = out.sequences[0].tolist()[:lay.prompt_len + len(blocks)]
    ref_logits, ref_cache = reference(model, ids, blocks)
    for a, b in zip(out.logits, ref_logits):
        torch.testing.assert_close(a[0], b, atol=1e-5, rtol=0)
    got = cache_tensors(out.past_key_values)
    want = cache_tensors(ref_cache)
    assert got and len(got) == len(want)
    for a, b in zip(got, want):  # the DAC run wrote one more token (the last one sampled)
        if a.shape == b.shape:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(a[..., :b.shape[-2], :], b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(REFERENCE_CONFIGS))
@pytest.mark.parametrize("policy", ["dac", "streaming", "quest:budget=0.3", "oracle:budget=0.3"])
def test_every_policy_runs_and_counts_the_global_layers(name, policy):
    model = build(name)
    res = generate(model, IdsTokenizer(), [layout()], policy=policy, config=CFG, max_new_tokens=5,
                   min_new_tokens=5, bound_sections=False)[0]  # (no directive tokens here)
    assert len(res.steps) == 4 and all(0 < st.read <= st.length for st in res.steps)
    if policy.startswith(("streaming", "quest", "oracle")):
        assert res.fraction < 1.0


def test_gpt_oss_sinks_are_computed_by_the_reference_engine_and_refused_by_the_fast_one():
    model = build("gpt_oss")
    check_supported(model, sinks=True)
    with pytest.raises(UnsupportedModelError, match="attention sinks.*fast engine"):
        FastDecoder(model, batch_size=1, max_len=256)


def test_sinks_matter_in_the_reference():
    """Without its sinks gpt-oss decodes differently: the reference does compute them."""
    model, lay = build("gpt_oss"), layout()
    out, _ = dac_run(model, lay, "full", steps=3)
    for m in model.modules():
        if isinstance(getattr(m, "sinks", None), torch.nn.Parameter):
            m.sinks.data.fill_(-30.0)
    out2, _ = dac_run(model, lay, "full", steps=3)
    assert (out.logits[0] - out2.logits[0]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["gemma3_text", "gemma4_text", "qwen3_5_text"])
def test_the_fast_engine_takes_hybrids(name):
    """Exactness is pinned in test_fast_hybrid.py; here only that it no longer refuses."""
    dec = FastDecoder(build(name), batch_size=1, max_len=256)
    assert dec.batch == 1


def test_unknown_layer_types_are_refused():
    model = build("gemma3_text")
    model.config.layer_types = ["chunked_attention"] * 3 + ["full_attention"]
    with pytest.raises(UnsupportedModelError, match="chunked_attention"):
        check_supported(model)


def test_stats_report_the_global_kv_and_the_fixed_read_beside_it():
    """Attended tokens count the global layers; the bytes of the other layers' fixed per-step
    read (sliding window) are reported beside them."""
    model = build("gemma4_text")
    res = generate(model, IdsTokenizer(), [layout()], policy="streaming", config=CFG,
                   max_new_tokens=4, min_new_tokens=4, bound_sections=False)[0]
    st = res.stats()
    assert res.costs["global_kv_bytes_per_token"] == 2 * 2 * 32 * 2  # its own head size
    assert st["global_kv_bytes"] == round(res.kv_read * 256)
    assert st["local_bytes"] == 3 * (3 * 16 * 2 * 2 * 16 * 2)  # 3 steps x 3 windows of 16
