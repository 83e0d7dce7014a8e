"""Architectures beyond Llama: computed exactly, or refused with the real reason in one line.

Tiny random models of GPT-NeoX (partial rotary, parallel residual), DeepSeek-V3 (latent
attention, MLA: keys and values of different sizes) and gpt-oss (learned attention sinks)."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from dac.engines.fast import FastDecoder
from dac.engines.hf import DACSession, UnsupportedModelError, check_supported, generate
from dac.planning import PlanConfig
from dac.protocol.context import PromptLayout
from tests.helpers import IdsTokenizer

CONFIGS = {
    "gpt_neox": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, vocab_size=128, max_position_embeddings=512),
    "deepseek_v3": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=4, intermediate_size=128, moe_intermediate_size=32,
                        vocab_size=128, max_position_embeddings=512, q_lora_rank=None,
                        kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
                        n_routed_experts=4, num_experts_per_tok=2, first_k_dense_replace=1,
                        n_group=1, topk_group=1, rope_scaling=None),
    "gpt_oss": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, intermediate_size=64, vocab_size=128,
                    max_position_embeddings=512, num_local_experts=4, num_experts_per_tok=2,
                    layer_types=["full_attention", "full_attention"], sliding_window=64),
}
CFG = PlanConfig(block_size=8, sink_tokens=8, window=8, local_window=16)


def build(name):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(name, **CONFIGS[name])).eval()


def layout(n=80):
    lay = PromptLayout.plain(n, [(8, 30), (30, 52), (52, 74)])
    lay.input_ids = torch.randint(4, 120, (n,), generator=torch.Generator().manual_seed(1)).tolist()
    return lay


@pytest.mark.parametrize("name", ["gpt_neox", "deepseek_v3"])
def test_exact_architectures_keep_all_equals_plain_decoding(name):
    model, lay = build(name), layout()
    ids = torch.tensor([lay.input_ids])
    kw = dict(max_new_tokens=6, do_sample=False, output_logits=True, return_dict_in_generate=True,
              pad_token_id=0)
    with torch.no_grad():
        ref = model.generate(ids, **kw)
        with DACSession(model, IdsTokenizer(), [lay], "full", CFG) as s:
            got = model.generate(ids, **kw)
            s.finish(got.sequences[:, ids.shape[1]:].tolist())
    for a, b in zip(got.logits, ref.logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert s.traces[0].fraction == 1.0


@pytest.mark.parametrize("name", ["gpt_neox", "deepseek_v3"])
def test_dac_runs_and_reads_less(name):
    model = build(name)
    res = generate(model, IdsTokenizer(), [layout()], policy="streaming", config=CFG, max_new_tokens=4)[0]
    assert len(res.steps) == 3 and res.fraction < 1.0


def test_fast_engine_equals_reference_on_gpt_neox():
    model, lay = build("gpt_neox"), layout()
    ref = generate(model, IdsTokenizer(), [lay], policy="streaming", config=CFG, max_new_tokens=5)
    got = FastDecoder(model, batch_size=1, max_len=256, policy="streaming", config=CFG).generate(
        IdsTokenizer(), [lay], max_new_tokens=5)
    assert got[0].generated_ids == ref[0].generated_ids
    assert [s.read for s in got[0].steps] == [s.read for s in ref[0].steps]


def test_fast_engine_refuses_latent_attention():
    with pytest.raises(UnsupportedModelError, match="latent attention"):
        FastDecoder(build("deepseek_v3"), batch_size=1, max_len=256)


def test_attention_sinks_are_refused_by_the_fast_engine_with_the_reason():
    check_supported(build("gpt_oss"))  # the reference engine computes them
    with pytest.raises(UnsupportedModelError, match="attention sinks"):
        check_supported(build("gpt_oss"), engine="the fast engine", sinks=False)
