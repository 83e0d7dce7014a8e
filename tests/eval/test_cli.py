"""``dac eval`` end to end on a tiny random model over every task, then ``dac report``."""

from __future__ import annotations

import json

import pytest

from dac.cli import main
from dac.models import tiny_model
from dac.tasks import TASKS

POLICIES = ["full", "dac", "streaming", "quest"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    d = tmp_path_factory.mktemp("tiny")
    # seed 1: a random model that does not stop at once, so decode steps are measured
    tiny_model("llama", vocab_size=len(tokenizer), seed=1).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.mark.slow
def test_eval_all_tasks_then_report_then_resume(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["eval", "--model", str(model_dir), "--protocol", "brackets", "--tasks", "all",
            "--lengths", "768",
            "--policies", ",".join(POLICIES), "--samples", "1", "--max-new-tokens", "4",
            "--local-window", "256", "--window", "64", "--out", str(out), "--no-progress",
            "--report"]
    assert main(args) == 0
    cells = sorted((out / "cells").glob("*.jsonl"))
    assert len(cells) == len(TASKS) * len(POLICIES)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {c["task"] for c in metrics["cells"]} == set(TASKS)
    for c in metrics["cells"]:
        assert 0.0 <= c["accuracy"] <= 1.0 and 0.0 < c["cost"] <= 1.0
        assert c["decode_steps"] > 0
        if c["policy"] == "full":
            assert c["cost"] == 1.0
        if c["policy"] == "streaming":  # sinks + 256 recent tokens of ~770
            assert c["cost"] < 0.6
    rep = out / "report"
    for name in ("index.html", "accuracy_vs_cost.png", "accuracy_by_length.png"):
        assert (rep / name).stat().st_size > 1000
    assert len(list(rep.glob("timeline_*.png"))) == 3
    page = (rep / "index.html").read_text()
    assert all(t in page for t in TASKS) and "accuracy_vs_cost.png" in page
    capsys.readouterr()
    # a second run finds every cell finished and recomputes nothing
    assert main(args[:-1]) == 0
    assert f"{len(cells)} finished cell(s) skipped, 0 to run" in capsys.readouterr().err
    # dac report redraws from the folder alone
    assert main(["report", str(out), "--timelines", "1"]) == 0
    assert (rep / "index.html").exists()


def test_errors_are_one_line(model_dir, tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    base = ["eval", "--model", str(model_dir), "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(base + ["--tasks", "nope"]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert main(base + ["--lengths", "64k"]) == 2
    assert "positions" in capsys.readouterr().err
    assert main(base + ["--policies", "full,bogus"]) == 2
    assert "unknown policy" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "not found" in capsys.readouterr().err


def test_a_run_is_not_resumed_with_other_weights_at_the_same_path(tmp_path, tokenizer, capsys):
    """New weights copied over a model directory (a retrained model) make a new run: the
    finished cells of the old weights are not reused as if they were the new model's."""
    d = tmp_path / "model"
    tiny_model("llama", vocab_size=len(tokenizer), seed=1).save_pretrained(d)
    tokenizer.save_pretrained(d)
    out = tmp_path / "run"
    args = ["eval", "--model", str(d), "--protocol", "brackets", "--tasks", "passkey",
            "--lengths", "768",
            "--policies", "full", "--samples", "1", "--max-new-tokens", "2",
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert main(args) == 0  # same weights: resumed
    tiny_model("llama", vocab_size=len(tokenizer), seed=2).save_pretrained(d)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "different weights" in err and "Traceback" not in err


@pytest.mark.slow
def test_the_fast_engine_runs_through_dac_eval_on_a_cpu(model_dir, tmp_path):
    """``dac eval --engine fast`` on a CPU (eager, no CUDA graphs) writes the records
    ``--engine hf`` writes, but for the engine's name and the wall time (and Quest's per-step
    evidence recall, which it does not measure: :func:`tests.eval.engine_runs.comparable`)."""
    from tests.eval.engine_runs import assert_same_records, eval_cells

    kw = dict(device="cpu", tasks=["passkey", "tail_last"],
              policies=["full", "dac", "streaming", "quest:budget=0.3,dense_layers=0"])
    ref = eval_cells(model_dir, tmp_path / "hf", "hf", **kw)
    fast = eval_cells(model_dir, tmp_path / "fast", "fast", **kw)
    assert_same_records(fast, ref)
    assert all(r["kv"]["per_step"] for rs in fast.values() for r in rs)  # decode steps ran
    assert (tmp_path / "fast" / "metrics.json").exists()


def test_eval_under_the_da_protocol_and_list_tasks(model_dir, tmp_path, capsys):
    """--protocol da delivers each sample's sections as magic chunks; records say which
    protocol and carry the response's stats."""
    from dac.eval.folder import read_cell

    out = tmp_path / "da"
    assert main(["eval", "--model", str(model_dir), "--protocol", "da", "--tasks", "passkey",
                 "--lengths", "512", "--policies", "full,dac", "--samples", "1",
                 "--max-new-tokens", "3", "--out", str(out), "--no-progress"]) == 0
    recs = [r for p in sorted((out / "cells").glob("*.jsonl")) for r in read_cell(p)]
    assert len(recs) == 2 and all(r["protocol"] == "da" for r in recs)
    assert all(r["stats"]["decode_steps"] == len(r["kv"]["per_step"]) for r in recs)
    assert json.loads((out / "config.json").read_text())["protocol"] == "da"
    capsys.readouterr()
    assert main(["eval", "--list-tasks"]) == 0
    listing = capsys.readouterr().out
    assert "niah_single_2" in listing and all(t in listing for t in TASKS)
