"""Figures (matplotlib, Agg backend): evolution over epochs, group shares, attribution heatmaps."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["plot_evolution", "shares_figure", "heatmap_figure", "save"]


def save(fig, path: str) -> str:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _lines(ax, summary: pd.DataFrame, cols: list[str], title: str, ylabel: str) -> None:
    for method, g in summary.groupby("method"):
        for col in cols:
            if col in g and g[col].notna().any():
                label = method if len(cols) == 1 else f"{method}: {col}"
                ax.plot(g["epoch"], g[col], marker="o", label=label)
    ax.set_title(title)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch (-1 = before training)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)


def plot_evolution(summary: pd.DataFrame, out_dir: str, shown_groups: Sequence[str] = ()) -> list[str]:
    """PNG plots of a record's ``summary.csv``: group shares (of ``shown_groups``, e.g. the first group of
    each two-way partition; default every group), stability, agreement (with two dimension-level methods),
    faithfulness."""
    paths = []
    share_cols = [c for c in summary.columns if c.startswith("share_")]
    if shown_groups:
        share_cols = [c for c in share_cols if c.removeprefix("share_") in shown_groups]
    fig, ax = plt.subplots(figsize=(7, 4))
    _lines(ax, summary, share_cols, "Share of |attribution| per group", "share")
    paths.append(save(fig, os.path.join(out_dir, "group_shares.png")))
    fig, ax = plt.subplots(figsize=(7, 4))
    _lines(ax, summary, ["stability"], "Stability: Spearman with the previous epoch (median over pairs)", "Spearman")
    paths.append(save(fig, os.path.join(out_dir, "stability.png")))
    agree_cols = [c for c in summary.columns if c.startswith("agreement_")]
    if agree_cols:  # only two dimension-level methods can disagree (explain.tables.agreement)
        fig, ax = plt.subplots(figsize=(7, 4))
        _lines(ax, summary, agree_cols, "Agreement between methods (median Spearman over dimensions)", "Spearman")
        paths.append(save(fig, os.path.join(out_dir, "agreement.png")))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    _lines(axes[0], summary, ["deletion_gain"], "Deletion: random AUC - method AUC (higher = more faithful)", "logit AUC")
    _lines(axes[1], summary, ["insertion_gain"], "Insertion: method AUC - random AUC", "logit AUC")
    _lines(axes[2], summary, ["infidelity"], "Infidelity (subset masking; lower is better)", "infidelity")
    paths.append(save(fig, os.path.join(out_dir, "faithfulness.png")))
    return paths


def shares_figure(pairs: pd.DataFrame, title: Optional[str] = None):
    """Bar chart: mean share of |attribution| per group and method."""
    share_cols = [c for c in pairs.columns if c.startswith("share_")]
    means = pairs.groupby("method")[share_cols].mean()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(share_cols))
    width = 0.8 / max(len(means), 1)
    for k, (method, row) in enumerate(means.iterrows()):
        ax.bar(x + k * width, row.to_numpy(), width, label=method)
    ax.set_xticks(x + width * (len(means) - 1) / 2, [c.removeprefix("share_") for c in share_cols])
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of |attribution|")
    ax.set_title(title or "Group shares")
    ax.legend(fontsize=7)
    return fig


def heatmap_figure(values: np.ndarray, row_labels: list[str], title: str):
    """Per-dimension attributions ``[pairs, dims]`` as a diverging heatmap."""
    fig, ax = plt.subplots(figsize=(min(2 + values.shape[1] * 0.18, 16), 1.2 + 0.32 * len(row_labels)))
    lim = float(np.nanmax(np.abs(values))) or 1.0
    im = ax.imshow(values, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
    ax.set_xlabel("embedding dimension")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    return fig
