"""Configuration parsing, record definitions and metric aggregation on hand-made inputs."""

from __future__ import annotations

import pytest

from dac.eval.config import EvalConfig, parse_length, parse_lengths, parse_policies, policy_slug
from dac.eval.metrics import cell_metrics, summarize
from dac.eval.records import (
    adherent,
    answer_from,
    compress_blocks,
    directive_match,
    evidence_recall,
    expand_blocks,
    final_directive,
)
from dac.protocol.grammar import Directive, Mode, ProtocolEvent
from dac.runtime import GenerationResult, StepRecord


@pytest.mark.parametrize("text,want", [("4k", 4096), ("1.5k", 1536), ("700", 700),
                                       ("128K", 131072), ("1m", 1048576)])
def test_parse_length(text, want):
    assert parse_length(text) == want


@pytest.mark.parametrize("bad", ["", "4x", "-1", "10", "k"])
def test_parse_length_rejects(bad):
    with pytest.raises(ValueError):
        parse_length(bad)


def test_parse_lists():
    assert parse_lengths("4k,8k,4k") == [4096, 8192]
    assert parse_policies("full, DAC,streaming,quest:budget=0.2,dense_layers=0,oracle") == [
        "full", "dac", "streaming", "quest:budget=0.2,dense_layers=0", "oracle"]
    assert parse_policies("quest:budget=0.1+dense_layers=0") == [
        "quest:budget=0.1,dense_layers=0"]
    with pytest.raises(ValueError, match="unknown policy"):
        parse_policies("full,nope")
    with pytest.raises(ValueError):
        parse_policies("quest:budget=2")
    assert policy_slug("quest:budget=0.2,dense_layers=0") == "quest-budget=0.2-dense_layers=0"


def test_config_validation():
    c = EvalConfig(model="m", tasks="retrieval", lengths="1k", policies="full,dac")
    assert c.tasks[0] == "niah_single_noise" and c.lengths == [1024]
    assert c.new_tokens("passkey") > 0 and c.seeds() == list(range(10))
    assert EvalConfig.from_dict(c.to_dict()) == c
    assert c.bound_sections and c.identity()["bound_sections"] is True
    old = {k: v for k, v in c.to_dict().items() if k != "bound_sections"}
    assert EvalConfig.from_dict(old).bound_sections is False  # runs from before the bound
    with pytest.raises(ValueError, match="samples"):
        EvalConfig(model="m", tasks="all", lengths="1k", policies="full", samples=0)
    with pytest.raises(ValueError, match="block_size"):
        EvalConfig(model="m", tasks="all", lengths="1k", policies="full",
                   plan={"block_size": 0})


def _ev(step: int, ok: bool = True) -> ProtocolEvent:
    d = Directive(Mode.FOCUS, ((2, 2),))
    if ok:
        return ProtocolEvent(step, "directive", "[[focus S2]]", d, d)
    return ProtocolEvent(step, "garbage", "[[zoom]]", None, Directive(Mode.GLOBAL))


def _result(events, recalls) -> GenerationResult:
    steps = [StepRecord(i, 100 + i, 50.0, r) for i, r in enumerate(recalls)]
    return GenerationResult("x", "x", events, steps)


def test_evidence_recall_counts_steps_from_the_first_directive():
    # steps 0..3 before the directive (global, recall 1), then focus misses half the evidence
    r = _result([_ev(4)], [1, 1, 1, 1, 0.5, 0.5, 0.5])
    assert answer_from(r) == 4
    assert evidence_recall(r) == pytest.approx(0.5)
    # no well-formed directive: every step counts
    r = _result([_ev(1, ok=False)], [1.0, 0.0])
    assert answer_from(r) == 0 and evidence_recall(r) == pytest.approx(0.5)
    # a directive at the very last token: the step that processes it is the answer step
    r = _result([_ev(2)], [1.0, 1.0, 0.25])
    assert evidence_recall(r) == pytest.approx(0.25)
    # no evidence given, or no decode step
    assert evidence_recall(_result([], [None, None])) is None
    assert evidence_recall(_result([], [])) is None


def test_adherence():
    assert adherent(_result([_ev(0)], [1.0]))
    assert not adherent(_result([], [1.0]))
    assert not adherent(_result([_ev(0), _ev(3, ok=False)], [1.0]))


def test_mode_match_reads_the_declaration_the_answer_is_written_under():
    """A lead-in answer declares local, then global, then its focus: the last well-formed
    declaration is the one judged; a trailing malformed one does not replace it."""
    def ev(step, d):
        return ProtocolEvent(step, "directive", d.render(), d, d)

    focus = Directive(Mode.FOCUS, ((2, 2),))
    lead_in = _result([ev(0, Directive(Mode.LOCAL)), ev(9, Directive(Mode.GLOBAL)),
                       ev(10, focus), _ev(14, ok=False)], [1.0] * 15)
    assert final_directive(lead_in) == focus
    assert final_directive(_result([_ev(0, ok=False)], [1.0])) is None
    assert final_directive(_result([], [1.0])) is None


