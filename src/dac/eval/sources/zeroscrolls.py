"""ZeroSCROLLS (tau/zero_scrolls ``<task>.jsonl``): ``quality`` and ``space_digest``.

Records: ``id``, ``pid``, ``input`` (the whole prompt), ``output`` (the reference; null in the
test split, whose references are private: use the validation split), ``document_start_index``
/ ``document_end_index`` (the document inside ``input``), ``query_start_index`` /
``query_end_index`` (the query inside ``input``), ``truncation_seperator``.

QuALITY's query holds the question and its options ``(A) ...`` to ``(D) ...``; its reference
starts with the correct option's letter. SpaceDigest's reference is a percentage of positive
reviews; its question is the task's instruction (the text before the document).
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import SourceExample, fail, need, read_records

_OPTION = re.compile(r"\(([A-D])\)\s*")
_HEADER = re.compile(r"\n\n[^\n]*:\s*$")  # "\n\nStory:" / "\n\nReviews:" before the document


def _span(rec: dict, text: str, a: str, b: str, path: Path, where: str) -> str:
    i, j = need(rec, a, path, where, int), need(rec, b, path, where, int)
    if not 0 <= i <= j <= len(text):
        raise fail(path, where, f"fields {a!r}/{b!r} ({i}, {j}) fall outside 'input' "
                   f"({len(text)} characters)")
    return text[i:j]


def split_options(query: str) -> tuple[str, list[str]]:
    """QuALITY's query as ``(question, [option A, ..., option D])``."""
    parts = _OPTION.split(query)
    if len(parts) < 9:
        return query.strip(), []
    question, rest = parts[0], parts[1:]
    options = {rest[i]: rest[i + 1].strip() for i in range(0, len(rest) - 1, 2)}
    return question.strip(), [options.get(x, "") for x in "ABCD"]


def load(name: str, path: Path, span: str, metric: str, task: str) -> list[SourceExample]:
    """``task``: ``quality`` or ``space_digest``."""
    out = []
    for where, rec in read_records(path):
        text = need(rec, "input", path, where)
        if rec.get("output") is None and "output" in rec:
            raise fail(path, where, "field 'output' is null (test-split references are "
                       "private: use the validation split)")
        output = need(rec, "output", path, where)
        context = _span(rec, text, "document_start_index", "document_end_index", path, where)
        query = _span(rec, text, "query_start_index", "query_end_index", path, where).strip()
        rid = str(rec.get("id") or where.split()[-1])
        meta = {k: rec[k] for k in ("pid",) if k in rec}
        if task == "quality":
            question, choices = split_options(query)
            if not all(choices):
                raise fail(path, where, "the query holds no options (A) to (D)")
            m = re.match(r"\s*\(?([A-D])\b", output)
            found = [i for i, c in enumerate(choices) if c and c.lower() in output.lower()]
            if m:
                answer = m.group(1)
            elif len(found) == 1:
                answer = "ABCD"[found[0]]
            else:
                raise fail(path, where, f"field 'output' names no option: {output[:60]!r}")
            out.append(SourceExample(name, rid, context, question, [answer], choices=choices,
                                     metric=metric, span=span, meta=meta))
        else:
            question = query or _HEADER.sub("", text[:rec["document_start_index"]]).strip()
            if not re.search(r"\d", output):
                raise fail(path, where, f"field 'output' holds no percentage: {output[:60]!r}")
            out.append(SourceExample(name, rid, context, question, [output.strip()],
                                     metric=metric, span=span, meta=meta))
    return out
