"""Per-arm summary of a `dac eval --arms ...` run, for the zero-shot tables in docs/models.md.

    python bench/zero_shot_table.py runs/zs-smollm2-greedy [more runs...]
    python bench/zero_shot_table.py --by-family runs/RUN    # one row per task family and arm

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


def summary(run: Path, by_family: bool = False) -> list[str]:
    groups: dict[tuple[str, str], list[dict]] = collections.defaultdict(list)
    for f in sorted((run / "cells").glob("*.jsonl")):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            groups[(r["family"] if by_family else "", r.get("arm") or r["policy"])].append(r)
    cfg = json.loads((run / "config.json").read_text())
    head = "| family " if by_family else ""
    rows = [f"`{run}`: {cfg['model']}, lengths {cfg['lengths']}, "
            f"sampling {cfg.get('sampling') or 'greedy'}", "",
            f"{head}| arm | n | accuracy | references in the text | format failures | attended "
            "tokens | decode steps | focus / local steps | focus attempts (success) | not "
            "followed, by kind |",
            "|---" * (11 if by_family else 10) + "|"]
    families = sorted({fam for fam, _ in groups}, key=lambda f: (f != "retrieval", f))
    for fam, arm in [(f, a) for f in families for a in cfg["policies"]]:
        rs = groups.get((fam, arm), [])
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
            (f"| {fam} " if by_family else "") + f"| {arm} | {n} | {sum(r['score'] for r in rs) / n:.1%} | "
            f"{sum(found(r) for r in rs) / n:.1%} | "
            f"{sum(bool(r.get('format_failure')) for r in rs) / n:.0%} | "
            f"{sum(s['attended_tokens'] for s in st) / n:,.0f} | {steps / n:.0f} | "
            f"{modes['focus'] / steps:.0%} / {modes['local'] / steps:.0%} | "
            f"{att / n:.2f} ({(ok / att if att else 0):.0%}) | "
            f"{', '.join(f'{k} {v}' for k, v in kinds.most_common()) or '-'} |")
    return rows


if __name__ == "__main__":
    args = sys.argv[1:]
    fam = "--by-family" in args
    for p in [a for a in args if a != "--by-family"]:
        print("\n".join(summary(Path(p), by_family=fam)) + "\n")
