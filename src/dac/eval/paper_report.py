"""The report's section in the paper's layout, computed from the raw per-response records.

* **Table 2**: per source (a paper source, or a suite task), accuracy and attended tokens per
  response for each arm, then the macro average over sources (micro within a source);
  the headline is given with and without the responses that did not terminate.
* **Figure 2**: per source, each arm's accuracy difference (points) and attended-token change
  (%) against the reference arm (``vanilla`` when the run has it, else the first arm).
* **Mode share by context length**: the share of decode steps spent in global, focus and
  local mode, per arm, in bins of the prompt's length.
* **Projected decode time**: the paper's roofline (:mod:`dac.roofline`) per arm, from the
  arm's macro-averaged decode steps and attended tokens and the evaluated model's constants.

Every figure here is recomputed from ``cells/*.jsonl``, never from ``metrics.json``.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MODES = ("global", "focus", "local")
MODE_COLORS = {"global": "#3b75af", "focus": "#2ca02c", "local": "#ff7f0e"}
#: context-length bins of the mode-share figure (upper bounds, tokens)
LENGTH_BINS = (4096, 8192, 16384, 32768, 65536, 131072, 262144, math.inf)


def _label(b: float) -> str:
    return "longer" if b == math.inf else f"≤{int(b) // 1024}K"


def load_records(out: Path) -> list[dict[str, Any]]:
    from .judge import read_scored_cells

    return [r for _, records in read_scored_cells(out) for r in records]


def _arm(r: dict[str, Any]) -> str:
    return r.get("arm") or r["policy"]


def _source(r: dict[str, Any]) -> str:
    return r.get("source") or r["task"]


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def table(records: list[dict[str, Any]], arms: list[str],
          order: list[str] | None = None) -> dict[str, Any]:
    """Per source and arm: n, accuracy, accuracy without non-terminating responses, attended
    tokens and decode steps per response, mode shares, focus figures; then the macro row.
    Sources in ``order`` (the run's) first."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(_source(r), _arm(r))].append(r)
    seen = set(_source(r) for r in records)
    sources = [s for s in dict.fromkeys(order or []) if s in seen]
    sources += sorted(seen - set(sources))
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for s in sources:
        rows[s] = {}
        for a in arms:
            rs = groups.get((s, a))
            if rs:
                rows[s][a] = _cell(rs)
    macro = {}
    for a in arms:
        cells = [rows[s][a] for s in sources if a in rows[s]]
        if cells:
            macro[a] = {k: _mean([c[k] for c in cells if c[k] is not None])
                        for k in cells[0] if k != "n"}
            macro[a]["n"] = sum(c["n"] for c in cells)
            macro[a]["sources"] = len(cells)
    return {"sources": sources, "arms": arms, "rows": rows, "macro": macro}


def _cell(rs: list[dict[str, Any]]) -> dict[str, Any]:
    stats = [r.get("stats") or {} for r in rs]
    done = [r for r, s in zip(rs, stats) if s.get("terminated", True)]
    steps = sum(s.get("decode_steps", 0) for s in stats)
    modes = {m: sum((s.get("mode_steps") or {}).get(m, 0) for s in stats) for m in MODES}
    attempts = sum(s.get("focus_attempts", 0) for s in stats)
    return {
        "n": len(rs),
        "accuracy": _mean([r["score"] for r in rs]),
        "accuracy_terminated": _mean([r["score"] for r in done]),
        "non_terminating": 1 - len(done) / len(rs),
        "attended_tokens": _mean([s.get("attended_tokens", r["kv"]["read"])
                                  for r, s in zip(rs, stats)]),
        "decode_steps": _mean([s.get("decode_steps", len(r["kv"]["per_step"]))
                               for r, s in zip(rs, stats)]),
        "per_step_ratio": _mean([r["kv"]["fraction"] for r in rs]),
        **{f"share_{m}": (modes[m] / steps if steps else None) for m in MODES},
        "focus_attempts": attempts / len(rs),
        "focus_success": (sum(s.get("focus_success", 0) for s in stats) / attempts
                          if attempts else None),
    }


def reference_arm(arms: list[str]) -> str:
    return "vanilla" if "vanilla" in arms else arms[0]


def plot_relative(tab: dict[str, Any], path: Path) -> bool:
    """The paper's Figure 2: per source, accuracy difference (points) and attended-token
    change (%) of each arm against the reference arm. False when there is nothing to compare."""
    arms = tab["arms"]
    ref = reference_arm(arms)
    others = [a for a in arms if a != ref]
    sources = [s for s in tab["sources"] if ref in tab["rows"][s]]
    if not others or not sources:
        return False
    labels = sources + ["macro"]
    rows = {**tab["rows"], "macro": tab["macro"]}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.42 * len(labels) + 1.8), sharey=True)
    height = 0.8 / len(others)
    cmap = plt.get_cmap("tab10").colors
    for j, a in enumerate(others):
        ys = [i + (j - (len(others) - 1) / 2) * height for i in range(len(labels))]
        acc, att = [], []
        for s in labels:
            r, b = rows[s].get(a), rows[s].get(ref)
            ok = r is not None and b is not None
            acc.append(100 * (r["accuracy"] - b["accuracy"]) if ok else 0.0)
            att.append(100 * (r["attended_tokens"] / b["attended_tokens"] - 1)
                       if ok and b["attended_tokens"] else 0.0)
        ax1.barh(ys, acc, height=height, color=cmap[(j + 1) % 10], label=a)
        ax2.barh(ys, att, height=height, color=cmap[(j + 1) % 10], label=a)
    for ax, title in ((ax1, f"accuracy − {ref} (points)"),
                      (ax2, f"attended tokens vs {ref} (%)")):
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    ax1.set_yticks(range(len(labels)), labels, fontsize=8)
    ax1.invert_yaxis()
    ax2.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Each arm against {ref}, per source and macro-averaged", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def mode_share_by_length(records: list[dict[str, Any]], arms: list[str]
                         ) -> dict[str, list[tuple[str, int, dict[str, float]]]]:
    """Per arm that declares modes: per context-length bin, (label, responses, share of
    decode steps per mode)."""
    out: dict[str, list[tuple[str, int, dict[str, float]]]] = {}
    for a in arms:
        rs = [r for r in records if _arm(r) == a and r.get("stats")]
        bins: dict[float, list[dict[str, Any]]] = defaultdict(list)
        for r in rs:
            bins[next(b for b in LENGTH_BINS if r["prompt_tokens"] <= b)].append(r)
        rows = []
        for b in LENGTH_BINS:
            if not bins.get(b):
                continue
            steps = {m: sum(r["stats"]["mode_steps"].get(m, 0) for r in bins[b]) for m in MODES}
            total = sum(steps.values())
            if total:
                rows.append((_label(b), len(bins[b]), {m: steps[m] / total for m in MODES}))
        if rows and any(sh["global"] < 1 for _, _, sh in rows):
            out[a] = rows
    return out


