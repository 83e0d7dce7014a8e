"""vLLM + DAC equals the Hugging Face engine: same greedy tokens, log-probs within 1e-4.

Directives come from generated tokens: both engines are forced to write the same text
(a logits processor on each side); log-probabilities are raw model outputs, so the forced steps
are scored too. All requests share one engine (see conftest.py).
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

from vllm import SamplingParams  # noqa: E402
from vllm.inputs import TokensPrompt  # noqa: E402

from dac.planning.blocks import PlanConfig  # noqa: E402
from dac.protocol.context import build_prompt  # noqa: E402
from tests.vllm.vllm_reference import BLOCK, MAX_BATCHED, hf_run

pytestmark = pytest.mark.vllm
TOL = 1e-4
CFG = PlanConfig(block_size=BLOCK, sink_tokens=32, window=32, local_window=64)


def layout_of(tok, n_sections: int, repeat: int = 3, **kw):
    secs = [(f"The river {i} runs past the mountain and the city {i} has a harbour. " * repeat)
            .strip() for i in range(n_sections)]
    return build_prompt(tok, secs, "What is the value?", **kw)


def vllm_run(engine, layouts, scripts, dac: list[bool], max_new: int, cfg=CFG, policy="dac"):
    params = []
    for lay, script, on in zip(layouts, scripts, dac):
        extra = {"force_token_ids": script}
        if on:
            params.append(engine.sampling_params(lay, policy=policy, config=cfg,
                                                 max_new_tokens=max_new, logprobs=1,
                                                 extra_args=extra))
        else:
            params.append(SamplingParams(max_tokens=max_new, temperature=0.0, logprobs=1,
                                         extra_args=extra))
    prompts = [TokensPrompt(prompt_token_ids=lay.input_ids) for lay in layouts]
    outs = engine.llm.generate(prompts, params, use_tqdm=False)
    res = []
    for o in outs:
        c = o.outputs[0]
        res.append((list(c.token_ids), [c.logprobs[i][t].logprob for i, t in
                                        enumerate(c.token_ids)]))
    return res


def replayed(engine, lay, ids, cfg=CFG, policy="dac"):
    from dac.engines.vllm.options import parse_options, to_extra_args
    from dac.engines.vllm.tracker import replay

    opts = parse_options(to_extra_args(lay, cfg, policy))
    return replay(opts, lay, engine.tokenizer, ids, engine.eos_ids)[0]


def assert_same(v_ids, v_lp, h_ids, h_lp):
    assert v_ids == h_ids
    diff = max(abs(a - b) for a, b in zip(v_lp, h_lp))
    assert diff <= TOL, f"max |d logprob| = {diff:.2e}"
    print(f"[vllm-vs-hf] {len(v_ids)} tokens, max |d logprob| = {diff:.2e}")
    return diff


def script(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def check_dac(engine, hf, lay, text, max_new=24, cfg=CFG):
    model, tok = hf
    sc = script(tok, text)
    (v_ids, v_lp), = vllm_run(engine, [lay], [sc], [True], max_new, cfg)
    h_ids, h_lp, trace = hf_run(model, tok, lay, sc, max_new, "dac", cfg)
    assert_same(v_ids, v_lp, h_ids, h_lp)
    tr = replayed(engine, lay, v_ids, cfg)
    assert [(s.step, s.length, s.read) for s in tr.steps] == \
        [(s.step, s.length, s.read) for s in trace.steps]
    assert [(e.step, e.kind, e.text) for e in tr.parser.events] == \
        [(e.step, e.kind, e.text) for e in trace.events]
    # the mask mattered: full attention scores the same tokens differently
    f_ids, f_lp, _ = hf_run(model, tok, lay, v_ids, max_new)
    assert max(abs(a - b) for a, b in zip(f_lp, v_lp)) > 1e-3
    return tr


def test_focus_then_global(engine, hf):
    lay = layout_of(hf[1], 8)
    tr = check_dac(engine, hf, lay, "[[focus S2]] the river [[global]] the city")
    modes = [e.applied.mode.value for e in tr.parser.events]
    assert modes == ["focus", "global"]
    assert 0 < sum(s.read for s in tr.steps) / sum(s.length for s in tr.steps) < 1


def test_local_window(engine, hf):
    lay = layout_of(hf[1], 8)
    tr = check_dac(engine, hf, lay, "[[local]] the number 1 2 3 4 5 6 7 8 9 0")
    assert tr.parser.current.mode.value == "local"
    assert tr.steps[-1].read < tr.steps[-1].length


def test_chunked_prefill(engine, hf):
    lay = layout_of(hf[1], 14, repeat=4)
    assert lay.prompt_len > 3 * MAX_BATCHED  # prefilled in several chunks
    check_dac(engine, hf, lay, "[[focus S13-S14]] the harbour", max_new=16)


def test_batch_mixing_dac_and_plain(engine, hf):
    model, tok = hf
    lays = [layout_of(tok, 8), layout_of(tok, 3, repeat=2, system="Answer."), layout_of(tok, 10),
            layout_of(tok, 6, system="Answer.")]
    assert lays[1].prompt_len < MAX_BATCHED
    texts = ["[[focus S3]] the city [[global]] river", "[[local]] 1 2 3",
             "the river [[focus S1, S9]] harbour", "[[focus S5]] one two"]
    dac = [True, False, True, True]
    scripts = [script(tok, t) for t in texts]
    outs = vllm_run(engine, lays, scripts, dac, 20)
    for lay, sc, on, (v_ids, v_lp) in zip(lays, scripts, dac, outs):
        h_ids, h_lp, _ = hf_run(model, tok, lay, sc, 20, "dac" if on else None,
                                CFG if on else None)
        assert_same(v_ids, v_lp, h_ids, h_lp)


def test_engine_interface_matches_hf(engine, hf):
    """VLLMEngine.generate returns the HF engine's result (text, timeline, KV accounting)."""
    from dac.engines.hf.generate import generate

    model, tok = hf
    lays = [layout_of(tok, 6), layout_of(tok, 4)]
    v = engine.generate(lays, policy="streaming", config=CFG, max_new_tokens=12)
    h = [generate(model, tok, [lay], policy="streaming", config=CFG, max_new_tokens=12)[0]
         for lay in lays]
    for a, b in zip(v, h):
        assert a.generated_ids == b.generated_ids
        da, db = a.to_dict(), b.to_dict()
        assert da == db
        assert a.fraction < 1


