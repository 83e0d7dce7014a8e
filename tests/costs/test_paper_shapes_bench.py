"""bench/paper_shapes.py's step loop on a CPU: the engine's runtime, plan-ahead, accounting."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "paper_shapes.py"


@pytest.fixture(scope="module")
def ps():
    spec = importlib.util.spec_from_file_location("paper_shapes_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["paper_shapes_bench"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("paper_shapes_bench", None)


def test_every_policy_runs_the_engine_loop(ps):
    from dac.costs import cost_constants
    from dac.models import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok), hidden=64, heads=2, kv_heads=1,
                       head_dim=32, seed=0)
    res = ps.run_config(model, cost_constants(model.config.to_dict()), ps.weight_bytes(model),
                        1e11, 1200, 2, 3, 1)
    pol = res["policies"]
    assert set(pol) == set(ps.POLICIES)
    assert pol["full"]["kept_fraction"] >= 1.0 and pol["full"]["speedup"] == 1.0
    # the scripted directives took effect: focus reads less than local, local less than full
    assert pol["dac-focus"]["kept_fraction"] < pol["dac-local"]["kept_fraction"] < 1.0
    # the directive was complete before the measured steps: each reused the plan made ahead
    assert pol["dac-focus"]["planned_ahead"] == 1.0
    for p in pol.values():
        assert 0 < p["host_us"] < p["step_us"] and 0 < p["host_share"] < 1


def test_a_subset_of_policies_runs_full_beside_it(ps):
    from dac.costs import cost_constants
    from dac.models import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok), hidden=64, heads=2, kv_heads=1,
                       head_dim=32, seed=0)
    res = ps.run_config(model, cost_constants(model.config.to_dict()), ps.weight_bytes(model),
                        1e11, 1200, 1, 2, 1, policies=["dac-local"])
    assert list(res["policies"]) == ["full", "dac-local"]
