"""Policies as objects: capabilities asked once, validation in the classes, specs round-trip."""

import pytest

from dac.planning import (POLICIES, Capability, DACPolicy, FullPolicy, OraclePolicy, QuestPolicy,
                          SafetyNet, StreamingPolicy, UnsupportedPolicyError, check_policy,
                          get_policy, parse_policy)

SPECS = ["full", "dac", "streaming", "streaming:window=512", "quest", "quest:budget=0.2",
         "quest:budget_tokens=640,dense_layers=0", "oracle:budget=0.05", "dac+safety",
         "dac+safety:ratio=0.4,horizon=8", "quest+safety:budget=0.2,ratio=0.5",
         "streaming+safety:window=64,history=4"]


@pytest.mark.parametrize("spec", SPECS)
def test_spec_round_trips(spec):
    policy = parse_policy(spec)
    again = parse_policy(policy.spec())
    assert again == policy and again.spec() == policy.spec()


def test_spec_writes_only_options_that_differ():
    assert DACPolicy().spec() == "dac"
    assert QuestPolicy(budget=0.2).spec() == "quest:budget=0.2"
    assert SafetyNet(inner=StreamingPolicy(window=128), ratio=0.3).spec() == \
        "streaming+safety:window=128,ratio=0.3"


@pytest.mark.parametrize("policy, caps", [
    (FullPolicy(), set()), (DACPolicy(), {Capability.DIRECTIVES}), (StreamingPolicy(), set()),
    (QuestPolicy(), {Capability.BLOCK_BOUNDS}), (OraclePolicy(), {Capability.KEYS}),
    (SafetyNet(inner=QuestPolicy()), {Capability.BLOCK_BOUNDS, Capability.LOGITS,
                                      Capability.DIRECTIVES}),
])
def test_capabilities(policy, caps):
    assert {c for c in Capability if policy.requires(c)} == caps
    assert policy.query_aware == bool(caps & {Capability.BLOCK_BOUNDS, Capability.KEYS})
    assert policy.reads_directives == (Capability.DIRECTIVES in caps)


@pytest.mark.parametrize("make, message", [
    (lambda: QuestPolicy(budget=2), "budget out of range"),
    (lambda: QuestPolicy(budget=0), "budget out of range"),
    (lambda: OraclePolicy(dense_layers=-1), "dense_layers out of range"),
    (lambda: QuestPolicy(budget_tokens=1.5), "needs an integer"),
    (lambda: StreamingPolicy(window=-3), "window out of range"),
    (lambda: SafetyNet(ratio=0), "ratio"),
    (lambda: SafetyNet(inner=SafetyNet()), "wraps one policy"),
])
def test_each_policy_validates_itself(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_net_forwards_nothing():
    net = SafetyNet(inner=QuestPolicy(budget=0.3))
    assert not hasattr(net, "budget") and net.inner.budget == 0.3


def test_check_policy_names_what_is_missing():
    check_policy(DACPolicy(), [Capability.DIRECTIVES], engine="x", hint="h")
    with pytest.raises(UnsupportedPolicyError, match="'dac\\+safety' needs each step's logits; h"):
        check_policy(get_policy("dac+safety"), [Capability.DIRECTIVES], engine="x", hint="h")
    with pytest.raises(UnsupportedPolicyError, match="query-aware"):
        check_policy(QuestPolicy(), [Capability.DIRECTIVES], engine="x", hint="h")
    with pytest.raises(UnsupportedPolicyError, match="analysis only"):
        check_policy(OraclePolicy(), [Capability.BLOCK_BOUNDS], engine="x", hint="h")


def test_get_policy_passes_objects_through():
    p = QuestPolicy()
    assert get_policy(p) is p
    assert set(POLICIES) == {"full", "dac", "streaming", "quest", "oracle"}


@pytest.mark.parametrize("spec, message", [
    ("nope", "unknown policy"), ("quest:bogus=1", "bad option"),
    ("quest:budget=x", "needs a number"), ("quest:dense_layers=1.5", "needs an integer"),
    ("dac+other", "unknown policy wrapper"), ("dac+safety+safety", "wraps a policy once"),
    ("dac+safety:ratio=x", "needs a number"),
])
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_policy(spec)
