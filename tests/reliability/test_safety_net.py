"""The safety net: fires on a confidence drop right after narrowing, widens to global for the
rest of the answer, stays out of the way otherwise (then it is exactly the policy it wraps)."""

from __future__ import annotations

import pytest
import torch

from dac.engines.hf.generate import generate
from dac.planning import (DACPolicy, PlanConfig, QuestPolicy, SequenceState, get_policy,
                          num_blocks, plan_dac)
from dac.planning.safety import SafetyNet
from dac.protocol import GLOBAL, Directive, Mode, PromptLayout, build_prompt
from tests.helpers import forcing

CFG = PlanConfig(block_size=4, sink_tokens=4, window=8)
LAYOUT = PromptLayout.plain(64, [(8, 24), (24, 40), (40, 56)])
FOCUS = Directive(Mode.FOCUS, ((2, 2),))
VOCAB = 50


def logits(conf: float) -> torch.Tensor:
    """Logits whose top softmax probability is ``conf``."""
    rest = (1 - conf) / (VOCAB - 1)
    p = torch.full((VOCAB,), rest)
    p[0] = conf
    return p.log()


def drive(net: SafetyNet, script: list[tuple[Directive, float]], row: int = 0,
          batch: int = 1) -> list[list[int]]:
    """Run plan/observe as the engine does: plan step t, then observe its logits."""
    plans = []
    for step, (d, conf) in enumerate(script):
        length = LAYOUT.prompt_len + step + 1
        plans.append(net.plan(SequenceState(LAYOUT, d, length, step, row), CFG))
        net.observe(row, logits(conf))
    return plans


def full_blocks(step: int) -> list[int]:
    return list(range(num_blocks(LAYOUT.prompt_len + step + 1, CFG.block_size)))


def test_confidence_helper():
    assert SafetyNet().confidence(logits(0.8)) == pytest.approx(0.8)


def test_fires_on_a_drop_after_focus_and_stays_global():
    net = SafetyNet(ratio=0.5, horizon=3)
    net.reset(1)
    script = [(GLOBAL, 0.9)] * 5 + [(FOCUS, 0.2)] + [(FOCUS, 0.9)] * 4
    plans = drive(net, script)
    for step in range(6):  # global steps, then the focused step whose logits dropped
        d = script[step][0]
        assert plans[step] == plan_dac(d, LAYOUT, LAYOUT.prompt_len + step + 1, CFG)
    assert plans[5] != full_blocks(5)  # the focus did narrow
    for step in range(6, 10):  # widened == global, although the model still declares focus
        assert plans[step] == full_blocks(step)
    rep = net.report(0)["safety"]
    assert rep["fired"] and rep["fired_at_step"] == 6
    assert rep["confidence"] == pytest.approx(0.2, abs=1e-5)
    assert rep["baseline"] == pytest.approx(0.9, abs=1e-5)
    assert net.fired(0)


@pytest.mark.parametrize("script", [
    [(GLOBAL, 0.9)] * 5 + [(FOCUS, 0.85)] * 6,  # steady confidence
    [(GLOBAL, 0.9)] * 5 + [(FOCUS, 0.5)] * 6,  # a drop, but not below ratio * baseline
    [(GLOBAL, 0.9)] * 5 + [(FOCUS, 0.9)] * 4 + [(FOCUS, 0.01)] * 2,  # drop after the horizon
    [(FOCUS, 0.01)] * 6,  # no confidence before the focus to compare with
    [(GLOBAL, 0.9), (GLOBAL, 0.05), (GLOBAL, 0.9)],  # drops under global are not watched
])
def test_does_not_fire(script):
    net = SafetyNet(ratio=0.5, horizon=4)
    net.reset(1)
    plans = drive(net, script)
    for step, (d, _) in enumerate(script):
        assert plans[step] == plan_dac(d, LAYOUT, LAYOUT.prompt_len + step + 1, CFG)
    assert net.report(0)["safety"]["fired"] is False


def test_a_new_focus_is_watched_again():
    net = SafetyNet(ratio=0.5, horizon=2)
    net.reset(1)
    other = Directive(Mode.FOCUS, ((3, 3),))
    script = ([(GLOBAL, 0.8)] * 3 + [(FOCUS, 0.8)] * 3 + [(other, 0.8)] + [(other, 0.1)]
              + [(other, 0.8)])
    plans = drive(net, script)
    rep = net.report(0)["safety"]
    assert rep["fired"] and rep["fired_at_step"] == 8 and rep["narrowings_watched"] == 2
    assert plans[8] == full_blocks(8)


def test_rows_are_independent():
    net = SafetyNet(ratio=0.5)
    net.reset(2)
    for step in range(8):
        d = GLOBAL if step < 4 else FOCUS
        for row, conf in ((0, 0.9 if step < 4 else 0.1), (1, 0.9)):
            net.plan(SequenceState(LAYOUT, d, LAYOUT.prompt_len + step + 1, step, row), CFG)
            net.observe(row, logits(conf))
    assert net.fired(0) and not net.fired(1)
    net.reset(2)  # a new generation forgets
    assert not net.fired(0)


