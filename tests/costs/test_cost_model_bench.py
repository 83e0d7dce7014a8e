"""bench/cost_model.py: the traces it replays, the plans it builds, a replay on the CPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from dac.roofline import PAPER_TRACES

BENCH = Path(__file__).resolve().parents[2] / "bench" / "cost_model.py"


@pytest.fixture(scope="module")
def cm():
    spec = importlib.util.spec_from_file_location("cost_model_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cost_model_bench"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("cost_model_bench", None)


@pytest.mark.parametrize("shape", sorted(PAPER_TRACES))
def test_preset_traces_reproduce_table_5(cm, shape):
    traces = cm.preset_traces(shape)
    for arm, (steps, attended) in PAPER_TRACES[shape].items():
        (t,) = traces[arm]
        assert t.steps == steps
        assert t.attended == pytest.approx(attended, rel=2e-4)
    van, da = traces["vanilla"][0], traces["da"][0]
    assert van.context == da.context
    assert all(a == van.context + i + 1 for i, a in enumerate(van.per_step))  # everything


def test_kept_blocks_counts_and_keeps_sink_and_current(cm):
    assert cm.kept_blocks(1e9, 640, 64) == list(range(10))  # more than the context: all
    assert cm.kept_blocks(64 * 3, 640, 64) == [0, 8, 9]
    assert cm.kept_blocks(1, 641, 64) == [10]  # the current block alone
    assert cm.kept_blocks(65, 641, 64) == [0, 10]


def test_sampled_steps_spread_over_the_response(cm):
    assert cm.sampled(5, 32) == [0, 1, 2, 3, 4]
    idx = cm.sampled(448, 32)
    assert len(idx) == 32 and idx[0] == 0 and idx[-1] == 447


def test_run_traces_read_a_run_folder(cm, tmp_path):
    from dac.eval.folder import write_jsonl

    (tmp_path / "cells").mkdir()
    rows = [{"id": "1", "arm": "vanilla", "policy": "full", "score": 1.0, "prompt_tokens": 300,
             "kv": {"per_step": [301.0, 302.0]}},
            {"id": "1", "arm": "da", "policy": "dac", "score": 1.0, "prompt_tokens": 300,
             "kv": {"per_step": [301.0, 80.0, 81.0]}}]
    write_jsonl(tmp_path / "cells" / "t__512__x.jsonl", rows)
    traces = cm.run_traces(tmp_path)
    assert traces["da"][0] == cm.Trace(300, (301.0, 80.0, 81.0))
    assert traces["vanilla"][0].attended == 603.0
    with pytest.raises(SystemExit):
        cm.run_traces(tmp_path / "nothing")


def test_replay_on_a_tiny_model(cm):
    """Both arms replayed on one cache (eager, CPU: the plumbing, not the speed)."""
    from dac.models import tiny_model

    model = tiny_model("llama", vocab_size=64, hidden=64, heads=2, kv_heads=1, head_dim=32,
                       seed=0)
    traces = {"vanilla": [cm.Trace(200, tuple(float(200 + i + 1) for i in range(6)))],
              "da": [cm.Trace(200, (70.0,) * 9)]}
    res = cm.measure(model, traces, batch=2, block_size=16, max_steps=4)
    assert res["reference"] == "vanilla"
    van, da = res["arms"]["vanilla"], res["arms"]["da"]
    assert van["measured_ratio"] == 1.0 and da["measured_ratio"] > 0
    assert van["decode_steps"] == 6 and da["attended_tokens"] == 630.0
    assert da["response_ms"] == pytest.approx(da["step_ms"] * 9)
    proj = cm.project(cm.ModelCosts("m", 1e6, 128, 0.0), res["arms"], "vanilla")
    assert proj["vanilla"]["ratio"] == 1.0 and proj["da"]["ratio"] < 1.0
