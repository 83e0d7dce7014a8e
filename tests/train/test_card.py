"""``python -m dac.train.card``: the model card's tables, rendered from evaluation records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dac.train.card import exact_sections, main, summary_table, task_table

ASSET = Path(__file__).resolve().parents[2] / "src" / "dac" / "assets" / "dac-tiny"


def rec(task: str, family: str, policy: str, score: float, fraction: float, *,
        length: int = 4096, final_exact: bool = False, union: bool | None = None,
        final: str = "[[focus S2]]") -> dict:
    r = {"id": f"{task}-{length}-0", "task": task, "family": family, "length": length,
         "policy": policy, "score": score, "fraction": fraction, "mode_ok": True,
         "exact": False, "final": final, "final_exact": final_exact}
    if union is not None:
        r["focus_union_exact"] = union
    return r


def test_a_stepwise_answer_is_exact_by_its_union_of_focuses():
    # a multi-region answer focuses one section per step: its last focus is never the ideal
    # union, all its focuses together are
    assert exact_sections(rec("chained_facts", "multi", "dac", 1, 0.2, union=True))
    assert not exact_sections(rec("chained_facts", "multi", "dac", 1, 0.2, union=False,
                                  final_exact=True))
    # other families: the last declaration
    assert exact_sections(rec("tail_last", "local", "dac", 1, 0.1, final_exact=True,
                              final="[[local]]"))


def test_tables_average_per_cell_and_name_same_cost_baselines():
    records = [rec("passkey", "retrieval", "full", 1, 1.0, final_exact=True, union=True),
               rec("passkey", "retrieval", "dac", 1, 0.2, final_exact=True, union=True),
               {**rec("passkey", "retrieval", "dac", 0, 0.4, union=False), "id": "passkey-4096-1"},
               rec("passkey", "retrieval", "quest:budget_tokens=700,dense_layers=0", 0, 0.3,
                   union=False)]
    summary = summary_table(records)
    # records without ``bound_sections`` predate the section bound: "off"
    assert "| retrieval | 4096 | dac | 2 | 50.0% | 0.300 | 100% | 50% | 50% | off |" in summary
    bounded = summary_table([{**r, "bound_sections": True} for r in records])
    assert "| retrieval | 4096 | dac | 2 | 50.0% | 0.300 | 100% | 50% | 50% | on |" in bounded
    assert "| retrieval | 4096 | quest (same cost) | 1 | 0.0% |" in summary
    lines = summary.splitlines()
    assert lines.index(next(x for x in lines if "| full |" in x)) < lines.index(
        next(x for x in lines if "| dac |" in x))
    tasks = task_table(records, lengths=(4096, 8192))
    # full 100%, dac 50%, exact 50%, KV 0.300 at 4K; nothing measured at 8K
    assert "| passkey | 100% | 50% | 50% | 0.300 | - | - | - | - |" in tasks


def test_the_shipped_card_tables_come_from_its_eval_json(capsys):
    assert main([str(ASSET / "eval.json")]) == 0
    out = capsys.readouterr().out
    card = (ASSET / "README.md").read_text()
    for line in out.splitlines():
        if line.startswith("| ") and "---" not in line:
            assert line in card, f"the card lacks the measured row {line!r}"


def test_unreadable_eval_json_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "eval.json"
    bad.write_text(json.dumps({"summary": []}))
    with pytest.raises(SystemExit) as e:
        main([str(bad)])
    assert e.value.code == 2 and "cannot read" in capsys.readouterr().err