def test_wraps_query_aware_policies():
    net = get_policy("quest+safety:budget=0.25,dense_layers=0,ratio=0.6")
    assert isinstance(net, SafetyNet) and isinstance(net.inner, QuestPolicy)
    assert net.query_aware and net.inner.budget == 0.25 and net.ratio == 0.6
    assert net.name == "quest+safety"
    net.reset(1)
    length = 100
    keys, q = torch.randn(2, length, 8), torch.randn(4, 8)
    base = net.plan(SequenceState(LAYOUT, GLOBAL, length, 0, 0), CFG)
    keep = net.select(0, q, keys, base, CFG, 8 ** -0.5)
    assert keep is not None and keep.sum(-1).tolist() == [net.inner.budget_blocks(length, CFG)] * 2
    assert net.select(0, q, keys, list(range(num_blocks(length, 4))), CFG, 1.0) is None


@pytest.mark.parametrize("spec,ratio,horizon", [
    ("dac+safety", 0.5, 4), ("DAC + Safety", 0.5, 4), ("dac+safety:ratio=0.3,horizon=9", 0.3, 9)])
def test_spec(spec, ratio, horizon):
    net = get_policy(spec)
    assert isinstance(net, SafetyNet) and isinstance(net.inner, DACPolicy)
    assert (net.ratio, net.horizon, net.name) == (ratio, horizon, "dac+safety")


@pytest.mark.parametrize("spec", ["dac+safety+safety", "dac+guard", "nope+safety",
                                  "dac+safety:ratio=0", "dac+safety:ratio=1.5",
                                  "dac+safety:horizon=0", "dac+safety:ratio=x",
                                  "dac+safety:budget=0.2", "+safety", "dac+"])
def test_bad_specs_are_value_errors(spec):
    with pytest.raises(ValueError):
        get_policy(spec)


def test_refuses_an_engine_that_never_reports_logits():
    net = SafetyNet()
    net.reset(1)
    with pytest.raises(RuntimeError, match="logits"):
        for step in range(5):
            net.plan(SequenceState(LAYOUT, GLOBAL, 65 + step, step, 0), CFG)


# -- in the engine ------------------------------------------------------------------------------
SECTIONS = ["The river is long and the mountain is high.", "The city has a harbour.",
            "One of the special magic numbers is 1234567.", "Numbers 0 1 2 3 4 5 6 7 8 9."]
ECFG = PlanConfig(block_size=8, sink_tokens=4, window=16)
TEXT = "Answer: [[focus S2]] the city and the harbour of the river 12345"


class Scripted(SafetyNet):
    """The real net with a scripted signal: confident until the focus, then ``after``."""

    def __init__(self, after: float, **kw):
        super().__init__(**kw)
        self.after = after

    def confidence(self, logits):
        return 0.9 if not self._rows[0].narrowed else self.after


@pytest.fixture(scope="module")
def layout(tokenizer):
    return build_prompt(tokenizer, SECTIONS, "Where is the harbour?")


def _run(llama, tokenizer, layout, policy):
    n = len(tokenizer(TEXT, add_special_tokens=False)["input_ids"]) + 3
    (r,) = generate(llama, tokenizer, [layout], policy=policy, config=ECFG, max_new_tokens=n,
                    **forcing(tokenizer, [TEXT], [layout]))
    return r


def test_engine_widening_is_global_for_the_rest(llama, tokenizer, layout):
    dac = _run(llama, tokenizer, layout, "dac")
    safe = _run(llama, tokenizer, layout, Scripted(after=0.1))
    rep = safe.policy_report["safety"]
    focus_step = next(e.step for e in safe.events if e.ok)
    assert rep["fired"] and rep["fired_at_step"] == focus_step + 1
    assert safe.to_dict()["policy_report"] == safe.policy_report
    for i, s in enumerate(safe.steps):
        if s.step >= rep["fired_at_step"]:
            assert safe.blocks[i] == list(range(num_blocks(s.length, ECFG.block_size)))
            assert s.read == s.length
        else:  # before firing: exactly what DAC reads
            assert safe.blocks[i] == dac.blocks[i] and s.read == dac.steps[i].read
    assert dac.fraction < safe.fraction <= 1.0


def test_engine_steady_net_is_exactly_dac(llama, tokenizer, layout):
    dac = _run(llama, tokenizer, layout, "dac")
    safe = _run(llama, tokenizer, layout, Scripted(after=0.85))
    assert safe.policy_report["safety"]["fired"] is False
    assert safe.policy_report["safety"]["narrowings_watched"] == 1
    assert (safe.text, safe.blocks, safe.steps) == (dac.text, dac.blocks, dac.steps)
    assert dac.policy_report == {} and "policy_report" not in dac.to_dict()


def test_engine_real_signal_report_is_consistent(llama, tokenizer, layout):
    """With the real top-probability signal on a random model: a consistent report."""
    r = _run(llama, tokenizer, layout, "dac+safety:ratio=1.0,horizon=50")
    rep = r.policy_report["safety"]
    assert rep["narrowings_watched"] == 1 and rep["steps_watched"] >= 1
    if rep["fired"]:
        assert rep["confidence"] < rep["baseline"]
        assert all(s.read == s.length for s in r.steps if s.step >= rep["fired_at_step"])
    else:
        assert r.fraction < 1.0


def test_engines_without_logits_refuse_the_net(llama):
    from dac.engines.fast import FastDecoder
    from dac.engines.vllm.options import DACOptionError, parse_options, to_extra_args

    with pytest.raises(ValueError, match="logits"):
        FastDecoder(llama, batch_size=1, max_len=512, policy="dac+safety")
    with pytest.raises(DACOptionError, match="logits"):
        parse_options({"dac": 1, "dac_policy": "dac+safety"})
    with pytest.raises(DACOptionError, match="logits"):
        to_extra_args(LAYOUT, CFG, "dac+safety")
