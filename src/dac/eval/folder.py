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
