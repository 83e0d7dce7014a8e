"""Section-bounded decoding in the vLLM engine (``allowed_token_ids``) equals the HF engine's.

The shared engine's model is the tiny random Llama of conftest.py; its 512-token vocabulary
holds every id of the protocol tokenizer (462 tokens, directive pieces of sections 1..12), so a
second ``VLLMEngine`` over the same ``LLM`` speaks that tokenizer. Both engines are biased the
same way towards ``[[focus S9]]`` (vLLM: ``logit_bias``, applied after ``allowed_token_ids``;
HF: a logits processor, run after the bound), ``[[focus S2]]`` next.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

from transformers import LogitsProcessor, LogitsProcessorList  # noqa: E402

from dac.engines.hf.generate import generate  # noqa: E402
from dac.protocol.constraint import banned_token_ids  # noqa: E402
from tests.vllm.test_equality import CFG, layout_of  # noqa: E402

pytestmark = pytest.mark.vllm
STEPS = 6


class _Bias(LogitsProcessor):
    def __init__(self, bias: dict[int, float]):
        self.bias = bias

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        for t, b in self.bias.items():
            scores[:, t] += b
        return scores


@pytest.fixture(scope="module")
def bounded(engine, protocol_tokenizer):
    from dac.engines.vllm.engine import VLLMEngine

    assert len(protocol_tokenizer) <= engine.vocab_size
    return VLLMEngine(llm=engine.llm, tokenizer=protocol_tokenizer, block_size=engine.block_size)


def run_both(bounded, hf, layouts, policy, bound):
    tok = bounded.tokenizer
    bias = {tok.convert_tokens_to_ids("[[focus S9]]"): 100.0,
            tok.convert_tokens_to_ids("[[focus S2]]"): 50.0}
    v = bounded.generate(layouts, policy=policy, config=CFG, max_new_tokens=STEPS,
                         bound_sections=bound, logit_bias=bias, detokenize=False)
    h = [generate(hf[0], tok, [lay], policy=policy, config=CFG, max_new_tokens=STEPS,
                  bound_sections=bound, logits_processor=LogitsProcessorList([_Bias(bias)]))[0]
         for lay in layouts]
    for a, b in zip(v, h):
        assert a.generated_ids == b.generated_ids
        assert a.to_dict() == b.to_dict()
    return v


@pytest.mark.parametrize("bound", [True, False])
def test_vllm_bound_equals_hf(bounded, hf, bound):
    tok = bounded.tokenizer
    lays = [layout_of(tok, 8), layout_of(tok, 12)]
    v = run_both(bounded, hf, lays, "dac", bound)
    s9, s2 = tok.convert_tokens_to_ids("[[focus S9]]"), tok.convert_tokens_to_ids("[[focus S2]]")
    assert v[0].generated_ids == [s2 if bound else s9] * STEPS
    assert v[1].generated_ids == [s9] * STEPS  # 12 sections: S9 exists
    assert {e.kind for e in v[0].events} == {"directive" if bound else "unknown_section"}
    if bound:
        assert v[0].fraction < 1.0


def test_vllm_bound_only_for_policies_reading_directives(bounded, hf):
    tok = bounded.tokenizer
    v = run_both(bounded, hf, [layout_of(tok, 8)], "streaming", True)
    assert v[0].generated_ids[0] == tok.convert_tokens_to_ids("[[focus S9]]")


def test_sampling_params_carry_the_bound(bounded, engine):
    tok = bounded.tokenizer
    lay = layout_of(tok, 8)
    sp = bounded.sampling_params(lay, policy="dac", config=CFG, max_new_tokens=2)
    assert set(range(bounded.vocab_size)) - set(sp.allowed_token_ids) == banned_token_ids(tok, 8)
    assert sp.extra_args["dac_bound_sections"] == 1
    off = bounded.sampling_params(lay, policy="dac", config=CFG, max_new_tokens=2,
                                  bound_sections=False)
    assert off.allowed_token_ids is None and off.extra_args["dac_bound_sections"] == 0
    mine = bounded.sampling_params(lay, policy="dac", config=CFG, max_new_tokens=2,
                                   allowed_token_ids=[5, 6, tok.convert_tokens_to_ids("-S9")])
    assert mine.allowed_token_ids == [5, 6]  # a caller's own list, bounded too
    # the tiny tokenizer spells directives as text: nothing to bound
    plain = engine.sampling_params(layout_of(engine.tokenizer, 8), policy="dac", config=CFG,
                                   max_new_tokens=2)
    assert plain.allowed_token_ids is None
