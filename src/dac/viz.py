"""Pictures of what decoding read: one row per decode step, one column per KV block."""

from __future__ import annotations

from pathlib import Path

from .protocol.context import PromptLayout, Span


def plot_read_timeline(blocks: list[list[int]], lengths: list[int], layout: PromptLayout,
                       block_size: int, path: str | Path, *, evidence: list[Span] | None = None,
                       title: str = "", events: list[tuple[int, str]] | None = None) -> Path:
    """Write a PNG: decode steps (rows) x KV blocks (columns); dark = read, light = skipped.

    ``lengths`` is each step's KV length (blocks past it are not yet written); ``events``
    are ``(step, label)`` pairs (e.g. directives) drawn as horizontal markers.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap

    if not blocks:
        raise ValueError("no decode steps to draw")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_steps = len(blocks)
    nb = max((-(-n // block_size) for n in lengths), default=1)
    grid = np.zeros((max(n_steps, 1), nb))
    for i, (kept, n) in enumerate(zip(blocks, lengths)):
        grid[i, : -(-n // block_size)] = 1
        grid[i, kept] = 2
    fig, ax = plt.subplots(figsize=(10, 2.2 + 0.12 * min(n_steps, 60)), dpi=110)
    cmap = ListedColormap(["#ffffff", "#e6e9ef", "#2b59c3"])
    ax.imshow(grid, aspect="auto", cmap=cmap, vmin=0, vmax=2, interpolation="nearest",
              extent=(0, nb * block_size, n_steps, 0))
    for k, s in enumerate(layout.sections, 1):
        ax.axvline(s.start, color="#999999", lw=0.4)
        if layout.num_sections <= 40 or k % max(1, layout.num_sections // 20) == 0:
            ax.text((s.start + s.end) / 2, -0.3, f"S{k}", ha="center", va="bottom", fontsize=6,
                    color="#555555")
    if layout.protected:
        ax.axvspan(layout.protected[0].start, layout.prompt_len, color="#f2c14e", alpha=0.25,
                   label="question")
    for j, sp in enumerate(evidence or []):
        ax.axvspan(sp.start, max(sp.end, sp.start + 1), color="#d7263d", alpha=0.6,
                   label="evidence" if j == 0 else None)
    for step, label in events or []:
        ax.axhline(step + 0.5, color="#d7263d", lw=0.8, ls="--")
        ax.text(nb * block_size, step + 0.5, f" {label}", va="center", fontsize=7,
                color="#d7263d", clip_on=False)
    ax.axvline(layout.prompt_len, color="black", lw=0.8)
    ax.set_xlabel(f"KV position (tokens; blocks of {block_size}); black line = end of prompt")
    ax.set_ylabel("decode step")
    ax.set_title(title or "KV blocks read per decode step (blue = read)", fontsize=10, pad=14)
    if evidence or layout.protected:
        ax.legend(loc="lower left", fontsize=7, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
