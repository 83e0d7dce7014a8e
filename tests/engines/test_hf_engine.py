"""Exactness of the transformers engine: DAC decode against independent dense references."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from dac.engines.hf import (ContextTooLongError, DACSession, UnsupportedModelError, generate)
from dac.engines.hf.generate import batch_inputs
from dac.models import tiny_model
from dac.planning import PlanConfig, Policy, normalize, num_blocks
from dac.protocol import build_prompt
from tests.helpers import forcing

CFG = PlanConfig(block_size=16, sink_tokens=16, window=16, local_window=32)
SECTIONS = [f"Section {i}: the river, the mountain and the city number {i * 37}." for i in range(12)]


def layout(tok, n_sections=12, q="What is the number of the city?"):
    return build_prompt(tok, SECTIONS[:n_sections], q)


def run(model, tok, layouts, policy, texts, cfg=CFG):
    """Generate exactly the scripted texts; return raw logits [steps][B, V], output, session."""
    kw = forcing(tok, texts, layouts)
    steps = max(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    ids, mask = batch_inputs(layouts, 0)
    with DACSession(model, tok, layouts, policy, cfg) as s, torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps,
                             min_new_tokens=steps, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=0, **kw)
        s.finish(out.sequences[:, ids.shape[1]:].tolist())
    return out.logits, out, s


def run_plain(model, tok, layouts, texts):
    kw = forcing(tok, texts, layouts)
    steps = max(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    ids, mask = batch_inputs(layouts, 0)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps,
                             min_new_tokens=steps, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=0, **kw)
    return out.logits


SCRIPT = "[[focus S3-S4]] the value is 4711 [[local 24]] and then [[global]] done now"


def test_keep_all_blocks_reproduces_full_attention(any_model, tokenizer):
    lay = layout(tokenizer)
    ref = run_plain(any_model, tokenizer, [lay], [SCRIPT])
    got, _, s = run(any_model, tokenizer, [lay], "full", [SCRIPT])
    assert len(got) == len(ref) > 10
    diff = max((a - b).abs().max().item() for a, b in zip(got, ref))
    assert diff <= 1e-5
    tr = s.traces[0]
    assert all(st.read == st.length for st in tr.steps)
    assert [e.kind for e in tr.events] == ["directive"] * 3  # parsed, though 'full' ignores them


@dataclass
class RandomPolicy(Policy):
    name: ClassVar[str] = "random-test"
    seed: int = 0

    def plan(self, state, cfg):
        rng = random.Random(self.seed * 100003 + state.length * 31 + state.row)
        nb = num_blocks(state.length, cfg.block_size)
        return normalize(rng.sample(range(nb), k=max(1, nb // 3)), state.length, cfg.block_size)


def test_random_keep_sets_equal_dense_boolean_mask(llama, tokenizer):
    lay = layout(tokenizer)
    text = "free text that the model writes step after step " * 2
    got, out, s = run(llama, tokenizer, [lay], RandomPolicy(seed=3), [text])
    blocks = s.traces[0].blocks
    # independent reference: HF's own path with an explicit 4D boolean mask per step
    seq = out.sequences[0]
    n0 = lay.prompt_len
    with torch.inference_mode():
        pre = llama(input_ids=seq[None, :n0], use_cache=True)
        cache = pre.past_key_values
        ref = [pre.logits[0, -1]]
        for t, kept in enumerate(blocks):
            length = n0 + t + 1
            m = torch.zeros(1, 1, 1, length, dtype=torch.bool)
            for j in kept:
                m[..., j * 16:min((j + 1) * 16, length)] = True
            o = llama(input_ids=seq[None, length - 1:length], past_key_values=cache,
                      attention_mask=m, position_ids=torch.tensor([[length - 1]]), use_cache=True)
            cache = o.past_key_values
            ref.append(o.logits[0, -1])
    assert len(blocks) == len(got) - 1
    assert any(len(b) < num_blocks(n0 + i + 1, 16) for i, b in enumerate(blocks))
    diff = max((g[0] - r).abs().max().item() for g, r in zip(got, ref))
    assert diff <= 1e-5


def test_local_then_global_reads_everything_over_an_intact_cache(llama, tokenizer):
    lay = layout(tokenizer)
    text = "[[local 16]] a b c d e f [[global]] g h i j"
    got, out, s = run(llama, tokenizer, [lay], "dac", [text])
    tr = s.traces[0]
    kinds = [(e.kind, e.applied.mode.value) for e in tr.events]
    assert kinds == [("directive", "local"), ("directive", "global")]
    g_step = tr.events[1].step
    local_steps = [st for st in tr.steps if tr.events[0].step < st.step < g_step]
    assert local_steps and all(st.read < st.length for st in local_steps)
    after = [st for st in tr.steps if st.step >= g_step]
    assert after and all(st.read == st.length for st in after)
    cache = out.past_key_values
    n0 = lay.prompt_len
    seq = out.sequences[0]
    with torch.inference_mode():
        fresh = llama(input_ids=seq[None, :n0], use_cache=True).past_key_values
        for layer in range(len(cache.layers)):
            k, v = cache.layers[layer].keys, cache.layers[layer].values
            assert torch.equal(k[:, :, :n0], fresh.layers[layer].keys)
            assert torch.equal(v[:, :, :n0], fresh.layers[layer].values)
        # the last step under [[global]] equals dense SDPA attention over the same cache
        total = cache.get_seq_length()
        cache.crop(total - 1)
        dense = llama(input_ids=seq[None, total - 1:total], past_key_values=cache,
                      position_ids=torch.tensor([[total - 1]]), use_cache=True).logits[0, -1]
    assert (dense - got[-1][0]).abs().max().item() <= 1e-5


def test_batch_rows_with_different_masks_match_single_rows(llama, tokenizer):
    lays = [layout(tokenizer, 12), layout(tokenizer, 7, q="Which river?")]
    texts = ["[[focus S2]] the value is 4711 and more words here", "[[local 20]] x y z w v u t s r q p"]
    got, _, s = run(llama, tokenizer, lays, "dac", texts)
    assert lays[0].prompt_len != lays[1].prompt_len
    for b in range(2):
        single, _, s1 = run(llama, tokenizer, [lays[b]], "dac", [texts[b]])
        steps = min(len(single), len(got))
        diff = max((got[t][b] - single[t][0]).abs().max().item() for t in range(steps))
        assert diff <= 1e-5
        assert [x.read for x in s.traces[b].steps[:steps - 1]] == [x.read for x in s1.traces[0].steps[:steps - 1]]
    assert s.traces[0].blocks[-1] != s.traces[1].blocks[-1]


@pytest.mark.parametrize("policy", ["streaming", "quest:dense_layers=1,budget_tokens=48",
                                    "oracle:budget=0.3"])
def test_baseline_policies_run_in_the_same_engine(llama, tokenizer, policy):
    lay = layout(tokenizer)
    got, _, s = run(llama, tokenizer, [lay], policy, ["some words the model writes now ok"])
    tr = s.traces[0]
    assert tr.steps and all(0 < st.read < st.length for st in tr.steps)
    assert 0 < tr.fraction < 1


def test_generate_api_reports_timeline_and_fraction(llama, tokenizer):
    lay = layout(tokenizer)
    res = generate(llama, tokenizer, [lay], policy="dac", config=CFG, max_new_tokens=20,
                   **forcing(tokenizer, ["[[focus S5]] 4711 and some words"], [lay]))[0]
    assert res.timeline()[0]["mode"] == "focus" and res.timeline()[0]["sections"] == [5]
    assert res.answer.startswith("4711")
    assert 0 < res.fraction < 1
    d = res.to_dict()
    assert d["schema"] == "dac.generation/1" and d["kv"]["full"] == res.kv_full


def test_directives_in_the_prompt_are_not_read(llama, tokenizer):
    secs = ["[[local 1]] [[focus S1]] a document that talks like a model"] + SECTIONS[:3]
    lay = build_prompt(tokenizer, secs, "[[focus S2]] What now?")
    res = generate(llama, tokenizer, [lay], policy="dac", config=CFG, max_new_tokens=6,
                   **forcing(tokenizer, ["plain words only here"], [lay]))[0]
    assert res.events == []
    assert res.fraction == 1.0


@pytest.mark.parametrize("family, match", [("mistral", "sliding-window"), ("gemma2", "soft-capping")])
def test_unsupported_models_are_refused(tokenizer, family, match):
    model = tiny_model(family, vocab_size=len(tokenizer))
    with pytest.raises(UnsupportedModelError, match=match):
        DACSession(model, tokenizer, [layout(tokenizer)])


def test_context_too_long(tokenizer):
    model = tiny_model("llama", vocab_size=len(tokenizer), max_positions=128)
    with pytest.raises(ContextTooLongError, match="exceeds the model's limit"):
        generate(model, tokenizer, [layout(tokenizer)], max_new_tokens=4)


def test_session_restores_attention_implementation(llama, tokenizer):
    before = llama.config._attn_implementation
    with DACSession(llama, tokenizer, [layout(tokenizer)]):
        assert llama.config._attn_implementation == "dac"
    assert llama.config._attn_implementation == before
    assert not any(hasattr(m, "_dac_state") for m in llama.modules())


def test_per_head_policies_record_the_share_of_heads_per_block(llama, tokenizer):
    """Quest keeps different blocks per layer and head: each step records, per block, the
    share of (layer, KV head) pairs that read it (what the report's timeline draws)."""
    res = generate(llama, tokenizer, [layout(tokenizer)], policy="quest:budget=0.2,dense_layers=0",
                   config=PlanConfig(block_size=16), max_new_tokens=4, min_new_tokens=4)[0]
    assert len(res.block_share) == len(res.steps) == 3 and not res.blocks
    for share, step in zip(res.block_share, res.steps):
        nb = -(-step.length // 16)
        assert share and all(0 < v <= 1 and 0 <= b < nb for b, v in share.items())
        assert share[nb - 1] == 1.0  # the tail block: every head reads it
        # reads = sum over blocks of share x tokens in the block (the tail may be partial)
        tokens = {b: min(16, step.length - b * 16) for b in share}
        assert sum(v * tokens[b] for b, v in share.items()) == pytest.approx(step.read, rel=1e-3)
