"""Arms: a prompt protocol and a policy per column, the paper's three by name."""

from __future__ import annotations

import json

import pytest

from dac.cli import main
from dac.eval.arms import resolve_arm
from dac.eval.config import parse_arms, parse_policies
from dac.models import tiny_model


def test_named_and_explicit_arms():
    assert parse_arms("paper") == ["vanilla", "da-nm", "da"]
    assert parse_arms("DA-NM, vanilla") == ["da-nm", "vanilla"]
    assert parse_arms("da/Quest:budget=0.2,dense_layers=0,brackets/dac") == [
        "da/quest:budget=0.2,dense_layers=0", "brackets/dac"]
    assert resolve_arm("da-nm", "brackets") == resolve_arm("da/full", "x").__class__(
        "da-nm", "da", "full")
    assert resolve_arm("streaming", "vanilla").protocol == "vanilla"  # a bare policy
    assert parse_policies("full,dac") == ["full", "dac"]


@pytest.mark.parametrize("bad", ["klingon/full", "da/nonsense", "/full", "da/"])
def test_bad_arms_are_value_errors(bad):
    with pytest.raises(ValueError):
        parse_arms(bad)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    d = tmp_path_factory.mktemp("tiny")
    tiny_model("llama", vocab_size=len(tokenizer), seed=1).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.mark.slow
def test_eval_runs_the_three_arms_on_the_same_samples(model_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["eval", "--model", str(model_dir), "--tasks", "niah_single_noise",
                 "--lengths", "768", "--arms", "vanilla,da-nm,da", "--samples", "2",
                 "--max-new-tokens", "6", "--out", str(out), "--no-progress"]) == 0
    names = {p.name for p in (out / "cells").glob("*.jsonl")}
    assert names == {f"niah_single_noise__768__{a}.jsonl" for a in ("da", "da-nm", "vanilla")}
    recs = {a: [json.loads(x) for x in (out / "cells" / f"niah_single_noise__768__{a}.jsonl")
                .read_text().splitlines()] for a in ("vanilla", "da-nm", "da")}
    assert [(r["arm"], r["protocol"], r["policy"]) for r in recs["vanilla"]] == [
        ("vanilla", "vanilla", "full")] * 2
    assert {(r["protocol"], r["policy"]) for r in recs["da-nm"]} == {("da", "full")}
    assert {(r["protocol"], r["policy"]) for r in recs["da"]} == {("da", "dac")}
    # the same examples in every arm
    assert [r["id"] for r in recs["vanilla"]] == [r["id"] for r in recs["da"]]
    metrics = json.loads((out / "metrics.json").read_text())
    by_arm = {c["policy"]: c for c in metrics["cells"]}
    assert set(by_arm) == {"vanilla", "da-nm", "da"}
    assert by_arm["da-nm"]["cost"] == 1.0 and by_arm["vanilla"]["cost"] == 1.0
    for c in by_arm.values():
        assert c["attended_tokens"] > 0 and c["per_step_ratio"] <= 1.0
        assert c["share_global"] + c["share_focus"] + c["share_local"] == pytest.approx(1.0)


def test_arms_and_policies_together_are_refused(model_dir, tmp_path, capsys):
    assert main(["eval", "--model", str(model_dir), "--arms", "da", "--policies", "full",
                 "--out", str(tmp_path / "x")]) == 2
    assert "not both" in capsys.readouterr().err


def test_sampling_presets_and_options():
    import argparse

    from dac.eval.commands import eval_sampling

    def ns(**kw):
        base = dict(sampling=None, temperature=None, top_p=None, top_k=None,
                    presence_penalty=None, seed=3)
        return argparse.Namespace(**{**base, **kw})

    assert eval_sampling(ns(), {"temperature": 0.5, "do_sample": True}) == {}  # greedy default
    q = eval_sampling(ns(sampling="qwen"), {})
    assert q == {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
                 "presence_penalty": 1.5, "seed": 3}
    assert eval_sampling(ns(sampling="qwen", temperature=0), {}) == {}
    assert eval_sampling(ns(sampling="model"), {"do_sample": False, "temperature": 0.6}) == {}
    assert eval_sampling(ns(sampling="model"), {"do_sample": True, "temperature": 0.6})[
        "temperature"] == 0.6
    assert eval_sampling(ns(top_k=5), {})["top_k"] == 5
    with pytest.raises(ValueError):
        eval_sampling(ns(sampling="gemma", top_p=1.5), {})
