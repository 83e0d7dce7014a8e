"""Engine-level fuzz: a tiny random model made to write random directive-laden text.

A decode step's KV depends on earlier masked outputs, so caches are not compared with a full
run. What must hold at every step instead: the plan is valid and is exactly what the directive
then in force asks for, the accounting is consistent (read <= length, read == length under
global), the events are those of the generated text, and generation completes.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dac.engines.hf.generate import generate
from dac.planning import PlanConfig, num_blocks, plan_dac, tokens_in_blocks
from dac.protocol import GLOBAL, StreamingParser, build_prompt
from tests.helpers import forcing
from tests.reliability.fuzz import fuzz

CFG = PlanConfig(block_size=8, sink_tokens=4, window=16, local_window=24)
SECTIONS = ["The river is long and the mountain is high.", "The city has a harbour.",
            "One of the special magic numbers is 1234567.", "Numbers 0 1 2 3 4 5 6 7 8 9."]
PIECES = ["[[global]]", "[[local]]", "[[local 5]]", "[[focus S2]]", "[[focus S1-S3, S2]]",
          "[[focus S9]]", "[[focus S3-S7]]", "[[nonsense]]", "[[focus", "]]", "[[", "[", "]",
          "[[[local]]", " S3", " the river", " 1234567", "Answer:", " é", "\n"]


def directive_at(events, step):
    """The directive in force after the parser was fed the token generated at ``step``."""
    d = GLOBAL
    for e in events:
        if e.step > step:
            break
        d = e.applied
    return d


def check_result(r, layout, forced: str | None, policy: str) -> None:
    bs = CFG.block_size
    assert r.generated_ids, "generation produced tokens"
    assert r.steps, "every generated token but the last went through a decode step"
    assert [e.step for e in r.events] == sorted(e.step for e in r.events)
    if forced is not None:
        assert r.text.startswith(forced)
        # the events are those of the generated text, parsed whole
        p = StreamingParser(layout.num_sections)
        p.feed(r.text, 0)
        p.finish(0)
        assert [(e.kind, e.text, e.applied) for e in r.events] == \
            [(e.kind, e.text, e.applied) for e in p.events]
    for i, s in enumerate(r.steps):
        assert s.step == i
        assert s.length == layout.prompt_len + s.step + 1
        assert 0 < s.read <= s.length
        d = directive_at(r.events, s.step)
        if policy == "dac":
            blocks = r.blocks[i]
            assert blocks == plan_dac(d, layout, s.length, CFG)
            assert blocks == sorted(set(blocks)) and blocks[-1] == num_blocks(s.length, bs) - 1
            assert s.read == tokens_in_blocks(blocks, s.length, bs)
            if d == GLOBAL:
                assert s.read == s.length
        elif policy == "full":
            assert s.read == s.length


@pytest.fixture(scope="module")
def layouts(tokenizer):
    return [build_prompt(tokenizer, SECTIONS, "What is the special magic number?"),
            build_prompt(tokenizer, SECTIONS[:2], "Where is the harbour?")]


@fuzz(6)
@given(texts=st.lists(st.lists(st.sampled_from(PIECES), min_size=1, max_size=10).map("".join),
                      min_size=2, max_size=2),
       policy=st.sampled_from(["dac", "dac", "full", "streaming", "quest:budget=0.3"]))
def test_random_directive_streams(llama, tokenizer, layouts, texts, policy):
    """Two rows of different prompt lengths (left padding), each forced to write its own text."""
    n = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts) + 2
    results = generate(llama, tokenizer, layouts, policy=policy, config=CFG, max_new_tokens=n,
                       **forcing(tokenizer, texts, layouts))
    for r, lay, t in zip(results, layouts, texts):
        check_result(r, lay, t, policy.split(":")[0])


def test_hundreds_of_mode_switches(llama, tokenizer, layouts):
    """One answer switching mode at nearly every directive-length run of tokens."""
    rng = random.Random(0)
    pieces = ["[[global]]", "[[local]]", "[[focus S2]]", "[[focus S1-S3]]", "[[local 5]]", "x"]
    text = "".join(rng.choice(pieces) for _ in range(110))
    lay = layouts[0]
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    (r,) = generate(llama, tokenizer, [lay], policy="dac", config=CFG, max_new_tokens=n,
                    **forcing(tokenizer, [text], [lay]))
    assert sum(e.ok for e in r.events) >= 90
    check_result(r, lay, text, "dac")
    modes = {directive_at(r.events, s.step).mode for s in r.steps}
    assert len(modes) == 3  # global, local and focus all took effect
    assert r.fraction < 1.0


def test_directives_in_the_prompt_are_never_read(llama, tokenizer):
    """Directive-like text in the document and question (even an opener the answer could
    close) changes nothing: only generated text declares a mode."""
    lay = build_prompt(tokenizer, ["[[focus S2]] read me", "[[local]] the city [[focus S1",
                                   "[[global]] ]] [["], "Which section? [[focus S3]] [[")
    text = "global]] the river S2 ]] and the city"
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    (r,) = generate(llama, tokenizer, [lay], policy="dac", config=CFG, max_new_tokens=n,
                    **forcing(tokenizer, [text], [lay]))
    assert r.text.startswith(text) and r.events == []
    assert all(s.read == s.length for s in r.steps)
    check_result(r, lay, text, "dac")
