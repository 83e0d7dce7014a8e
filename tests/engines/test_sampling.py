"""Sampling, the same knobs in every engine; greedy stays the default."""

import pytest
import torch

from dac.engines.fast import FastDecoder
from dac.engines.hf import generate
from dac.models import tiny_model
from dac.planning import PlanConfig
from dac.protocol import build_prompt
from dac.runtime import GREEDY, Sampling

CFG = PlanConfig(block_size=16, sink_tokens=16, window=16, local_window=32)


def test_of_reads_the_usual_spellings():
    assert Sampling.of(None) == GREEDY and Sampling.of({"do_sample": False}) == GREEDY
    assert Sampling.of({"temperature": 0}) == GREEDY  # the OpenAI spelling of greedy
    s = Sampling.of({"temperature": 0.7, "top_p": 0.8, "top_k": 20})
    assert s.do_sample and s.top_k == 20
    assert Sampling.of(s) is s
    with pytest.raises(ValueError, match="unknown sampling option"):
        Sampling.of({"temprature": 1})
    for bad in ({"top_p": 0}, {"top_k": -1}, {"temperature": -1}, {"presence_penalty": 3}):
        with pytest.raises(ValueError):
            Sampling.of(bad)


def test_engine_translations():
    s = Sampling(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, presence_penalty=1.5,
                 seed=3)
    assert s.vllm_kwargs() == {"temperature": 0.7, "top_p": 0.8, "top_k": 20,
                               "presence_penalty": 1.5, "seed": 3}
    hf = s.hf_kwargs(10)
    assert hf["do_sample"] and hf["top_k"] == 20 and len(hf["logits_processor"]) == 1
    assert GREEDY.hf_kwargs(10) == {"do_sample": False}
    assert GREEDY.vllm_kwargs() == {"temperature": 0.0}


def test_choose():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 2.9]])
    assert GREEDY.choose(logits, [[], []]) == [1, 0]
    assert Sampling(do_sample=True, top_k=1).choose(logits, [[], []]) == [1, 0]
    assert Sampling(do_sample=True, top_p=0.01).choose(logits, [[], []]) == [1, 0]
    # the presence penalty moves the second row off a token it already wrote
    assert Sampling(do_sample=True, top_k=1, presence_penalty=1.0).choose(
        logits, [[], [0]]) == [1, 2]
    s = Sampling(do_sample=True, temperature=2.0, seed=7)
    draws = [s.choose(logits.repeat(50, 1), [[]] * 100, s.generator("cpu")) for _ in range(2)]
    assert draws[0] == draws[1] and len(set(draws[0])) > 1  # seeded: repeatable, not greedy


@pytest.fixture(scope="module")
def setup(tokenizer):
    model = tiny_model("llama", vocab_size=len(tokenizer), max_positions=1024)
    lay = build_prompt(tokenizer, [f"the river {i} and the mill {i}" for i in range(6)], "Which?")
    return model, lay


def test_seeded_sampling_repeats_in_each_engine(setup, tokenizer):
    model, lay = setup
    s = Sampling(do_sample=True, temperature=1.5, top_k=50, seed=11)
    a = generate(model, tokenizer, [lay], config=CFG, max_new_tokens=8, sampling=s)[0]
    b = generate(model, tokenizer, [lay], config=CFG, max_new_tokens=8, sampling=s)[0]
    g = generate(model, tokenizer, [lay], config=CFG, max_new_tokens=8)[0]
    assert a.generated_ids == b.generated_ids and a.generated_ids != g.generated_ids
    dec = FastDecoder(model, batch_size=1, max_len=512, config=CFG)
    f1 = dec.generate(tokenizer, [lay], max_new_tokens=8, sampling=s)[0]
    f2 = dec.generate(tokenizer, [lay], max_new_tokens=8, sampling=s)[0]
    fg = dec.generate(tokenizer, [lay], max_new_tokens=8)[0]
    assert f1.generated_ids == f2.generated_ids
    assert fg.generated_ids == g.generated_ids  # greedy: the engines agree
