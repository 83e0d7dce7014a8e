"""Per-question rubrics: written once by a chosen model from the context, question and
reference, stored with their author, and reused by every judging run that points at them.

The store is a JSONL file, one rubric a line::

    {"id": ..., "rubric": "PASS if ...\\n...", "author": "MODEL", "created": "2025-...Z",
     "question": ..., "truncated": false}

Appending is the only write, so an interrupted run keeps the rubrics it finished; the first
rubric of an id wins. Where examples come from is the caller's business: an ``examples``
mapping, else the question and answers a record carries (:func:`example_from_record`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from .models import ChatModel, Completion, Message, strip_thinking


class Example(NamedTuple):
    """What a rubric is written from. ``context``: one string or its chunks."""

    context: str | Sequence[str]
    question: str
    references: Sequence[str]
    choices: Sequence[str] | None = None


@dataclass(frozen=True)
class Rubric:
    id: str
    rubric: str
    author: str
    created: str
    question: str | None = None
    truncated: bool = False  # the author hit its token cap while writing it

    @property
    def first_line(self) -> str:
        return next((ln.strip() for ln in self.rubric.splitlines() if ln.strip()), "")


class RubricStore:
    """The rubrics of one JSONL file, keyed by example id."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._rubrics: dict[str, Rubric] = {}
        if self.path.exists():
            with self.path.open() as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        d = json.loads(line)
                        r = Rubric(id=str(d["id"]), rubric=str(d["rubric"]),
                                   author=str(d["author"]), created=str(d.get("created", "")),
                                   question=d.get("question"),
                                   truncated=bool(d.get("truncated", False)))
                    except (ValueError, KeyError, TypeError) as e:
                        raise ValueError(f"{self.path}:{n}: not a rubric line "
                                         f"({type(e).__name__}: {e})") from None
                    self._rubrics.setdefault(r.id, r)

    def get(self, id: str) -> Rubric | None:
        return self._rubrics.get(id)

    def __contains__(self, id: object) -> bool:
        return id in self._rubrics

    def __len__(self) -> int:
        return len(self._rubrics)

    def add(self, rubric: Rubric) -> None:
        """Append ``rubric`` (an id already stored is kept as it is)."""
        if rubric.id in self._rubrics:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(asdict(rubric)) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._rubrics[rubric.id] = rubric


# -- authors --------------------------------------------------------------------------------

AUTHOR_SYSTEM = ("You write grading rubrics for a long-document question-answering "
                 "benchmark. A rubric lets a smaller judge, who never sees the document, "
                 "decide whether a candidate answer is correct.")

AUTHOR_INSTRUCTION = """\
Write a binary rubric for judging answers to this question.
- The first line states the pass condition in one sentence and starts with "PASS if".
- Then list what a correct answer must state, with acceptable variants (synonyms, number \
formats, rounding, paraphrases), and what makes an answer wrong (a contradiction, a \
different choice, a missing key fact).
- Stay faithful to the reference answer and ask for no more than the question asks.
- Write only the rubric."""


def render_question(question: str, choices: Sequence[str] | None) -> str:
    if not choices:
        return question
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return question + "\n" + "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(choices))


def author_messages(example: Example) -> list[Message]:
    """The prompt a rubric author gets: document, question, reference(s), instructions."""
    ctx = example.context if isinstance(example.context, str) else "\n\n".join(example.context)
    refs = "\n".join(f"- {r}" for r in example.references) or "- (none given)"
    user = (f"Document:\n{ctx}\n\nQuestion:\n{render_question(example.question, example.choices)}"
            f"\n\nReference answer:\n{refs}\n\n{AUTHOR_INSTRUCTION}")
    return [{"role": "system", "content": AUTHOR_SYSTEM}, {"role": "user", "content": user}]


class RubricAuthor(Protocol):
    """Writes rubrics: ``model`` is recorded as each rubric's author."""

    model: str
    where: str

    def write_many(self, examples: Sequence[Example], *, max_tokens: int) -> list[Completion]:
        ...


class ModelAuthor:
    """A chat model as rubric author."""

    def __init__(self, chat: ChatModel):
        self.chat = chat
        self.model = chat.model
        self.where = chat.where

    def write_many(self, examples: Sequence[Example], *, max_tokens: int) -> list[Completion]:
        return self.chat.complete_many([author_messages(e) for e in examples],
                                       max_tokens=max_tokens)


class StubAuthor:
    """Tests and dry runs: ``PASS if the answer contains: <first reference>``, no model."""

    model = "stub-author"
    where = "in-process"

    def write_many(self, examples: Sequence[Example], *, max_tokens: int) -> list[Completion]:
        return [Completion(f"PASS if the answer contains: {(e.references or [''])[0]}\n"
                           "Anything else fails.") for e in examples]


# -- examples -----------------------------------------------------------------------------

def example_from_record(record: Mapping[str, Any]) -> Example | None:
    """The example a record carries itself (``question`` and ``answers``/``reference``,
    ``context`` when present), else ``None``."""
    q = record.get("question")
    if not isinstance(q, str) or not q.strip():
        return None
    refs = record.get("answers") or record.get("references") or record.get("reference") or []
    refs = [refs] if isinstance(refs, str) else [str(r) for r in refs]
    return Example(record.get("context") or "", q, refs, record.get("choices") or None)


def load_examples(path: str | os.PathLike) -> dict[str, Example]:
    """Examples from a JSONL file: ``id``, ``question``, ``answers`` (or ``reference`` /
    ``references``), optional ``context`` (a string or a list of chunks) and ``choices``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"examples file not found: {path}")
    out: dict[str, Example] = {}
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e})") from None
            for name in ("id", "question"):
                if name not in d:
                    raise ValueError(f"{path}:{n}: missing field {name!r}")
            ex = example_from_record({**d, "context": d.get("context") or d.get("chunks")})
            if ex is None:
                raise ValueError(f"{path}:{n}: field 'question' is empty")
            out[str(d["id"])] = ex
    return out


def write_rubrics(store: RubricStore, todo: Mapping[str, Example], author: RubricAuthor, *,
                  max_tokens: int = 2048, chunk: int = 16,
                  now: Callable[[], str] | None = None) -> list[Rubric]:
    """Write a rubric for each id of ``todo`` not yet in ``store`` (``chunk`` requests at a
    time, each chunk saved before the next starts). An empty rubric is an error."""
    stamp = now or (lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    ids = [i for i in todo if i not in store]
    made: list[Rubric] = []
    for k in range(0, len(ids), chunk):
        part = ids[k:k + chunk]
        replies = author.write_many([todo[i] for i in part], max_tokens=max_tokens)
        for i, reply in zip(part, replies):
            text = strip_thinking(reply.text)
            if not text:
                raise RuntimeError(f"the rubric author {author.model} wrote no rubric for "
                                   f"{i!r} (finish_reason {reply.finish_reason!r})")
            r = Rubric(i, text, author.model, stamp(), todo[i].question, reply.truncated)
            store.add(r)
            made.append(r)
    return made



__all__ = ["AUTHOR_INSTRUCTION", "AUTHOR_SYSTEM", "Example", "ModelAuthor", "Rubric",
           "RubricAuthor", "RubricStore", "StubAuthor", "author_messages", "example_from_record",
           "load_examples", "render_question", "write_rubrics"]
