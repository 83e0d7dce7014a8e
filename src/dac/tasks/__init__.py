"""Seeded long-context tasks covering every attention mode, sized with the model's tokenizer.

>>> s = make_sample("niah_single_prose", tokenizer, 4096, seed=0)
>>> s.sections, s.question, s.answers, s.evidence, s.target   # doctest: +SKIP

A sample is a pure function of ``(task, length, seed, tokenizer)``: the same arguments give the
same sample, and its rendered prompt (``build_prompt(tokenizer, s.sections, s.question)``) is
within 5% of ``length`` tokens. ``Sample.target`` is what an ideal model writes: the directive
it should declare first (focus on the evidence sections, ``[[global]]`` for aggregation,
``[[local]]`` for tail tasks), a space, then the answer.
"""

from __future__ import annotations

from typing import Any

from . import aggregation, local, multi, retrieval, reworded
from .core import FAMILIES, LENGTH_TOLERANCE, Draft, Sample, TaskSpec, realize
from .scoring import first_integer, match_all, match_part

__all__ = ["FAMILIES", "LENGTH_TOLERANCE", "RULER_NAMES", "Draft", "Sample", "TASKS",
           "TaskSpec", "make_sample", "resolve_tasks", "score", "task_table"]


def _spec(fn, family: str, scorer, max_new_tokens: int, unit: str = "words") -> TaskSpec:
    doc = (fn.__doc__ or "").strip().split("\n\n")[0]
    return TaskSpec(fn.__name__, family, fn, scorer, max_new_tokens, " ".join(doc.split()),
                    unit)


TASKS: dict[str, TaskSpec] = {s.name: s for s in [
    # single-region retrieval (ideal directive: focus on the needle's section)
    _spec(retrieval.niah_single_noise, "retrieval", match_all, 32),
    _spec(retrieval.niah_single_prose, "retrieval", match_all, 32),
    _spec(retrieval.niah_single_uuid, "retrieval", match_all, 64),
    _spec(retrieval.niah_multikey, "retrieval", match_all, 32),
    _spec(retrieval.niah_multikey_dense, "retrieval", match_all, 96, "distractor needles"),
    _spec(retrieval.kv_json, "retrieval", match_all, 96, "distractor pairs"),
    _spec(retrieval.passkey, "retrieval", first_integer, 24),
    # retrieval in other words (tasks.reworded): a training wording, then held-out ones
    _spec(reworded.niah_reworded, "reworded", match_all, 32),
    _spec(reworded.niah_heldout, "reworded", match_all, 32),
    _spec(reworded.niah_heldout_essays, "reworded", match_all, 32),
    # multi-region (focus on several sections)
    _spec(multi.niah_multivalue, "multi", match_all, 64),
    _spec(multi.niah_multiquery, "multi", match_all, 64),
    _spec(multi.variable_tracking, "multi", match_all, 64),  # room for a keyed answer
    _spec(multi.chained_facts, "multi", match_all, 48),  # room for a stepwise answer
    _spec(multi.world_state, "multi", match_all, 64),
    # global aggregation (global)
    _spec(aggregation.common_words, "aggregation", match_all, 96, "rare words"),
    _spec(aggregation.frequent_words, "aggregation", match_all, 48, "coded words"),
    _spec(aggregation.passage_count, "aggregation", first_integer, 24, "passage words"),
    _spec(aggregation.math_find, "aggregation", first_integer, 24, "numbers * 2"),
    _spec(aggregation.counting_stars, "aggregation", match_all, 48),
    # local / recent (local)
    _spec(local.tail_last, "local", first_integer, 24),
    _spec(local.tail_sum, "local", first_integer, 24),
]}

_ = match_part  # exported for users of the scoring module


#: RULER's name for the tasks that are RULER's (same haystack, needle and question style)
RULER_NAMES: dict[str, str] = {
    "niah_single_noise": "niah_single_1", "niah_single_prose": "niah_single_2",
    "niah_single_uuid": "niah_single_3", "niah_multikey": "niah_multikey_1",
    "niah_multikey_dense": "niah_multikey_3", "niah_multivalue": "niah_multivalue",
    "niah_multiquery": "niah_multiquery", "variable_tracking": "vt",
    "common_words": "cwe", "frequent_words": "fwe",
}


def task_table() -> list[dict[str, str]]:
    """One row per task: its name, family, RULER's name (when it is RULER's) and what it is."""
    return [{"task": t.name, "family": t.family, "ruler": RULER_NAMES.get(t.name, ""),
             "description": t.description} for t in TASKS.values()]


def resolve_tasks(spec: str | list[str] | None) -> list[str]:
    """Task names from a comma list; ``all`` or a family name selects several."""
    items = spec if isinstance(spec, list) else [t.strip() for t in (spec or "all").split(",")]
    out: list[str] = []
    for item in filter(None, items):
        if item == "all":
            names = list(TASKS)
        elif item in FAMILIES:
            names = [n for n, s in TASKS.items() if s.family == item]
        elif item in TASKS:
            names = [item]
        else:
            raise ValueError(f"unknown task {item!r}; choose from all, "
                             f"{', '.join(FAMILIES)}, {', '.join(TASKS)}")
        out.extend(n for n in names if n not in out)
    if not out:
        raise ValueError("no task selected")
    return out


def make_sample(task: str, tokenizer: Any, length: int, seed: int,
                sections: int | None = None) -> Sample:
    """The sample ``seed`` of ``task`` whose prompt is ``length`` tokens with ``tokenizer``.

    ``sections``: how many sections the context is cut into (at most: units stay whole, so a
    context of few long units gets fewer). The default (about one per 512 tokens, at least 4) is
    what evaluation uses; training varies it so that every focus directive, ``[[focus S1]]`` to
    ``[[focus S16]]`` and beyond, is a target at every length.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    return realize(TASKS[task], tokenizer, int(length), int(seed),
                   None if sections is None else int(sections))


def score(task: str, prediction: str, sample: Sample) -> float:
    """The task's score of ``prediction`` (directives are ignored) in ``[0, 1]``."""
    return TASKS[task].scorer(prediction, sample.answers)
