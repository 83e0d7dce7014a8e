"""What every source loader shares: the example record, the source spec, file reading, errors.

A loader turns the records of a file in a dataset's *published* layout into
:class:`SourceExample` s. Any record that lacks a field the source needs stops the load with a
:class:`SourceDataError` naming the file, the record and the field: a skipped record would
silently shrink the source's average.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: one-line answer-format hints per metric, appended by :meth:`SourceExample.prompt_question`
HINTS = {
    "choice": "Answer with the letter of the correct choice only.",
    "cloze": "Answer with each mask and its entity, one per line, e.g. <mask-0>: Name.",
    "exp_similarity": "Answer with the percentage only, e.g. 40%.",
    "rouge_l": "Answer with the summary only.",
    "f1": "Answer concisely.",
    "substring": "Answer with the requested value(s) only.",
    "exact": "Answer with the exact text only.",
}


@dataclass(frozen=True)
class SourceExample:
    """One question over one long context, whatever file layout it came from."""

    source: str  # registry name, e.g. "longbench_v2.multidoc_qa"
    id: str  # stable id from the file (or generated deterministically)
    context: str  # the long document
    question: str  # the question alone (no choices)
    answers: list[str]  # references (for multiple choice: the correct letter, e.g. ["B"])
    choices: list[str] | None = None  # multiple-choice options in order (A, B, C, D)
    chunks: list[str] | None = None  # pre-cut chunks when the file gives them, else None
    metric: str = "substring"  # a name in dac.eval.scoring.METRICS
    span: str = "single"  # "single" | "multi" (the paper's split)
    meta: dict = field(default_factory=dict)

    def prompt_question(self) -> str:
        """The question as the model sees it: the question, the lettered choices, then one line
        saying what form the answer takes (so a native metric can read it)."""
        parts = [self.question.strip()]
        if self.choices:
            parts.append("\n".join(f"({letter(i)}) {c}" for i, c in enumerate(self.choices)))
        hint = HINTS.get(self.metric, "")
        if hint and hint.lower() not in self.question.lower():
            parts.append(hint)
        return "\n".join(p for p in parts if p)


def letter(i: int) -> str:
    return chr(ord("A") + i)


@dataclass(frozen=True)
class SourceSpec:
    """A registered source: what it is, how it is scored, what file it reads."""

    name: str
    family: str  # "ruler" | "longbench" | "longbench_v2" | "loogle" | "zeroscrolls" | "jsonl"
    span: str  # "single" | "multi"
    metric: str
    description: str  # one line
    layout: str  # one line: the file expected


class SourceDataError(ValueError):
    """A data file lacks a field (or has a bad one); the message is one line naming the file,
    the record and the field."""


def fail(path: Path | str, where: str, problem: str) -> SourceDataError:
    return SourceDataError(f"{path}: {where}: {problem}".replace("\n", " "))


Record = tuple[str, dict[str, Any]]  # (where: "line 3" / "index 0" / "row 2", record)


def read_records(path: str | os.PathLike) -> list[Record]:
    """The records of a JSONL, JSON (a list, or an object holding one list) or Parquet file,
    each with where it sits in the file (for error messages)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        return list(_parquet(p))
    text = p.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        return list(_jsonl(p, text))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        try:  # JSON lines under another name (some mirrors publish .json that way)
            return list(_jsonl(p, text))
        except SourceDataError:
            raise fail(p, f"line {e.lineno}", f"not valid JSON ({e.msg})") from None
    if isinstance(data, dict):
        lists = [v for v in data.values()
                 if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)]
        # {"data": [...]} holds the records; any other object is one record (one-line JSONL)
        data = lists[0] if len(lists) == 1 and len(data) == 1 else [data]
    if not isinstance(data, list):
        raise fail(p, "top level", "expected a list of records")
    out: list[Record] = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise fail(p, f"index {i}", "record is not an object")
        out.append((f"index {i}", rec))
    return out


def _jsonl(p: Path, text: str) -> Iterator[Record]:
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise fail(p, f"line {n}", f"not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise fail(p, f"line {n}", "record is not an object")
        yield f"line {n}", rec


def _parquet(p: Path) -> Iterator[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow ships with the datasets library
        raise fail(p, "file", "reading Parquet needs pyarrow (pip install pyarrow)") from None
    for i, rec in enumerate(pq.read_table(p).to_pylist()):
        yield f"row {i}", rec


def need(rec: dict[str, Any], key: str, path: Path | str, where: str,
         kind: type | tuple[type, ...] = str, nonempty: bool = True) -> Any:
    """``rec[key]``, checked: present, of ``kind``, and (for strings and lists) not empty."""
    if key not in rec:
        raise fail(path, where, f"missing field {key!r}")
    v = rec[key]
    if v is None:
        raise fail(path, where, f"field {key!r} is null")
    if not isinstance(v, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise fail(path, where, f"field {key!r} is {type(v).__name__}, expected {names}")
    if nonempty and isinstance(v, (str, list, dict)) and not v:
        raise fail(path, where, f"field {key!r} is empty")
    return v


def str_list(rec: dict[str, Any], key: str, path: Path | str, where: str) -> list[str]:
    """A field that holds one string or a list of strings, as a non-empty list."""
    v = need(rec, key, path, where, (str, list))
    items = [v] if isinstance(v, str) else v
    if not all(isinstance(x, str) for x in items) or not any(x.strip() for x in items):
        raise fail(path, where, f"field {key!r} must hold non-empty strings")
    return [x for x in items if x.strip()]
