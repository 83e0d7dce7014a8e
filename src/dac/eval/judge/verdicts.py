"""Applying rubrics to a run's records: one fixed judge, one verdict a record.

Verdicts of the cell ``DIR/cells/X.jsonl`` go to ``DIR/judge/X.jsonl`` (same order), each::

    {"id", "task", "policy", "verdict": bool, "score": 0|1,
     "judge": {"model", "where"}, "rubric_author", "truncated", "format_failure",
     "finish_reason", "raw", "answer_sha"}

* A **format failure** (a da/vanilla output with no ``<answer>...</answer>``, or a record that
  says ``format_failure``) is wrong without a judge call.
* A **truncated** verdict (the judge hit its token cap, or wrote no parseable verdict) is
  wrong, flagged, and counted in the summary.
* One judge per run: verdicts already in ``DIR/judge`` by another judge model refuse the run
  unless ``overwrite``; those by the same judge on the same answer are reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .models import ChatModel, Completion, Message, strip_thinking
from .rubrics import Example, RubricAuthor, RubricStore, example_from_record, render_question
from .rubrics import write_rubrics

from ..items import ANSWER_TAG_PROTOCOLS  # noqa: E402  (protocols that ask for <answer>)

SCHEMA = "dac.eval.verdict/1"
_ANSWER = re.compile(r"<answer\s*>(.*?)</answer\s*>", re.IGNORECASE | re.DOTALL)
_VERDICT = re.compile(r"verdict\s*[:=\-]?\s*[*_`\"'\[]*\s*(pass|fail)\b", re.IGNORECASE)
_BARE = {"pass": True, "yes": True, "fail": False, "no": False}
#: characters of the judge's reply kept in a verdict (its end)
RAW_CHARS = 400


@dataclass(frozen=True)
class JudgeItem:
    """What the judge sees: the question (when known), the rubric and the answer."""

    id: str
    question: str | None
    rubric: str
    answer: str


class Judge(Protocol):
    """Applies rubrics; ``model`` and ``where`` are recorded on every verdict."""

    model: str
    where: str

    def judge_many(self, items: Sequence[JudgeItem], *, max_tokens: int) -> list[Completion]:
        ...


JUDGE_SYSTEM = ("You are a strict grader. You apply a rubric to a candidate answer and decide "
                "whether it passes.")


def judge_messages(item: JudgeItem) -> list[Message]:
    q = f"Question:\n{item.question}\n\n" if item.question else ""
    user = (f"{q}Rubric:\n{item.rubric}\n\nCandidate answer:\n{item.answer}\n\n"
            "Apply the rubric to the candidate answer. Judge only what the answer states, not "
            "its style or length. End your reply with one line: VERDICT: PASS or VERDICT: FAIL")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


class ModelJudge:
    """A chat model as judge (an OpenAI-compatible endpoint or a ``dac`` engine)."""

    def __init__(self, chat: ChatModel):
        self.chat = chat
        self.model = chat.model
        self.where = chat.where

    def judge_many(self, items: Sequence[JudgeItem], *, max_tokens: int) -> list[Completion]:
        return self.chat.complete_many([judge_messages(i) for i in items], max_tokens=max_tokens)


class StubJudge:
    """A judge without a model, for tests: reads the rubric's first line.

    ``PASS if the answer contains: PHRASE`` (``A | B``: any of them) passes an answer that
    contains a phrase (case-insensitive) and fails the others. A first line of another form
    gets a reply with no verdict, so the unparseable path can be exercised too."""

    model = "stub"
    where = "in-process"
    PREFIX = "pass if the answer contains:"

    def judge_many(self, items: Sequence[JudgeItem], *, max_tokens: int) -> list[Completion]:
        return [self.decide(i) for i in items]

    def decide(self, item: JudgeItem) -> Completion:
        first = next((ln.strip() for ln in item.rubric.splitlines() if ln.strip()), "")
        if not first.lower().startswith(self.PREFIX):
            return Completion(f"cannot read the rubric's first line: {first[:80]}")
        phrases = [p.strip().lower() for p in first[len(self.PREFIX):].split("|") if p.strip()]
        ok = any(p in item.answer.lower() for p in phrases)
        return Completion(f"The answer {'contains' if ok else 'lacks'} the phrase.\n"
                          f"VERDICT: {'PASS' if ok else 'FAIL'}")


def parse_verdict(text: str) -> bool | None:
    """The last ``VERDICT: PASS|FAIL`` outside the reasoning, or a reply that is just
    pass/fail/yes/no; ``None`` when there is none."""
    body = strip_thinking(text)
    found = _VERDICT.findall(body)
    if found:
        return found[-1].lower() == "pass"
    return _BARE.get(body.strip().strip("*_.`'\" ").lower())


def format_failure(record: Mapping[str, Any]) -> bool:
    """No ``<answer>...</answer>`` where the protocol asks for one (the record's own
    ``format_failure`` field wins when it has one), or nothing inside it."""
    if "format_failure" in record and record["format_failure"] is not None:
        return bool(record["format_failure"])
    if record.get("protocol") not in ANSWER_TAG_PROTOCOLS:
        return False
    found = _ANSWER.findall(record.get("output") or "")
    return not found or not found[-1].strip()


def judged_answer(record: Mapping[str, Any]) -> str:
    """The text the judge reads: the last ``<answer>`` of a da/vanilla output, else the
    record's ``answer``."""
    if record.get("protocol") in ANSWER_TAG_PROTOCOLS:
        from ...protocol.base import extract_answer

        return extract_answer(record.get("output") or "")
    return str(record.get("answer") or "")


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


