"""lm-evaluation-harness: ``--model dac`` on a local YAML task, a local JSONL file and a tiny
random model, fully offline; per-sample attended tokens and decode steps are logged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'dac[lm-eval]')")

from dac.models import tiny_model  # noqa: E402

TASK = "dac_lm_eval_smoke"
DOCS = [
    {"context": " ".join(f"Line {i}: the river runs past the old mill and the harbour."
                         for i in range(k, k + 12)),
     "question": f"Which line comes first? ({k})", "answer": f"Line {k}"}
    for k in range(3)
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    d = tmp_path_factory.mktemp("tiny")
    # seed 1: a random model that does not stop at once, so decode steps are measured
    tiny_model("llama", vocab_size=len(tokenizer), seed=1).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def write_task(root: Path) -> Path:
    """A generate_until task reading a local JSONL file (no hub, no download)."""
    tasks = root / "tasks"
    tasks.mkdir()
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (tasks / f"{TASK}.yaml").write_text(textwrap.dedent(f"""\
        task: {TASK}
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {data}
        test_split: test
        output_type: generate_until
        doc_to_text: "{{{{context}}}}\\n\\nQuestion: {{{{question}}}}"
        doc_to_target: "{{{{answer}}}}"
        generation_kwargs:
          until: ["</answer>"]
          max_gen_toks: 6
          do_sample: false
        metric_list:
          - metric: exact_match
            aggregation: mean
            higher_is_better: true
        metadata:
          version: 1.0
        """))
    return tasks


def offline_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HOME=str(root / "hf"), HF_DATASETS_CACHE=str(root / "hf" / "datasets"),
               TOKENIZERS_PARALLELISM="false")
    env.pop("DAC_LM_EVAL_STATS", None)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    return env


@pytest.mark.slow
def test_lm_eval_cli_runs_a_local_task_under_dac(model_dir, tmp_path):
    tasks = write_task(tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "dac.lm_eval", "run", "--model", "dac",
           "--model_args", f"pretrained={model_dir},protocol=da,policy=dac,chunk_tokens=48",
           "--tasks", TASK, "--include_path", str(tasks), "--output_path", str(out),
           "--log_samples", "--batch_size", "2"]
    proc = subprocess.run(cmd, env=offline_env(tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

    results = list(out.rglob("results_*.json"))
    samples = list(out.rglob(f"samples_{TASK}_*.jsonl"))
    stats = list(out.glob("dac_stats_*.jsonl"))
    assert len(results) == len(samples) == len(stats) == 1, sorted(out.rglob("*"))
    res = json.loads(results[0].read_text())
    assert "exact_match,none" in res["results"][TASK]
    info = res["config"]["dac"]
    assert info["protocol"] == "da" and info["policy"] == "dac"
    assert info["samples"] == len(DOCS) and info["stats_path"] == str(stats[0])
    assert info["decode_steps_mean"] > 0

    logged = [json.loads(line) for line in samples[0].read_text().splitlines()]
    records = [json.loads(line) for line in stats[0].read_text().splitlines()]
    assert len(logged) == len(records) == len(DOCS)
    # every stats record joins one logged sample on (doc_id, prompt_hash), same output
    by_key = {(r["doc_id"], r["prompt_hash"]): r for r in records}
    for s in logged:
        r = by_key[(s["doc_id"], s["prompt_hash"])]
        assert r["task"] == TASK and r["protocol"] == "da" and r["policy"] == "dac"
        assert r["output"] == s["resps"][0][0]
        assert r["sections"] > 1  # the context was cut into several magic chunks
        assert 0 < r["decode_steps"] <= 6 and r["max_gen_toks"] == 6
        assert 0 < r["attended_tokens"] <= r["full_tokens"]
        assert set(r["mode_steps"]) >= {"global", "focus", "local"}


@pytest.fixture(scope="module")
def lm(model_dir):
    from dac.lm_eval import DACLM

    return DACLM(pretrained=str(model_dir), protocol="da", policy="dac", chunk_tokens=48,
                 output="text")


def request(context: str, **gen):
    from lm_eval.api.instance import Instance

    return Instance("generate_until", {}, (context, gen), 0, (TASK, 0, 1))


def test_until_in_generation_scope_trims_text_and_steps(lm):
    from dac.lm_eval import truncate_result

    ctx = DOCS[0]["context"] + "\n\nQuestion: " + DOCS[0]["question"]
    [full] = lm.engine.generate([lm.layout(ctx)], policy=lm.policy, config=lm.plan,
                                max_new_tokens=12, sampling={"do_sample": False})
    assert len(full.steps) >= 6 and len(full.text) > 4
    stop = full.text[len(full.text) // 2:len(full.text) // 2 + 2]
    cut, hit = truncate_result(full, lm.tokenizer, [stop])
    assert hit == stop and cut.text == full.text[:full.text.find(stop)]
    assert 0 < len(cut.steps) < len(full.steps) and cut.terminated
    assert cut.stats()["decode_steps"] == len(cut.steps)
    assert truncate_result(full, lm.tokenizer, ["\x00never"]) == (full, None)

    lm.until_scope = "generation"
    try:
        [text] = lm.generate_until([request(ctx, until=[stop], max_gen_toks=12)],
                                   disable_tqdm=True)
    finally:
        lm.until_scope = "output"
    assert text == cut.text and lm.records[-1]["stop"] == stop
    assert lm.records[-1]["decode_steps"] == len(cut.steps)
    # output scope: the whole generation is accounted for, the scored string is still cut
    [text] = lm.generate_until([request(ctx, until=[stop], max_gen_toks=12)],
                               disable_tqdm=True)
    assert text == cut.text and lm.records[-1]["decode_steps"] == len(full.steps)


def test_loglikelihood_is_refused_clearly(lm):
    with pytest.raises(NotImplementedError, match="--model hf"):
        lm.loglikelihood([])


def test_bad_model_args_fail_before_loading(model_dir):
    from dac.lm_eval import DACLM

    with pytest.raises(ValueError, match="unknown model argument"):
        DACLM(pretrained=str(model_dir), protocl="da")
    with pytest.raises(ValueError, match="output must be"):
        DACLM(pretrained=str(model_dir), output="json")


def test_context_split_and_stops():
    from dac.lm_eval import cut_at_stops, default_stats_path, split_context, unescape

    assert split_context("a\n\nb\n\nQ: c?", "\n\n") == ("a\n\nb", "Q: c?")
    assert split_context("no separator", "\n\n") == ("", "no separator")
    assert split_context("doc\n\n", "\n\n") == ("", "doc")
    assert split_context("doc\n\nQ", None) == ("", "doc\n\nQ")
    assert split_context("doc\nQuestion: q", unescape(r"\nQuestion:")) == ("doc", "q")
    assert cut_at_stops("x</answer>y\n\nz", ["\n\n", "</answer>"]) == ("x", "</answer>")
    assert cut_at_stops("xyz", []) == ("xyz", None)
    assert default_stats_path("o/r.json") == Path("o/r.dac_stats.jsonl")
    assert default_stats_path("o").parent == Path("o")
