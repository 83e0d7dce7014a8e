"""Markdown tables from bench/paper_shapes.py results (one per shape).

    python bench/paper_shapes_table.py bench/results/h200/paper_shapes_*.json
"""

from __future__ import annotations

import json
import sys


def table(path: str) -> str:
    d = json.load(open(path))
    lines = [f"### {d['shape']} ({path}; {d['env']['gpu']}, copy bandwidth "
             f"{d['bandwidth_TBps']} TB/s, {d['weights_GB']} GB of weights read per step)", "",
             "| context | batch | policy | kept | GPU ms/step | tokens/s | weights / global KV / "
             "local GB | bound ms | of bound | speed-up | bound speed-up | of bound speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["runs"]:
        for name, p in r["policies"].items():
            lines.append(
                f"| {r['context'] // 1024}K | {r['batch']} | {name} | {p['kept_fraction']:.1%} | "
                f"{p['gpu_us'] / 1e3:.1f} | {p['tokens_per_s']:.0f} | {p['weights_GB']:.1f} / "
                f"{p['global_kv_GB']:.1f} / {p['local_GB']:.2f} | {p['bound_us'] / 1e3:.1f} | "
                f"{p['of_bound']:.2f} | {p['speedup']:.2f} | {p['bound_speedup']:.2f} | "
                f"{p['of_bound_speedup']:.2f} |")
    prof = d.get("profile")
    if prof:
        total = sum(prof["gpu_us"].values())
        lines += ["", f"One eager step at {prof['context'] // 1024}K, batch 1, by kernel family "
                  f"(torch.profiler; {total / 1e3:.1f} ms of GPU time in all):", "",
                  "| family | GPU ms | share | kernels |", "|---|---|---|---|"]
        for fam, us in sorted(prof["gpu_us"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {fam} | {us / 1e3:.1f} | {us / total:.0%} | "
                         f"{prof['kernels'].get(fam, 0)} |")
    for f in d.get("failed", []):
        lines.append(f"\nnot measured: {f.get('context', '')} batch {f.get('batch', '')}: "
                     f"{str(f.get('error', f))[:160]}")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(p) for p in sys.argv[1:]))