def test_directive_match_judges_the_first_the_last_and_all_focuses():
    """The model card's exact rates: the first declaration (well-formed or not), the last
    one, and the union of every well-formed focus, each against the ideal directive."""
    def ev(d):
        return ProtocolEvent(0, "directive", d.render(), d, d)

    want = Directive(Mode.FOCUS, ((2, 2), (5, 5)))
    s2, s5 = Directive(Mode.FOCUS, ((2, 2),)), Directive(Mode.FOCUS, ((5, 5),))
    assert directive_match(want, [ev(want)]) == {
        "first_exact": True, "final_exact": True, "focus_union_exact": True,
        "first_covers": True}
    # a stepwise answer: one section per step, global between; exact only as a union
    assert directive_match(want, [ev(s2), ev(Directive(Mode.GLOBAL)), ev(s5)]) == {
        "first_exact": False, "final_exact": False, "focus_union_exact": True,
        "first_covers": False}
    # a malformed first declaration: nothing to cover, not exact though the last one is
    assert directive_match(want, [_ev(0, ok=False), ev(want)]) == {
        "first_exact": False, "final_exact": True, "focus_union_exact": True,
        "first_covers": None}
    assert directive_match(want, []) == {
        "first_exact": False, "final_exact": False, "focus_union_exact": False,
        "first_covers": None}
    # not a focus task: no union, no coverage
    glob = Directive(Mode.GLOBAL)
    assert directive_match(glob, [ev(glob)]) == {
        "first_exact": True, "final_exact": True, "focus_union_exact": False,
        "first_covers": None}


def test_blocks_roundtrip():
    steps = [[0, 1, 2, 7], [0, 1, 2, 7], [0, 1, 2, 7, 8], [5], [5]]
    runs = compress_blocks(steps)
    assert runs == [[0, 1, [[0, 3], [7, 8]]], [2, 2, [[0, 3], [7, 9]]], [3, 4, [[5, 6]]]]
    assert expand_blocks(runs) == steps
    assert compress_blocks([]) == [] and expand_blocks([]) == []


def _rec(score, read, full, recall, adh=True, mode=True, policy="dac"):
    return {"task": "passkey", "family": "retrieval", "length": 1024, "policy": policy,
            "score": score, "kv": {"read": read, "full": full, "per_step": [1, 1]},
            "evidence_recall": recall, "adherent": adh, "mode_match": mode, "wall_s": 0.5,
            "prompt_tokens": 1000}


def test_cell_metrics_ratio_of_sums():
    c = cell_metrics([_rec(1.0, 10, 100, 1.0), _rec(0.0, 90, 100, None, adh=False)])
    assert c["accuracy"] == 0.5 and c["n"] == 2
    assert c["cost"] == pytest.approx(0.5)  # (10 + 90) / (100 + 100)
    assert c["evidence_recall"] == 1.0  # samples without evidence recall are left out
    assert c["adherence"] == 0.5 and c["wall_s"] == 1.0
    assert c["accuracy_se"] == pytest.approx(0.5)


def test_summaries_weigh_tasks_equally():
    a = cell_metrics([_rec(1.0, 10, 100, 1.0)])
    b = cell_metrics([_rec(0.0, 50, 100, 0.5)] * 3)
    b["task"] = "kv_json"
    (row,) = summarize([a, b], ("family", "policy"))
    assert row["accuracy"] == 0.5 and row["cost"] == pytest.approx(0.3)
    assert row["n"] == 4 and row["cells"] == 2


def test_safety_fired_share_only_for_policies_with_a_net():
    assert cell_metrics([_rec(1.0, 10, 100, 1.0)])["safety_fired"] is None
    recs = [_rec(1.0, 10, 100, 1.0, policy="dac+safety") for _ in range(4)]
    for r, fired in zip(recs, [True, False, False, True]):
        r["policy_report"] = {"safety": {"fired": fired}}
    c = cell_metrics(recs)
    assert c["safety_fired"] == 0.5
    assert summarize([c], ("policy",))[0]["safety_fired"] == 0.5


def test_weights_fingerprint_follows_the_bytes_not_the_path(tmp_path):
    from dac.models import FINGERPRINT_BYTES, weights_fingerprint

    a = tmp_path / "a"
    a.mkdir()
    (a / "config.json").write_text("{}")
    blob = bytearray(3 * FINGERPRINT_BYTES)
    (a / "model.safetensors").write_bytes(blob)
    (a / "tokenizer.json").write_text("{}")
    fp = weights_fingerprint(a)
    assert len(fp) == 16
    b = tmp_path / "b"
    b.mkdir()
    for f in a.iterdir():
        (b / f.name).write_bytes(f.read_bytes())
    assert weights_fingerprint(b) == fp  # a copy elsewhere is the same model
    (b / "tokenizer.json").write_text('{"x": 1}')
    assert weights_fingerprint(b) == fp  # only weights and config count
    for at in (10, len(blob) - 10):  # the first or last MiB changed: another model
        changed = bytearray(blob)
        changed[at] = 1
        (b / "model.safetensors").write_bytes(changed)
        assert weights_fingerprint(b) != fp
    (b / "model.safetensors").write_bytes(blob)
    (b / "config.json").write_text('{"layers": 2}')
    assert weights_fingerprint(b) != fp
    assert weights_fingerprint(tmp_path / "missing") == ""
