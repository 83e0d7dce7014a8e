"""``dac eval`` over all 15 paper sources from the project's fixture files, three arms, then
``dac report``; and the documented outcomes of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dac.cli import main
from dac.eval.sources import SOURCES
from dac.models import tiny_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources"
PAPER_SOURCES = [s for s in SOURCES if s != "jsonl"]


@pytest.fixture(scope="module")
def long_model(tmp_path_factory, tokenizer):
    """A tiny model that holds the fixtures' longest prompts (about 16K tiny-tokenizer
    tokens)."""
    d = tmp_path_factory.mktemp("tiny-long")
    tiny_model("llama", vocab_size=len(tokenizer), seed=1, max_positions=32768).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.mark.slow
def test_all_fifteen_sources_three_arms_then_report(long_model, tmp_path):
    assert len(PAPER_SOURCES) == 15
    out = tmp_path / "run"
    assert main(["eval", "--model", str(long_model), "--source", "all", "--data", str(FIXTURES),
                 "--arms", "vanilla,da-nm,da", "--samples", "1", "--max-new-tokens", "4",
                 "--out", str(out), "--no-progress", "--report"]) == 0
    cells = {p.stem for p in (out / "cells").glob("*.jsonl")}
    budget = json.loads((out / "config.json").read_text())["budget"]
    assert cells == {f"{s}__{budget}__{a}" for s in PAPER_SOURCES
                     for a in ("vanilla", "da-nm", "da")}
    recs = [json.loads(x) for p in (out / "cells").glob("*.jsonl")
            for x in p.read_text().splitlines()]
    assert {r["source"] for r in recs} == set(PAPER_SOURCES)
    for r in recs:
        assert r["metric"] == SOURCES[r["source"]].metric
        assert 0.0 <= r["score"] <= 1.0 and r["context_tokens"] > 0
        assert r["stats"]["decode_steps"] >= 1
        if r["format_failure"]:
            assert r["score"] == 0.0
    page = (out / "report" / "index.html").read_text()
    assert "macro (15 sources)" in page
    sel = json.loads((out / "selection" / "longbench.qmsum.json").read_text())
    assert sel["kept"] and sel["budget"] == budget


def test_missing_field_is_one_line_naming_file_and_field(long_model, tmp_path, capsys):
    bad = FIXTURES / "errors" / "qmsum_missing_context.jsonl"
    assert main(["eval", "--model", str(long_model), "--source", "longbench.qmsum",
                 "--data", str(bad), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("dac: error")]
    assert len(errors) == 1 and "qmsum_missing_context.jsonl" in errors[0]
    assert "missing field 'context'" in errors[0]


def test_context_over_budget_is_dropped_and_listed(long_model, tmp_path, capsys):
    data = FIXTURES / "errors" / "over_budget.jsonl"
    out = tmp_path / "r"
    assert main(["eval", "--model", str(long_model), "--source", "jsonl", "--data", str(data),
                 "--budget", "512", "--samples", "5", "--max-new-tokens", "2",
                 "--out", str(out), "--no-progress"]) == 0
    sel = json.loads((out / "selection" / "jsonl.json").read_text())
    assert sel["dropped_over_budget"] and all(t > 512 for _, t in sel["dropped_over_budget"])
    assert "over the budget of 512 tokens dropped" in capsys.readouterr().err
    kept = {i for i, _ in sel["kept"]}
    recs = [json.loads(x) for p in (out / "cells").glob("*.jsonl")
            for x in p.read_text().splitlines()]
    assert {r["id"].split("-", 1)[1] for r in recs} == kept


@pytest.mark.parametrize("argv, needle", [
    (["--source", "ruler.niah_single_9"], "unknown source"),
    (["--source", "longbench.qmsum"], "needs --data"),
    (["--source", "longbench.qmsum", "--data", "/nonexistent/q.jsonl"], "no such file"),
    (["--data", "x.jsonl"], "--data needs --source"),
])
def test_bad_source_arguments(long_model, tmp_path, capsys, argv, needle):
    assert main(["eval", "--model", str(long_model), "--out", str(tmp_path / "r"),
                 "--no-progress", *argv]) == 2
    assert needle in capsys.readouterr().err
