import pytest
from hypothesis import given
from hypothesis import strategies as st

from dac.planning import PlanConfig, coverage, plan_dac, tokens_in_blocks
from dac.planning.blocks import normalize, span_blocks
from dac.protocol import Directive, Mode, PromptLayout, Span

# A hand-made layout: 100 prompt tokens, block size 16.
#   preamble [0, 20), sections S1 [20, 40) S2 [40, 60) S3 [60, 90), question [90, 100)
LAYOUT = PromptLayout.plain(100, sections=[(20, 40), (40, 60), (60, 90)], question=(90, 100))
CFG = PlanConfig(block_size=16, sink_tokens=4, keep_preamble=False, window=8, local_window=24)


def test_span_blocks_round_outward():
    assert list(span_blocks(20, 40, 100, 16)) == [1, 2]  # tokens 20..39 live in blocks 1 and 2
    assert list(span_blocks(32, 48, 100, 16)) == [2]
    assert list(span_blocks(95, 120, 100, 16)) == [5, 6]  # clipped to the cache
    assert list(span_blocks(-5, 0, 100, 16)) == []


def test_global_keeps_everything():
    assert plan_dac(Directive(Mode.GLOBAL), LAYOUT, 105, CFG) == list(range(7))


def test_focus_plan_by_hand():
    # length 105: blocks 0..6, tail block 6 = [96, 105)
    d = Directive(Mode.FOCUS, ((2, 2),))
    kept = plan_dac(d, LAYOUT, 105, CFG)
    # sink [0,4) -> 0; S2 [40,60) -> 2,3; question [90,100) -> 5,6; window [97,105) -> 6
    assert kept == [0, 2, 3, 5, 6]
    # tokens read: 16 + 16 + 16 + 16 + 9 (partial tail) = 73 of 105
    assert tokens_in_blocks(kept, 105, 16) == 73


@given(st.lists(st.integers(-3, 12)) | st.builds(lambda n: list(range(n)), st.integers(0, 12)),
       st.integers(0, 150), st.sampled_from([1, 7, 16]))
def test_tokens_in_blocks_equals_the_per_block_sum(blocks, length, bs):
    # the scan-based count (kept sets within the cache) against the plain per-block sum,
    # for any list: duplicates, unsorted, negative or past the cache
    want = sum(max(0, min(bs, length - b * bs)) for b in blocks)
    assert tokens_in_blocks(blocks, length, bs) == want
    assert tokens_in_blocks(iter(blocks), length, bs) == want
    assert tokens_in_blocks(tuple(blocks), length, bs) == want


def test_focus_keeps_preamble_when_asked():
    cfg = PlanConfig(block_size=16, sink_tokens=4, keep_preamble=True, window=8)
    kept = plan_dac(Directive(Mode.FOCUS, ((3, 3),)), LAYOUT, 100, cfg)
    # preamble [0,20) -> 0,1; S3 [60,90) -> 3,4,5; question -> 5,6; window [92,100) -> 5,6
    assert kept == [0, 1, 3, 4, 5, 6]


def test_local_window_default_and_explicit():
    assert plan_dac(Directive(Mode.LOCAL), LAYOUT, 160, CFG) == [0, 5, 6, 8, 9]
    # explicit window of 40 tokens: [120, 160) -> blocks 7, 8, 9
    assert plan_dac(Directive(Mode.LOCAL, window=40), LAYOUT, 160, CFG) == [0, 5, 6, 7, 8, 9]


def test_plan_always_holds_tail_and_is_sorted_unique():
    for length in range(1, 200, 7):
        for d in (Directive(Mode.LOCAL, window=1), Directive(Mode.FOCUS, ((1, 3),))):
            kept = plan_dac(d, LAYOUT, length, CFG)
            nb = -(-length // 16)
            assert kept == sorted(set(kept)) and kept[-1] == nb - 1 and kept[0] >= 0


def test_normalize_and_coverage():
    assert normalize([5, 1, 1, 99, -3], 50, 16) == [1, 3]
    assert coverage([2], [Span(40, 50)], 16) == pytest.approx(8 / 10)
    assert coverage([], [], 16) == 1.0


@pytest.mark.parametrize("kwargs", [{"block_size": 0}, {"window": -1}, {"sink_tokens": -1}])
def test_bad_config(kwargs):
    with pytest.raises(ValueError):
        PlanConfig(**kwargs)


def test_keep_response_keeps_everything_generated_in_every_mode():
    from dac.protocol.context import PromptLayout
    from dac.protocol.grammar import Directive, Mode

    lay = PromptLayout.plain(640, [(64, 320), (320, 576)], (576, 640))
    cfg = PlanConfig(block_size=64, sink_tokens=16, keep_preamble=False, window=64,
                     local_window=64, keep_response=True)
    length = 640 + 300  # 300 generated tokens: blocks 10..14
    for d in (Directive(Mode.LOCAL), Directive(Mode.FOCUS, ((1, 1),))):
        kept = plan_dac(d, lay, length, cfg)
        assert set(range(10, 15)) <= set(kept) and 0 in kept and 9 in kept
    assert plan_dac(Directive(Mode.LOCAL), lay, length, cfg) == [0, 9, 10, 11, 12, 13, 14]
    off = PlanConfig(block_size=64, sink_tokens=16, keep_preamble=False, window=64,
                     local_window=64)
    assert plan_dac(Directive(Mode.LOCAL), lay, length, off) == [0, 9, 13, 14]
