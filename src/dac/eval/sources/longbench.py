"""LongBench v1 (THUDM/LongBench ``data/<task>.jsonl``) and LongBench v2 (``data.json``).

v1 records: ``input`` (the query), ``context``, ``answers`` (list), ``length``, ``dataset``,
``language``, ``all_classes``, ``_id``. v2 records: ``_id``, ``domain``, ``sub_domain``,
``difficulty``, ``length``, ``question``, ``choice_A`` .. ``choice_D``, ``answer`` (a letter),
``context``; the paper's four v2 sources are selected by ``domain``.
"""

from __future__ import annotations

from pathlib import Path

from .base import SourceExample, fail, need, read_records, str_list

#: the paper's LongBench v2 sources -> the published ``domain`` value
V2_DOMAINS = {
    "multidoc_qa": "Multi-Document QA",
    "singledoc_qa": "Single-Document QA",
    "dialogue_history": "Long-dialogue History Understanding",
    "code_repo": "Code Repository Understanding",
}
LETTERS = ("A", "B", "C", "D")


def load_v1(name: str, path: Path, span: str, metric: str,
            dataset: str | None = None) -> list[SourceExample]:
    out = []
    for where, rec in read_records(path):
        if dataset and not str(rec.get("dataset") or dataset).startswith(dataset):
            raise fail(path, where, f"field 'dataset' is {rec.get('dataset')!r}, expected "
                       f"{dataset!r} (is this the {dataset}.jsonl file?)")
        context = need(rec, "context", path, where)
        question = need(rec, "input", path, where, nonempty=False)
        answers = str_list(rec, "answers", path, where)
        rid = str(rec.get("_id") or where.split()[-1])
        meta = {k: rec[k] for k in ("length", "dataset", "language") if k in rec}
        out.append(SourceExample(name, rid, context, question, answers, metric=metric,
                                 span=span, meta=meta))
    return out


def load_v2(name: str, path: Path, span: str, metric: str, domain: str,
            sub_domain: str | None = None) -> list[SourceExample]:
    """The records of ``domain`` (and ``sub_domain`` when given); every kept record must be
    complete, and a file with none of them is an error (the wrong file, not an empty source)."""
    out = []
    seen: set[str] = set()
    records = read_records(path)
    for where, rec in records:
        d = need(rec, "domain", path, where)
        seen.add(d)
        if d != domain or (sub_domain and rec.get("sub_domain") != sub_domain):
            continue
        rid = str(need(rec, "_id", path, where, (str, int)))
        context = need(rec, "context", path, where)
        question = need(rec, "question", path, where)
        choices = [need(rec, f"choice_{x}", path, where) for x in LETTERS]
        answer = need(rec, "answer", path, where).strip().upper()
        if answer not in LETTERS:
            raise fail(path, where, f"field 'answer' is {answer!r}, expected one of A, B, C, D")
        meta = {k: rec[k] for k in ("domain", "sub_domain", "difficulty", "length") if k in rec}
        out.append(SourceExample(name, rid, context, question, [answer], choices=choices,
                                 metric=metric, span=span, meta=meta))
    if records and not out:
        want = domain + (f" / {sub_domain}" if sub_domain else "")
        raise fail(path, "all records", f"no record with domain {want!r} (found: "
                   f"{', '.join(sorted(seen))})")
    return out
