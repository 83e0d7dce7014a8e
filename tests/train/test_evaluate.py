"""``python -m dac.train.evaluate``: the model card's evaluation, on the shipped model (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dac.train.evaluate import evaluate

ASSET = Path(__file__).resolve().parents[2] / "src" / "dac" / "assets" / "dac-tiny"


@pytest.mark.slow
def test_cells_run_dac_full_then_the_same_cost_baselines():
    res = evaluate(ASSET, tasks=["passkey"], lengths=[512], n=2, batch=2, device="cpu",
                   log=lambda *_: None)
    policies = {r["policy"].split(":")[0] for r in res["records"]}
    assert policies == {"full", "dac", "streaming", "quest"}
    rows = {r["policy"]: r for r in res["summary"]}
    assert rows["full"]["kv_fraction"] == 1.0 and rows["dac"]["kv_fraction"] < 1.0
    # the baselines run at DAC's measured budget: about DAC's cost, not full attention's
    assert rows["quest"]["kv_fraction"] < 1.0 and rows["streaming"]["kv_fraction"] < 1.0
    for row in rows.values():
        assert 0.0 <= row["exact_directive"] <= row["mode_adherence"] <= 1.0


@pytest.mark.slow
def test_sections_cut_every_context_alike():
    """``sections=k``: the prompts have k sections, so the ideal directives range over them."""
    res = evaluate(ASSET, tasks=["niah_single_noise"], lengths=[512], n=3, batch=3,
                   device="cpu", same_cost=False, sections=8, log=lambda *_: None)
    from transformers import AutoTokenizer

    from dac.tasks import make_sample

    tok = AutoTokenizer.from_pretrained(ASSET, local_files_only=True)
    for r in res["records"]:
        seed = int(r["id"].rsplit("-", 1)[1])
        assert len(make_sample("niah_single_noise", tok, 512, seed, 8).sections) == 8
    assert len(res["records"]) == 6  # dac and full, 3 each


def test_an_impossible_section_count_is_a_usage_error(tmp_path, capsys):
    from dac.train.evaluate import main

    with pytest.raises(SystemExit) as e:
        main([str(ASSET), "--sections", "0", "--out", str(tmp_path / "x.json")])
    assert e.value.code == 2 and "--sections must lie in" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--tasks", "nonsense"], "unknown task 'nonsense'"),
    (["--lengths", "4k"], "invalid literal"),
])
def test_bad_tasks_or_lengths_are_usage_errors(tmp_path, capsys, args, message):
    from dac.train.evaluate import main

    with pytest.raises(SystemExit) as e:
        main([str(ASSET), *args, "--out", str(tmp_path / "x.json")])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_model_or_results_to_merge_are_required(tmp_path, capsys):
    from dac.train.evaluate import main

    for args, message in (([], "a model directory is required"),
                          ([str(ASSET), "--merge", "a.json"], "--merge takes result files"),
                          (["--merge", str(tmp_path / "missing.json")], "cannot merge")):
        with pytest.raises(SystemExit) as e:
            main([*args, "--out", str(tmp_path / "x.json")])
        assert e.value.code == 2 and message in capsys.readouterr().err


def _record(rid: str, policy: str, score: float) -> dict:
    return {"id": rid, "task": rid.split("-")[0], "family": "retrieval", "length": 512,
            "policy": policy, "score": score, "fraction": 1.0 if policy == "full" else 0.2,
            "mode_ok": True, "exact": score > 0}


def test_merge_joins_runs_and_a_later_record_replaces_an_earlier_one(tmp_path):
    import json

    from dac.train.evaluate import main

    plan = {"block_size": 64}
    a = {"records": [_record("passkey-512-0", "dac", 0.0), _record("passkey-512-0", "full", 1.0)],
         "plan": plan}
    b = {"records": [_record("passkey-512-0", "dac", 1.0), _record("passkey-512-1", "dac", 1.0)],
         "plan": plan}
    for name, res in (("a.json", a), ("b.json", b)):
        (tmp_path / name).write_text(json.dumps(res))
    out = tmp_path / "m.json"
    assert main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                 "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert len(merged["records"]) == 3
    rows = {r["policy"]: r for r in merged["summary"]}
    assert rows["dac"]["n"] == 2 and rows["dac"]["accuracy"] == 1.0
    assert rows["full"]["n"] == 1


def test_a_remeasured_same_cost_baseline_replaces_the_old_one_whatever_its_budget():
    """Re-measured, a cell's DAC budget may change, and with it the baselines' parameters:
    the new streaming record replaces the old one instead of sitting beside it."""
    from dac.train.evaluate import merge

    plan = {"block_size": 64}
    a = {"records": [_record("passkey-512-0", "streaming:window=300", 0.0)], "plan": plan}
    b = {"records": [_record("passkey-512-0", "streaming:window=240", 1.0)], "plan": plan}
    merged = merge([a, b])
    assert [r["policy"] for r in merged["records"]] == ["streaming:window=240"]
    assert merged["summary"][0]["accuracy"] == 1.0


def test_the_summary_says_whether_a_cell_was_decoded_with_the_section_bound():
    from dac.train.evaluate import summarize

    old = _record("passkey-512-0", "dac", 1.0)  # written before the bound existed
    on = {**_record("passkey-512-1", "dac", 1.0), "bound_sections": True}
    assert summarize([old])[0]["bound_sections"] is False
    assert summarize([on])[0]["bound_sections"] is True
    assert summarize([old, on])[0]["bound_sections"] == "mixed"


@pytest.mark.slow
def test_records_name_the_bound_only_for_policies_that_read_directives():
    on = evaluate(ASSET, tasks=["passkey"], lengths=[512], n=1, batch=1, device="cpu",
                  same_cost=False, log=lambda *_: None)
    assert {r["policy"]: r["bound_sections"] for r in on["records"]} == {
        "full": False, "dac": True}
    off = evaluate(ASSET, tasks=["passkey"], lengths=[512], n=1, batch=1, device="cpu",
                   same_cost=False, bound_sections=False, log=lambda *_: None)
    assert {r["bound_sections"] for r in off["records"]} == {False}


def test_merging_runs_under_different_plans_is_refused(tmp_path, capsys):
    import json

    from dac.train.evaluate import main

    for name, bs in (("a.json", 64), ("b.json", 32)):
        (tmp_path / name).write_text(json.dumps({"records": [], "plan": {"block_size": bs}}))
    with pytest.raises(SystemExit) as e:
        main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
              "--out", str(tmp_path / "m.json")])
    assert e.value.code == 2 and "different plans" in capsys.readouterr().err


def _ev(d):
    from dac.protocol.grammar import ProtocolEvent

    return ProtocolEvent(0, "directive", d.render(), d, d)


def _suite_record(want, events, family="retrieval", **kw) -> dict:
    """The fields of a suite record (``dac.eval.records.make_record``) the summary reads."""
    from dac.eval.records import SCHEMA, directive_match
    from dac.runtime import GenerationResult

    timeline = GenerationResult(text="", answer="", events=list(events), steps=[]).timeline()
    return {"schema": SCHEMA, "id": "passkey-512-0", "task": "passkey", "family": family,
            "length": 512, "policy": "dac", "score": 1.0, "kv": {"fraction": 0.2},
            "ideal_directive": want.render(), "directives": timeline,
            **directive_match(want, events), **kw}


def test_adherence_is_judged_on_the_declaration_the_answer_is_written_under():
    """A lead-in format (``[[local]] lead [[global]][[focus S3]] value``) declares local
    first; the summary judges the last declaration, the one its answer is written under, and
    reports the first as ``exact_first``; a single declaration is both."""
    from dac.eval.records import directive_match
    from dac.protocol.grammar import Directive, Mode, ProtocolEvent
    from dac.train.evaluate import summarize

    want = Directive(Mode.FOCUS, ((3, 3),))
    lead_in = [_ev(Directive(Mode.LOCAL)), _ev(Directive(Mode.GLOBAL)), _ev(want)]
    a = directive_match(want, lead_in)
    assert not a["first_exact"] and a["first_covers"] is None and a["final_exact"]
    one = directive_match(want, [_ev(want)])
    assert one["first_exact"] and one["final_exact"] and one["first_covers"]
    wrong = directive_match(want, [_ev(Directive(Mode.FOCUS, ((2, 2),)))])
    assert not wrong["first_exact"] and not wrong["final_exact"]
    assert wrong["first_covers"] is False
    wide = directive_match(want, [_ev(Directive(Mode.FOCUS, ((2, 4),)))])
    assert wide["first_covers"] and not wide["first_exact"]
    none = directive_match(want, [])
    assert not none["first_exact"] and not none["final_exact"]
    # a malformed first declaration is not exact, even if a later one is
    bad = ProtocolEvent(0, "unknown_mode", "[[zoom]]", None, Directive(Mode.GLOBAL))
    late = directive_match(want, [bad, _ev(want)])
    assert not late["first_exact"] and late["final_exact"] and late["focus_union_exact"]
    # a lead-in that never gets past its local declaration has the wrong mode for retrieval
    outputs = [lead_in, [_ev(want)], [_ev(Directive(Mode.FOCUS, ((2, 2),)))],
               [_ev(Directive(Mode.LOCAL))], []]
    rows = summarize([_suite_record(want, evs) for evs in outputs])
    assert rows[0]["exact_first"] == round(1 / 5, 4)
    assert rows[0]["exact_directive"] == round(2 / 5, 4)
    assert rows[0]["mode_adherence"] == round(3 / 5, 4)  # lead-in, one, wrong name focus
    assert rows[0]["exact_union"] == round(2 / 5, 4)  # lead-in and one; wrong names S2
    garbled = _suite_record(want, [ProtocolEvent(0, "unclosed", "[[focus S3", None,
                                                 Directive(Mode.GLOBAL))])
    assert summarize([garbled])[0]["mode_adherence"] == 0.0
    agg = _suite_record(Directive(Mode.GLOBAL), [_ev(Directive(Mode.GLOBAL))],
                        family="aggregation")
    row = summarize([agg])[0]
    assert row["mode_adherence"] == 1.0 and "exact_union" not in row
    # a stepwise answer: each step under its own section's focus, global steps between
    want2 = Directive(Mode.FOCUS, ((2, 2), (5, 5)))
    stepwise = directive_match(want2, [_ev(Directive(Mode.FOCUS, ((2, 2),))),
                                       _ev(Directive(Mode.GLOBAL)),
                                       _ev(Directive(Mode.FOCUS, ((5, 5),)))])
    assert stepwise["focus_union_exact"] and not stepwise["final_exact"]
    half = directive_match(want2, [_ev(Directive(Mode.FOCUS, ((2, 2),)))])
    assert not half["focus_union_exact"]
    assert not directive_match(Directive(Mode.GLOBAL), [_ev(Directive(Mode.GLOBAL))])[
        "focus_union_exact"]  # not a focus task


def test_the_summary_reads_legacy_records_as_it_reads_suite_records():
    """The shipped card's ``eval.json`` holds the records of the evaluation's former cells
    (``declared``, ``mode_ok``, ``exact``, ``final``, ``final_exact``, ``focus_union_exact``,
    ``fraction``); the same outputs as suite records summarize alike."""
    from dac.protocol.grammar import Directive, Mode
    from dac.train.card import exact_sections
    from dac.train.evaluate import card_fields, final_mode_ok, summarize

    want = Directive(Mode.FOCUS, ((3, 3),))
    base = {"id": "passkey-512-0", "task": "passkey", "family": "retrieval", "length": 512,
            "policy": "dac", "score": 1.0, "fraction": 0.2}
    legacy = [{**base, "declared": "[[local]]", "mode_ok": False, "exact": False,
               "covers": None, "final": "[[focus S3]]", "final_exact": True,
               "focus_union_exact": True},
              {**base, "declared": "[[focus S2]]", "mode_ok": True, "exact": False,
               "covers": False, "final": "[[focus S2]]", "final_exact": False,
               "focus_union_exact": False},
              {**base, "declared": None, "mode_ok": False, "exact": False, "covers": None,
               "final": None, "final_exact": False, "focus_union_exact": False}]
    suite = [_suite_record(want, [_ev(Directive(Mode.LOCAL)), _ev(Directive(Mode.GLOBAL)),
                                  _ev(want)]),
             _suite_record(want, [_ev(Directive(Mode.FOCUS, ((2, 2),)))]),
             _suite_record(want, [])]
    assert summarize(legacy) == summarize(suite)
    keys = ("first_exact", "final_exact", "exact", "union_exact", "final_mode_ok", "final",
            "fraction")
    for old, new in zip(legacy, suite):
        assert {k: card_fields(old)[k] for k in keys} == {k: card_fields(new)[k] for k in keys}
        assert exact_sections(old) == exact_sections(new)
        assert final_mode_ok(old) == final_mode_ok(new)
    # results from before the last declaration was recorded: judged on the first
    one = {**base, "declared": "[[focus S3]]", "mode_ok": True, "exact": True, "covers": True,
           "focus_union_exact": True}
    row = summarize([one, {**one, "mode_ok": False, "exact": False}])[0]
    assert "exact_first" not in row
    assert row["mode_adherence"] == 0.5 and row["exact_directive"] == 0.5


@pytest.mark.slow
def test_the_fast_engine_writes_the_reference_engines_records():
    """``engine="fast"`` (:class:`dac.engines.fast.FastEngine`) gives the same records,
    baselines included, as the reference engine; Quest's per-step evidence recall, which it
    does not measure per head, is missing (``None``), and the wall time differs."""
    kw = dict(tasks=["passkey", "world_state"], lengths=[512], n=2, batch=2, device="cpu",
              log=lambda *_: None)
    ref = evaluate(ASSET, **kw)
    fast = evaluate(ASSET, engine="fast", **kw)
    assert len(fast["records"]) == len(ref["records"])
    for a, b in zip(fast["records"], ref["records"]):
        quest = a["policy"].startswith("quest")
        assert _comparable(a, quest) == _comparable(b, quest)
        if quest:
            assert a["evidence_recall"] is None
            assert set(a["kv"]["recall_per_step"]) == {None}
    assert fast["summary"] == ref["summary"]
    assert {r["policy"].split(":")[0] for r in fast["records"]} == {
        "full", "dac", "streaming", "quest"}
    assert {r["engine"] for r in fast["records"]} == {"fast"}
    assert {r["engine"] for r in ref["records"]} == {"hf"}
    with pytest.raises(ValueError, match="engine must be one of"):
        evaluate(ASSET, engine="vllm", **kw)


def _comparable(record: dict, quest: bool) -> dict:
    """A record without what differs between engines: the engine, the wall time and, for
    Quest, the per-step evidence recall and per-head block shares (the fast engine does not
    measure them per head)."""
    out = {k: v for k, v in record.items() if k not in ("engine", "wall_s")}
    if quest:
        out.pop("evidence_recall")
        out.pop("block_share", None)
        out["kv"] = {k: v for k, v in out["kv"].items() if k != "recall_per_step"}
    return out


@pytest.mark.slow
def test_records_are_the_suites_records():
    """One record schema: the evaluation's records are :func:`dac.eval.records.make_record`'s,
    and the card reads them."""
    from dac.eval.records import SCHEMA
    from dac.train.card import summary_table, task_table

    res = evaluate(ASSET, tasks=["passkey"], lengths=[512], n=1, batch=1, device="cpu",
                   same_cost=False, log=lambda *_: None)
    for r in res["records"]:
        assert r["schema"] == SCHEMA and r["id"] == "passkey-512-0"
        assert {"first_exact", "final_exact", "focus_union_exact", "first_covers",
                "output", "kv", "directives", "evidence_recall"} <= set(r)
    assert {"records", "summary", "plan"} <= set(res) <= {"records", "summary", "plan", "prompt"}
    assert "| retrieval | 512 | dac | 1 |" in summary_table(res["records"])
    assert task_table(res["records"], lengths=(512,)).splitlines()[2].startswith("| passkey |")
