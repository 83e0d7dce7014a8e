"""Property-based tests of the mask planner and every policy.

Every kept set must be sorted, unique, within ``[0, ceil(length / block_size))``, hold the tail
block (so no step is empty) and cover what its mode promises; query-aware selections must keep
their base plan and their budget on every KV head. Random layouts, lengths, block sizes,
overlapping and nested regions, sections past the end.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from dac.planning import (DACPolicy, FullPolicy, OraclePolicy, PlanConfig, Policy, QuestPolicy,
                          SafetyNet, SequenceState, StreamingPolicy, coverage, get_policy,
                          num_blocks, parse_policy, plan_dac, span_blocks, tokens_in_blocks)
from dac.protocol import Directive, Mode, PromptLayout, Span
from tests.reliability.fuzz import fuzz

FUZZ = fuzz(300)


@st.composite
def layouts(draw) -> PromptLayout:
    prompt_len = draw(st.integers(1, 600))
    cuts = sorted(draw(st.lists(st.integers(0, prompt_len), max_size=12, unique=True)))
    sections = [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
    return PromptLayout.plain(prompt_len, sections)


configs = st.builds(PlanConfig, block_size=st.sampled_from([1, 2, 3, 16, 32, 64, 100, 128]),
                    sink_tokens=st.integers(0, 200), keep_preamble=st.booleans(),
                    window=st.integers(1, 700), local_window=st.integers(1, 2000))

region = st.tuples(st.integers(1, 20), st.integers(0, 8)).map(lambda r: (r[0], r[0] + r[1]))
directives = st.one_of(
    st.just(Directive(Mode.GLOBAL)),
    st.builds(Directive, st.just(Mode.LOCAL), st.just(()), st.one_of(st.none(), st.integers(1, 5000))),
    # overlapping, nested, repeated and past-the-end regions
    st.builds(Directive, st.just(Mode.FOCUS), st.lists(region, min_size=1, max_size=5).map(tuple)),
)


def assert_valid(blocks: list[int], length: int, bs: int) -> None:
    nb = num_blocks(length, bs)
    assert blocks, "a decode step never reads nothing"
    assert blocks == sorted(set(blocks)), "sorted and unique"
    assert all(isinstance(b, int) for b in blocks)
    assert 0 <= blocks[0] and blocks[-1] < nb, "within the cache"
    assert blocks[-1] == nb - 1, "the tail block (being written) is always read"
    assert 0 < tokens_in_blocks(blocks, length, bs) <= length


@FUZZ
@given(layout=layouts(), extra=st.integers(-599, 3000), cfg=configs, d=directives)
def test_plan_dac(layout, extra, cfg, d):
    length = max(1, layout.prompt_len + extra)
    bs = cfg.block_size
    blocks = plan_dac(d, layout, length, cfg)
    assert_valid(blocks, length, bs)
    if d.mode is Mode.GLOBAL:
        assert blocks == list(range(num_blocks(length, bs)))
        assert tokens_in_blocks(blocks, length, bs) == length
        return
    # everything the mode promises is read ...
    window = cfg.window if d.mode is Mode.FOCUS else (d.window or cfg.local_window)
    promised = [Span(0, cfg.sink_tokens), *layout.protected, Span(length - window, length)]
    if cfg.keep_preamble:
        promised.append(layout.preamble)
    if d.mode is Mode.FOCUS:
        promised += layout.section_spans(d.sections())
    clipped = [Span(max(0, s.start), min(s.end, length)) for s in promised]
    assert coverage(blocks, clipped, bs) == 1.0
    # ... and nothing else: each kept block touches a promised span or is the tail
    allowed = {b for s in clipped for b in span_blocks(s.start, s.end, length, bs)}
    allowed.add(num_blocks(length, bs) - 1)
    assert set(blocks) <= allowed
    if d.mode is Mode.FOCUS:  # focusing on more sections never reads less
        wider = Directive(Mode.FOCUS, d.regions + ((1, layout.num_sections or 1),))
        assert set(blocks) <= set(plan_dac(wider, layout, length, cfg))


def _state(layout: PromptLayout, d: Directive, length: int) -> SequenceState:
    return SequenceState(layout, d, length, max(0, length - layout.prompt_len - 1), 0)


policies = st.one_of(
    st.builds(FullPolicy), st.builds(DACPolicy),
    st.builds(StreamingPolicy, window=st.one_of(st.none(), st.integers(0, 3000))),
    st.builds(QuestPolicy, budget=st.floats(0.001, 1.0), dense_layers=st.integers(0, 3),
              budget_tokens=st.one_of(st.none(), st.integers(0, 5000))),
    st.builds(OraclePolicy, budget=st.floats(0.001, 1.0), dense_layers=st.integers(0, 3),
              budget_tokens=st.one_of(st.none(), st.integers(0, 5000))),
    st.sampled_from(["dac+safety", "quest+safety:budget=0.2,dense_layers=1",
                     "streaming+safety:window=40"]).map(get_policy),
)


@FUZZ
@given(policy=policies, layout=layouts(), extra=st.integers(1, 2000), cfg=configs, d=directives,
       heads=st.sampled_from([(1, 1), (4, 2), (4, 4), (6, 2)]), layer=st.integers(0, 4),
       seed=st.integers(0, 2**16))
def test_every_policy_plan_and_select(policy, layout, extra, cfg, d, heads, layer, seed):
    length = layout.prompt_len + extra
    bs = cfg.block_size
    policy.reset(1)
    base = policy.plan(_state(layout, d, length), cfg)
    assert_valid(base, length, bs)
    if isinstance(policy, FullPolicy) and not isinstance(policy, DACPolicy):
        assert base == list(range(num_blocks(length, bs)))
    h, hk = heads
    g = torch.Generator().manual_seed(seed)
    dim = 8
    query = torch.randn(h, dim, generator=g)
    keys = torch.randn(hk, length, dim, generator=g)
    keep = policy.select(layer, query, keys, base, cfg, dim ** -0.5)
    if not policy.query_aware:
        assert keep is None
        return
    nb = num_blocks(length, bs)
    if keep is None:  # a wrapper may answer "the base plan for every head" when it reads all
        assert base == list(range(nb))
        return
    assert keep.dtype == torch.bool and tuple(keep.shape) == (hk, nb)
    policy = getattr(policy, "inner", policy)  # a wrapper's selection is its inner policy's
    for row in keep:
        kept = row.nonzero().flatten().tolist()
        assert_valid(kept, length, bs)
        assert set(base) <= set(kept)
        if layer < policy.dense_layers:
            assert len(kept) == nb
        else:
            assert len(kept) == max(len(base), min(nb, policy.budget_blocks(length, cfg)))


@pytest.mark.parametrize("cls", [QuestPolicy, OraclePolicy])
def test_select_survives_extreme_keys(cls):
    """Huge, tiny and tied keys: selection stays a valid budgeted superset of the base plan."""
    cfg = PlanConfig(block_size=4, sink_tokens=4)
    layout = PromptLayout.plain(30, [(2, 10), (10, 30)])
    policy = cls(budget=0.3, dense_layers=0)
    base = policy.plan(_state(layout, Directive(Mode.GLOBAL), 37), cfg)
    for keys in (torch.full((2, 37, 8), 1e30), torch.zeros(2, 37, 8), torch.full((2, 37, 8), -1e-30)):
        keep = policy.select(0, torch.ones(4, 8), keys, base, cfg, 8 ** -0.5)
        for row in keep:
            kept = row.nonzero().flatten().tolist()
            assert_valid(kept, 37, 4)
            assert len(kept) == max(len(base), min(10, policy.budget_blocks(37, cfg)))


spec_text = st.one_of(
    st.text(max_size=30),
    st.tuples(st.sampled_from(["full", "dac", "streaming", "quest", "oracle", "QUEST ", "nope"]),
              st.sampled_from(["", ":"]),
              st.lists(st.tuples(st.sampled_from(["budget", "budget_tokens", "window",
                                                  "dense_layers", "x", ""]),
                                 st.sampled_from(["=", "==", ""]),
                                 st.sampled_from(["0", "1", "0.2", "-1", "1e5", "nan", "inf",
                                                  "2.5", "abc", "", "3000"])),
                       max_size=3)).map(lambda t: t[0] + t[1] + ",".join("".join(o) for o in t[2])),
)


@FUZZ
@given(spec_text)
@example("STREAMING:window=.1")  # found by fuzzing: a float window
def test_get_policy_parses_or_refuses_cleanly(spec):
    try:
        policy = get_policy(spec)
    except ValueError as e:
        assert str(e)
        return
    assert isinstance(policy, Policy)
    for key in ("budget_tokens", "window", "dense_layers"):
        v = getattr(policy, key, None)
        assert v is None or v >= 0
    if hasattr(policy, "budget"):
        assert 0 < policy.budget <= 1
    cfg = PlanConfig(block_size=16)
    layout = PromptLayout.plain(100, [(10, 50), (50, 90)])
    assert_valid(policy.plan(_state(layout, Directive(Mode.GLOBAL), 130), cfg), 130, 16)
    assert math.isfinite(float(getattr(policy, "budget", 0.0)))


budgets = st.one_of(st.floats(1e-6, 1.0), st.sampled_from([1, 0.1, 0.2, 1e-05]))
counts = st.one_of(st.none(), st.integers(0, 100_000))
base_policies = st.one_of(
    st.builds(FullPolicy), st.builds(DACPolicy),
    st.builds(StreamingPolicy, window=counts),
    *(st.builds(cls, budget=budgets, budget_tokens=counts, dense_layers=st.integers(0, 64))
      for cls in (QuestPolicy, OraclePolicy)),
)
any_policy = st.one_of(base_policies, st.builds(
    SafetyNet, inner=base_policies, ratio=st.one_of(st.floats(1e-6, 1.0), st.just(1)),
    horizon=st.integers(1, 64), history=st.integers(1, 64)))


@FUZZ
@given(any_policy)
def test_every_policy_spec_round_trips(policy):
    """What an engine or a report writes (``policy.spec()``) reads back as the same policy."""
    again = parse_policy(policy.spec())
    assert again == policy and again.spec() == policy.spec()
    assert again.capabilities == policy.capabilities


def test_coverage_of_empty_and_inverted_spans():
    """An inverted span used to count negative hits (found by fuzzing): it holds no tokens."""
    assert coverage([0], [Span(2, 1)], 3) == 1.0
    assert coverage([0], [Span(2, 1), Span(0, 3)], 3) == 1.0
    assert coverage([1], [Span(5, 5), Span(0, 6)], 3) == 0.5


@pytest.mark.parametrize("spec", ["streaming:window=.1", "streaming:window=2.5",
                                  "quest:budget_tokens=1.5", "quest:dense_layers=0.5"])
def test_integer_options_refuse_fractions(spec):
    """'streaming:window=.1' used to build a policy whose plan() raised TypeError inside the
    engine (found by fuzzing): integer options now refuse fractions up front."""
    with pytest.raises(ValueError, match="integer"):
        get_policy(spec)
