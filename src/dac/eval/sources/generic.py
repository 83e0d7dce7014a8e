"""The generic JSONL (or JSON/Parquet) layout, for any source not registered by name.

Each record: ``context`` (str), ``question`` (str), ``answers`` (str or list) or ``reference``
(str or list); optional ``choices`` (list of option texts; then the answer is a letter or an
option's text), ``chunks`` (list of str, pre-cut context), ``id``, ``metric`` (a name in
:data:`dac.eval.scoring.METRICS`) and ``span`` ("single" or "multi").
"""

from __future__ import annotations

from pathlib import Path

from .base import SourceExample, fail, letter, need, read_records, str_list


def load(name: str, path: Path, span: str, metric: str | None = None) -> list[SourceExample]:
    from ..scoring import METRICS

    out = []
    for where, rec in read_records(path):
        context = need(rec, "context", path, where)
        question = need(rec, "question", path, where)
        if "answers" not in rec and "reference" not in rec:
            raise fail(path, where, "missing field 'answers' (or 'reference')")
        answers = str_list(rec, "answers" if "answers" in rec else "reference", path, where)
        choices = None
        if rec.get("choices") is not None:
            choices = need(rec, "choices", path, where, list)
            if not all(isinstance(c, str) for c in choices):
                raise fail(path, where, "field 'choices' must be a list of strings")
            letters = [letter(i) for i in range(len(choices))]
            a = answers[0].strip()
            if a.upper() in letters:
                answers = [a.upper()]
            elif a in choices:
                answers = [letters[choices.index(a)]]
            else:
                raise fail(path, where, f"answer {a!r} is neither a choice letter nor a choice")
        chunks = None
        if rec.get("chunks") is not None:
            chunks = need(rec, "chunks", path, where, list)
            if not all(isinstance(c, str) for c in chunks):
                raise fail(path, where, "field 'chunks' must be a list of strings")
        m = rec.get("metric") or metric or ("choice" if choices else "substring")
        if m not in METRICS:
            raise fail(path, where, f"field 'metric' is {m!r}; known: {', '.join(METRICS)}")
        s = rec.get("span") or span
        if s not in ("single", "multi"):
            raise fail(path, where, f"field 'span' is {s!r}, expected 'single' or 'multi'")
        rid = str(rec.get("id") if rec.get("id") is not None else where.split()[-1])
        meta = {k: v for k, v in rec.items() if k not in {
            "context", "question", "answers", "reference", "choices", "chunks", "id",
            "metric", "span"}}
        out.append(SourceExample(name, rid, context, question, answers, choices=choices,
                                 chunks=chunks, metric=m, span=s, meta=meta))
    return out
