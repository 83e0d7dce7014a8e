import pytest
import torch

from dac.planning import (PlanConfig, QuestPolicy, SequenceState, StreamingPolicy, get_policy,
                          num_blocks)
from dac.protocol import GLOBAL, Directive, Mode, PromptLayout

LAYOUT = PromptLayout.plain(100, sections=[(20, 40), (40, 60), (60, 90)], question=(90, 100))
CFG = PlanConfig(block_size=16, sink_tokens=16, window=16, local_window=32)


def state(length, d=GLOBAL):
    return SequenceState(LAYOUT, d, length, length - 100)


def test_full_ignores_directives():
    p = get_policy("full")
    assert p.plan(state(120, Directive(Mode.LOCAL)), CFG) == list(range(8))


def test_dac_follows_directives():
    p = get_policy("dac")
    assert p.plan(state(120), CFG) == list(range(8))
    assert p.plan(state(120, Directive(Mode.FOCUS, ((1, 1),))), CFG) == [0, 1, 2, 5, 6, 7]


def test_streaming_sinks_and_window():
    assert StreamingPolicy().plan(state(200), CFG) == [0, 10, 11, 12]
    assert get_policy("streaming:window=48").plan(state(200), CFG) == [0, 9, 10, 11, 12]


def test_quest_selects_blocks_with_highest_bound():
    torch.manual_seed(0)
    hk, n, d = 2, 160, 8
    keys = torch.randn(hk, n, d) * 0.1
    query = torch.zeros(2 * hk, d)
    query[:, 0] = 1.0
    keys[0, 70:75, 0] = 5.0  # head 0: block 4 has a large key along the query direction
    keys[1, 130:131, 0] = 5.0  # head 1: block 8
    p = QuestPolicy(budget_tokens=48, dense_layers=0)
    base = p.plan(state(n), CFG)
    keep = p.select(3, query, keys, base, CFG, 1.0)
    assert keep.shape == (hk, num_blocks(n, 16))
    assert keep[0, 4] and keep[1, 8]
    assert keep[:, 0].all() and keep[:, -1].all()  # sink and tail forced
    assert (keep.sum(-1) == 3).all()  # budget 48 tokens = 3 blocks
    assert QuestPolicy(dense_layers=2).select(1, query, keys, base, CFG, 1.0).all()


def test_oracle_picks_true_attention_mass():
    torch.manual_seed(1)
    hk, n, d = 1, 128, 4
    keys = torch.randn(hk, n, d)
    query = torch.randn(2, d)
    p = get_policy("oracle:budget_tokens=32")
    keep = p.select(0, query, keys, [0, 7], CFG, 0.5)
    probs = torch.softmax(query @ keys[0].T * 0.5, -1).sum(0).view(8, 16).sum(-1)
    probs[[0, 7]] = -1
    assert keep[0].sum() == 2  # the budget is already spent on sink + tail
    keep = get_policy("oracle:budget_tokens=48").select(0, query, keys, [0, 7], CFG, 0.5)
    assert keep[0, probs.argmax()]


@pytest.mark.parametrize("spec", ["nope", "quest:budget=2", "quest:foo=1", "quest:budget=x",
                                  "streaming:window=-4", "quest:budget"])
def test_bad_policy_specs(spec):
    with pytest.raises(ValueError):
        get_policy(spec)
