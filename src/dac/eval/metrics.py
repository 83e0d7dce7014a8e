"""Metrics per task x length x policy cell, and per family / policy summaries.

* ``accuracy``: mean score; ``accuracy_se``: its standard error.
* ``cost``: KV tokens read / KV tokens a full-attention decode would read, summed over the
  cell's samples and decode steps (ratio of sums).
* ``evidence_recall``: mean of the per-sample recall over answer steps (see records.py).
* ``adherence``: share of outputs with well-formed directives; ``mode_match``: share whose
  last well-formed directive (the one the answer is written under) has the ideal mode
  (focus / global / local).
* ``wall_s``: generation wall time of the cell (sample building excluded).
* ``safety_fired``: for ``X+safety`` policies, share of samples whose safety net widened to
  global (``None`` for policies without a net).
* the paper's figures (:func:`paper_stats`): ``attended_tokens`` per response,
  ``per_step_ratio``, ``share_global/focus/local`` (of decode steps), ``focus_attempts`` per
  response and ``focus_success`` (of attempts), ``non_terminating`` (share of responses that
  hit the token cap) and ``accuracy_terminated`` (accuracy without them);
  ``format_failures``: under da or vanilla, the share of responses with no ``<answer>``
  (scored 0).
* ``scored_by``: "native" (the task's or source's own metric) or the judge model whose
  verdicts replaced the scores (``dac judge``; only when it judged the whole cell), with
  ``truncated_verdicts``, the share of its verdicts cut or unreadable (scored 0).

A cell is a task (or paper source) x length (a source's: the selection budget) x arm
(:mod:`dac.eval.arms`; the ``policy`` key holds the arm's label).

Family and policy summaries average the cell values with equal weight per task; their
``accuracy_se`` is the standard error of that average (``sqrt(sum se_i^2) / k``).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from .items import ANSWER_TAG_PROTOCOLS

SCHEMA = "dac.eval.metrics/1"
CELL_FIELDS = ["task", "family", "length", "policy", "n", "accuracy", "accuracy_se", "cost",
               "evidence_recall", "adherence", "mode_match", "safety_fired", "wall_s",
               "prompt_tokens", "decode_steps", "format_failures", "attended_tokens",
               "per_step_ratio", "share_global", "share_focus", "share_local",
               "focus_attempts", "focus_success", "non_terminating", "accuracy_terminated",
               "scored_by", "truncated_verdicts"]


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _safety_fired(records: list[dict[str, Any]]) -> float | None:
    nets = [(r.get("policy_report") or {}).get("safety") for r in records]
    nets = [x for x in nets if x is not None]
    return sum(bool(x["fired"]) for x in nets) / len(nets) if nets else None


def _accuracy(scores: list[float]) -> tuple[float | None, float]:
    n = len(scores)
    if not n:
        return None, 0.0
    acc = sum(scores) / n
    se = math.sqrt(sum((s - acc) ** 2 for s in scores) / (n - 1) / n) if n > 1 else 0.0
    return acc, se


def paper_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The paper's per-response figures, averaged over a cell's responses: attended tokens,
    decode steps, the per-step ratio, the share of decode steps per mode, focus attempts per
    response and their success rate, the share of responses that did not terminate, and the
    accuracy without them."""
    stats = [r.get("stats") or {} for r in records]
    if not all(stats):
        return dict.fromkeys(PAPER_FIELDS)
    n = len(stats)
    steps = sum(s["decode_steps"] for s in stats)
    modes = {m: sum(s["mode_steps"].get(m, 0) for s in stats) for m in ("global", "focus",
                                                                        "local")}
    attempts = sum(s["focus_attempts"] for s in stats)
    done = [r["score"] for r, s in zip(records, stats) if s.get("terminated", True)]
    return {
        "attended_tokens": sum(s["attended_tokens"] for s in stats) / n,
        "per_step_ratio": sum(s["per_step_ratio"] for s in stats) / n,
        **{f"share_{m}": (modes[m] / steps if steps else None) for m in modes},
        "focus_attempts": attempts / n,
        "focus_success": sum(s["focus_success"] for s in stats) / attempts if attempts else None,
        "non_terminating": sum(not s.get("terminated", True) for s in stats) / n,
        "accuracy_terminated": _accuracy(done)[0],
    }


