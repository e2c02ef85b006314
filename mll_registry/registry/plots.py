"""Plots logged with labels (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def concept_plot(summary: pd.DataFrame, path: Path, n: int = 12, title: str = "") -> Path:
    """Bar plot of a model's strongest and weakest concepts (folder nodes first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summary.sort_values(["acc1", "mean_own"], ascending=False)
    pick = pd.concat([s.head(n), s.tail(n)])
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(pick) + 1))
    colours = ["tab:green"] * min(n, len(s)) + ["tab:red"] * (len(pick) - min(n, len(s)))
    ax.barh(pick["node_id"][::-1], pick["acc1"][::-1], color=colours[::-1])
    ax.set_xlabel("accuracy@1 over all graph nodes")
    ax.set_title(f"{title}: strongest and weakest concepts")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


