"""``dac report DIR``: an HTML page with PNG figures from a run folder.

Figures: accuracy versus decoding attention cost (one point per policy, one panel per task
family and one for all tasks), accuracy versus length per policy, both with one standard
error, and for a few samples a timeline of which context positions each decode step read
(kept KV blocks per step, with the sections, the evidence and the directives marked). Cells
with fewer than :data:`MIN_SAMPLES` samples are flagged on the page; directive adherence is
shown only for policies that read directives.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap, ListedColormap  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..tasks import FAMILIES  # noqa: E402
from .metrics import write_metrics  # noqa: E402
from .records import expand_blocks  # noqa: E402

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">"]
COLORS = plt.get_cmap("tab10").colors
#: below this many samples per cell the page warns that differences are mostly noise
MIN_SAMPLES = 20
FAMILY_TITLES = {"retrieval": "single-region retrieval", "reworded": "retrieval in other words",
                 "multi": "multi-region", "aggregation": "global aggregation",
                 "local": "local / recent"}


def _style(policies: list[str]) -> dict[str, dict[str, Any]]:
    return {p: {"color": COLORS[i % len(COLORS)], "marker": MARKERS[i % len(MARKERS)]}
            for i, p in enumerate(policies)}


def plot_accuracy_vs_cost(metrics: dict[str, Any], path: Path) -> None:
    policies = metrics["policies"]
    style = _style(policies)
    fams = [f for f in FAMILIES if any(r["family"] == f for r in metrics["by_family"])]
    panels = [("all tasks", metrics["by_policy"])] + [
        (FAMILY_TITLES.get(f, f), [r for r in metrics["by_family"] if r["family"] == f])
        for f in fams]
    ncol = min(3, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 4.0 * nrow), squeeze=False)
    for ax, (title, rows) in zip(axes.flat, panels):
        placed: list[tuple[float, float]] = []
        for r in sorted(rows, key=lambda r: policies.index(r["policy"])):
            i = policies.index(r["policy"])
            st = style[r["policy"]]
            # earlier policies are drawn larger, so coinciding points stay visible as rings
            ax.errorbar(r["cost"], r["accuracy"], yerr=r.get("accuracy_se") or 0,
                        color=st["color"], linewidth=1.0, capsize=3, zorder=2 + i)
            ax.scatter(r["cost"], r["accuracy"], s=max(30, 280 / (1 + 0.8 * i)),
                       color=st["color"], marker=st["marker"], edgecolor="black",
                       linewidth=0.6, zorder=3 + i, clip_on=False)
            # stack the labels of points that (nearly) coincide, away from the panel edge
            near = sum(abs(x - r["cost"]) < 0.12 and abs(y - r["accuracy"]) < 0.08
                       for x, y in placed)
            placed.append((r["cost"], r["accuracy"]))
            right = r["cost"] < 0.75
            dy = -(14 + 11 * near) if r["accuracy"] > 0.5 else 8 + 11 * near
            ax.annotate(r["policy"], (r["cost"], r["accuracy"]), textcoords="offset points",
                        xytext=(10 if right else -10, dy), fontsize=8, va="center",
                        color=st["color"], ha="left" if right else "right",
                        fontweight="bold", zorder=10)
        ax.set_xlim(-0.02, 1.08)
        ax.set_ylim(-0.03, 1.05)
        ax.set_xlabel("decoding attention cost (KV read / full)")
        ax.set_ylabel("accuracy")
        n = sum(r["n"] for r in rows)
        ax.set_title(f"{title} ({n} samples)", fontsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=style[p]["color"], marker=style[p]["marker"],
                          linestyle="", markersize=9, markeredgecolor="black") for p in policies]
    fig.legend(handles, policies, loc="lower center", ncol=min(len(policies), 6),
               frameon=False, bbox_to_anchor=(0.5, -0.01))
    fig.suptitle("Accuracy versus decoding attention cost (one point per policy)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy_by_length(metrics: dict[str, Any], path: Path) -> None:
    policies = metrics["policies"]
    style = _style(policies)
    rows = metrics["by_family_length"]
    fams = [f for f in FAMILIES if any(r["family"] == f for r in rows)]
    fig, axes = plt.subplots(1, len(fams), figsize=(4.2 * len(fams), 3.6), squeeze=False)
    for ax, fam in zip(axes.flat, fams):
        for i, p in enumerate(policies):
            pts = sorted((r["length"], r["accuracy"], r.get("accuracy_se") or 0) for r in rows
                         if r["family"] == fam and r["policy"] == p)
            if pts:  # earlier policies thicker, so coinciding lines stay visible
                ax.errorbar([x for x, _, _ in pts], [y for _, y, _ in pts],
                            yerr=[e for _, _, e in pts], color=style[p]["color"],
                            marker=style[p]["marker"], label=p, markeredgecolor="black",
                            linewidth=max(1.2, 5.0 - 1.3 * i),
                            markersize=max(4.0, 11.0 - 2.2 * i), capsize=3, clip_on=False)
        ax.set_xscale("log", base=2)
        lengths = sorted({r["length"] for r in rows})
        ax.set_xticks(lengths, [_k(n) for n in lengths])
        ax.minorticks_off()
        ax.set_ylim(-0.03, 1.05)
        ax.set_xlabel("prompt length (tokens)")
        ax.set_ylabel("accuracy")
        ax.set_title(FAMILY_TITLES.get(fam, fam), fontsize=10)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _k(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def plot_timeline(records: list[dict[str, Any]], path: Path) -> None:
    """One panel per policy: x = decode step, y = context position; kept blocks shaded (for
    a per-head policy such as Quest, by the share of layers and KV heads that read them)."""
    fig, axes = plt.subplots(1, len(records), figsize=(3.6 * len(records) + 1, 5.2),
                             squeeze=False, sharey=True)
    cmap = ListedColormap(["#f4f4f4", "#3b75af"]).with_extremes(bad="white")
    # per-head policies: from unread (light) to read by every layer and KV head (dark)
    shades = LinearSegmentedColormap.from_list("share", ["#f4f4f4", "#3b75af"]).with_extremes(
        bad="white")
    r0 = records[0]
    for ax, rec in zip(axes.flat, records):
        bs = rec["block_size"]
        steps: list[dict[int, float]] = []
        if rec.get("blocks"):
            steps = [{b: 1.0 for b in kept} for kept in expand_blocks(rec["blocks"])]
        elif rec.get("block_share"):  # per-head policies: the share of heads reading a block
            steps = [{int(b): v for b, v in sh.items()} for sh in rec["block_share"]]
        n_steps = len(rec["kv"]["per_step"])
        total = rec["prompt_tokens"] + n_steps
        nb = -(-total // bs)
        if steps:
            import numpy as np

            img = np.zeros((nb, len(steps)))
            for j, kept in enumerate(steps):
                for b, v in kept.items():
                    if b < nb:
                        img[b, j] = v
                # blocks past this step's cache length do not exist yet: leave them blank
                img[-(-(rec["prompt_tokens"] + j + 1) // bs):, j] = np.nan
            ax.imshow(img, aspect="auto", cmap=shades if rec.get("block_share") else cmap,
                      vmin=0, vmax=1, interpolation="nearest",
                      extent=(-0.5, len(steps) - 0.5, nb * bs, 0))
        else:
            ax.text(0.5, 0.5, "per-head selection:\nnot measured by this engine\n(see cost)",
                    transform=ax.transAxes, ha="center", va="center", fontsize=9,
                    bbox={"facecolor": "white", "edgecolor": "#999999"}, zorder=10)
            ax.set_xlim(-0.5, max(n_steps, 1) - 0.5)
            ax.set_ylim(nb * bs, 0)
        secs = rec["sections"]
        every = max(1, -(-len(secs) // 16))
        for a, _ in secs:
            ax.axhline(a, color="#999999", linewidth=0.5)
        shown = [(i, a, b) for i, (a, b) in enumerate(secs, 1) if (i - 1) % every == 0]
        ax.set_yticks([(a + b) / 2 for _, a, b in shown], [f"S{i}" for i, _, _ in shown],
                      fontsize=7)
        ax.axhline(rec["prompt_tokens"], color="black", linewidth=1.0, linestyle=":")
        ev = rec["evidence_tokens"]
        thick = total * 0.006 if len(ev) <= 8 else 0  # keep a few short spans visible
        for a, b in ev:
            mid = (a + b) / 2
            ax.axhspan(min(a, mid - thick), max(b, mid + thick), color="#d62728",
                       alpha=0.6 if len(ev) <= 8 else 0.45, linewidth=0)
        for e in rec["directives"]:
            ax.axvline(e["step"] - 0.5, color="#2ca02c" if e["kind"] == "directive" else
                       "#ff7f0e", linewidth=1.2, linestyle="--")
            ax.text(e["step"], 0, e["text"], rotation=90, fontsize=7, va="top", ha="left",
                    color="#1b5e20")
        recall = rec["evidence_recall"]
        ax.set_title(f"{rec['policy']}\ncost {rec['kv']['fraction']:.2f}, recall "
                     f"{'-' if recall is None else f'{recall:.2f}'}, score {rec['score']:.2f}",
                     fontsize=9)
        ax.set_xlabel("decode step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.flat[0].set_ylabel(f"context position: sections S1-S{len(r0['sections'])}, "
                            f"{r0['prompt_tokens']} prompt tokens")
    handles = [plt.Rectangle((0, 0), 1, 1, color="#3b75af"),
               plt.Rectangle((0, 0), 1, 1, color="#f4f4f4", ec="#999999"),
               plt.Rectangle((0, 0), 1, 1, color="#d62728", alpha=0.55),
               plt.Line2D([], [], color="#2ca02c", linestyle="--"),
               plt.Line2D([], [], color="black", linestyle=":")]
    fig.legend(handles, ["KV read", "not read", "evidence", "directive", "end of prompt"],
               loc="lower center", ncol=5, frameon=False, fontsize=8)
    fig.suptitle(f"What each decode step read: {r0['id']} ({r0['family']}; ideal "
                 f"{r0['ideal_directive']})", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pick_timelines(out: Path, config: dict[str, Any], k: int) -> list[list[dict[str, Any]]]:
    """Up to ``k`` samples (first seed, longest length, one task per family first)."""
    from .folder import cell_path, read_cell

    if k <= 0:
        return []
    from ..tasks import TASKS

    length = max(config["lengths"])
    tasks = config["tasks"]
    order: list[str] = []
    for fam in ("retrieval", "multi", "local", "aggregation"):  # one per family first
        order += [t for t in tasks if TASKS[t].family == fam][:1]
    order += [t for t in tasks if t not in order]
    picked = []
    for task in order:
        recs = []
        for pol in config["policies"]:
            path = cell_path(out, task, length, pol)
            if path.exists():
                rows = read_cell(path)
                if rows:
                    recs.append(rows[0])
        if recs:
            picked.append(recs)
        if len(picked) >= k:
            break
    return picked


def _fmt(x: Any, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _acc(r: dict[str, Any], digits: int = 2) -> str:
    """Accuracy with its standard error."""
    se = r.get("accuracy_se")
    return _fmt(r["accuracy"], digits) + ("" if se is None else f" &plusmn; {se:.{digits}f}")


def reads_directives(policy: str) -> bool:
    """Whether a policy spec reads the model's directives (adherence means something)."""
    from ..planning import get_policy
    from .arms import arm_policy

    try:
        return get_policy(arm_policy(policy)).reads_directives
    except ValueError:
        return True  # an unknown spec from another version: show what was measured


