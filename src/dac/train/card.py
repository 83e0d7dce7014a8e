"""The model card's evaluation tables, rendered from an ``eval.json`` of
:mod:`dac.train.evaluate`, so every figure in the card comes from the records it ships with.
Its records may be the suite's or the legacy ones of the shipped card: both are read through
:func:`dac.train.evaluate.card_fields`.

    python -m dac.train.card src/dac/assets/dac-tiny/eval.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from .evaluate import FOCUS_FAMILIES, card_fields, summarize

_SAME_COST = ("quest", "streaming")
#: whether a cell was decoded with the section bound (``dac.protocol.constraint``)
_BOUND = {True: "on", False: "off", "mixed": "mixed"}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _rate(x: float) -> str:
    return f"{100 * x:.0f}%"


def exact_sections(record: dict[str, Any]) -> bool:
    """One record's directive judged exact: for focus tasks (retrieval, multi-region) all its
    focuses together name the ideal sections (a stepwise answer focuses one step's section at
    a time); for the others its last declaration is the ideal one (records from before the
    last one was recorded: the first)."""
    return _exact(card_fields(record))


def _exact(f: dict[str, Any]) -> bool:
    """:func:`exact_sections` on a record's :func:`~dac.train.evaluate.card_fields`."""
    if f["family"] in FOCUS_FAMILIES and f["union_exact"] is not None:
        return bool(f["union_exact"])
    return f["exact"]


def summary_table(records: list[dict[str, Any]]) -> str:
    """Per (family, length, policy) with :func:`dac.train.evaluate.summarize`'s definitions;
    ``exact sections`` is ``exact_union`` (focus tasks only); ``section bound``: decoded with
    the engine's section bound (records from before it existed: off)."""
    order = {"full": 0, "dac": 1, "quest": 2, "streaming": 3}
    fams = {"retrieval": 0, "multi": 1, "aggregation": 2, "local": 3}
    rows = sorted(summarize(records), key=lambda r: (fams.get(r["family"], 9), r["length"],
                                                     order.get(r["policy"], 9)))
    out = ["| family | length | policy | n | accuracy | KV read | mode adherence "
           "| exact directive (last) | exact sections (all focuses) | section bound |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pol = r["policy"] + (" (same cost)" if r["policy"] in _SAME_COST else "")
        union = _rate(r["exact_union"]) if "exact_union" in r else "-"
        out.append(f"| {r['family']} | {r['length']} | {pol} | {r['n']} | "
                   f"{_pct(r['accuracy'])} | {r['kv_fraction']:.3f} | "
                   f"{_rate(r['mode_adherence'])} | {_rate(r['exact_directive'])} | {union} | "
                   f"{_BOUND[r['bound_sections']]} |")
    return "\n".join(out)


def task_table(records: list[dict[str, Any]], lengths: tuple[int, ...] = (4096, 8192)) -> str:
    """Per task: accuracy under full attention and DAC, DAC's exact rate
    (:func:`exact_sections`) and DAC's KV read, one column group per length."""
    cells: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    tasks: dict[str, None] = {}
    for r in records:
        f = card_fields(r)
        if f["policy"] in ("full", "dac") and f["length"] in lengths:
            cells[(f["task"], f["length"], f["policy"])].append(f)
            tasks.setdefault(f["task"], None)
    head = " | ".join(f"{n // 1024}K {c}" for n in lengths for c in ("full", "dac", "exact", "KV"))
    out = [f"| task | {head} |", "|---" * (1 + 4 * len(lengths)) + "|"]

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    for t in tasks:
        vals = []
        for n in lengths:
            full, dac = cells.get((t, n, "full")), cells.get((t, n, "dac"))
            if not full or not dac:
                vals += ["-"] * 4
                continue
            vals += [_rate(mean([r["score"] for r in full])),
                     _rate(mean([r["score"] for r in dac])),
                     _rate(mean([_exact(f) for f in dac])),
                     f"{mean([f['fraction'] for f in dac]):.3f}"]
        out.append(f"| {t} | " + " | ".join(vals) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("eval_json")
    a = p.parse_args(argv)
    try:
        records = json.loads(Path(a.eval_json).read_text())["records"]
        tables = summary_table(records) + "\n\n" + task_table(records)
    except (OSError, ValueError, KeyError, TypeError, AttributeError,
            ZeroDivisionError) as e:
        p.error(f"cannot read {a.eval_json} as dac.train.evaluate's records: {e!r}")
    print(tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
