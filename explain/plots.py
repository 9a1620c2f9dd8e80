"""Figures (matplotlib, Agg backend): evolution over epochs, group shares, attribution heatmaps.

Every figure is laid out by matplotlib's constrained layout and saved with a tight bounding box, so no
title, label or legend is clipped. Long titles wrap and long names are shortened at a word boundary with
an ellipsis (:func:`shorten`). Lines that can coincide (methods that agree, shares that move together)
each get their own width, dash pattern and hollow marker (:func:`line_styles`): the first drawn is the
widest, so a line drawn over an identical one never hides it."""
from __future__ import annotations

import logging
import os
import re
import textwrap
import warnings
from pathlib import Path
from typing import Optional, Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .svg import shorten  # noqa: E402  (re-exported: figures and the HTML report shorten names alike)

__all__ = ["plot_evolution", "shares_figure", "heatmap_figure", "save", "shorten", "wrap", "line_styles",
           "share_partitions"]

_DASHES = ["-", (0, (5, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)), (0, (3, 3)), (0, (1, 3)), (0, (8, 2, 1, 2, 1, 2))]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]


def save(fig, path: str) -> str:
    """Write ``fig`` to ``path`` (format from its suffix) whole or not at all, and close it."""
    from ncf.files import atomic_write

    fmt = Path(path).suffix.lstrip(".") or "png"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)
    missing = []
    for w in caught:  # matplotlib warns once per character its font lacks: said once, the others passed on
        m = _GLYPH.search(str(w.message))
        if m:
            try:  # "\N{CJK UNIFIED IDEOGRAPH-6771}" -> the character
                missing.append(m.group(1).encode("ascii").decode("unicode_escape"))
            except (UnicodeError, ValueError):
                missing.append(m.group(1))
        else:
            warnings.warn(w.message, w.category)
    if missing and not _MISSING_GLYPHS_SAID:
        _MISSING_GLYPHS_SAID.append(path)
        logging.getLogger("ncf").warning(
            f"{path}: the plot font ({plt.rcParams['font.sans-serif'][0]} and its fallbacks) lacks "
            f"{len(set(missing))} character{'s' * (len(set(missing)) > 1)} of the names (e.g. "
            f"{', '.join(sorted(set(missing))[:3])}), drawn as boxes; the text, CSV and JSON outputs have them. "
            f"Install a font that has them (e.g. Noto Sans CJK) for the figures.")
    return path


_GLYPH = re.compile(r"Glyph \d+ \((.+?)\) missing from font")
_MISSING_GLYPHS_SAID: list = []  # said once per process


def wrap(text: str, ax, fontsize: Optional[float] = None) -> str:
    """``text`` wrapped at word boundaries to the width of ``ax`` (for titles): nothing is cut."""
    fig = ax.figure
    width_in = fig.get_figwidth() * ax.get_position().width
    size = fontsize or matplotlib.rcParams["axes.titlesize"]
    size = matplotlib.font_manager.FontProperties(size=size).get_size_in_points()
    chars = max(int(width_in * 72 / (0.55 * size)), 16)  # an average glyph is about 0.55 em wide
    return textwrap.fill(text, chars, break_long_words=False, break_on_hyphens=False)


def line_styles(n: int) -> list[dict]:
    """Plot keywords for ``n`` lines that stay visible when their data coincide: widths from wide to thin,
    distinct dash patterns and hollow markers of decreasing size, drawn in that order."""
    out = []
    for k in range(n):
        out.append({"linewidth": max(3.6 - 0.7 * k, 1.0), "linestyle": _DASHES[k % len(_DASHES)],
                    "marker": _MARKERS[k % len(_MARKERS)], "markersize": max(11.0 - 1.6 * k, 4.0),
                    "markerfacecolor": "none", "markeredgewidth": 1.4, "zorder": 2 + 0.01 * k})
    return out


def share_partitions(frame: pd.DataFrame) -> list[list[str]]:
    """The ``share_*`` columns of ``frame`` grouped into partitions: consecutive columns whose shares add up
    to 1 on every row (user + item; GMF + MLP)."""
    cols = [c for c in frame.columns if c.startswith("share_")]
    parts, current = [], []
    for c in cols:
        current.append(c)
        total = frame[current].sum(axis=1, min_count=1).dropna()
        if len(current) > 1 and len(total) and np.allclose(total.to_numpy(), 1.0, atol=1e-3):
            parts.append(current)
            current = []
    if current:
        parts.append(current)
    return parts


def _group(col: str) -> str:
    name = col.removeprefix("share_")
    return name.upper() if name in ("gmf", "mlp") else name


def _partition_label(cols: Sequence[str]) -> str:
    return " vs ".join(_group(c) for c in cols)


def _axes_style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(wrap(title, ax), fontsize=10)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)


def _lines(ax, series: list[tuple[str, pd.Series, pd.Series]], title: str, ylabel: str,
           xlabel: str = "epoch (-1 = before training)") -> None:
    """Draw ``(label, x, y)`` series with :func:`line_styles`, one colour each."""
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, ((label, x, y), style) in enumerate(zip(series, line_styles(len(series)))):
        c = colors[k % len(colors)]
        ax.plot(x, y, label=label, color=c, markeredgecolor=c, **style)
    _axes_style(ax, title, xlabel, ylabel)


def _summary_series(summary: pd.DataFrame, col: str) -> list[tuple[str, pd.Series, pd.Series]]:
    return [(method, g["epoch"], g[col]) for method, g in summary.groupby("method")
            if col in g and g[col].notna().any()]


