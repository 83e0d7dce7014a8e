"""Per-arm summary of a `dac eval --arms ...` run, for the zero-shot tables in docs/models.md.

    python bench/zero_shot_table.py runs/zs-smollm2-greedy [more runs...]

Per arm, over every response of the run: accuracy (the paper's rule: no <answer>, wrong),
the share of references found anywhere in the output, format failures (no <answer>), attended
tokens and decode steps per response, the share of decode steps in focus / local, focus
attempts per response and their success, and the protocol events that were not followed, by
kind. Computed from the raw records.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path


def found(r: dict) -> float:
    """RULER's string_match_all on the whole output: what the format rule does not forgive."""
    refs = r["answers"] or []
    text = r["output"].lower()
    return sum(a.lower() in text for a in refs) / len(refs) if refs else 0.0


def summary(run: Path) -> list[str]:
    by_arm: dict[str, list[dict]] = collections.defaultdict(list)
    for f in sorted((run / "cells").glob("*.jsonl")):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            by_arm[r.get("arm") or r["policy"]].append(r)
    cfg = json.loads((run / "config.json").read_text())
    rows = [f"`{run}`: {cfg['model']}, lengths {cfg['lengths']}, "
            f"sampling {cfg.get('sampling') or 'greedy'}", "",
            "| arm | n | accuracy | references in the text | format failures | attended tokens "
            "| decode steps | focus / local steps | focus attempts (success) | not followed, by "
            "kind |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for arm in cfg["policies"]:
        rs = by_arm.get(arm, [])
        if not rs:
            continue
        n = len(rs)
        st = [r["stats"] for r in rs]
        steps = sum(s["decode_steps"] for s in st)
        modes = collections.Counter()
        for s in st:
            modes.update(s["mode_steps"])
        att = sum(s["focus_attempts"] for s in st)
        ok = sum(s["focus_success"] for s in st)
        kinds = collections.Counter(e["kind"] for r in rs for e in r["directives"]
                                    if e.get("message"))
        rows.append(
            f"| {arm} | {n} | {sum(r['score'] for r in rs) / n:.1%} | "
            f"{sum(found(r) for r in rs) / n:.1%} | "
            f"{sum(bool(r.get('format_failure')) for r in rs) / n:.0%} | "
            f"{sum(s['attended_tokens'] for s in st) / n:,.0f} | {steps / n:.0f} | "
            f"{modes['focus'] / steps:.0%} / {modes['local'] / steps:.0%} | "
            f"{att / n:.2f} ({(ok / att if att else 0):.0%}) | "
            f"{', '.join(f'{k} {v}' for k, v in kinds.most_common()) or '-'} |")
    return rows


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print("\n".join(summary(Path(p))) + "\n")
