"""Markdown tables from bench/cost_model.py results (one per shape).

    python bench/cost_model_table.py bench/results/h200/cost_model_*.json
"""

from __future__ import annotations

import json
import sys


def table(path: str) -> str:
    d = json.load(open(path))
    paper = d.get("paper_projection_b200", {})
    tr = {a: ts[0] for a, ts in d["traces"].items()}
    lines = [f"### {d['shape']} ({path}; {d['env']['gpu']}, {d['source']})", "",
             "Responses replayed: " + "; ".join(
                 f"{a} {t['steps']} steps, {t['attended'] / 1e6:.2f}M attended tokens from a "
                 f"{t['context'] // 1024}K context" for a, t in tr.items())
             + (f". The paper's own projection (B200): DA at {paper['da']:.3f}x vanilla."
                if "da" in paper else ""), "",
             "| batch | vanilla ms/step | DA ms/step | vanilla ms/response | DA ms/response | "
             "measured DA / vanilla | projected (roofline, H200) |",
             "|---|---|---|---|---|---|---|"]
    for r in d["runs"]:
        a, p = r["arms"], r["projected"]
        for arm in a:
            if arm == r["reference"]:
                continue
            ref = a[r["reference"]]
            lines.append(f"| {r['batch']} | {ref['step_ms']:.1f} | {a[arm]['step_ms']:.1f} | "
                         f"{ref['response_ms'] / 1e3:.2f} s | {a[arm]['response_ms'] / 1e3:.2f} s"
                         f" | {a[arm]['measured_ratio']:.3f} | {p[arm]['ratio']:.3f} |")
    for f in d.get("failed", []):
        lines.append(f"\nnot measured: batch {f.get('batch', '')}: {str(f.get('error'))[:160]}")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(p) for p in sys.argv[1:]))
