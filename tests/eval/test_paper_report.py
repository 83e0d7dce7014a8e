"""The paper-layout section: per-source and macro figures recomputed from raw records."""

from __future__ import annotations

import json

import pytest

from dac.eval.paper_report import mode_share_by_length, projection, section, table


def rec(source, arm, score, attended, steps, modes=None, terminated=True, prompt=5000,
        attempts=0, success=0):
    modes = modes or {"global": steps, "focus": 0, "local": 0}
    return {"task": source, "source": source, "arm": arm, "policy": arm, "score": score,
            "prompt_tokens": prompt, "kv": {"read": attended, "full": attended,
                                            "fraction": 0.5, "per_step": [1.0] * steps},
            "stats": {"attended_tokens": attended, "decode_steps": steps,
                      "mode_steps": modes, "focus_attempts": attempts,
                      "focus_success": success, "terminated": terminated}}


RECORDS = [
    rec("a", "vanilla", 1.0, 1000, 10), rec("a", "vanilla", 0.0, 3000, 10, terminated=False),
    rec("a", "da", 1.0, 500, 12, {"global": 6, "focus": 4, "local": 2}, attempts=2,
        success=1),
    rec("a", "da", 1.0, 500, 12, {"global": 6, "focus": 4, "local": 2}, prompt=20000),
    rec("b", "vanilla", 1.0, 4000, 20), rec("b", "da", 0.0, 1000, 30,
                                            {"global": 10, "focus": 10, "local": 10}),
]


def test_table_is_micro_within_and_macro_across_sources():
    t = table(RECORDS, ["vanilla", "da"])
    a_van = t["rows"]["a"]["vanilla"]
    assert a_van["accuracy"] == 0.5 and a_van["accuracy_terminated"] == 1.0
    assert a_van["non_terminating"] == 0.5 and a_van["attended_tokens"] == 2000
    # macro: the mean of the per-source figures, not of the responses
    assert t["macro"]["vanilla"]["accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert t["macro"]["vanilla"]["attended_tokens"] == pytest.approx((2000 + 4000) / 2)
    assert t["macro"]["da"]["attended_tokens"] == pytest.approx((500 + 1000) / 2)
    da_a = t["rows"]["a"]["da"]
    assert da_a["share_focus"] == pytest.approx(8 / 24) and da_a["focus_success"] == 0.5
    assert da_a["focus_attempts"] == 1.0


def test_mode_share_bins_by_prompt_length_and_skips_all_global_arms():
    shares = mode_share_by_length(RECORDS, ["vanilla", "da"])
    assert "vanilla" not in shares  # only global steps: nothing to show
    labels = [lab for lab, _, _ in shares["da"]]
    assert labels == ["≤8K", "≤32K"]
    _, n, sh = shares["da"][1]
    assert n == 1 and sh["focus"] == pytest.approx(4 / 12)


def test_projection_needs_a_model_with_weights(tmp_path):
    t = table(RECORDS, ["vanilla", "da"])
    assert projection(t, None) == [] and projection(t, str(tmp_path)) == []
    import torch
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(json.dumps(
        {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "hidden_size": 64}))
    save_file({"w": torch.zeros(100, 100)}, str(tmp_path / "model.safetensors"))
    proj = projection(t, str(tmp_path), hardware=("b200",))
    by_arm = {p["arm"]: p for p in proj}
    assert by_arm["vanilla"]["ratio"] == 1.0 and by_arm["da"]["ratio"] < 1.0


def test_section_renders_from_the_cells(tmp_path):
    (tmp_path / "cells").mkdir()
    with (tmp_path / "cells" / "x.jsonl").open("w") as f:
        for r in RECORDS:
            f.write(json.dumps(r) + "\n")
    rep = tmp_path / "report"
    rep.mkdir()
    page = section(tmp_path, rep, {"policies": ["vanilla", "da"], "model": None})
    assert "macro (2 sources)" in page and "(-75.0%)" in page  # 750 vs 3000 attended
    assert (rep / "relative_to_reference.png").stat().st_size > 1000
    assert (rep / "mode_share_by_length.png").stat().st_size > 1000
