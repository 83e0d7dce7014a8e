"""The runner on a tiny random model that writes scripted answers: metrics, files, resuming."""

from __future__ import annotations

import json

import pytest

from dac.eval.config import EvalConfig
from dac.eval.runner import cell_path, read_cell, run_eval, run_samples
from dac.tasks import make_sample
from dac.train.targets import lead_in_target
from tests.eval.scripted import ScriptedEngine, ideal_script

TASKS = ["passkey", "chained_facts", "math_find", "tail_last"]
LENGTH = 1024
PLAN = {"block_size": 32, "sink_tokens": 32, "keep_preamble": True, "window": 64,
        "local_window": 192}


def _config(tasks=TASKS, policies=("full", "dac", "streaming"), samples=2, new=20, **kw):
    return EvalConfig(model="tiny", tasks=list(tasks), lengths=[LENGTH],
                      policies=list(policies), samples=samples, batch_size=2,
                      max_new_tokens=new, plan=dict(PLAN), **kw)


@pytest.fixture(scope="module")
def ideal_run(tmp_path_factory, tokenizer, llama):
    cfg = _config()
    samples = [make_sample(t, tokenizer, LENGTH, s) for t in TASKS for s in cfg.seeds()]
    engine = ScriptedEngine(llama, tokenizer, ideal_script(tokenizer, samples))
    out = tmp_path_factory.mktemp("run")
    metrics = run_eval(engine, cfg, out, progress=False)
    return out, metrics, engine


def _cell(metrics, task, policy):
    return next(c for c in metrics["cells"] if c["task"] == task and c["policy"] == policy)


def test_files_and_records(ideal_run):
    out, metrics, engine = ideal_run
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tasks"] == TASKS and cfg["plan"] == PLAN and "versions" in cfg
    assert len(metrics["cells"]) == len(TASKS) * 3
    assert engine.calls == [2] * (len(TASKS) * 3)  # batched: 2 samples per call
    for task in TASKS:
        for pol in ("full", "dac", "streaming"):
            recs = read_cell(cell_path(out, task, LENGTH, pol))
            assert [r["seed"] for r in recs] == [0, 1]
            for r in recs:
                assert r["policy"] == pol and r["task"] == task
                assert len(r["kv"]["per_step"]) == len(r["kv"]["recall_per_step"]) > 0
                assert r["evidence_tokens"] and r["directives"]
    assert (out / "metrics.csv").read_text().count("\n") == len(TASKS) * 3 + 1
    assert not list((out / "cells").glob("*.tmp"))


def test_ideal_model_metrics(ideal_run):
    _, metrics, _ = ideal_run
    for task in TASKS:
        full = _cell(metrics, task, "full")
        dac = _cell(metrics, task, "dac")
        # the scripted text is the ideal answer: right, well-formed, of the ideal mode
        for c in (full, dac):
            assert c["accuracy"] == 1.0 and c["adherence"] == 1.0 and c["mode_match"] == 1.0
        assert full["cost"] == 1.0 and full["evidence_recall"] == 1.0
        # focus reads the evidence sections: all evidence, a fraction of the KV
        if task in ("passkey", "chained_facts"):
            assert dac["evidence_recall"] == 1.0
            assert dac["cost"] < 1.0
        if task == "math_find":  # [[global]]: dac reads everything
            assert dac["cost"] == 1.0
        if task == "tail_last":  # [[local]]: preamble, question, 192 recent tokens: evidence in
            assert dac["evidence_recall"] == 1.0 and dac["cost"] < 0.7
    # streaming keeps sinks + the last 192 tokens: it misses a needle in the middle
    assert _cell(metrics, "chained_facts", "streaming")["evidence_recall"] < 1.0
    assert _cell(metrics, "tail_last", "streaming")["evidence_recall"] == 1.0


