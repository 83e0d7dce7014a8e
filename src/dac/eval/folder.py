"""Paths and reading of a run folder (light: no torch, so reports load fast)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import policy_slug


def cell_path(out: Path, task: str, length: int, policy: str) -> Path:
    """The records file of one task x length x policy cell."""
    return Path(out) / "cells" / f"{task}__{length}__{policy_slug(policy)}.jsonl"


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as JSON lines to a temporary name, then rename: a file that exists is
    complete (a cell's records, a cell's verdicts)."""
    import os

    tmp = Path(path).with_suffix(".jsonl.tmp")
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_cell(path: Path) -> list[dict[str, Any]]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]

