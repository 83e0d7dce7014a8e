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