def test_resume_skips_finished_cells(tmp_path, tokenizer, llama):
    samples = [make_sample("passkey", tokenizer, LENGTH, s) for s in range(4)]
    script = ideal_script(tokenizer, samples)

    class Interrupting(ScriptedEngine):
        def generate(self, layouts, **kw):
            if kw["policy"] == "dac" and len(self.calls) == 3:
                raise KeyboardInterrupt  # dies in the middle of the dac cell
            return super().generate(layouts, **kw)

    def cfg():
        return _config(tasks=["passkey"], policies=["full", "dac"], samples=4, new=12)

    with pytest.raises(KeyboardInterrupt):
        run_eval(Interrupting(llama, tokenizer, script), cfg(), tmp_path, progress=False)
    full_file = cell_path(tmp_path, "passkey", LENGTH, "full")
    assert full_file.exists() and not cell_path(tmp_path, "passkey", LENGTH, "dac").exists()
    before = full_file.read_bytes()
    again = ScriptedEngine(llama, tokenizer, script)
    metrics = run_eval(again, cfg(), tmp_path, progress=False)
    assert again.calls == [2, 2]  # only the unfinished dac cell ran, from its start
    assert full_file.read_bytes() == before
    assert len(metrics["cells"]) == 2 and not list((tmp_path / "cells").glob("*.tmp"))
    assert len(read_cell(cell_path(tmp_path, "passkey", LENGTH, "dac"))) == 4
    # nothing left to do: no generation at all
    idle = ScriptedEngine(llama, tokenizer, script)
    run_eval(idle, cfg(), tmp_path, progress=False)
    assert idle.calls == []


def test_resume_refuses_other_configuration(tmp_path, tokenizer, llama):
    eng = ScriptedEngine(llama, tokenizer, lambda lay: "[[global]] 1")
    run_eval(eng, _config(tasks=["passkey"], policies=["full"], samples=1), tmp_path,
             progress=False)
    with pytest.raises(ValueError, match="different samples"):
        run_eval(eng, _config(tasks=["passkey"], policies=["full"], samples=2), tmp_path,
                 progress=False)
    # adding a policy to the same configuration is a resume, not a conflict
    run_eval(eng, _config(tasks=["passkey"], policies=["full", "dac"], samples=1), tmp_path,
             progress=False)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["policies"] == ["full", "dac"]


def test_bound_sections_reaches_the_engine_and_is_part_of_a_runs_identity(
        tmp_path, tokenizer, llama):
    seen = []

    class Recording(ScriptedEngine):
        def generate(self, layouts, **kw):
            seen.append(kw["bound_sections"])
            return super().generate(layouts, **kw)

    eng = Recording(llama, tokenizer, lambda lay: "[[global]] 1")
    run_eval(eng, _config(tasks=["passkey"], policies=["dac"], samples=1, bound_sections=False),
             tmp_path, progress=False)
    assert seen == [False]
    assert json.loads((tmp_path / "config.json").read_text())["bound_sections"] is False
    with pytest.raises(ValueError, match="different bound_sections"):
        run_eval(eng, _config(tasks=["passkey"], policies=["full", "dac"], samples=1),
                 tmp_path, progress=False)
    run_eval(eng, _config(tasks=["passkey"], policies=["full", "dac"], samples=1,
                          bound_sections=False), tmp_path, progress=False)
    assert seen == [False, False]


def test_malformed_directives_count_against_adherence(tmp_path, tokenizer, llama):
    eng = ScriptedEngine(llama, tokenizer, lambda lay: "[[focus S99]] 12345 [[zoom]]")
    m = run_eval(eng, _config(tasks=["passkey"], policies=["dac"], samples=1), tmp_path,
                 progress=False)
    c = m["cells"][0]
    assert c["adherence"] == 0.0 and c["mode_match"] == 0.0 and c["accuracy"] == 0.0


