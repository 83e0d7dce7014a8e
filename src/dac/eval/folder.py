"""Paths and reading of a run folder (light: no torch, so reports load fast)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import policy_slug


def cell_path(out: Path, task: str, length: int, policy: str) -> Path:
    """The records file of one task x length x policy cell."""
    return Path(out) / "cells" / f"{task}__{length}__{policy_slug(policy)}.jsonl"


def read_cell(path: Path) -> list[dict[str, Any]]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def read_scored_cells(out: Path) -> list[tuple[Path, list[dict[str, Any]]]]:
    """Every finished cell's records, with the rubric judge's verdicts in place of the native
    scores when ``dac judge`` judged the whole cell (:func:`apply_verdicts`)."""
    from .judge import load_verdicts

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
