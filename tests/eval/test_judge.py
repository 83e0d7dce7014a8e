"""``dac judge``: rubrics written once, one verdict per record, format failures without a
judge call, truncated verdicts flagged, one judge per run; plus the HF engine judge and one
run through a real OpenAI-compatible server (``dac serve`` on a tiny model)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.helpers import free_port, serve_subprocess

from dac.cli import main
from dac.eval.judge import (Completion, Example, ModelJudge, RubricStore, StubAuthor, StubJudge,
                            format_failure, judge_run, load_verdicts, parse_verdict)

CELL = "qa__4096__da"


def _rec(id: str, output: str, *, protocol: str = "da", question: str | None = "Who won?",
         answers: Sequence[str] = ("Ada",), **extra) -> dict:
    r = {"id": id, "task": "qa", "policy": "dac", "protocol": protocol, "output": output,
         "answer": output, "answers": list(answers), "score": 0.0, **extra}
    if question is not None:
        r["question"] = question
    return r


def _run(tmp_path: Path, records: list[dict], cell: str = CELL) -> Path:
    run = tmp_path / "run"
    (run / "cells").mkdir(parents=True, exist_ok=True)
    with (run / "cells" / f"{cell}.jsonl").open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return run


def _verdicts(run: Path, cell: str = CELL) -> dict[str, dict]:
    return {i: v for (c, i), v in load_verdicts(run).items() if c == cell}


class CountingJudge(StubJudge):
    """A stub that counts what it was asked, and can be told to run out of tokens."""

    model = "counting"

    def __init__(self, finish: str = "stop", text: str | None = None):
        self.calls: list[str] = []
        self.finish, self.text = finish, text

    def judge_many(self, items, *, max_tokens):
        self.calls += [i.id for i in items]
        return [Completion(self.text if self.text is not None else self.decide(i).text,
                           self.finish) for i in items]


RECORDS = [
    _rec("q1", "I think <answer>Ada Lovelace</answer>"),         # pass
    _rec("q2", "<answer>Charles</answer>"),                        # fail
    _rec("q3", "Ada, but I forgot the tags"),                     # format failure
    _rec("q4", "<answer>ada</answer>", protocol="brackets"),      # no tag rule: judged
]


def test_stub_end_to_end_through_cli(tmp_path, capsys):
    run = _run(tmp_path, RECORDS)
    assert main(["judge", str(run), "--stub", "--stub-rubrics", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "4 record(s)" in out and "2 pass" in out and "1 format failure" in out
    v = _verdicts(run)
    assert [v[i]["verdict"] for i in ("q1", "q2", "q3", "q4")] == [True, False, False, True]
    assert [v[i]["score"] for i in ("q1", "q2", "q3", "q4")] == [1, 0, 0, 1]
    assert v["q3"]["format_failure"] and v["q3"]["raw"] == "" and v["q3"]["rubric_author"] is None
    for i in ("q1", "q2", "q4"):
        assert v[i]["judge"] == {"model": "stub", "where": "in-process"}
        assert v[i]["rubric_author"] == "stub-author"
        assert not v[i]["truncated"] and not v[i]["format_failure"]
        assert "VERDICT:" in v[i]["raw"]
    # verdicts line up with the cell file, one line per record, same order
    lines = (run / "judge" / f"{CELL}.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["q1", "q2", "q3", "q4"]
    # rubrics: once per question (q3 never needed one), with author and time
    rubrics = [json.loads(x) for x in (run / "rubrics.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rubrics) == ["q1", "q2", "q4"]
    assert all(r["author"] == "stub-author" and r["created"] for r in rubrics)
    assert rubrics[0]["rubric"].startswith("PASS if the answer contains: Ada")


def test_rubrics_written_once_and_verdicts_reused(tmp_path):
    run = _run(tmp_path, RECORDS[:2])
    store = RubricStore(tmp_path / "shared.jsonl")
    s1 = judge_run(run, StubJudge(), store, author=StubAuthor())
    assert s1.rubrics_written == 2 and s1.judged == 2
    before = (tmp_path / "shared.jsonl").read_text()
    judge = CountingJudge()
    judge.model = "stub"  # the same judge as before
    # a second arm with the same ids: rubrics exist, no author needed
    (run / "cells" / "qa__4096__full.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in RECORDS[:2]))
    s2 = judge_run(run, judge, RubricStore(tmp_path / "shared.jsonl"), author=None)
    assert s2.rubrics_written == 0 and s2.reused == 2 and judge.calls == ["q1", "q2"]
    assert (tmp_path / "shared.jsonl").read_text() == before
    assert _verdicts(run, "qa__4096__full") .keys() == {"q1", "q2"}


def test_format_failure_makes_no_judge_call(tmp_path):
    run = _run(tmp_path, [_rec("f1", "no tags at all"), _rec("f2", "<answer></answer>"),
                          _rec("f3", "<answer>Ada</answer>", format_failure=True),
                          _rec("f4", "<answer>unclosed Ada", protocol="vanilla")])
    judge = CountingJudge()
    s = judge_run(run, judge, RubricStore(tmp_path / "r.jsonl"), author=StubAuthor())
    assert judge.calls == [] and s.judged == 0 and s.format_failures == 4
    assert s.rubrics_written == 0 and not (tmp_path / "r.jsonl").exists()
    v = _verdicts(run)
    assert all(v[i]["format_failure"] and v[i]["score"] == 0 for i in v)
    assert all(v[i]["judge"]["model"] == "counting" for i in v)


def test_truncated_and_unparseable_verdicts_are_flagged_wrong(tmp_path):
    run = _run(tmp_path, [_rec("t1", "<answer>Ada</answer>")])
    store = RubricStore(tmp_path / "r.jsonl")
    # cut by the token cap: wrong even though the text so far says PASS
    s = judge_run(run, CountingJudge(finish="length"), store, author=StubAuthor())
    v = _verdicts(run)["t1"]
    assert v["truncated"] and not v["verdict"] and v["finish_reason"] == "length"
    assert s.truncated == [f"{CELL}:t1"] and s.passed == 0
    # a reply with no verdict in it
    s = judge_run(run, CountingJudge(text="<think>hmm VERDICT: PASS</think> I am unsure."),
                  store, overwrite=True)
    v = _verdicts(run)["t1"]
    assert v["truncated"] and not v["verdict"] and v["finish_reason"] == "stop"
    # the stub on a rubric it cannot read: no verdict either
    store2 = RubricStore(tmp_path / "r2.jsonl")
    from dac.eval.judge import Rubric

    store2.add(Rubric("t1", "Grade it however you like", "me", "now"))
    s = judge_run(run, StubJudge(), store2, overwrite=True)
    assert s.truncated == [f"{CELL}:t1"] and _verdicts(run)["t1"]["rubric_author"] == "me"


def test_another_judge_is_refused_unless_overwrite(tmp_path, capsys):
    run = _run(tmp_path, RECORDS[:1])
    assert main(["judge", str(run), "--stub", "--stub-rubrics", "--quiet"]) == 0
    capsys.readouterr()
    with pytest.raises(ValueError, match="already has verdicts by judge 'stub'"):
        judge_run(run, CountingJudge(), RubricStore(run / "rubrics.jsonl"))
    judge = CountingJudge()
    judge_run(run, judge, RubricStore(run / "rubrics.jsonl"), overwrite=True)
    assert judge.calls == ["q1"] and _verdicts(run)["q1"]["judge"]["model"] == "counting"
    # and through the CLI: one line, exit 2
    assert main(["judge", str(run), "--stub", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dac: error: ") and "one judge per run" in err
    assert len(err.strip().splitlines()) == 1


def test_model_judge_prompt_carries_question_rubric_and_answer(tmp_path):
    class Chat:
        model, where = "fake", "nowhere"

        def __init__(self):
            self.seen = []

        def complete_many(self, conversations, *, max_tokens):
            self.seen += conversations
            return [Completion("<think>VERDICT: FAIL</think>VERDICT: PASS", "stop")
                    for _ in conversations]

    chat = Chat()
    run = _run(tmp_path, [_rec("m1", "thinking... <answer>Ada Lovelace</answer>",
                               choices=["Ada", "Bob"])])
    s = judge_run(run, ModelJudge(chat), RubricStore(tmp_path / "r.jsonl"), author=StubAuthor())
    user = chat.seen[0][-1]["content"]
    assert "Who won?\nA. Ada\nB. Bob" in user and "PASS if the answer contains: Ada" in user
    assert "Candidate answer:\nAda Lovelace\n" in user and "thinking" not in user
    assert s.passed == 1 and _verdicts(run)["m1"]["judge"] == {"model": "fake",
                                                              "where": "nowhere"}


def test_parse_verdict():
    assert parse_verdict("reasoning...\nVERDICT: PASS") is True
    assert parse_verdict("**Verdict:** FAIL") is False
    assert parse_verdict("VERDICT: FAIL\n...on reflection\nVERDICT: PASS") is True
    assert parse_verdict("<think>VERDICT: PASS</think>\nVERDICT: FAIL") is False
    assert parse_verdict("reasoning only</think>VERDICT: PASS") is True
    assert parse_verdict("<think>VERDICT: PASS and then cut") is None
    assert parse_verdict(" pass. ") is True and parse_verdict("No") is False
    assert parse_verdict("the answer passes the rubric") is None


def test_format_failure_rule():
    assert format_failure({"protocol": "da", "output": "x"})
    assert not format_failure({"protocol": "da", "output": "<ANSWER> B </answer>"})
    assert not format_failure({"protocol": "brackets", "output": "x"})
    assert not format_failure({"protocol": "da", "output": "x", "format_failure": False})


def test_examples_mapping_and_missing_question(tmp_path):
    run = _run(tmp_path, [_rec("e1", "<answer>Paris</answer>", question=None, answers=())])
    store = RubricStore(tmp_path / "r.jsonl")
    with pytest.raises(ValueError, match="no question to write one from"):
        judge_run(run, StubJudge(), store, author=StubAuthor())
    ex = {"e1": Example("France's capital is Paris.", "Capital of France?", ["Paris"])}
    s = judge_run(run, StubJudge(), store, author=StubAuthor(), examples=ex)
    assert s.passed == 1 and store.get("e1").question == "Capital of France?"


def test_cli_errors_are_one_line(tmp_path, capsys):
    for argv in (["judge", str(tmp_path / "nope"), "--stub"],
                 ["judge", str(_run(tmp_path, RECORDS[:1]))],
                 ["judge", str(tmp_path / "run"), "--judge-url", "http://127.0.0.1:9",
                  "--judge-model", "m"],
                 ["judge", str(tmp_path / "run"), "--judge-url", "http://127.0.0.1:9"],
                 ["judge", str(tmp_path / "run"), "--stub", "--judge-extra", "[1]"],
                 ["judge", str(tmp_path / "run"), "--stub"]):  # no rubric, no author
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("dac: error: ") and len(err.strip().splitlines()) == 1, err


# -- real models ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from dac.models import tiny_model, tiny_tokenizer

    path = tmp_path_factory.mktemp("judge-model")
    tok = tiny_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok), hidden=128, heads=2, kv_heads=1,
                       head_dim=64, seed=5)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _check_plumbing(run: Path, model: str, where_prefix: str) -> None:
    v = _verdicts(run)
    assert set(v) == {"q1", "q2", "q3", "q4"}
    assert v["q3"]["format_failure"] and v["q3"]["score"] == 0
    for i in ("q1", "q2", "q4"):
        assert v[i]["judge"]["model"] == model
        assert v[i]["judge"]["where"].startswith(where_prefix)
        assert v[i]["rubric_author"] == "stub-author"
        assert v[i]["finish_reason"] in ("stop", "length")
        # a random model writes no verdict (or runs out of tokens): flagged, wrong
        if v[i]["truncated"]:
            assert v[i]["score"] == 0
        assert v[i]["score"] == int(v[i]["verdict"])


@pytest.mark.slow
def test_hf_engine_judge(tmp_path, tiny_dir, capsys):
    run = _run(tmp_path, RECORDS)
    assert main(["judge", str(run), "--judge-model-dir", str(tiny_dir), "--judge-model", "tiny",
                 "--stub-rubrics", "--max-tokens", "8", "--device", "cpu", "--quiet"]) == 0
    assert "4 record(s)" in capsys.readouterr().out
    _check_plumbing(run, "tiny", "hf:")


@pytest.fixture(scope="module")
def server(tiny_dir, tmp_path_factory):
    """``dac serve`` (vLLM's OpenAI server + DAC) on the tiny model, on loopback."""
    pytest.importorskip("vllm")
    pytest.importorskip("httpx")
    port = free_port()
    folder = tmp_path_factory.mktemp("judge-serve")
    log = folder / "server.log"
    template = folder / "chat.jinja"  # the tiny tokenizer has no chat template
    template.write_text("{% for m in messages %}{{ m['content'] }}\n\n{% endfor %}Answer:")
    cmd = [sys.executable, "-m", "dac.cli", "serve", "--model", str(tiny_dir), "--port",
           str(port), "--block-size", "32", "--max-model-len", "2048", "--dtype", "float32",
           "--served-model-name", "tiny-judge", "--", "--max-num-seqs", "8", "--seed", "0",
           "--chat-template", str(template)]
    yield from serve_subprocess(cmd, port, log)


@pytest.mark.slow
@pytest.mark.vllm
def test_judge_through_dac_serve(tmp_path, server, capsys, monkeypatch):
    run = _run(tmp_path, RECORDS)
    monkeypatch.setenv("TEST_JUDGE_KEY", "not-checked")
    argv = ["judge", str(run), "--judge-url", server + "/v1", "--judge-model", "tiny-judge",
            "--judge-api-key-env", "TEST_JUDGE_KEY", "--judge-extra", '{"dac": false}',
            "--stub-rubrics", "--max-tokens", "8", "--concurrency", "2", "--quiet"]
    assert main(argv) == 0
    assert "4 record(s)" in capsys.readouterr().out
    _check_plumbing(run, "tiny-judge", server)
    # 8 tokens of a random model: cut by the cap or no verdict, so every call is flagged
    assert all(v["truncated"] for i, v in _verdicts(run).items() if i != "q3")
    # a wrong model name is the server's one-line refusal
    bad = argv[:2] + ["--judge-url", server, "--judge-model", "nope", "--stub-rubrics",
                      "--overwrite", "--quiet"]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert err.startswith("dac: error: ") and "HTTP 404" in err
