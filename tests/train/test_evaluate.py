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


def test_adherence_is_judged_on_the_declaration_the_answer_is_written_under():
    """A lead-in format (``[[local]] lead [[global]][[focus S3]] value``) declares local
    first; the summary judges the last declaration, the one its answer is written under, and
    reports the first as ``exact_first``; a single declaration is both."""
    from types import SimpleNamespace

    from dac.protocol.grammar import Directive, Mode, ProtocolEvent
    from dac.train.evaluate import adherence, summarize

    want = Directive(Mode.FOCUS, ((3, 3),))
    sample = SimpleNamespace(directive=want)

    def ev(d):
        return ProtocolEvent(0, "directive", d.render(), d, d)

    lead_in = SimpleNamespace(events=[ev(Directive(Mode.LOCAL)), ev(Directive(Mode.GLOBAL)),
                                      ev(want)])
    a = adherence(sample, lead_in)
    assert not a["exact"] and not a["mode_ok"] and a["final_exact"]
    assert a["declared"] == "[[local]]" and a["final"] == "[[focus S3]]"
    one = adherence(sample, SimpleNamespace(events=[ev(want)]))
    assert one["exact"] and one["final_exact"]
    wrong = adherence(sample, SimpleNamespace(events=[ev(Directive(Mode.FOCUS, ((2, 2),)))]))
    assert not wrong["exact"] and not wrong["final_exact"]
    # a lead-in that never gets past its local declaration has the wrong mode for retrieval
    stuck = adherence(sample, SimpleNamespace(events=[ev(Directive(Mode.LOCAL))]))
    none = adherence(sample, SimpleNamespace(events=[]))
    assert none["final"] is None and not none["final_exact"]
    base = {"family": "retrieval", "length": 512, "policy": "dac", "score": 1.0,
            "fraction": 0.2}
    rows = summarize([{**base, **r} for r in (a, one, wrong, stuck, none)])
    assert rows[0]["exact_first"] == round(1 / 5, 4)
    assert rows[0]["exact_directive"] == round(2 / 5, 4)
    assert rows[0]["mode_adherence"] == round(3 / 5, 4)  # a, one, wrong name focus
    garbled = {**base, **one, "final": "[[focus S3"}
    assert summarize([garbled])[0]["mode_adherence"] == 0.0
    agg = {**base, **adherence(SimpleNamespace(directive=Directive(Mode.GLOBAL)),
                               SimpleNamespace(events=[ev(Directive(Mode.GLOBAL))])),
           "family": "aggregation"}
    assert summarize([agg])[0]["mode_adherence"] == 1.0
    assert rows[0]["exact_union"] == round(2 / 5, 4)  # a and one; wrong names S2
    # a stepwise answer: each step under its own section's focus, global steps between
    want2 = Directive(Mode.FOCUS, ((2, 2), (5, 5)))
    stepwise = adherence(SimpleNamespace(directive=want2), SimpleNamespace(events=[
        ev(Directive(Mode.FOCUS, ((2, 2),))), ev(Directive(Mode.GLOBAL)),
        ev(Directive(Mode.FOCUS, ((5, 5),)))]))
    assert stepwise["focus_union_exact"] and not stepwise["final_exact"]
    half = adherence(SimpleNamespace(directive=want2), SimpleNamespace(events=[
        ev(Directive(Mode.FOCUS, ((2, 2),)))]))
    assert not half["focus_union_exact"]
        # results from before the last declaration was recorded: judged on the first
    old = {k: v for k, v in {**base, **one}.items() if k not in ("final", "final_exact")}
    row = summarize([old, {**old, "mode_ok": False, "exact": False}])[0]
    assert "exact_first" not in row
    assert row["mode_adherence"] == 0.5 and row["exact_directive"] == 0.5


@pytest.mark.slow
def test_the_fast_engine_writes_the_reference_engines_records():
    """``engine="fast"`` (FastDecoder) gives the same records, baselines included, as the
    reference engine; only the evidence recall, which it does not trace, is missing."""
    kw = dict(tasks=["passkey", "world_state"], lengths=[512], n=2, batch=2, device="cpu",
              log=lambda *_: None)
    ref = evaluate(ASSET, **kw)
    fast = evaluate(ASSET, engine="fast", **kw)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("recall", "engine")}  # noqa: E731
    assert [strip(r) for r in fast["records"]] == [strip(r) for r in ref["records"]]
    assert {r["policy"].split(":")[0] for r in fast["records"]} == {
        "full", "dac", "streaming", "quest"}
    assert {r["engine"] for r in fast["records"]} == {"fast"}
    assert all(r["recall"] is None for r in fast["records"])
    with pytest.raises(ValueError, match="engine must be one of"):
        evaluate(ASSET, engine="vllm", **kw)
