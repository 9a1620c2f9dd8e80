"""One self-contained HTML page per run (or per pipeline of runs) from attribution records.

Figures are inline PNG (matplotlib, base64), tables plain HTML, styles in the page: no script, no external
file, so the page reads the same in any browser, mailed or archived, without the project installed. Every
figure is computed by :mod:`explain.evolution` from the record alone. Each panel is a ``<section>`` with an
``id`` (``panel-<name>`` per run, ``pipeline-<name>`` for the pipeline) so that tools can find it.
"""
from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from . import evolution as ev  # noqa: E402
from .record import write_atomic  # noqa: E402

__all__ = ["write_report", "render", "RUN_PANELS", "PIPELINE_PANELS", "order_stages", "pipeline_stages"]

RUN_PANELS = ("settings", "summary", "settle", "randomisation", "pairs", "flips", "shares", "history", "stability",
              "faithfulness", "probe")
PIPELINE_PANELS = ("stages", "timeline")
N_CHANGING = 5
_MARK = {"marker": "o", "ms": 2, "markevery": None}  # small markers: drawing is most of a report's time
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1150px;color:#222;
line-height:1.45;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block;margin:.5em 0}.note{color:#555;font-size:.92em}
.warn{background:#fff4d6;border:1px solid #e6c15c;padding:.5em .8em;border-radius:4px}
section{margin-bottom:1.6em}code{background:#f4f4f4;padding:0 .2em}
"""


# ---------------------------------------------------------------------------------------------------
# small HTML helpers
# ---------------------------------------------------------------------------------------------------
def _e(x) -> str:
    return html.escape(str(x))


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    if isinstance(v, (float, np.floating)):
        return f"{v:.3f}"
    return str(v)


def _table(rows: list[dict], cols: Optional[Sequence[str]] = None) -> str:
    if not rows:
        return '<p class="note">(none)</p>'
    cols = list(cols or rows[0].keys())
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            num = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            cells.append(f'<td class="num">{_e(_fmt(v))}</td>' if num else f"<td>{_e(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _section(pid: str, title: str, body: str) -> str:
    return f'<section id="{pid}"><h3>{_e(title)}</h3>{body}</section>'


def _epoch_axis(ax, label: str = "epoch (-1 = before training)") -> None:
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)


# ---------------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------------
class _Run:
    """A record with everything the report reads from it computed once."""

    def __init__(self, r: ev.Record):
        self.r = r
        self.sim = ev.similarity_to_final(r) if r.epochs else pd.DataFrame(columns=["epoch", "pair"])
        self.flips = ev.flips(r) if r.epochs else pd.DataFrame(columns=["epoch", "pair"])
        self.measures = ev.measures_in(self.sim)
        self.basis_free = next((m for m in self.measures if m != "dims_spearman"), None)
        self.settle = {m: ev.settle_epoch(self.sim, m) for m in self.measures}
        self.best = ev.best_val_epoch(r.pairs) if r.epochs else None
        self.random = ev.randomisation_check(self.sim) if r.epochs else {}
        self.val = ev.val_metrics(r.pairs) if r.epochs else pd.DataFrame(columns=["epoch"])
        self.meta = r.pairs[r.pairs["method"] == r.method].drop_duplicates("pair").sort_values("pair") \
            if r.epochs else pd.DataFrame()
        self.partial = ev.is_partial(r)
        self.name = ev.stage_name(r)

    def label(self, pair: int) -> str:
        row = self.meta[self.meta["pair"] == pair]
        if row.empty:
            return f"pair {pair}"
        row = row.iloc[0]
        who = row.get("user_name") if "user_name" in row and pd.notna(row.get("user_name")) else f"user {row['user_id']}"
        what = row.get("item_name") if "item_name" in row and pd.notna(row.get("item_name")) else f"item {row['item_id']}"
        return f"{who} x {str(what)[:38]}"

    def shown_pairs(self) -> list[int]:
        listed = self.meta[self.meta["kind"] == "listed"]["pair"].astype(int).tolist() if len(self.meta) else []
        column = self.basis_free or (self.measures[0] if self.measures else None)
        changing = ev.changing_pairs(self.sim, column, N_CHANGING) if column else []
        return listed + [p for p in changing if p not in listed]


def _settings_panel(run: _Run) -> str:
    m = run.r.manifest
    model = {k: v for k, v in (m.get("model") or {}).items() if v is not None}
    probe = m.get("probe") or []
    rows = [{"setting": "record folder", "value": str(run.r.folder)},
            {"setting": "run id", "value": (m.get("run") or {}).get("id")},
            {"setting": "dataset", "value": m.get("dataset")},
            {"setting": "methods", "value": ", ".join(m.get("methods") or [])},
            {"setting": "method read for the evolution", "value": run.r.method},
            {"setting": "method settings", "value": m.get("settings")},
            {"setting": "baseline", "value": m.get("baseline")},
            {"setting": "seed", "value": m.get("seed")},
            {"setting": "probe pairs", "value": len(probe)},
            {"setting": "every n epochs", "value": m.get("every_n_epochs")},
            {"setting": "max epochs", "value": m.get("max_epochs")},
            {"setting": "epochs recorded", "value": ", ".join(map(str, run.r.epochs)) or "none"},
            {"setting": "epoch -1", "value": m.get("epoch_minus_1")},
            {"setting": "versions", "value": m.get("versions")}]
    rows += [{"setting": f"model.{k}", "value": v} for k, v in model.items()]
    return _table(rows)


def _summary_panel(run: _Run) -> str:
    rows = []
    for meas in run.measures:
        rows.append({"measure": ev.MEASURES[meas], "settle epoch": run.settle.get(meas),
                     "best validation epoch": run.best,
                     "epoch -1 vs final (median)": run.random.get(meas)})
    fl = run.flips
    flips_txt = ""
    for c, what in (("flip_dims", "top-5 dimensions"), ("flip_history", "top-3 history items")):
        if c in fl and fl[c].notna().any():
            flips_txt += (f"<li>{what} change between consecutive epochs for {100 * fl[c].mean():.0f}% of pair-epochs; "
                          f"{100 * fl.groupby('pair')[c].any().mean():.0f}% of pairs change at least once.</li>")
    words = []
    if run.basis_free and run.settle.get(run.basis_free) is not None and run.best is not None:
        s = run.settle[run.basis_free]
        rel = "before" if s < run.best else ("at" if s == run.best else "after")
        words.append(f"Explanations ({ev.MEASURES[run.basis_free]}) settle at epoch {s}, {rel} the best validation "
                     f"epoch {run.best}.")
    return (("<p>" + " ".join(_e(w) for w in words) + "</p>" if words else "") + _table(rows) +
            (f"<ul>{flips_txt}</ul>" if flips_txt else "") +
            f'<p class="note">Settle epoch: the first epoch from which the median similarity to the final epoch stays '
            f'&ge; {ev.SETTLE_THRESHOLD}. Basis-free measures are listed first; per-dimension rank correlations '
            f'across epochs also move when the latent basis turns (the layer after an embedding absorbs any '
            f'invertible map of it), so they can understate how settled an explanation is.</p>')


def _settle_panel(run: _Run) -> str:
    if not run.measures:
        return '<p class="note">Fewer than two recorded epochs: nothing to compare.</p>'
    fig, ax = plt.subplots(figsize=(10, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, meas in enumerate(run.measures):
        b = ev.bands(run.sim, meas)
        ax.fill_between(b["epoch"], b["q25"], b["q75"], alpha=0.18, color=colors[k])
        ax.plot(b["epoch"], b["median"], **_MARK, color=colors[k], label=f"{ev.MEASURES[meas]} (median, quartiles)")
        if run.settle.get(meas) is not None:
            ax.axvline(run.settle[meas], color=colors[k], ls=":", lw=1.5)
    ax.axhline(ev.SETTLE_THRESHOLD, color="grey", lw=0.8, ls="--")
    ax.set_ylabel("similarity to the final epoch")
    ax.set_ylim(-1.05, 1.05)
    _epoch_axis(ax)
    if "val_ndcg10" in run.val and run.val["val_ndcg10"].notna().any():
        ax2 = ax.twinx()
        ax2.plot(run.val["epoch"], run.val["val_ndcg10"], color="black", lw=1.5,
                 label="validation NDCG@10")
        if run.best is not None:
            ax.axvline(run.best, color="black", ls="-.", lw=1.2)
        ax2.set_ylabel("validation NDCG@10")
        ax2.legend(loc="lower right", fontsize=8)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("When do explanations settle? Similarity to the final epoch vs validation NDCG@10 "
                 "(dotted: settle epoch; dash-dot: best validation epoch)", fontsize=10)
    return _png(fig)


def _randomisation_panel(run: _Run) -> str:
    before = run.sim[run.sim["epoch"] == -1]
    if before.empty:
        return '<p class="note">Epoch -1 was not recorded (before_training=False): no randomisation check.</p>'
    pretrained = ev.stage_name(run.r).endswith("pretrained")
    note = ('<p class="warn">Epoch -1 of this run is the pretrained start, not an untrained model: the check '
            'compares the pretrained explanation with the final one. The randomisation check of the pipeline is '
            'that of its GMF and MLP stages.</p>') if pretrained else ""
    fig, axes = plt.subplots(1, len(run.random), figsize=(4.2 * len(run.random), 3.2), squeeze=False)
    for ax, meas in zip(axes[0], run.random):
        ax.hist(before[meas].dropna(), bins=np.linspace(-1, 1, 41), color="tab:gray")
        ax.axvline(run.random[meas], color="tab:red", lw=1.5)
        ax.set_title(f"{ev.MEASURES[meas]}\nmedian {run.random[meas]:+.2f}", fontsize=9)
        ax.set_xlabel("epoch -1 vs final, per pair")
    axes[0][0].set_ylabel("pairs")
    return note + _png(fig) + ('<p class="note">Model-randomisation check (Adebayo et al., NeurIPS 2018): the model '
                               'before training against the trained one. A median near 0 says the explanations '
                               'come from what training learned; near 1, from the architecture or the input.</p>')


def _pairs_panel(run: _Run) -> str:
    shown = run.shown_pairs()
    if not shown or not run.measures:
        return '<p class="note">No pairs to show.</p>'
    meas = [m for m in run.measures][:2]
    fig, axes = plt.subplots(1, len(meas), figsize=(6.5 * len(meas), 4), squeeze=False)
    for ax, m in zip(axes[0], meas):
        for p in shown:
            g = run.sim[run.sim["pair"] == p].sort_values("epoch")
            ax.plot(g["epoch"], g[m], **_MARK, lw=1.2, label=run.label(p))
        b = ev.bands(run.sim, m)
        ax.fill_between(b["epoch"], b["q25"], b["q75"], color="grey", alpha=0.2, label="all pairs: quartiles")
        ax.set_title(ev.MEASURES[m], fontsize=9)
        ax.set_ylabel("similarity to the final epoch")
        _epoch_axis(ax)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    rows = []
    for p in shown:
        f = run.flips[run.flips["pair"] == p]
        row = {"pair": p, "user x item": run.label(p),
               "kind": run.meta.loc[run.meta["pair"] == p, "kind"].iloc[0] if len(run.meta) else ""}
        for c in ("flip_dims", "flip_history"):
            if c in f:
                ff = f[f[c].fillna(False).astype(bool)]
                row[f"{c} count"] = int(len(ff))
                row[f"last {c}"] = int(ff["epoch"].max()) if len(ff) else None
        for m in meas:
            g = run.sim[(run.sim["pair"] == p) & (run.sim["epoch"] >= 0)]
            row[f"mean {m} (epochs >= 0)"] = float(g[m].mean()) if len(g) else None
        rows.append(row)
    return (_png(fig) + _table(rows) +
            f'<p class="note">The pairs you listed (kind "listed") and the {N_CHANGING} pairs whose explanation stays '
            f'furthest from its final form over training.</p>')


def _flips_panel(run: _Run) -> str:
    fl = run.flips
    cols = [c for c in ("flip_dims", "flip_history") if c in fl and fl[c].notna().any()]
    if not cols:
        return '<p class="note">Fewer than two recorded epochs: no flips.</p>'
    fig, ax = plt.subplots(figsize=(10, 3.2))
    width = 0.8 / len(cols)
    labels = {"flip_dims": "top-5 dimensions changed", "flip_history": "top-3 history items changed"}
    for k, c in enumerate(cols):
        rate = fl.groupby("epoch")[c].mean()
        ax.bar(rate.index + (k - (len(cols) - 1) / 2) * width, rate.to_numpy(), width, label=labels[c])
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of pairs")
    ax.set_title("Flips: pairs whose top features changed since the previous recorded epoch", fontsize=10)
    _epoch_axis(ax)
    ax.legend(fontsize=8)
    return _png(fig) + ('<p class="note">Dimension flips depend on the latent basis (a turn of the basis reorders '
                        'dimensions); history flips do not.</p>')


def _shares_panel(run: _Run) -> str:
    p = run.r.pairs[run.r.pairs["method"] == run.r.method]
    cols = [c for c in p.columns if c.startswith("share_")]
    if not cols:
        return '<p class="note">No group shares recorded.</p>'
    fig, ax = plt.subplots(figsize=(10, 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, c in enumerate(cols):
        b = ev.bands(p, c)
        ax.fill_between(b["epoch"], b["q25"], b["q75"], alpha=0.15, color=colors[k % len(colors)])
        ax.plot(b["epoch"], b["median"], **_MARK, color=colors[k % len(colors)], label=c.removeprefix("share_"))
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of |attribution|")
    ax.set_title(f"Group shares ({run.r.method}): median and quartiles over pairs (basis-free)", fontsize=10)
    _epoch_axis(ax)
    ax.legend(fontsize=8, ncol=len(cols))
    return _png(fig)


def _history_words(h: pd.DataFrame, label: str) -> str:
    """One sentence per pair: which rated item raises the score most at the first, middle and final epoch."""
    epochs = sorted(h["epoch"].unique())
    picks = sorted({epochs[0], epochs[len(epochs) // 2], epochs[-1]})
    name_col = "history_item_name" if "history_item_name" in h else "history_item_id"
    parts = []
    for e in picks:
        g = h[h["epoch"] == e].nlargest(2, "running_total")
        names = [f'"{n}"' for n, v in zip(g[name_col], g["running_total"]) if v > 0]
        parts.append(f"at epoch {e}: {' and '.join(names) if names else 'no interaction raises it'}")
    return f"<li><b>{_e(label)}</b>: raised most by " + _e("; ".join(parts)) + ".</li>"


def _history_panel(run: _Run) -> str:
    h = run.r.history
    if h.empty:
        return ('<p class="note">This run recorded no history influence. With <code>history: true</code> the callback '
                'records, per epoch, which of the user\'s rated items raise each probe pair\'s score (TracIn): a '
                'basis-free view of what drives a recommendation.</p>')
    shown = run.shown_pairs()[:4]
    name_col = "history_item_name" if "history_item_name" in h else "history_item_id"
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 3.8), squeeze=False)
    words = []
    for ax, p in zip(axes[0], shown):
        hp = h[h["pair"] == p]
        final = hp[hp["epoch"] == hp["epoch"].max()]
        top = final.reindex(final["running_total"].abs().sort_values(ascending=False).index).head(5)
        for item, name in zip(top["history_item_id"], top[name_col]):
            g = hp[hp["history_item_id"] == item].sort_values("epoch")
            ax.plot(g["epoch"], g["running_total"], **_MARK, label=str(name)[:32])
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(run.label(p), fontsize=8)
        ax.set_ylabel("accumulated influence (TracIn)")
        _epoch_axis(ax, "epoch")
        ax.legend(fontsize=6.5)
        words.append(_history_words(hp, run.label(p)))
    return (_png(fig) + f"<ul>{''.join(words)}</ul>" +
            '<p class="note">Each line: one of the user\'s rated items, its influence on the pair accumulated over the '
            'epochs so far (positive: training on it raised the score).</p>')


def _bands_panel(run: _Run, cols: Sequence[str], title: str, ylabel: str) -> str:
    p = run.r.pairs[run.r.pairs["method"] == run.r.method]
    cols = [c for c in cols if c in p and p[c].notna().any()]
    if not cols:
        return '<p class="note">Not recorded.</p>'
    fig, axes = plt.subplots(1, len(cols), figsize=(4.6 * len(cols), 3.4), squeeze=False)
    for ax, c in zip(axes[0], cols):
        b = ev.bands(p.dropna(subset=[c]), c)
        ax.fill_between(b["epoch"], b["q25"], b["q75"], alpha=0.25)
        ax.plot(b["epoch"], b["median"], marker="o", ms=2.5)
        ax.set_title(c, fontsize=9)
        ax.set_ylabel(ylabel)
        _epoch_axis(ax)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def _probe_panel(run: _Run) -> str:
    last = run.r.pairs[(run.r.pairs["method"] == run.r.method) & (run.r.pairs["epoch"] == run.r.epochs[-1])] \
        if run.r.epochs else pd.DataFrame()
    cols = [c for c in ("pair", "user_id", "user_name", "item_id", "item_name", "kind", "score") if c in last]
    rows = last[cols].to_dict(orient="records")
    return f'<p class="note">Scores at the last recorded epoch.</p>{_table(rows, cols)}'


def _run_html(run: _Run, anchor: str) -> str:
    r = run.r
    status = ""
    if run.partial:
        status = (f'<p class="warn"><b>Partial record</b>: the run did not finish its fit (killed, or still running); '
                  f'epochs recorded: {_e(", ".join(map(str, r.epochs)) or "none")} of max_epochs '
                  f'{_e(r.manifest.get("max_epochs", "?"))}. Similarities are to the last recorded epoch.</p>')
    if not r.epochs:
        return f'<h2 id="{anchor}">{_e(run.name)}: {_e(r.folder)}</h2>{status}' + \
            _section(f"{anchor}-panel-settings", "Settings", _settings_panel(run))
    panels = {
        "settings": ("Settings", _settings_panel),
        "summary": ("Summary", _summary_panel),
        "settle": ("When do explanations settle, compared with accuracy?", _settle_panel),
        "randomisation": ("Are the explanations about the model? (randomisation check)", _randomisation_panel),
        "pairs": ("Which pairs change, and when?", _pairs_panel),
        "flips": ("Flips per epoch", _flips_panel),
        "shares": ("Group shares (quartile bands)", _shares_panel),
        "history": ("What drives a recommendation at each stage? (history influence)", _history_panel),
        "stability": ("Stability with the previous epoch and agreement between methods",
                      lambda x: _bands_panel(x, ["stability"] + [c for c in x.r.pairs.columns if c.startswith("agreement_")],
                                             "Spearman over dimensions: median and quartiles over pairs", "Spearman")),
        "faithfulness": ("Faithfulness", lambda x: _bands_panel(x, ["deletion_gain", "insertion_gain", "infidelity"],
                                                                 "Faithfulness per pair: median and quartiles", "value")),
        "probe": ("Probe pairs", _probe_panel),
    }
    body = "".join(_section(f"{anchor}-panel-{key}", title, fn(run)) for key, (title, fn) in panels.items())
    return f'<h2 id="{anchor}">{_e(run.name)}: {_e(r.folder)}</h2>{status}{body}'


# ---------------------------------------------------------------------------------------------------
# the pipeline: several runs on one axis
# ---------------------------------------------------------------------------------------------------
_MODEL_ORDER = {"gmf": 0, "mlp": 1}


def _pretrained(r: ev.Record) -> bool:
    model = r.manifest.get("model") or {}
    return bool(model.get("pretrained_gmf") or model.get("pretrained_mlp"))


def order_stages(records: Sequence[ev.Record]) -> list[ev.Record]:
    """Training order: models without pretraining first (GMF, MLP, then others), pretrained ones last."""
    def key(r: ev.Record):
        model = r.manifest.get("model") or {}
        return (_pretrained(r), _MODEL_ORDER.get(str(model.get("model", "")).lower(), 2), str(r.folder))
    return sorted(records, key=key)


def pipeline_stages(records: Sequence[ev.Record]) -> list[ev.Record]:
    """The records that form a pretraining pipeline, in order: with a pretrained model among them, the GMF and
    MLP runs and the pretrained ones (a model trained from scratch beside them is not a stage); else all."""
    ordered = order_stages(records)
    if not any(_pretrained(r) for r in ordered):
        return ordered
    return [r for r in ordered if _pretrained(r) or str((r.manifest.get("model") or {}).get("model", "")).lower()
            in _MODEL_ORDER]


def _pipeline_html(runs: list[_Run]) -> str:
    rows = []
    for run in runs:
        meas = run.basis_free
        start = run.sim[run.sim["epoch"] == run.r.epochs[0]][meas].median() if meas and run.r.epochs else np.nan
        row = {"stage": run.name, "record": str(run.r.folder), "epochs": len(run.r.epochs),
               "best val epoch": run.best, "best val NDCG@10": float(run.val["val_ndcg10"].max())
               if "val_ndcg10" in run.val and run.val["val_ndcg10"].notna().any() else None,
               "settle epoch (basis-free)": run.settle.get(meas) if meas else None,
               "movement: 1 - first vs final (basis-free)": (1 - start) if pd.notna(start) else None,
               "dims: epoch -1 vs final": run.random.get("dims_spearman"),
               "flip rate (top-5 dims)": float(run.flips["flip_dims"].mean()) if "flip_dims" in run.flips and
               len(run.flips) else None,
               "status": "partial" if run.partial else "finished"}
        rows.append(row)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    offset = 0
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, run in enumerate(runs):
        if not run.r.epochs:
            continue
        first = run.r.epochs[0]
        x = lambda e: np.asarray(e) - first + offset  # noqa: E731
        c = colors[k % len(colors)]
        span = (x(run.r.epochs[0]) - 0.5, x(run.r.epochs[-1]) + 0.5)
        for ax in (ax1, ax2):
            ax.axvspan(*span, color=c, alpha=0.06)
        ax1.text(np.mean(span), 1.0, run.name, ha="center", va="bottom", fontsize=9, color=c,
                 transform=matplotlib.transforms.blended_transform_factory(ax1.transData, ax1.transAxes))
        if "val_ndcg10" in run.val:
            ax1.plot(x(run.val["epoch"]), run.val["val_ndcg10"], **_MARK, color=c)
        if run.basis_free:
            b = ev.bands(run.sim, run.basis_free)
            ax2.fill_between(x(b["epoch"]), b["q25"], b["q75"], color=c, alpha=0.2)
            ax2.plot(x(b["epoch"]), b["median"], **_MARK, color=c, label=f"{run.name}: {ev.MEASURES[run.basis_free]}")
        if "dims_spearman" in run.sim:
            b = ev.bands(run.sim, "dims_spearman")
            ax2.plot(x(b["epoch"]), b["median"], ls="--", lw=1, color=c, label=f"{run.name}: per-dimension Spearman")
        offset = span[1] + 1.5
    ax1.set_ylabel("validation NDCG@10")
    ax1.grid(alpha=0.3)
    ax2.set_ylabel("similarity to the stage's final epoch")
    ax2.axhline(ev.SETTLE_THRESHOLD, color="grey", lw=0.8, ls="--")
    ax2.set_xlabel("epochs of the pipeline, stage after stage (each stage starts at its epoch -1)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, loc="lower right")
    return (_section("pipeline-stages", "Stages", _table(rows) + '<p class="note">Movement: how far the first recorded '
                     'epoch (the untrained or pretrained start) is from the final explanation, basis-free; the stage '
                     'with the largest movement is where the explanations are formed.</p>') +
            _section("pipeline-timeline", "The pipeline on one time axis", _png(fig)))


# ---------------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------------
def render(folders: Sequence[str | os.PathLike], title: Optional[str] = None) -> str:
    """The report's HTML for one or several record folders (several: a pipeline view first)."""
    records = order_stages([ev.load(f) for f in folders])
    runs = [_Run(r) for r in records]
    title = title or ("Attribution evolution: " + " -> ".join(run.name for run in runs))
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>"]
    if any(run.partial for run in runs):
        parts.append('<p class="warn">This report includes a <b>partial</b> record (a run that did not finish).</p>')
    toc = "".join(f'<li><a href="#run-{k}">{_e(run.name)}</a>: {_e(run.r.folder)}'
                  f'{" (partial)" if run.partial else ""}</li>' for k, run in enumerate(runs))
    parts.append(f"<ul>{toc}</ul>")
    stages = pipeline_stages(records)
    if len(stages) > 1:
        parts.append(f"<h2>Pipeline</h2>{_pipeline_html([next(x for x in runs if x.r is r) for r in stages])}")
    parts += [_run_html(run, f"run-{k}") for k, run in enumerate(runs)]
    parts.append('<p class="note">Written by ncf-explain (explain.html_report) from the attribution records alone.</p>'
                 "</body></html>")
    return "".join(parts)


def write_report(folders: Sequence[str | os.PathLike], out: str | os.PathLike, title: Optional[str] = None) -> Path:
    """Write the report for ``folders`` to ``out`` (atomically) and return its path."""
    page = render(folders, title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, page)
    return out