PAPER_FIELDS = ["attended_tokens", "per_step_ratio", "share_global", "share_focus",
                "share_local", "focus_attempts", "focus_success", "non_terminating",
                "accuracy_terminated"]


def cell_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    r0 = records[0]
    n = len(records)
    acc, se = _accuracy([r["score"] for r in records])
    full = sum(r["kv"]["full"] for r in records)
    recalls = [r["evidence_recall"] for r in records if r["evidence_recall"] is not None]
    matches = [r["mode_match"] for r in records if r.get("mode_match") is not None]
    return {
        "task": r0["task"], "family": r0["family"], "length": r0["length"],
        "policy": r0.get("arm") or r0["policy"], "n": n, "accuracy": acc, "accuracy_se": se,
        "cost": sum(r["kv"]["read"] for r in records) / full if full else 1.0,
        "evidence_recall": _mean(recalls),
        "adherence": sum(bool(r["adherent"]) for r in records) / n,
        "mode_match": sum(bool(m) for m in matches) / len(matches) if matches else None,
        "safety_fired": _safety_fired(records),
        "wall_s": sum(r["wall_s"] for r in records),
        "prompt_tokens": sum(r["prompt_tokens"] for r in records) / n,
        "decode_steps": sum(len(r["kv"]["per_step"]) for r in records) / n,
        "format_failures": (sum(bool(r.get("format_failure")) for r in records) / n
                            if r0.get("protocol") in ANSWER_TAG_PROTOCOLS else None),
        "scored_by": r0.get("scored_by", "native"),
        "truncated_verdicts": (sum(r["verdict_truncated"] for r in records) / n
                               if "verdict_truncated" in r0 else None),
        **paper_stats(records),
    }


def summarize(cells: list[dict[str, Any]], by: tuple[str, ...]) -> list[dict[str, Any]]:
    """Average cell metrics over the groups given by ``by`` (equal weight per cell)."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for c in cells:
        groups[tuple(c[k] for k in by)].append(c)
    out = []
    for key, cs in groups.items():
        row: dict[str, Any] = dict(zip(by, key))
        row["cells"] = len(cs)
        row["n"] = sum(c["n"] for c in cs)
        for m in ("accuracy", "cost", "evidence_recall", "adherence", "mode_match",
                  "safety_fired", "format_failures", *PAPER_FIELDS):
            row[m] = _mean([c[m] for c in cs if c[m] is not None])
        row["accuracy_se"] = math.sqrt(sum(c["accuracy_se"] ** 2 for c in cs)) / len(cs)
        row["min_n"] = min(c["n"] for c in cs)
        row["wall_s"] = sum(c["wall_s"] for c in cs)
        out.append(row)
    return out


def collect(out: Path) -> list[dict[str, Any]]:
    """Metrics of every finished cell under ``out/cells``, in the run's configured order."""
    from .judge import read_scored_cells

    cells = []
    for _, records in read_scored_cells(out):
        if records:
            cells.append(cell_metrics(records))
    cfg_path = out / "config.json"
    if cfg_path.exists():
        cfg = json.loads(cfg_path.read_text())
        order = {k: {v: i for i, v in enumerate(cfg.get(plural, []))}
                 for k, plural in (("task", "tasks"), ("length", "lengths"),
                                   ("policy", "policies"))}
        cells.sort(key=lambda c: tuple(order[k].get(c[k], 1 << 30) for k in order))
    return cells


def write_metrics(out: str | os.PathLike) -> dict[str, Any]:
    out = Path(out)
    cells = collect(out)
    policy_order = list(dict.fromkeys(c["policy"] for c in cells))
    payload = {
        "schema": SCHEMA,
        "cells": cells,
        "by_family": summarize(cells, ("family", "policy")),
        "by_family_length": summarize(cells, ("family", "length", "policy")),
        "by_policy": summarize(cells, ("policy",)),
        "policies": policy_order,
    }
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, out / "metrics.json")
    tmp = out / "metrics.csv.tmp"
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CELL_FIELDS)
        w.writeheader()
        for c in cells:
            w.writerow({k: c[k] for k in CELL_FIELDS})
    os.replace(tmp, out / "metrics.csv")
    return payload