def write_report(run_dir: str | os.PathLike, *, timelines: int = 3) -> Path:
    """Write ``run_dir/report/index.html`` and its figures; returns the page's path."""
    out = Path(run_dir)
    if not (out / "config.json").exists():
        raise FileNotFoundError(f"{out} has no config.json: not a dac eval run folder")
    metrics = write_metrics(out)
    if not metrics["cells"]:
        raise ValueError(f"{out} has no finished cell yet")
    config = json.loads((out / "config.json").read_text())
    rep = out / "report"
    rep.mkdir(exist_ok=True)
    plot_accuracy_vs_cost(metrics, rep / "accuracy_vs_cost.png")
    plot_accuracy_by_length(metrics, rep / "accuracy_by_length.png")
    for old in rep.glob("timeline_*.png"):  # drawings of an earlier report
        old.unlink()
    tl_files = []
    for i, recs in enumerate(pick_timelines(out, config, timelines)):
        name = f"timeline_{i + 1}_{recs[0]['task']}.png"
        plot_timeline(recs, rep / name)
        tl_files.append((name, recs[0]))
    from .paper_report import section

    page = rep / "index.html"
    page.write_text(_html(config, metrics, tl_files, section(out, rep, config)))
    return page


def _family_order(family: str) -> int:
    """The suite's families in their order, then the paper's single/multi-span split."""
    order = [*FAMILIES, "single", "multi"]
    return order.index(family) if family in order else len(order)


