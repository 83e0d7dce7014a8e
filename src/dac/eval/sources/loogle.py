"""LooGLE (bigai-nlco/LooGLE): ``longdep_summarization``, ``longdep_qa``, ``shortdep_cloze``.

Two published layouts are read:

* per document (the GitHub ``LooGLE-testdata/<task>.jsonl`` and the HF ``bigainlco/LooGLE``
  script): ``input`` (the document), ``title``, ``qa_pairs`` (a list of ``{"Q", "A", "S",
  "type"}``, or that list as a JSON or Python-literal string, or ``"none"``), ``output`` (the
  summary, or ``"none"``). Each QA pair becomes one example; a cloze ``A`` is a dict
  ``{"<mask-0>": "Entity", ...}``;
* per question (the later parquet conversion): ``context``, ``question``, ``answer``
  (cloze: that dict, or its JSON), optional ``title``/``doc_id``/``id``/``evidence``.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from .base import SourceExample, fail, need, read_records

#: what the published prompt (config/task2prompt.json) asks for, as the question alone
SUMMARY_QUESTION = "Please generate a summary of the above paper."
_NONE = (None, "", "none", "None")


def _parse(value: Any, path: Path, where: str, key: str) -> Any:
    if not isinstance(value, str):
        return value
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(value)
        except (ValueError, SyntaxError):
            continue
    raise fail(path, where, f"field {key!r} is neither JSON nor a Python literal")


def _cloze_refs(answer: Any, path: Path, where: str) -> list[str]:
    if not isinstance(answer, dict) or not answer:
        raise fail(path, where, "cloze answer 'A' must be a non-empty dict of masks to entities")
    keys = sorted(answer, key=lambda k: int(re.sub(r"\D", "", str(k)) or 0))
    return [f"{k}: {answer[k]}" for k in keys]


def load(name: str, path: Path, span: str, metric: str, task: str) -> list[SourceExample]:
    """``task``: ``summarization``, ``longdep_qa`` or ``shortdep_cloze``."""
    out: list[SourceExample] = []
    for where, rec in read_records(path):
        doc_key = "input" if "input" in rec or "context" not in rec else "context"
        context = need(rec, doc_key, path, where)
        doc_id = str(rec.get("doc_id") or rec.get("title") or where.split()[-1])
        meta = {"title": rec.get("title", "")}
        if task == "summarization":
            ref_key = "output" if "output" in rec or "answer" not in rec else "answer"
            summary = need(rec, ref_key, path, where)
            if summary in _NONE:
                raise fail(path, where, f"field {ref_key!r} holds no summary")
            out.append(SourceExample(name, str(rec.get("id") or doc_id), context,
                                     SUMMARY_QUESTION, [summary], metric=metric, span=span,
                                     meta=meta))
            continue
        if doc_key == "context":  # one question per record
            pairs = [{"Q": need(rec, "question", path, where),
                      "A": _parse(need(rec, "answer", path, where, (str, dict)), path, where,
                                  "answer") if task == "shortdep_cloze"
                      else need(rec, "answer", path, where),
                      "S": rec.get("evidence")}]
            ids = [str(rec.get("id") or f"{doc_id}-{where.split()[-1]}")]
        else:
            raw = need(rec, "qa_pairs", path, where, (str, list))
            if raw in _NONE:
                raise fail(path, where, "field 'qa_pairs' is 'none' (a summarization record?)")
            pairs = _parse(raw, path, where, "qa_pairs")
            if not isinstance(pairs, list) or not pairs:
                raise fail(path, where, "field 'qa_pairs' is not a non-empty list")
            ids = [f"{doc_id}-{j}" for j in range(len(pairs))]
        for j, (pair, pid) in enumerate(zip(pairs, ids)):
            at = f"{where} qa_pairs[{j}]" if doc_key == "input" else where
            if not isinstance(pair, dict):
                raise fail(path, at, "QA pair is not an object")
            question = need(pair, "Q", path, at)
            if task == "shortdep_cloze":
                answers = _cloze_refs(pair.get("A"), path, at)
            else:
                a = need(pair, "A", path, at, (str, int, float))
                answers = [str(a)]
            m = dict(meta)
            for k in ("type", "S"):
                if pair.get(k):
                    m["evidence" if k == "S" else k] = pair[k]
            out.append(SourceExample(name, pid, context, question, answers, metric=metric,
                                     span=span, meta=m))
    return out
