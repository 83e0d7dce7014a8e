"""RULER's needle-in-a-haystack tasks: read RULER's generated ``validation.jsonl``, or generate
them offline with the project's RULER-named generators (:data:`dac.tasks.RULER_NAMES`).

RULER writes one prompt per record (``input``: instruction, haystack, question; the answer
prefix cut off into ``answer_prefix`` in recent versions) and the references in ``outputs``.
The loader splits ``input`` back into the haystack and the question.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from .base import SourceExample, fail, need, read_records, str_list

#: the paper's RULER tasks
TASKS = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_2", "niah_multikey_3")

# RULER's niah template: "Some special magic {v} are hidden within the following text. Make sure
# to memorize it. I will quiz you about the {v} afterwards.\n{context}\nWhat are all the special
# magic {v} for {query} mentioned in the provided text?"
_NIAH = re.compile(r"^(?P<pre>.*?Some special magic .*? afterwards\.)\s*\n(?P<ctx>.*)\n"
                   r"(?P<q>What (?:are|is) (?:all )?the special magic [^\n]*)\s*$", re.DOTALL)


def split_input(text: str) -> tuple[str, str, str]:
    """``(instruction, context, question)`` of a RULER niah prompt; for another template, the
    last non-empty line is the question and the rest the context."""
    m = _NIAH.match(text)
    if m:
        return m.group("pre").strip(), m.group("ctx").strip(), m.group("q").strip()
    body = text.rstrip()
    cut = body.rfind("\n")
    return "", body[:cut].strip(), body[cut + 1:].strip()


def load_file(name: str, path: Path, span: str, metric: str) -> list[SourceExample]:
    out = []
    for where, rec in read_records(path):
        text = need(rec, "input", path, where)
        answers = str_list(rec, "outputs", path, where)
        instruction, context, question = split_input(text)
        if not context:
            raise fail(path, where, "field 'input' holds no context before its question")
        rid = rec.get("index", where.split()[-1])
        meta = {k: rec[k] for k in ("length", "answer_prefix", "others", "token_position_answer")
                if k in rec}
        if instruction:
            meta["instruction"] = instruction
        out.append(SourceExample(name, str(rid), context, question, answers, metric=metric,
                                 span=span, meta=meta))
    return out


# --- offline generation -----------------------------------------------------------------------

def niah_multikey_2(rng: random.Random, n: int, length: int):
    """RULER niah_multikey_2: the haystack is all needles, adjective-noun keys to 7-digit
    numbers; ``n`` distractor needles around the queried one."""
    from ...tasks import retrieval
    from ...tasks import sources as src
    from ...tasks.core import Draft, insert_at_depths

    keys = src.distinct_keys(rng, n + 1)
    values = [src.number(rng) for _ in keys]
    depth = rng.random()
    texts = [retrieval.needle(k, v) for k, v in zip(keys[1:], values[1:])]
    t = retrieval.needle(keys[0], values[0])
    units, (at,) = insert_at_depths(texts, [t], [depth])
    return Draft(units, [(at, 0, len(t))], retrieval.question(keys[0]), [values[0]], values[0],
                 lead=retrieval.lead(keys[0]))


def _offline_spec(task: str):
    from ...tasks import RULER_NAMES, TASKS as SUITE
    from ...tasks.core import TaskSpec
    from ...tasks.scoring import match_all

    ours = {ruler: name for name, ruler in RULER_NAMES.items()}
    if task in ours:
        return SUITE[ours[task]]
    if task == "niah_multikey_2":
        return TaskSpec("niah_multikey_2", "retrieval", niah_multikey_2, match_all, 32,
                        "needle haystack, word keys to number values", "distractor needles")
    raise ValueError(f"no offline generator for RULER task {task!r}; pass its validation.jsonl")


def generate(name: str, task: str, span: str, metric: str, *, tokenizer: Any = None,
             length: int | None = None, n: int | None = None, seed: int = 0,
             **_: Any) -> list[SourceExample]:
    """``n`` samples of RULER ``task`` generated offline, each ``length`` prompt tokens with
    ``tokenizer`` (seeds ``seed``, ``seed+1``, ...)."""
    if tokenizer is None or length is None or n is None:
        raise ValueError(f"{name} without --data is generated offline: it needs tokenizer=, "
                         "length= and n=")
    from ...tasks.core import realize

    spec = _offline_spec(task)
    out = []
    for s in range(seed, seed + int(n)):
        smp = realize(spec, tokenizer, int(length), s)
        out.append(SourceExample(name, smp.id.replace(spec.name, task, 1),
                                 "\n\n".join(smp.sections), smp.question, list(smp.answers),
                                 chunks=list(smp.sections), metric=metric, span=span,
                                 meta={"generated": True, "length": int(length), "seed": s,
                                       "generator": spec.name}))
    return out