def _html(config: dict[str, Any], metrics: dict[str, Any],
          timelines: list[tuple[str, dict[str, Any]]], paper: str = "") -> str:
    e = html.escape
    policies = metrics["policies"]
    directed = {p: reads_directives(p) for p in policies}

    def adh(r: dict[str, Any], key: str) -> str:
        return _fmt(r[key]) if directed[r["policy"]] else "n/a"

    fam_rows = "".join(
        f"<tr><td>{e(r['family'])}</td><td>{e(r['policy'])}</td><td>{r['n']}</td>"
        f"<td>{_acc(r, 3)}</td><td>{_fmt(r['cost'], 3)}</td>"
        f"<td>{_fmt(r['evidence_recall'], 3)}</td><td>{adh(r, 'adherence')}</td>"
        f"<td>{adh(r, 'mode_match')}</td><td>{_fmt(r.get('safety_fired'))}</td>"
        f"<td>{r['wall_s']:.1f}</td></tr>"
        for r in sorted(metrics["by_family"], key=lambda r: (
            _family_order(r["family"]), policies.index(r["policy"]))))
    cells = {(c["task"], c["length"], c["policy"]): c for c in metrics["cells"]}
    keys = list(dict.fromkeys((c["task"], c["length"]) for c in metrics["cells"]))
    head = "".join(f"<th colspan=4>{e(p)}</th>" for p in policies)
    sub = "<th>acc</th><th>cost</th><th>recall</th><th>adh.</th>" * len(policies)
    body = []
    for task, length in keys:
        c0 = next(cells[(task, length, p)] for p in policies if (task, length, p) in cells)
        tds = []
        for p in policies:
            c = cells.get((task, length, p))
            tds.append("<td colspan=4>-</td>" if c is None else
                       f"<td><b>{_acc(c)}</b></td><td>{_fmt(c['cost'])}</td>"
                       f"<td>{_fmt(c['evidence_recall'])}</td><td>{adh(c, 'adherence')}</td>")
        body.append(f"<tr><td>{e(task)}</td><td>{e(c0['family'])}</td><td>{length}</td>"
                    f"<td>{c0['n']}</td>{''.join(tds)}</tr>")
    tl = "".join(
        f"<figure><img src='{e(name)}' alt='timeline of {e(r['id'])}'><figcaption>"
        f"{e(r['id'])}: reference answer {e(', '.join(r['answers']))}; ideal directive "
        f"{e(r['ideal_directive'] or 'unknown')}</figcaption></figure>"
        for name, r in timelines)
    versions = ", ".join(f"{k} {v}" for k, v in config.get("versions", {}).items())
    small = min((c["n"] for c in metrics["cells"]), default=0)
    warn = (f"<p class='warn'><b>Few samples:</b> the smallest cell has {small} sample(s), "
            f"under {MIN_SAMPLES}. Accuracy is shown &plusmn; one standard error; "
            "differences within about two standard errors are noise. Run more "
            "<code>--samples</code> before drawing conclusions.</p>"
            if small < MIN_SAMPLES else "")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>DAC evaluation: {e(config['model'])}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1400px; }}