def plot_evolution(summary: pd.DataFrame, out_dir: str, shown_groups: Sequence[str] = ()) -> list[str]:
    """PNG plots of a record's ``summary.csv``: group shares (one panel per partition, showing the share of
    its first group, or of ``shown_groups``), stability, agreement (between two dimension-level methods,
    when the record has them), faithfulness."""
    paths = []
    parts = share_partitions(summary)
    shown = [next((c for c in p if c.removeprefix("share_") in shown_groups), p[0]) if shown_groups else p[0]
             for p in parts]
    fig, axes = plt.subplots(1, max(len(parts), 1), figsize=(6.5 * max(len(parts), 1), 4.2), squeeze=False,
                             layout="constrained")
    for ax, part, col in zip(axes[0], parts, shown):
        _lines(ax, _summary_series(summary, col),
               f"{_group(col)} share of the |group totals| ({_partition_label(part)}: the shares add up to 1), "
               f"mean over the probe pairs", "share")
    paths.append(save(fig, os.path.join(out_dir, "group_shares.png")))

    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    _lines(ax, _summary_series(summary, "stability"),
           "Stability: Spearman with the previous epoch (median over the probe pairs)", "Spearman")
    paths.append(save(fig, os.path.join(out_dir, "stability.png")))

    # each pair of methods once (the record holds it under both methods)
    series = []
    for method, g in summary.groupby("method"):
        for col in (c for c in summary.columns if c.startswith("agreement_")):
            other = col.removeprefix("agreement_")
            if method < other and g[col].notna().any():
                series.append((f"{method} vs {other}", g["epoch"], g[col]))
    if series:  # only two dimension-level methods can disagree (explain.tables.agreement)
        fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
        _lines(ax, series, "Agreement between methods (median Spearman over the probe pairs)", "Spearman")
        paths.append(save(fig, os.path.join(out_dir, "agreement.png")))

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    _lines(axes[0], _summary_series(summary, "deletion_gain"),
           "Deletion: random AUC - method AUC (higher = more faithful)", "logit AUC")
    _lines(axes[1], _summary_series(summary, "insertion_gain"),
           "Insertion: method AUC - random AUC (higher = more faithful)", "logit AUC")
    _lines(axes[2], _summary_series(summary, "infidelity"), "Infidelity (subset masking; lower is better)",
           "infidelity")
    paths.append(save(fig, os.path.join(out_dir, "faithfulness.png")))
    return paths


def _what(pairs: pd.DataFrame) -> str:
    """``3 pairs of user 196, epoch 3``: which pairs a share figure covers."""
    n = pairs["pair"].nunique() if "pair" in pairs else len(pairs.drop_duplicates(["user_id", "item_id"]))
    text = f"{n} pair" + ("s" if n != 1 else "")
    if "user_id" in pairs:
        users = pd.unique(pairs["user_id"])
        text += f" of user {users[0]}" if len(users) == 1 else f" ({len(users)} users)"
    if "epoch" in pairs and pairs["epoch"].nunique() == 1:
        e = int(pairs["epoch"].iloc[0])
        text += ", before training" if e < 0 else f", epoch {e}"
    return text


def shares_figure(pairs: pd.DataFrame, title: Optional[str] = None,
                  partitions: Optional[Sequence[Sequence[str]]] = None):
    """Bar charts of the mean share of the |group totals| (a group's attributions summed, then |.|) per group and
    method, one panel per partition of the embeddings (user vs item; GMF vs MLP), whose shares add up to 1
    separately. The title says which pairs
    the means cover (their number, user and epoch, from ``pairs``)."""
    parts = ([[f"share_{g}" for g in p] for p in partitions] if partitions else share_partitions(pairs))
    means = pairs.groupby("method")[[c for p in parts for c in p]].mean()
    methods = list(means.index)
    fig, axes = plt.subplots(1, len(parts), figsize=(3.6 * len(parts) + 1.0, 3.8), squeeze=False,
                             layout="constrained")
    width = 0.8 / max(len(methods), 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, part in zip(axes[0], parts):
        x = np.arange(len(part))
        for k, method in enumerate(methods):
            ax.bar(x + k * width, means.loc[method, part].to_numpy(), width, label=method,
                   color=colors[k % len(colors)])
        ax.set_xticks(x + width * (len(methods) - 1) / 2, [_group(c) for c in part])
        ax.set_ylim(0, 1)
        ax.set_title(wrap(f"{_partition_label(part)} (adds up to 1)", ax), fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("mean share of |group total|")
    axes[0][-1].legend(fontsize=7, title="method", title_fontsize=7)
    head = title or "Share of the |group totals|"
    chars = max(int(fig.get_figwidth() * 72 / (0.55 * 11)), 30)  # the figure's width in 11-point characters
    fig.suptitle(textwrap.fill(f"{head}: mean over {_what(pairs)}", chars, break_long_words=False), fontsize=11)
    return fig


def heatmap_figure(values: np.ndarray, row_labels: list[str], title: str):
    """Per-dimension attributions ``[pairs, dims]`` as a diverging heatmap."""
    fig, ax = plt.subplots(figsize=(min(4 + values.shape[1] * 0.18, 16), 1.4 + 0.32 * len(row_labels)),
                           layout="constrained")
    lim = float(np.nanmax(np.abs(values))) or 1.0
    im = ax.imshow(values, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
    ax.set_xlabel("embedding dimension")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))  # dimensions, never -0.5 or 0.5
    ax.set_title(wrap(title, ax, fontsize=9), fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    return fig
