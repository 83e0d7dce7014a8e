"""The paper's sources load from fixture files in their published layouts; selection and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dac.eval.sources import (SOURCES, SourceDataError, list_sources, load_source, select,
                              write_fixtures)
from dac.eval.sources.fixtures import fixture_paths

FIXTURES = Path(__file__).parent.parent / "fixtures" / "sources"
PAPER = ["ruler.niah_single_1", "ruler.niah_single_2", "ruler.niah_single_3",
         "ruler.niah_multikey_2", "ruler.niah_multikey_3", "longbench.qmsum",
         "longbench_v2.multidoc_qa", "longbench_v2.singledoc_qa",
         "longbench_v2.dialogue_history", "longbench_v2.code_repo", "loogle.summarization",
         "loogle.longdep_qa", "loogle.shortdep_cloze", "zeroscrolls.quality",
         "zeroscrolls.space_digest"]
MULTI = {"longbench_v2.singledoc_qa", "longbench_v2.dialogue_history", "loogle.longdep_qa",
         "loogle.shortdep_cloze", "zeroscrolls.space_digest"}


def test_registry_has_the_papers_fifteen_and_generic():
    assert set(SOURCES) == set(PAPER) | {"jsonl"}
    assert {s.name for s in SOURCES.values() if s.span == "multi"} == MULTI
    rows = list_sources()
    assert [r["name"] for r in rows] == list(SOURCES)
    assert all(set(r) == {"name", "family", "span", "metric", "description"} for r in rows)


def test_committed_fixtures_are_what_write_fixtures_writes(tmp_path):
    written = write_fixtures(tmp_path)
    assert written and all(p.is_file() for p in written)
    for p in written:
        rel = p.relative_to(tmp_path)
        assert (FIXTURES / rel).read_bytes() == p.read_bytes(), f"stale fixture {rel}"


@pytest.mark.parametrize("name", PAPER + ["jsonl"])
def test_every_source_loads_from_its_fixture(name):
    from dac.eval.scoring import METRICS

    examples = load_source(name, fixture_paths(FIXTURES)[name])
    spec = SOURCES[name]
    assert len(examples) >= 2
    assert len({e.id for e in examples}) == len(examples)
    for e in examples:
        assert e.source == name and e.context.strip() and e.question.strip() and e.answers
        assert e.metric in METRICS
        if name != "jsonl":
            assert e.metric == spec.metric and e.span == spec.span
        if e.metric == "choice":
            assert e.choices and len(e.choices) == 4 and e.answers[0] in "ABCD"
            assert "(A) " in e.prompt_question() and "(D) " in e.prompt_question()
        elif spec.family != "jsonl":
            assert e.choices is None
        if spec.family == "ruler":  # the haystack holds the needle, the question is separate
            assert all(a in e.context for a in e.answers)
            assert e.question.startswith("What are all the special magic")
            assert not e.context.startswith("Some special magic")
            assert e.meta["instruction"].startswith("Some special magic")


def test_answers_are_found_in_the_context():
    p = fixture_paths(FIXTURES)
    for e in load_source("loogle.longdep_qa", p["loogle.longdep_qa"]):
        assert e.answers[0] in e.context
    for e in load_source("loogle.shortdep_cloze", p["loogle.shortdep_cloze"]):
        for ref in e.answers:
            mask, _, entity = ref.partition(": ")
            assert mask in e.question and entity.strip() in e.context
    for e in load_source("longbench_v2.code_repo", p["longbench_v2.code_repo"]):
        assert e.choices["ABCD".index(e.answers[0])] in e.context
    for e in load_source("zeroscrolls.space_digest", p["zeroscrolls.space_digest"]):
        assert e.answers[0].endswith("%") and "Review 1:" in e.context
        assert "percentage of positive reviews" in e.question


def test_longbench_v2_selects_by_domain():
    path = fixture_paths(FIXTURES)["longbench_v2.multidoc_qa"]
    records = json.loads(path.read_text())
    for key, domain in [("multidoc_qa", "Multi-Document QA"),
                        ("dialogue_history", "Long-dialogue History Understanding")]:
        got = load_source(f"longbench_v2.{key}", path)
        assert {e.id for e in got} == {r["_id"] for r in records if r["domain"] == domain}
        assert all(e.meta["domain"] == domain for e in got)
    narrowed = load_source("longbench_v2.dialogue_history", path,
                           sub_domain="Dialogue history QA")
    assert len(narrowed) == 2


def test_a_dataset_folder_finds_the_published_file_name():
    ex = load_source("longbench.qmsum", FIXTURES / "longbench")
    assert len(ex) == 3
    assert load_source("ruler.niah_single_2", FIXTURES / "ruler")[0].source == "ruler.niah_single_2"
    with pytest.raises(FileNotFoundError, match="no data file for zeroscrolls.quality"):
        load_source("zeroscrolls.quality", FIXTURES / "longbench")


def test_parquet_and_json_list_read_like_jsonl(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    recs = [json.loads(x) for x in
            (FIXTURES / "generic" / "examples.jsonl").read_text().splitlines()][:1]
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "x.parquet")
    (tmp_path / "x.json").write_text(json.dumps(recs))
    a = load_source("jsonl", FIXTURES / "generic" / "examples.jsonl")[0]
    for f in ("x.parquet", "x.json"):
        assert load_source("jsonl", tmp_path / f)[0] == a


def test_missing_field_is_one_line_naming_file_record_and_field():
    path = FIXTURES / "errors" / "qmsum_missing_context.jsonl"
    with pytest.raises(SourceDataError) as err:
        load_source("longbench.qmsum", path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "line 2" in msg and "'context'" in msg


@pytest.mark.parametrize("record, field", [
    ({"context": "c", "question": "q"}, "answers"),
    ({"context": "c", "answers": ["a"]}, "question"),
    ({"context": "c", "question": "q", "answers": "zz", "choices": ["x", "y"]}, "answer"),
    ({"context": 3, "question": "q", "answers": "a"}, "context"),
])
def test_malformed_generic_records(tmp_path, record, field):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"context": "ok", "question": "q", "answers": ["a"]}) + "\n"
                    + json.dumps(record) + "\n")
    with pytest.raises(SourceDataError, match=rf"bad\.jsonl: line 2: .*{field}"):
        load_source("jsonl", path)


def test_zeroscrolls_test_split_without_references_is_an_error(tmp_path):
    src = fixture_paths(FIXTURES)["zeroscrolls.quality"]
    rec = json.loads(src.read_text().splitlines()[0])
    rec["output"] = None
    (tmp_path / "test.jsonl").write_text(json.dumps(rec) + "\n")
    with pytest.raises(SourceDataError, match="line 1: field 'output' is null.*validation"):
        load_source("zeroscrolls.quality", tmp_path / "test.jsonl")


def test_wrong_file_for_a_source_is_an_error():
    qmsum = fixture_paths(FIXTURES)["longbench.qmsum"]
    with pytest.raises(SourceDataError, match="missing field 'domain'"):
        load_source("longbench_v2.code_repo", qmsum)
    with pytest.raises(SourceDataError, match="missing field 'outputs'"):
        load_source("ruler.niah_single_1", qmsum)


def test_unknown_source_and_missing_file():
    with pytest.raises(ValueError, match="unknown source 'longbench.nope'.*ruler.niah_single_1"):
        load_source("longbench.nope", FIXTURES)
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        load_source("jsonl", FIXTURES / "nowhere.jsonl")
    with pytest.raises(ValueError, match="reads a local file"):
        load_source("loogle.longdep_qa", None)


def test_select_drops_over_budget_with_the_models_tokenizer(tokenizer):
    examples = load_source("jsonl", FIXTURES / "errors" / "over_budget.jsonl")
    sizes = {e.id: len(tokenizer(e.context, add_special_tokens=False)["input_ids"])
             for e in examples}
    budget = 2000
    assert sizes["long-0"] > budget and all(v <= budget for k, v in sizes.items()
                                            if k != "long-0")
    sel = select(examples, tokenizer, budget=budget, n=128, seed=0)
    assert sel.dropped == [("long-0", sizes["long-0"])]
    assert sorted(e.id for e in sel.kept) == ["short-0", "short-1", "short-2"]
    assert len(sel.kept) + len(sel.dropped) == len(examples)


def test_select_draw_is_deterministic_in_ids_and_seed(tokenizer):
    examples = load_source("loogle.longdep_qa", fixture_paths(FIXTURES)["loogle.longdep_qa"])
    examples += load_source("jsonl", FIXTURES / "errors" / "over_budget.jsonl")
    a = select(examples, tokenizer, budget=10 ** 6, n=3, seed=7)
    b = select(list(reversed(examples)), tokenizer, budget=10 ** 6, n=3, seed=7)
    assert [e.id for e in a.kept] == [e.id for e in b.kept] and len(a.kept) == 3
    draws = {tuple(e.id for e in select(examples, tokenizer, 10 ** 6, 3, s).kept)
             for s in range(6)}
    assert len(draws) > 1  # the seed matters
    assert len(select(examples, tokenizer, 10 ** 6, 100, 0).kept) == len(examples)


def test_ruler_offline_generation(tokenizer):
    for name in ("ruler.niah_single_2", "ruler.niah_multikey_2"):
        a = load_source(name, None, tokenizer=tokenizer, length=600, n=2, seed=3)
        b = load_source(name, None, tokenizer=tokenizer, length=600, n=2, seed=3)
        assert a == b and len(a) == 2 and len({e.id for e in a}) == 2
        for e in a:
            assert e.chunks and all(x in e.context for x in e.answers)
            assert e.metric == "substring" and e.span == "single"
    with pytest.raises(ValueError, match="tokenizer"):
        load_source("ruler.niah_single_1", None)


def test_find_data_in_a_dataset_folder():
    from dac.eval.sources import find_data

    paths = fixture_paths(FIXTURES)
    for name in PAPER:
        assert find_data(name, FIXTURES) == paths[name], name
    assert find_data("jsonl", FIXTURES) is None
    assert find_data("loogle.longdep_qa", FIXTURES / "ruler") is None
