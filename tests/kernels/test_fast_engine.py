"""The static-cache FlexAttention decoder equals the reference HF engine (eager, CPU)."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from dac.engines.hf import generate
from dac.engines.fast import FastDecoder
from dac.engines.hf.session import DACSession
from dac.engines.hf.generate import batch_inputs
from dac.planning import PlanConfig
from dac.protocol import build_prompt
from tests.helpers import forcing

CFG = PlanConfig(block_size=16, sink_tokens=16, window=16, local_window=32)
SECTIONS = [f"Section {i}: the river, the mountain and the city number {i * 37}." for i in range(12)]
SCRIPTS = ["[[focus S3-S4]] the value is 4711 [[local 24]] and then [[global]] done",
           "[[local 20]] the city [[focus S7]] is 259 and the river"]


def layouts(tok):
    return [build_prompt(tok, SECTIONS, "What is the number of the city?"),
            build_prompt(tok, SECTIONS[:7], "Which river?")]


class _Copying(LogitsProcessor):
    """Runs a processor on a copy, so ``output_logits`` keeps the model's raw logits."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, input_ids, scores):
        return self.inner(input_ids, scores.clone())


def forced(tok, lays):
    return LogitsProcessorList([_Copying(p) for p in forcing(tok, SCRIPTS, lays)["logits_processor"]])


def reference(model, tok, lays, policy, steps):
    """Raw logits per step and the session of the reference engine (HF generate + hooks)."""
    kw = {"logits_processor": forced(tok, lays)}
    ids, mask = batch_inputs(lays, 0)
    with DACSession(model, tok, lays, policy, CFG) as s, torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps,
                             do_sample=False, output_logits=True, return_dict_in_generate=True,
                             pad_token_id=0, **kw)
        s.finish(out.sequences[:, ids.shape[1]:].tolist())
    return out, s


@pytest.mark.parametrize("policy", ["full", "dac", "streaming", "quest:budget=0.3,dense_layers=1"])
def test_fast_decoder_equals_reference_engine(llama, tokenizer, policy):
    lays = layouts(tokenizer)
    assert lays[0].prompt_len != lays[1].prompt_len  # per-row lengths, no padding stored
    steps = 30  # past the scripts: the model then picks its own tokens
    ref, session = reference(llama, tokenizer, lays, policy, steps)
    dec = FastDecoder(llama, batch_size=2, max_len=1024, policy=policy, config=CFG)
    got = dec.generate(tokenizer, lays, max_new_tokens=steps, keep_logits=True,
                       logits_processor=forced(tokenizer, lays))
    assert len(dec.step_logits) == len(ref.logits) == steps
    # both paths ran: plans made ahead, and fresh plans where a token completed a directive
    assert 0 < dec.plans_ahead < steps - 1
    for a, b in zip(dec.step_logits, ref.logits):
        torch.testing.assert_close(a, b.float(), rtol=1e-4, atol=1e-4)
    for r, tr in zip(got, session.traces):
        assert r.generated_ids == tr.detok.ids
        assert r.text == tr.text
        assert [e.text for e in r.events] == [e.text for e in tr.events]
        assert [(s.step, s.length) for s in r.steps] == [(s.step, s.length) for s in tr.steps]
        assert [s.read for s in r.steps] == pytest.approx([s.read for s in tr.steps])
        assert r.blocks == tr.blocks
    if policy == "dac":  # the directives did reduce the reads
        assert got[0].fraction < 0.9


def test_fast_decoder_matches_public_generate(llama, tokenizer):
    """Unforced greedy text equals ``dac.engines.hf.generate`` end to end."""
    lays = layouts(tokenizer)
    ref = generate(llama, tokenizer, lays, policy="dac", config=CFG, max_new_tokens=12)
    got = FastDecoder(llama, batch_size=2, max_len=1024, policy="dac", config=CFG).generate(
        tokenizer, lays, max_new_tokens=12)
    assert [r.to_dict() for r in got] == [r.to_dict() for r in ref]


def test_fast_decoder_refusals(llama, tokenizer):
    with pytest.raises(ValueError, match="analysis only"):
        FastDecoder(llama, batch_size=1, max_len=256, policy="oracle")
    with pytest.raises(ValueError, match="CUDA"):
        FastDecoder(llama, batch_size=1, max_len=256, cuda_graph=True)
    dec = FastDecoder(llama, batch_size=1, max_len=600, config=CFG)
    lay = layouts(tokenizer)[:1]
    with pytest.raises(ValueError, match="exceeds max_len"):
        dec.generate(tokenizer, lay, max_new_tokens=400)
    with pytest.raises(ValueError, match="2 layouts|1 rows"):
        dec.generate(tokenizer, layouts(tokenizer), max_new_tokens=4)


def test_the_collector_is_paused_only_while_a_graph_records():
    import gc

    from dac.engines.fast.static import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()  # a caller that had paused it keeps it paused
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
