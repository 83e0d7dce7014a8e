"""Policies as objects: capabilities asked once, validation in the classes, specs round-trip."""

import pickle

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


@pytest.mark.parametrize("policy", [
    FullPolicy(), StreamingPolicy(window=0), QuestPolicy(budget=1 / 3, budget_tokens=100),
    QuestPolicy(budget=1e-05), OraclePolicy(budget=1, dense_layers=3),
    SafetyNet(inner=OraclePolicy(dense_layers=1), ratio=1, history=3),
    SafetyNet(inner=StreamingPolicy(), horizon=2.0),
])
def test_spec_of_constructed_policies_round_trips(policy):
    assert parse_policy(policy.spec()) == policy


def test_net_options_go_to_the_net():
    net = parse_policy("quest+safety:budget=0.2,ratio=0.4,dense_layers=0,history=3")
    assert net == SafetyNet(inner=QuestPolicy(budget=0.2, dense_layers=0), ratio=0.4, history=3)
    assert net.spec() == "quest+safety:budget=0.2,dense_layers=0,ratio=0.4,history=3"


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
    (lambda: QuestPolicy(budget="0.2"), "budget out of range"),
    (lambda: QuestPolicy(budget=True), "budget out of range"),
    (lambda: QuestPolicy(dense_layers=1.5), "needs an integer"),
    (lambda: SafetyNet(ratio=0), "ratio"),
    (lambda: SafetyNet(ratio=1.5), "ratio must be in"),
    (lambda: SafetyNet(horizon=0), "at least 1"),
    (lambda: SafetyNet(history=2.5), "'history' of '\\+safety' needs an integer"),
    (lambda: SafetyNet(inner="dac"), "wraps one policy"),
    (lambda: SafetyNet(inner=SafetyNet()), "wraps one policy"),
])
def test_each_policy_validates_itself(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_validation_normalises_whole_numbers():
    assert QuestPolicy(budget=1, budget_tokens=64.0).budget_tokens == 64
    assert isinstance(QuestPolicy(budget=1).budget, float)
    net = SafetyNet(ratio=1, horizon=3.0)
    assert (net.ratio, net.horizon) == (1.0, 3) and isinstance(net.horizon, int)


def test_the_net_forwards_nothing():
    net = SafetyNet(inner=QuestPolicy(budget=0.3))
    assert not hasattr(net, "budget") and net.inner.budget == 0.3
    assert not hasattr(net, "dense_layers") and not hasattr(net, "budget_blocks")
    assert "__getattr__" not in vars(SafetyNet)
    assert net.name == "quest+safety" and net.requires(Capability.BLOCK_BOUNDS)


def test_check_policy_names_what_is_missing():
    check_policy(DACPolicy(), [Capability.DIRECTIVES], engine="x", hint="h")
    with pytest.raises(UnsupportedPolicyError, match="'dac\\+safety' needs each step's logits; h"):
        check_policy(get_policy("dac+safety"), [Capability.DIRECTIVES], engine="x", hint="h")
    with pytest.raises(UnsupportedPolicyError, match="query-aware"):
        check_policy(QuestPolicy(), [Capability.DIRECTIVES], engine="x", hint="h")
    with pytest.raises(UnsupportedPolicyError, match="analysis only"):
        check_policy(OraclePolicy(), [Capability.BLOCK_BOUNDS], engine="x", hint="h")
    check_policy(OraclePolicy(), set(Capability), engine="x", hint="h")


@pytest.mark.parametrize("policy, supported, message", [
    (parse_policy("quest+safety"), [Capability.DIRECTIVES],
     "policy 'quest+safety' needs each step's logits; hint"),
    (QuestPolicy(), [Capability.DIRECTIVES], "policy 'quest' is query-aware (per-head block "
     "scores); hint"),
    (OraclePolicy(), [Capability.DIRECTIVES], "policy 'oracle' is query-aware (per-head block "
     "scores) and reads every key to choose blocks (analysis only); hint"),
    (DACPolicy(), [], "policy 'dac' reads the model's directives; hint"),
])
def test_check_policy_messages(policy, supported, message):
    with pytest.raises(UnsupportedPolicyError) as info:
        check_policy(policy, supported, engine="eng", hint="hint")
    e = info.value
    assert str(e) == message and e.policy_name == policy.name and e.engine == "eng"
    again = pickle.loads(pickle.dumps(e))
    assert str(again) == message and again.capability is e.capability


def test_get_policy_passes_objects_through():
    p = QuestPolicy()
    assert get_policy(p) is p
    assert get_policy("quest:budget=0.2") == QuestPolicy(budget=0.2)
    assert set(POLICIES) == {"full", "dac", "streaming", "quest", "oracle"}


def test_specs_are_parsed_in_one_place():
    """The policy classes know nothing of strings: spec.py parses, dac.planning exports."""
    import dac.planning
    from dac.planning import policies, spec

    assert dac.planning.get_policy is spec.get_policy
    assert not hasattr(policies, "get_policy") and not hasattr(policies, "get_wrapped")
    assert policies.POLICIES is POLICIES


@pytest.mark.parametrize("spec, message", [
    ("nope", "unknown policy"), ("quest:bogus=1", "bad option"),
    ("quest:budget=x", "needs a number"), ("quest:dense_layers=1.5", "needs an integer"),
    ("dac+other", "unknown policy wrapper"), ("dac+safety+safety", "wraps a policy once"),
    ("dac+safety:ratio=x", "needs a number"), ("dac+safety:horizon=2.5", "needs an integer"),
    ("dac+safety:ratio=2", "ratio must be in"), ("dac+safety:budget=0.2", "bad option"),
    ("quest:budget=7", "out of range"), ("streaming:window=-1", "out of range"),
])
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_policy(spec)