# -- the run ------------------------------------------------------------------------------

def verdict_path(run_dir: str | os.PathLike, cell: str | os.PathLike) -> Path:
    """``DIR/judge/<the cell file's name>``."""
    return Path(run_dir) / "judge" / Path(cell).name


def load_verdicts(run_dir: str | os.PathLike) -> dict[tuple[str, str], dict[str, Any]]:
    """Every verdict of a run, keyed by (cell name, record id); the cell name is the cell
    file's stem (``DIR/cells/<name>.jsonl``). Empty when the run was never judged."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    folder = Path(run_dir) / "judge"
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        with path.open() as f:
            for line in f:
                if line.strip():
                    v = json.loads(line)
                    out[(path.stem, str(v["id"]))] = v
    return out


@dataclass
class JudgeSummary:
    """What a judging run did. ``truncated``: ids of verdicts cut or unparseable (wrong)."""

    judge: dict[str, str]
    records: int = 0
    passed: int = 0
    format_failures: int = 0
    truncated: list[str] = field(default_factory=list)
    judged: int = 0  # judge calls made
    reused: int = 0  # verdicts kept from an earlier run with this judge
    rubrics_written: int = 0
    cells: int = 0

    def line(self) -> str:
        acc = self.passed / self.records if self.records else 0.0
        return (f"{self.records} record(s) in {self.cells} cell(s) judged by "
                f"{self.judge['model']} ({self.judge['where']}): {self.passed} pass "
                f"({acc:.1%}); wrong: {self.format_failures} format failure(s), "
                f"{len(self.truncated)} truncated/unparseable verdict(s); "
                f"{self.judged} judge call(s), {self.reused} reused, "
                f"{self.rubrics_written} new rubric(s)")


def _cells(run_dir: Path) -> list[Path]:
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    cells = sorted((run_dir / "cells").glob("*.jsonl"))
    if not cells:
        raise FileNotFoundError(f"no finished cells in {run_dir / 'cells'}: nothing to judge")
    return cells


def _read(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def check_judge(run_dir: str | os.PathLike, judge: Judge, *, overwrite: bool = False) -> None:
    """Refuse a run whose verdicts were given by another judge model (unless ``overwrite``)."""
    if overwrite:
        return
    for v in load_verdicts(run_dir).values():
        other = (v.get("judge") or {}).get("model")
        if other != judge.model:
            raise ValueError(f"{run_dir} already has verdicts by judge {other!r}, not "
                             f"{judge.model!r}: one judge per run (pass --overwrite to "
                             "replace them)")


def judge_run(run_dir: str | os.PathLike, judge: Judge, rubrics: RubricStore, *,
              author: RubricAuthor | None = None,
              examples: Mapping[str, Example] | None = None, overwrite: bool = False,
              max_tokens: int = 1024, rubric_max_tokens: int = 2048, chunk: int = 32,
              log: Callable[[str], None] | None = None) -> JudgeSummary:
    """Judge every record of ``run_dir``: write missing rubrics with ``author`` (examples from
    ``examples``, else from the records), then one verdict per record (module docstring).
    Raises before any call when a record has no rubric and no way to get one."""
    run_dir = Path(run_dir)
    say = log or (lambda msg: None)
    cells = _cells(run_dir)
    check_judge(run_dir, judge, overwrite=overwrite)
    records = {c: _read(c) for c in cells}
    old = {} if overwrite else load_verdicts(run_dir)
    summary = JudgeSummary({"model": judge.model, "where": judge.where}, cells=len(cells))

    def reusable(cell: Path, r: Mapping[str, Any]) -> dict[str, Any] | None:
        v = old.get((cell.stem, str(r["id"])))
        return v if v and v.get("answer_sha") == _sha(judged_answer(r)) else None

    # 1. rubrics for the records that need a judge call
    need = {str(r["id"]): r for c, recs in records.items() for r in recs
            if not format_failure(r) and reusable(c, r) is None}
    todo: dict[str, Example] = {}
    missing: list[str] = []
    for i, r in need.items():
        if i in rubrics:
            continue
        ex = (examples or {}).get(i) or example_from_record(r)
        if ex is None:
            missing.append(i)
        else:
            todo[i] = ex
    if missing:
        raise ValueError(f"{len(missing)} record id(s) have no rubric in {rubrics.path} and no "
                         f"question to write one from (e.g. {missing[0]!r}): pass examples")
    if todo:
        if author is None:
            raise ValueError(f"{len(todo)} question(s) have no rubric in {rubrics.path} "
                             f"(e.g. {next(iter(todo))!r}): give a rubric author")
        say(f"writing {len(todo)} rubric(s) with {author.model}")
        made = write_rubrics(rubrics, todo, author, max_tokens=rubric_max_tokens, chunk=chunk)
        summary.rubrics_written = len(made)
        cut = [r.id for r in made if r.truncated]
        if cut:
            say(f"warning: {len(cut)} rubric(s) hit the rubric token cap (e.g. {cut[0]!r}); "
                "they are stored with truncated: true")

    # 2. verdicts, one file per cell
    (run_dir / "judge").mkdir(exist_ok=True)
    for cell, recs in records.items():
        verdicts: list[dict[str, Any] | None] = []
        pending: list[tuple[int, Mapping[str, Any], JudgeItem]] = []
        for r in recs:
            v = None
            if format_failure(r):
                v = _verdict(r, summary.judge, None, None, format_failed=True)
            elif (v := reusable(cell, r)) is not None:
                summary.reused += 1
            else:
                rub = rubrics.get(str(r["id"]))
                assert rub is not None
                pending.append((len(verdicts), r, JudgeItem(
                    str(r["id"]), _question(r, examples) or rub.question, rub.rubric,
                    judged_answer(r))))
            verdicts.append(v)
        for k in range(0, len(pending), chunk):
            part = pending[k:k + chunk]
            replies = judge.judge_many([p[2] for p in part], max_tokens=max_tokens)
            for (pos, r, _), reply in zip(part, replies):
                rub = rubrics.get(str(r["id"]))
                verdicts[pos] = _verdict(r, summary.judge, rub.author if rub else None, reply)
            summary.judged += len(part)
        done = [v for v in verdicts if v is not None]
        _write(verdict_path(run_dir, cell), done)
        for v in done:
            summary.records += 1
            summary.passed += int(v["verdict"])
            summary.format_failures += int(v["format_failure"])
            if v["truncated"]:
                summary.truncated.append(f"{cell.stem}:{v['id']}")
        say(f"{cell.stem}: {sum(v['verdict'] for v in done)}/{len(done)} pass")
    return summary


def _question(r: Mapping[str, Any], examples: Mapping[str, Example] | None) -> str | None:
    ex = (examples or {}).get(str(r["id"])) or example_from_record(r)
    return render_question(ex.question, ex.choices) if ex else None


def _verdict(r: Mapping[str, Any], judge: dict[str, str], author: str | None,
             reply: Completion | None, *, format_failed: bool = False) -> dict[str, Any]:
    parsed = None if reply is None else parse_verdict(reply.text)
    truncated = reply is not None and (reply.truncated or parsed is None)
    ok = bool(parsed) and not truncated and not format_failed
    return {"schema": SCHEMA, "id": str(r["id"]), "task": r.get("task"),
            "policy": r.get("policy"), "verdict": ok, "score": int(ok), "judge": judge,
            "rubric_author": author, "truncated": truncated, "format_failure": format_failed,
            "finish_reason": None if reply is None else reply.finish_reason,
            "raw": "" if reply is None else _tail(reply.text),
            "answer_sha": _sha(judged_answer(r))}


def _tail(text: str) -> str:
    """The end of a reply, where its verdict (or the point it was cut) is."""
    text = text.strip()
    return text if len(text) <= RAW_CHARS else "..." + text[-RAW_CHARS:]


def _write(path: Path, verdicts: list[dict[str, Any]]) -> None:
    from ..folder import write_jsonl

    write_jsonl(path, verdicts)


def read_scored_cells(out: Path) -> list[tuple[Path, list[dict[str, Any]]]]:
    """Every finished cell's records, with the rubric judge's verdicts in place of the native
    scores when ``dac judge`` judged the whole cell (:func:`apply_verdicts`)."""
    from ..folder import read_cell

    verdicts = load_verdicts(out)
    cells = []
    for path in sorted((Path(out) / "cells").glob("*.jsonl")):
        cells.append((path, apply_verdicts(path.stem, read_cell(path), verdicts)))
    return cells


def apply_verdicts(cell: str, records: list[dict[str, Any]],
                   verdicts: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with ``score`` from the judge's verdicts (the native score kept as
    ``native_score``; ``scored_by`` the judge model) when every record of the cell has one;
    unchanged, with ``scored_by`` "native", when none or only some do: a cell never mixes
    the two scorings."""
    found = [verdicts.get((cell, str(r.get("id")))) for r in records]
    if not records or not all(found):
        partial = any(found)
        return [{**r, "scored_by": "native (partly judged)" if partial else "native"}
                for r in records]
    return [{**r, "native_score": r["score"], "score": float(v["score"]),
             "scored_by": v["judge"]["model"], "verdict_truncated": bool(v.get("truncated"))}
            for r, v in zip(records, found)]