table {{ border-collapse: collapse; font-size: 13px; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; }}
td:first-child, td:nth-child(2) {{ text-align: left; }}
th {{ background: #eee; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
figure {{ margin: 1.5em 0; }}
.warn {{ background: #fff3cd; border: 1px solid #e0c060; padding: 0.6em 1em; }}
</style></head><body>
<h1>DAC long-context evaluation</h1>
<p>model <code>{e(config['model'])}</code> &middot; engine {e(config.get('engine', 'hf'))}
&middot; {len(config['tasks'])} tasks, {len(config.get('sources') or {})} sources &middot; lengths {e(', '.join(map(str, config['lengths'])))}
&middot; arms {e(', '.join(config['policies']))} &middot; samples per cell: {config['samples']}
&middot; block size {config['plan']['block_size']}
&middot; focus bounded to existing sections: {"yes" if config.get('bound_sections') else "no"}
<br><small>{e(versions)}</small></p>
{warn}
{paper}
<h2>Accuracy versus attention cost</h2>
<img src="accuracy_vs_cost.png" alt="accuracy versus attention cost">
<h2>Accuracy versus length</h2>
<img src="accuracy_by_length.png" alt="accuracy versus length">
<h2>By family and policy</h2>
<table><tr><th>family</th><th>policy</th><th>samples</th><th>accuracy</th><th>cost</th>
<th>evidence recall</th><th>adherence</th><th>mode match</th><th>safety net fired</th>
<th>wall s</th></tr>
{fam_rows}</table>
<h2>Per task</h2>
<table><tr><th rowspan=2>task</th><th rowspan=2>family</th><th rowspan=2>length</th>
<th rowspan=2>n</th>{head}</tr><tr>{sub}</tr>
{''.join(body)}</table>
<p>Raw numbers: <a href="../metrics.csv">metrics.csv</a>,
<a href="../metrics.json">metrics.json</a>;
per-sample records under <code>cells/</code>.</p>
<h2>What the decode steps read</h2>
{tl or '<p>No timeline: no finished cell.</p>'}
<h2>Definitions</h2>
<ul>
<li><b>accuracy</b>: mean RULER-style score of the answer (directives removed), &plusmn; one
standard error (of the mean over samples; for a family or policy, of the mean over its cells,
weighted equally).</li>
<li><b>cost</b>: KV tokens read over all decode steps / KV tokens full attention would read.</li>
<li><b>evidence recall</b>: share of the evidence tokens inside the kept blocks, averaged over the
decode steps from the first well-formed directive on (all steps if none).</li>
<li><b>adherence</b>: share of outputs that declare a directive and whose directives are all
well-formed; <b>mode match</b>: share whose last well-formed directive (the one the answer
is written under) has the ideal mode. Both are shown only for policies that read directives
(<code>n/a</code> for full attention, streaming, Quest and the oracle, which ignore them).</li>
<li><b>safety net fired</b>: for <code>X+safety</code> policies, share of outputs whose safety
net widened the read to global (docs/reliability.md).</li>
</ul>
</body></html>
"""
