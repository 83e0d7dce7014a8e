"""The paper's 15 evaluation sources, read from local files in their published layouts.

>>> examples = load_source("longbench_v2.multidoc_qa", "LongBench-v2/data.json")  # doctest: +SKIP
>>> sel = select(examples, tokenizer, budget=244 * 1024, n=128, seed=0)           # doctest: +SKIP

These machines cannot download datasets: a user brings the files (docs/sources.md says which
file each source reads). ``ruler.*`` sources are also generated offline when no file is given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import generic, longbench, loogle, ruler, zeroscrolls
from .base import SourceDataError, SourceExample, SourceSpec, read_records
from .fixtures import write_fixtures
from .selection import Selection, context_tokens, select

__all__ = ["SOURCES", "Selection", "SourceDataError", "SourceExample", "SourceSpec",
           "context_tokens", "find_data", "list_sources", "load_source", "read_records", "select",
           "write_fixtures"]

_RULER_DESC = {
    "niah_single_1": "one number needle in the repeated-sentence noise haystack",
    "niah_single_2": "one number needle in a prose haystack",
    "niah_single_3": "one UUID needle in a prose haystack",
    "niah_multikey_2": "a haystack of needles: word keys to numbers, one queried",
    "niah_multikey_3": "a haystack of needles: UUID keys to UUIDs, one queried",
}
_RULER_LAYOUT = ("RULER's generated <task>/validation.jsonl (index, input, outputs, length"
                 "[, answer_prefix]); without --data: generated offline")


def _specs() -> list[SourceSpec]:
    s = [SourceSpec(f"ruler.{t}", "ruler", "single", "substring", f"RULER {t}: {d}",
                    _RULER_LAYOUT) for t, d in _RULER_DESC.items()]
    s.append(SourceSpec("longbench.qmsum", "longbench", "single", "rouge_l",
                        "LongBench v1 QMSum: query-based meeting summarization",
                        "THUDM/LongBench data/qmsum.jsonl (input, context, answers, _id, ...)"))
    v2 = {"multidoc_qa": ("single", "multi-document QA"),
          "singledoc_qa": ("multi", "single-document QA"),
          "dialogue_history": ("multi", "long-dialogue history understanding"),
          "code_repo": ("single", "code repository understanding")}
    for key, (span, what) in v2.items():
        s.append(SourceSpec(f"longbench_v2.{key}", "longbench_v2", span, "choice",
                            f"LongBench v2 {what} (domain {longbench.V2_DOMAINS[key]!r}), "
                            "4-way multiple choice",
                            "THUDM/LongBench-v2 data.json (_id, domain, sub_domain, question, "
                            "choice_A..D, answer, context)"))
    loo = {"summarization": ("single", "rouge_l", "long-document summarization",
                             "longdep_summarization.jsonl"),
           "longdep_qa": ("multi", "f1", "long-dependency QA", "longdep_qa.jsonl"),
           "shortdep_cloze": ("multi", "cloze", "short-dependency cloze (masked entities)",
                              "shortdep_cloze.jsonl")}
    for key, (span, metric, what, fname) in loo.items():
        s.append(SourceSpec(f"loogle.{key}", "loogle", span, metric, f"LooGLE {what}",
                            f"LooGLE {fname} (input, title, qa_pairs, output) or its "
                            "per-question parquet (context, question, answer)"))
    s.append(SourceSpec("zeroscrolls.quality", "zeroscrolls", "single", "choice",
                        "ZeroSCROLLS QuALITY: multiple-choice questions about a story",
                        "tau/zero_scrolls quality validation jsonl (id, input, output, "
                        "document/query start/end indices)"))
    s.append(SourceSpec("zeroscrolls.space_digest", "zeroscrolls", "multi", "exp_similarity",
                        "ZeroSCROLLS SpaceDigest: percentage of positive hotel reviews",
                        "tau/zero_scrolls space_digest validation jsonl (id, input, output, "
                        "document/query start/end indices)"))
    s.append(SourceSpec("jsonl", "jsonl", "single", "substring",
                        "any other source in the generic layout",
                        "JSONL/JSON/Parquet records: context, question, answers|reference, "
                        "optional choices, chunks, id, metric, span"))
    return s


SOURCES: dict[str, SourceSpec] = {s.name: s for s in _specs()}


def list_sources() -> list[dict[str, str]]:
    """One row per source (``dac eval --list-sources``)."""
    return [{"name": s.name, "family": s.family, "span": s.span, "metric": s.metric,
             "description": s.description} for s in SOURCES.values()]


def load_source(name: str, path: str | os.PathLike | None, **kw: Any) -> list[SourceExample]:
    """The examples of source ``name`` read from ``path`` (its published layout).

    ``ruler.*`` with ``path=None`` generates offline (``tokenizer=``, ``length=``, ``n=``,
    ``seed=``). ``longbench_v2.*`` accepts ``sub_domain=`` to narrow the domain; ``jsonl``
    accepts ``metric=`` and ``span=`` defaults.
    """
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; choose from {', '.join(SOURCES)}")
    spec = SOURCES[name]
    family, _, task = name.partition(".")
    if path is None or str(path) == "":
        if family == "ruler":
            return ruler.generate(name, task, spec.span, spec.metric, **kw)
        raise ValueError(f"source {name!r} reads a local file: pass --data PATH ({spec.layout})")
    p = Path(path)
    if p.is_dir():
        p = _find_in_dir(p, name, task)
    if not p.is_file():
        raise FileNotFoundError(f"data file for {name} not found: {p}")
    if family == "ruler":
        out = ruler.load_file(name, p, spec.span, spec.metric)
    elif family == "longbench":
        out = longbench.load_v1(name, p, spec.span, spec.metric, dataset=task)
    elif family == "longbench_v2":
        out = longbench.load_v2(name, p, spec.span, spec.metric, longbench.V2_DOMAINS[task],
                                kw.get("sub_domain"))
    elif family == "loogle":
        out = loogle.load(name, p, spec.span, spec.metric, task)
    elif family == "zeroscrolls":
        out = zeroscrolls.load(name, p, spec.span, spec.metric, task)
    else:
        out = generic.load(name, p, kw.get("span", spec.span), kw.get("metric"))
    return _unique_ids(out)


#: per source, the file names its published layout uses inside a dataset folder
_FILES = {
    "ruler": ["{task}/validation.jsonl", "validation.jsonl"],
    "longbench": ["data/{task}.jsonl", "{task}.jsonl"],
    "longbench_v2": ["data.json"],
    "loogle": ["LooGLE-testdata/{file}.jsonl", "{file}.jsonl", "data/{file}.json",
               "{file}/test-00000-of-00001.parquet"],
    "zeroscrolls": ["{task}/validation.jsonl", "{task}.jsonl", "{task}/{task}.jsonl"],
    "jsonl": [],
}


def _candidates(folder: Path, name: str) -> list[Path]:
    family, _, task = name.partition(".")
    file = "longdep_summarization" if task == "summarization" else task
    rel = [pat.format(task=task, file=file) for pat in _FILES[family]]
    return [folder / r for r in rel] + [folder / family / r for r in rel]


def find_data(name: str, folder: str | os.PathLike) -> Path | None:
    """Source ``name``'s file inside a dataset folder, found by its published file name
    (directly or under a folder named like the family, e.g. ``loogle/longdep_qa.jsonl``);
    None when absent (and always for ``jsonl``, which has no published name)."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; choose from {', '.join(SOURCES)}")
    return next((c for c in _candidates(Path(folder), name) if c.is_file()), None)


def _find_in_dir(folder: Path, name: str, task: str) -> Path:
    found = find_data(name, folder)
    if found is None:
        tried = ", ".join(str(c.relative_to(folder)) for c in _candidates(folder, name))
        raise FileNotFoundError(f"no data file for {name} in {folder} (looked for "
                                f"{tried or 'nothing: give the file itself'})")
    return found


def _unique_ids(examples: list[SourceExample]) -> list[SourceExample]:
    """Ids made unique in file order (``id``, ``id#2``, ...): the draw is keyed on ids."""
    import dataclasses

    seen: dict[str, int] = {}
    out = []
    for ex in examples:
        k = seen.get(ex.id, 0) + 1
        seen[ex.id] = k
        out.append(ex if k == 1 else dataclasses.replace(ex, id=f"{ex.id}#{k}"))
    return out