def test_a_lead_in_answer_is_judged_on_the_declaration_it_is_written_under(
        tmp_path, tokenizer, llama):
    """``[[local]] lead [[global]][[focus Sk]] value``: three well-formed declarations; mode
    match reads the last one, and the record keeps the first as well."""
    cfg = _config(tasks=["passkey"], policies=["dac"], samples=2, new=48)
    by_text = {s.layout(tokenizer).text: lead_in_target(s, "[[local]]")
               for s in (make_sample("passkey", tokenizer, LENGTH, i) for i in cfg.seeds())}
    eng = ScriptedEngine(llama, tokenizer, lambda lay: by_text[lay.text])
    m = run_eval(eng, cfg, tmp_path, progress=False)
    c = m["cells"][0]
    assert c["adherence"] == 1.0 and c["mode_match"] == 1.0 and c["accuracy"] == 1.0
    for r in read_cell(cell_path(tmp_path, "passkey", LENGTH, "dac")):
        assert (r["first_mode"], r["final_mode"]) == ("local", "focus")
        assert len(r["directives"]) == 3


def test_prompt_options_reach_every_prompt_and_the_run_identity(tmp_path, tokenizer, llama):
    """``EvalConfig.prompt`` (the model's ``question_first``) builds the prompts the model was
    trained on; a run under other prompt options is not resumed from it."""
    seen = []
    eng = ScriptedEngine(llama, tokenizer, lambda lay: seen.append(lay.text) or "[[global]] 1")
    cfg = _config(tasks=["passkey"], policies=["full"], samples=1,
                  prompt={"question_first": True})
    run_eval(eng, cfg, tmp_path, progress=False)
    s = make_sample("passkey", tokenizer, LENGTH, 0)
    assert seen == [s.layout(tokenizer, question_first=True).text]
    assert seen[0].count(s.question) == 2
    with pytest.raises(ValueError, match="different"):
        run_eval(eng, _config(tasks=["passkey"], policies=["full"], samples=1), tmp_path,
                 progress=False)


def test_unknown_prompt_options_are_refused():
    with pytest.raises(ValueError, match="unknown prompt options"):
        _config(prompt={"question_last": True})


def test_run_samples_is_one_cells_work(tmp_path, tokenizer, llama):
    """``run_samples``: batches through the engine, one record per sample in order, the
    section bound recorded as applied (policies that read directives only) with the engine's
    name; the runner's cell files hold exactly its records."""
    from dac.planning.blocks import PlanConfig

    cfg = _config(tasks=["passkey"], policies=["dac"], samples=3, new=12)
    samples = [make_sample("passkey", tokenizer, LENGTH, s) for s in cfg.seeds()]
    seen = []
    eng = ScriptedEngine(llama, tokenizer, ideal_script(tokenizer, samples))
    recs = {}
    for policy in ("full", "dac"):
        recs[policy] = run_samples(eng, samples, policy, PlanConfig(**PLAN), max_new_tokens=12,
                                   batch_size=2, advance=seen.append)
        assert [r["seed"] for r in recs[policy]] == [0, 1, 2]
        assert {r["bound_sections"] for r in recs[policy]} == {policy == "dac"}
        assert {r["engine"] for r in recs[policy]} == {"hf"}
        assert all(r["first_exact"] and r["final_exact"] and r["focus_union_exact"]
                   for r in recs[policy])  # the ideal script declares the ideal focus
    assert eng.calls == [2, 1, 2, 1] and seen == [2, 1, 2, 1]
    off = run_samples(eng, samples[:1], "dac", PlanConfig(**PLAN), max_new_tokens=12,
                      bound_sections=False)
    assert off[0]["bound_sections"] is False
    run_eval(ScriptedEngine(llama, tokenizer, ideal_script(tokenizer, samples)), cfg, tmp_path,
             progress=False)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_s"} for r in rs]  # noqa: E731
    assert strip(read_cell(cell_path(tmp_path, "passkey", LENGTH, "dac"))) == strip(recs["dac"])
    with pytest.raises(ValueError, match="batch_size"):
        run_samples(eng, samples, "dac", PlanConfig(**PLAN), max_new_tokens=12, batch_size=0)
