"""The report's statistics: standard errors everywhere, a warning at small n, adherence only
where a policy reads directives."""

from __future__ import annotations

import json

import pytest

from dac.eval.metrics import cell_metrics, summarize
from dac.eval.report import MIN_SAMPLES, _html, reads_directives


def rec(score, policy):
    return {"task": "passkey", "family": "retrieval", "length": 1024, "policy": policy,
            "score": score, "kv": {"read": 5, "full": 10, "per_step": [1]},
            "evidence_recall": None, "adherent": True, "mode_match": True, "wall_s": 0.1,
            "prompt_tokens": 1000}


def test_summaries_carry_the_standard_error_of_their_mean():
    a = cell_metrics([rec(1.0, "dac"), rec(0.0, "dac")])  # se 0.5
    b = cell_metrics([rec(1.0, "dac"), rec(1.0, "dac"), rec(0.0, "dac"), rec(0.0, "dac")])
    b["task"] = "kv_json"
    (row,) = summarize([a, b], ("policy",))
    assert row["accuracy_se"] == pytest.approx((a["accuracy_se"] ** 2
                                                + b["accuracy_se"] ** 2) ** 0.5 / 2)
    assert row["min_n"] == 2


@pytest.mark.parametrize("spec, reads", [("dac", True), ("dac+safety", True), ("full", False),
                                         ("quest:budget=0.2", False), ("streaming", False)])
def test_which_policies_read_directives(spec, reads):
    assert reads_directives(spec) is reads


def page(n):
    cells = [cell_metrics([rec(i % 2, p) for i in range(n)]) for p in ("full", "dac")]
    metrics = {"policies": ["full", "dac"], "cells": cells,
               "by_family": summarize(cells, ("family", "policy"))}
    config = {"model": "m", "tasks": ["passkey"], "lengths": [1024], "policies": ["full", "dac"],
              "samples": n, "plan": {"block_size": 64}}
    return _html(config, metrics, [])


def test_small_runs_are_flagged_and_errors_shown():
    small, big = page(4), page(MIN_SAMPLES)
    assert "Few samples" in small and "Few samples" not in big
    assert "&plusmn;" in big  # accuracy with its standard error in the tables
    # adherence: a number for dac, n/a for full attention (it ignores directives)
    rows = [r for r in big.split("<tr>") if r.startswith("<td>retrieval")]
    assert "n/a" in next(r for r in rows if "<td>full</td>" in r)
    assert "n/a" not in next(r for r in rows if "<td>dac</td>" in r)
    json.dumps(big)  # a plain string


def test_quest_timelines_draw_the_share_of_heads(tmp_path, tokenizer):
    """A per-head policy's records carry, per step, the share of layers and KV heads that
    read each block; the timeline draws them instead of an empty panel."""
    import matplotlib.image

    from dac.engines.base import HFEngine
    from dac.eval.report import plot_timeline
    from dac.eval.runner import run_samples
    from dac.models import tiny_model
    from dac.planning import PlanConfig
    from dac.tasks import make_sample

    samples = [make_sample("passkey", tokenizer, 512, 0)]
    cfg = PlanConfig(block_size=32)
    llama = tiny_model("llama", vocab_size=len(tokenizer), seed=1)  # does not stop at once
    (rec,) = run_samples(HFEngine(llama, tokenizer), samples, "quest:budget=0.2,dense_layers=0",
                         cfg,
                         max_new_tokens=4)
    assert rec["blocks"] is None and rec["block_share"]
    shares = [v for step in rec["block_share"] for v in step.values()]
    assert all(0 < v <= 1 for v in shares) and min(shares) < 1  # heads differ
    png = tmp_path / "t.png"
    plot_timeline([rec], png)
    img = matplotlib.image.imread(png)
    assert img.shape[0] > 100 and len({tuple(p) for p in img[::7, ::7].reshape(-1, 4)}) > 8