def test_bad_options_in_a_plain_engine_fall_back_to_full_attention(engine, hf):
    """Options that bypass validation (raw vLLM use) never crash the engine: full attention."""
    model, tok = hf
    lay = layout_of(tok, 6)
    sc = script(tok, "[[local]] 1 2 3")
    bad = [{"dac": "maybe"}, {"dac": 1, "dac_sections": [0, 10 ** 6]},
           {"dac": 1, "dac_block_size": 48}]
    params = [SamplingParams(max_tokens=8, temperature=0.0, logprobs=1,
                             extra_args={"force_token_ids": sc, **b}) for b in bad]
    outs = engine.llm.generate([TokensPrompt(prompt_token_ids=lay.input_ids)] * len(bad),
                               params, use_tqdm=False)
    h_ids, h_lp, _ = hf_run(model, tok, lay, sc, 8)  # plain full attention
    for o in outs:
        c = o.outputs[0]
        assert_same(list(c.token_ids), [c.logprobs[i][t].logprob for i, t in
                                        enumerate(c.token_ids)], h_ids, h_lp)


def test_engine_refuses_query_aware_policies(engine, hf):
    from dac.engines.vllm.options import DACOptionError

    with pytest.raises(DACOptionError, match="query-aware"):
        engine.generate([layout_of(hf[1], 4)], policy="quest", config=CFG, max_new_tokens=2)
    with pytest.raises(DACOptionError, match="multiple"):
        engine.generate([layout_of(hf[1], 4)], config=PlanConfig(block_size=48),
                        max_new_tokens=2)