def plot_mode_share(shares: dict[str, list[tuple[str, int, dict[str, float]]]],
                    path: Path) -> bool:
    if not shares:
        return False
    fig, axes = plt.subplots(1, len(shares), figsize=(4.2 * len(shares) + 0.8, 3.8),
                             squeeze=False, sharey=True)
    for ax, (arm, rows) in zip(axes.flat, shares.items()):
        bottom = [0.0] * len(rows)
        for m in MODES:
            vals = [sh[m] for _, _, sh in rows]
            ax.bar(range(len(rows)), vals, bottom=bottom, color=MODE_COLORS[m], label=m)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xticks(range(len(rows)), [f"{lab}\n(n={n})" for lab, n, _ in rows], fontsize=8)
        ax.set_title(arm, fontsize=10)
        ax.set_ylim(0, 1)
    axes.flat[0].set_ylabel("share of decode steps")
    axes.flat[-1].legend(fontsize=8, loc="upper right")
    fig.suptitle("Mode share by context length", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def projection(tab: dict[str, Any], model_dir: str | None,
               hardware: tuple[str, ...] = ("b200", "h200")) -> list[dict[str, Any]]:
    """The roofline decode time per arm and accelerator, from the arm's macro decode steps
    and attended tokens; [] when the model's constants cannot be read."""
    from ..roofline import decode_time, model_costs

    if not model_dir or not Path(model_dir).is_dir():
        return []
    try:
        costs = model_costs(model_dir)
    except (FileNotFoundError, ValueError, KeyError):
        return []
    ref = reference_arm(tab["arms"])
    out = []
    for hw in hardware:
        base = None
        if ref in tab["macro"]:
            m = tab["macro"][ref]
            base = decode_time(costs, m["decode_steps"], m["attended_tokens"], hw).total_s
        for a in tab["arms"]:
            m = tab["macro"].get(a)
            if not m:
                continue
            t = decode_time(costs, m["decode_steps"], m["attended_tokens"], hw)
            out.append({"hardware": hw, "arm": a, **t.to_dict(), "total_s": t.total_s,
                        "ratio": t.total_s / base if base else None})
    return out


def _f(x: Any, digits: int = 2, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.{digits}f}" if pct else f"{x:.{digits}f}"


def _tokens(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}K" if x >= 1e3 else f"{x:.0f}"


def section(out: Path, rep: Path, config: dict[str, Any]) -> str:
    """The HTML of the paper-layout section (figures written into ``rep``)."""
    e = html.escape
    records = load_records(out)
    arms = list(dict.fromkeys([*config.get("policies", []), *(_arm(r) for r in records)]))
    arms = [a for a in arms if any(_arm(r) == a for r in records)]
    if not records or not arms:
        return ""
    tab = table(records, arms, [*(config.get("sources") or {}), *config.get("tasks", [])])
    ref = reference_arm(arms)
    head = ("<tr><th rowspan=2>source</th><th rowspan=2>n</th>"
            f"<th colspan={len(arms)}>accuracy (%)</th>"
            f"<th colspan={len(arms)}>attended tokens per response</th>"
            f"<th colspan={len(arms)}>decode steps</th></tr><tr>"
            + "".join(f"<th>{e(a)}</th>" for a in arms) * 3 + "</tr>")

    def row(name: str, cells: dict[str, dict[str, Any]], bold: bool = False) -> str:
        n = max((c["n"] for c in cells.values()), default=0)
        acc = "".join(f"<td>{_f(cells[a]['accuracy'], 1, True) if a in cells else '-'}</td>"
                      for a in arms)
        att = ""
        for a in arms:
            c = cells.get(a)
            base = cells.get(ref)
            rel = ""
            if c and base and a != ref and base["attended_tokens"]:
                rel = f" ({100 * (c['attended_tokens'] / base['attended_tokens'] - 1):+.1f}%)"
            att += f"<td>{_tokens(c['attended_tokens']) + rel if c else '-'}</td>"
        steps = "".join(f"<td>{_f(cells[a]['decode_steps'], 1) if a in cells else '-'}</td>"
                        for a in arms)
        tr = f"<tr><td>{e(name)}</td><td>{n}</td>{acc}{att}{steps}</tr>"
        return tr.replace("<td>", "<td><b>").replace("</td>", "</b></td>") if bold else tr

    body = "".join(row(s, tab["rows"][s]) for s in tab["sources"])
    body += row(f"macro ({len(tab['sources'])} sources)", tab["macro"], bold=True)
    headline = "".join(
        f"<tr><td>{e(a)}</td><td>{_f(m['accuracy'], 1, True)}</td>"
        f"<td>{_f(m['accuracy_terminated'], 1, True)}</td>"
        f"<td>{_f(m['non_terminating'], 1, True)}</td><td>{_f(m['per_step_ratio'], 3)}</td>"
        f"<td>{_f(m['share_global'], 1, True)} / {_f(m['share_focus'], 1, True)} / "
        f"{_f(m['share_local'], 1, True)}</td><td>{_f(m['focus_attempts'], 2)}</td>"
        f"<td>{_f(m['focus_success'], 1, True)}</td></tr>" for a, m in tab["macro"].items())
    parts = [f"""<h2>In the paper's layout</h2>
<p>Per source, micro-averaged over its responses; the last row is the macro average over
sources. Attended tokens: KV positions read by the global layers, summed over a response's
decode steps; in brackets, the change against <b>{e(ref)}</b>.</p>
<table>{head}{body}</table>
<table><tr><th>arm</th><th>accuracy (%)</th><th>without non-terminating</th>
<th>non-terminating (%)</th><th>per-step ratio</th><th>global / focus / local steps (%)</th>
<th>focus attempts per response</th><th>focus success (%)</th></tr>{headline}</table>"""]
    if plot_relative(tab, rep / "relative_to_reference.png"):
        parts.append("<img src='relative_to_reference.png' alt='each arm against the "
                     "reference arm'>")
    if plot_mode_share(mode_share_by_length(records, arms), rep / "mode_share_by_length.png"):
        parts.append("<h3>Mode share by context length</h3><img src='mode_share_by_length.png'"
                     " alt='mode share by context length'>")
    proj = projection(tab, config.get("model"))
    if proj:
        rows_html = "".join(
            f"<tr><td>{e(p['hardware'].upper())}</td><td>{e(p['arm'])}</td>"
            f"<td>{1e3 * p['matmul_s']:.3f}</td><td>{1e3 * p['global_s']:.3f}</td>"
            f"<td>{1e3 * p['local_s']:.3f}</td><td>{1e3 * p['total_s']:.3f}</td>"
            f"<td>{_f(p['ratio'], 3)}</td></tr>" for p in proj)
        parts.append(f"""<h3>Projected decode time (the paper's roofline)</h3>
<p>Per response, from each arm's macro-averaged decode steps and attended tokens and this
model's constants (parameters; global KV bytes per token and the fixed per-step local read,
bf16): matmul at 40% of peak FLOPS, memory at 70% of peak bandwidth, weights amortized over
a large batch (<code>dac.roofline</code>). A projection, not a measurement.</p>
<table><tr><th>accelerator</th><th>arm</th><th>matmul ms</th><th>global KV ms</th>
<th>local ms</th><th>total ms</th><th>vs {e(ref)}</th></tr>{rows_html}</table>""")
    return "\n".join(parts)
