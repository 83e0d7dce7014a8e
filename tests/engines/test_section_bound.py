"""Section-bounded decoding in the Hugging Face engines: a model that prefers a section the
prompt lacks writes an in-range one instead (reference and fast engine alike)."""

from __future__ import annotations

import pytest
import torch

from dac.engines.base import HFEngine
from dac.engines.hf import generate
from dac.engines.fast import FastDecoder
from dac.models import tiny_model
from dac.planning import PlanConfig
from dac.protocol import build_prompt
from dac.protocol.constraint import banned_token_ids
from tests.helpers import forcing

CFG = PlanConfig(block_size=16, sink_tokens=16, window=16, local_window=32)
SECTIONS = [f"Section {i}: the river runs past the old mill number {i * 37}." for i in range(12)]
STEPS = 6


@pytest.fixture(scope="module")
def prefers_s9(protocol_tokenizer):
    """A random Llama whose output bias makes ``[[focus S9]]`` its choice at every step, and
    ``[[focus S2]]`` the next best (far above anything the random weights say)."""
    tok = protocol_tokenizer
    model = tiny_model("llama", vocab_size=len(tok), seed=2)
    old = model.lm_head
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[tok.convert_tokens_to_ids("[[focus S9]]")] = 100.0
        head.bias[tok.convert_tokens_to_ids("[[focus S2]]")] = 50.0
    model.lm_head = head
    return model


def lays(tok):
    """Row 0 has 8 sections (S9 does not exist), row 1 has 12 (S9 does)."""
    return [build_prompt(tok, SECTIONS[:8], "What is the number of the mill?"),
            build_prompt(tok, SECTIONS, "Which river?")]


def tid(tok, text):
    return tok.convert_tokens_to_ids(text)


def test_bound_writes_an_existing_section(prefers_s9, protocol_tokenizer):
    tok = protocol_tokenizer
    res = generate(prefers_s9, tok, lays(tok), policy="dac", config=CFG, max_new_tokens=STEPS)
    assert res[0].generated_ids == [tid(tok, "[[focus S2]]")] * STEPS
    assert not set(res[0].generated_ids) & banned_token_ids(tok, 8)
    assert {e.kind for e in res[0].events} == {"directive"}
    assert res[0].events[0].applied.sections() == [2]
    assert res[1].generated_ids == [tid(tok, "[[focus S9]]")] * STEPS  # S9 exists there
    assert {e.kind for e in res[1].events} == {"directive"}


def test_without_the_bound_the_parser_falls_back_to_global(prefers_s9, protocol_tokenizer):
    tok = protocol_tokenizer
    on = generate(prefers_s9, tok, lays(tok), policy="dac", config=CFG, max_new_tokens=STEPS)
    off = generate(prefers_s9, tok, lays(tok), policy="dac", config=CFG, max_new_tokens=STEPS,
                   bound_sections=False)
    assert off[0].generated_ids == [tid(tok, "[[focus S9]]")] * STEPS
    assert {e.kind for e in off[0].events} == {"unknown_section"}
    assert off[0].events[-1].applied.mode.value == "global"
    assert off[0].fraction == 1.0 and on[0].fraction < 1.0  # the bound focused the reads
    assert off[1].generated_ids == on[1].generated_ids  # rows with S9 are unchanged


def test_policies_that_ignore_directives_are_not_bounded(prefers_s9, protocol_tokenizer):
    """Under full attention the model's directives are inert text: it writes what it prefers."""
    tok = protocol_tokenizer
    for policy in ("full", "streaming"):
        res = generate(prefers_s9, tok, lays(tok)[:1], policy=policy, config=CFG,
                       max_new_tokens=2)
        assert res[0].generated_ids == [tid(tok, "[[focus S9]]")] * 2, policy


def test_forced_text_wins_over_the_bound(prefers_s9, protocol_tokenizer):
    """A logits processor passed in runs after the bound (tests force directives with one)."""
    tok = protocol_tokenizer
    ls = lays(tok)[:1]
    res = generate(prefers_s9, tok, ls, policy="dac", config=CFG, max_new_tokens=3,
                   **forcing(tok, ["[[focus S11]]"], ls))
    assert res[0].generated_ids[0] == tid(tok, "[[focus S11]]")
    assert res[0].events[0].kind == "unknown_section"
    assert res[0].generated_ids[1:] == [tid(tok, "[[focus S2]]")] * 2  # then bounded again


def test_hf_engine_passes_the_switch(prefers_s9, protocol_tokenizer):
    tok = protocol_tokenizer
    eng = HFEngine(prefers_s9, tok)
    on = eng.generate(lays(tok)[:1], policy="dac", config=CFG, max_new_tokens=2)
    off = eng.generate(lays(tok)[:1], policy="dac", config=CFG, max_new_tokens=2,
                       bound_sections=False)
    assert on[0].generated_ids[0] == tid(tok, "[[focus S2]]")
    assert off[0].generated_ids[0] == tid(tok, "[[focus S9]]")


@pytest.mark.parametrize("bound", [True, False])
def test_fast_decoder_equals_reference_with_the_bound(prefers_s9, protocol_tokenizer, bound):
    tok = protocol_tokenizer
    ls = lays(tok)
    ref = generate(prefers_s9, tok, ls, policy="dac", config=CFG, max_new_tokens=STEPS,
                   bound_sections=bound)
    dec = FastDecoder(prefers_s9, batch_size=2, max_len=1024, policy="dac", config=CFG)
    got = dec.generate(tok, ls, max_new_tokens=STEPS, bound_sections=bound)
    for a, b in zip(got, ref):
        assert a.generated_ids == b.generated_ids
        assert a.text == b.text
        assert [(e.step, e.kind, e.text) for e in a.events] == \
            [(e.step, e.kind, e.text) for e in b.events]
        assert [(s.step, s.length) for s in a.steps] == [(s.step, s.length) for s in b.steps]
        assert [s.read for s in a.steps] == pytest.approx([s.read for s in b.steps])
    first = tid(tok, "[[focus S2]]" if bound else "[[focus S9]]")
    assert got[0].generated_ids[0] == first
