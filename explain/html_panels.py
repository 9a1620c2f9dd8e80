"""One run's part of the HTML report: its panels, each computed by :mod:`explain.evolution` from the record.

The page around them, and the pipeline view of several runs, are :mod:`explain.html_report`. Each panel is a
``<section>`` with an ``id`` (``<run anchor>-panel-<name>``) so that tools can find it.
"""
from __future__ import annotations

import html
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from . import evolution as ev
from .record import Record
from .svg import COLORS, chart, shorten

__all__ = ["RUN_PANELS", "Run", "run_html", "esc", "fmt", "html_table", "section", "band_series"]

RUN_PANELS = ("settings", "summary", "settle", "randomisation", "pairs", "flips", "shares", "history", "stability",
              "faithfulness", "probe")
N_CHANGING = 5


# ---------------------------------------------------------------------------------------------------
# HTML helpers (the pipeline view uses them too)
# ---------------------------------------------------------------------------------------------------
def esc(x) -> str:
    return html.escape(str(x))


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    if isinstance(v, (float, np.floating)):
        return f"{v:.3f}"
    return str(v)


def html_table(rows: list[dict], cols: Optional[Sequence[str]] = None) -> str:
    if not rows:
        return '<p class="note">(none)</p>'
    cols = list(cols or rows[0].keys())
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            num = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            cells.append(f'<td class="num">{esc(fmt(v))}</td>' if num else f"<td>{esc(fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def section(pid: str, title: str, body: str) -> str:
    return f'<section id="{pid}"><h3>{esc(title)}</h3>{body}</section>'


# ---------------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------------
class Run:
    """A record with everything the report reads from it computed once."""

    def __init__(self, r: Record):
        self.r = r
        self.sim = ev.similarity_to_final(r) if r.epochs else pd.DataFrame(columns=["epoch", "pair"])
        self.flips = ev.flips(r) if r.epochs else pd.DataFrame(columns=["epoch", "pair"])
        # every pair's totals point one way (GMF, zero baseline): shares and totals_cosine are not measurements
        self.fixed_totals = ev.fixed_totals(r) if r.epochs else False
        self.measures = [m for m in ev.measures_in(self.sim) if not (self.fixed_totals and m == "totals_cosine")]
        self.basis_free = next((m for m in self.measures if m != "dims_spearman"), None)
        self.settle = {m: ev.settle_epoch(self.sim, m) for m in self.measures}
        self.random = {m: v for m, v in (ev.randomisation_check(self.sim) if r.epochs else {}).items()
                       if m in self.measures}
        # every validated epoch where the finished run kept them (not only the recorded ones)
        self.val = ev.run_validation(r) if r.epochs else pd.DataFrame(columns=["epoch"])
        self.best = ev.best_val_epoch(self.val) if r.epochs else None
        self.meta = r.pairs[r.pairs["method"] == r.method].drop_duplicates("pair").sort_values("pair") \
            if r.epochs else pd.DataFrame()
        self.partial = r.partial
        self.name = r.stage_name

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


def _used_settings(settings):
    """Each method's settings, less the convergence rule's sample bounds where a fixed sample count replaced it
    (``stability_target`` null): the manifest keeps them, but they played no part."""
    if not isinstance(settings, dict):
        return settings
    return {m: ({k: v for k, v in s.items() if k not in ("min_samples", "max_samples")}
                if isinstance(s, dict) and "stability_target" in s and s["stability_target"] is None else s)
            for m, s in settings.items()}


def _settings_panel(run: Run) -> str:
    m = run.r.manifest
    model = {k: v for k, v in (m.get("model") or {}).items() if v is not None}
    if not model.get("pretrained_gmf"):
        model.pop("alpha", None)  # the pretrained NeuMF's trade-off between its GMF and MLP: read by nothing else
    probe = m.get("probe") or []
    rows = [{"setting": "record folder", "value": str(run.r.folder)},
            {"setting": "run id", "value": (m.get("run") or {}).get("id")},
            {"setting": "dataset", "value": m.get("dataset")},
            {"setting": "methods", "value": ", ".join(m.get("methods") or [])},
            {"setting": "method read for the evolution", "value": run.r.method},
            {"setting": "method settings", "value": _used_settings(m.get("settings"))},
            {"setting": "baseline", "value": m.get("baseline")},
            {"setting": "training seed (seed_everything)", "value": m["training_seed"] if m.get("training_seed") is not None
             else "none set" if "training_seed" in m else "not recorded"},
            {"setting": "probe and methods seed (the callback's)", "value": m.get("seed")},
            {"setting": "probe pairs", "value": len(probe)},
            {"setting": "every n epochs", "value": m.get("every_n_epochs")},
            {"setting": "max epochs", "value": m.get("max_epochs")},
            {"setting": "epochs recorded", "value": ", ".join(map(str, run.r.epochs)) or "none"},
            {"setting": "epoch -1", "value": m.get("epoch_minus_1")},
            {"setting": "versions", "value": m.get("versions")}]
    rows += [{"setting": f"model.{k}", "value": v} for k, v in model.items()]
    rows += [{"setting": f"data.{k}", "value": v} for k, v in (m.get("data") or {}).items() if v is not None]
    return html_table(rows)


def _gaps(run: Run) -> str:
    """How far apart consecutive recorded epochs are, where that is not always one epoch."""
    steps = sorted({b - a for a, b in zip(run.r.epochs, run.r.epochs[1:])})
    return "" if steps in ([], [1]) else f" ({' or '.join(map(str, steps))} epochs apart)"


def _no_randomisation(run: Run, meas: str) -> str:
    """Why a measure has no epoch -1 vs final figure."""
    if not run.r.epochs or max(run.r.epochs) < 0:
        return "no trained epoch recorded"
    if -1 not in run.r.epochs:
        return "no epoch -1 recorded"
    return "not recorded at epoch -1 (history influence needs a trained epoch)" if meas == "history_spearman" \
        else "not recorded at epoch -1"


def settle_text(run: Run, settle):
    """The settle epoch as a reader may take it: a record that starts after epoch -1 (a callback added when the
    run resumed) cannot show an earlier one than its first epoch."""
    first = run.r.epochs[0] if run.r.epochs else None
    if settle is not None and settle == first and first != -1:
        return f"{settle} or earlier (the record starts there)"
    return settle


def _summary_panel(run: Run) -> str:
    rows = []
    for meas in run.measures:
        settle = run.settle.get(meas)
        rows.append({"measure": ev.MEASURES[meas],
                     "settle epoch": settle_text(run, settle) if settle is not None else "not before the final epoch",
                     "best validation epoch": run.best,
                     "epoch -1 vs final (median)": run.random.get(meas, _no_randomisation(run, meas))})
    fl = run.flips
    flips_txt = ""
    for c, what in (("flip_dims", "top-5 dimensions"), ("flip_history", "top-3 history items")):
        if c in fl and fl[c].notna().any():
            flips_txt += (f"<li>{what} change between consecutive recorded epochs for {100 * fl[c].mean():.0f}% of "
                          f"pair-epochs{_gaps(run)}; "
                          f"{100 * fl.groupby('pair')[c].any().mean():.0f}% of pairs change at least once.</li>")
    words = []
    if run.basis_free and run.settle.get(run.basis_free) is not None and run.best is not None:
        s = run.settle[run.basis_free]
        rel = "before" if s < run.best else ("at" if s == run.best else "after")
        when = f"by epoch {s}, the first recorded," if settle_text(run, s) != s else f"at epoch {s},"
        words.append(f"Explanations ({ev.MEASURES[run.basis_free]}) settle {when} {rel} the best validation "
                     f"epoch {run.best}.")
    return (("<p>" + " ".join(esc(w) for w in words) + "</p>" if words else "") + html_table(rows) +
            (f"<ul>{flips_txt}</ul>" if flips_txt else "") +
            f'<p class="note">Settle epoch: the first recorded epoch from which the median similarity to the final epoch stays '
            f'&ge; {ev.SETTLE_THRESHOLD} before the final epoch (whose similarity to itself is 1). Basis-free measures are listed first; per-dimension rank correlations '
            f'across epochs also move when the latent basis turns (the layer after an embedding absorbs any '
            f'invertible map of it), so they can understate how settled an explanation is.</p>')


def band_series(b: pd.DataFrame, x, color: str, label: str, dash: bool = False) -> tuple[dict, dict]:
    return ({"x": list(x), "lo": b["q25"].tolist(), "hi": b["q75"].tolist(), "color": color},
            {"x": list(x), "y": b["median"].tolist(), "label": label, "color": color, "dash": dash})


def _settle_panel(run: Run) -> str:
    if not run.measures:
        return '<p class="note">Fewer than two recorded epochs: nothing to compare.</p>'
    bands, series, vlines = [], [], []
    for k, meas in enumerate(run.measures):
        c = COLORS[k]
        b = ev.bands(run.sim, meas)
        band, line = band_series(b, b["epoch"], c, f"{ev.MEASURES[meas]}: median, quartile band",
                                  dash=meas == "dims_spearman")
        bands.append(band)
        series.append(line)
        if run.settle.get(meas) is not None:
            vlines.append({"x": run.settle[meas], "color": c, "label": f"settle epoch ({meas})"})
    series.append({"x": [], "y": [], "label": f"settle threshold {ev.SETTLE_THRESHOLD} (grey dashes)",
                   "color": "#999", "dash": True})
    right = None
    if "val_ndcg10" in run.val and run.val["val_ndcg10"].notna().any():
        series.append({"x": run.val["epoch"].tolist(), "y": run.val["val_ndcg10"].tolist(), "axis": "right",
                       "color": "#000", "label": "validation NDCG@10 (right axis)", "width": 2.2})
        v = run.val["val_ndcg10"].dropna()
        mid, span = (float(v.max()) + float(v.min())) / 2, max(float(v.max()) - float(v.min()), 0.05)
        right = {"label": "validation NDCG@10", "ylim": (mid - 0.55 * span, mid + 0.55 * span)}  # 0.05 at least
        if run.best is not None:
            vlines.append({"x": run.best, "color": "#555", "dash": True, "label": "best validation epoch"})
    return chart("Similarity of each pair's explanation to its final-epoch one, beside validation NDCG@10",
                 "epoch (-1 = before training)", "similarity to the final epoch", series=series, bands=bands,
                 vlines=vlines, hlines=[{"y": ev.SETTLE_THRESHOLD}], ylim=(-1.05, 1.05), right=right, height=340)


def _randomisation_panel(run: Run) -> str:
    before = run.sim[run.sim["epoch"] == -1]
    if before.empty:
        added = run.r.manifest.get("added_on_resume_at_epoch")
        why = (f"the record starts where the run resumed, at epoch {added}" if isinstance(added, int) else
               "before_training=False")
        return f'<p class="note">Epoch -1 was not recorded ({esc(why)}): no randomisation check.</p>'
    pretrained = run.r.pretrained
    note = ('<p class="warn">Epoch -1 of this run is the pretrained start, not an untrained model: the check '
            'compares the pretrained explanation with the final one. The randomisation check of the pipeline is '
            'that of its GMF and MLP stages.</p>') if pretrained else ""
    charts = []
    edges = np.linspace(-1, 1, 21)
    for k, meas in enumerate(run.random):
        counts, _ = np.histogram(before[meas].dropna().clip(-1, 1), bins=edges)
        charts.append(chart(f"{ev.MEASURES[meas].split(' (')[0]}: median {run.random[meas]:+.2f}",
                            "epoch -1 vs final, per pair",
                            "pairs", bars=[{"x": ((edges[:-1] + edges[1:]) / 2).tolist(), "y": counts.tolist(),
                                            "width": 0.09, "color": COLORS[k]}],
                            vlines=[{"x": run.random[meas], "color": "#d62728", "label": "median"}],
                            width=440, height=250, integer_x=False, integer_y=True))
    return note + "".join(charts) + ('<p class="note">Model-randomisation check (Adebayo et al., NeurIPS 2018): the '
                                     'model before training against the trained one. A median near 0 says the '
                                     'explanations come from what training learned; near 1, from the architecture '
                                     'or the input. Below 0, the explanation turned round: for the totals, the '
                                     'pair\'s logit moved to the other side of the baseline\'s.</p>')


def _pairs_panel(run: Run) -> str:
    shown = run.shown_pairs()
    if not shown or not run.measures:
        return '<p class="note">No pairs to show.</p>'
    meas = run.measures[:2]
    charts = []
    for m in meas:
        series = []
        for k, p in enumerate(shown):
            g = run.sim[run.sim["pair"] == p].sort_values("epoch")
            series.append({"x": g["epoch"].tolist(), "y": g[m].tolist(), "label": run.label(p),
                           "color": COLORS[k % len(COLORS)]})
        b = ev.bands(run.sim, m)
        band = {"x": b["epoch"].tolist(), "lo": b["q25"].tolist(), "hi": b["q75"].tolist(), "color": "#777",
                "label": "all pairs: quartile band"}
        charts.append(chart(ev.MEASURES[m], "epoch (-1 = before training)", "similarity to the final epoch",
                            series=series, bands=[band], ylim=(-1.05, 1.05), height=300))
    rows = []
    for p in shown:
        f = run.flips[run.flips["pair"] == p]
        row = {"pair": p, "user x item": run.label(p),
               "kind": run.meta.loc[run.meta["pair"] == p, "kind"].iloc[0] if len(run.meta) else ""}
        for c in ("flip_dims", "flip_history"):
            if c in f:
                ff = f[f[c].astype("boolean").fillna(False).astype(bool)]
                row[f"{c} count"] = int(len(ff))
                row[f"last {c}"] = int(ff["epoch"].max()) if len(ff) else None
        final = max(run.r.epochs) if run.r.epochs else 0
        for m in meas:  # the final epoch is like itself by construction: left out
            g = run.sim[(run.sim["pair"] == p) & (run.sim["epoch"] >= 0) & (run.sim["epoch"] < final)]
            row[f"mean {m} (recorded trained epochs before the final one)"] = float(g[m].mean()) if len(g) else None
        rows.append(row)
    return ("".join(charts) + html_table(rows) +
            f'<p class="note">The pairs you listed (kind "listed") and the {N_CHANGING} pairs whose explanation stays '
            f'furthest from its final form over training.</p>')


def _flips_panel(run: Run) -> str:
    fl = run.flips
    cols = [c for c in ("flip_dims", "flip_history") if c in fl and fl[c].notna().any()]
    if not cols:
        return '<p class="note">Fewer than two recorded epochs: no flips.</p>'
    labels = {"flip_dims": "top-5 dimensions changed", "flip_history": "top-3 history items changed"}
    width = 0.8 / len(cols)
    bars = []
    for k, c in enumerate(cols):
        rate = fl.groupby("epoch")[c].mean()
        bars.append({"x": (rate.index.to_numpy() + (k - (len(cols) - 1) / 2) * width).tolist(),
                     "y": rate.tolist(), "width": width, "color": COLORS[k], "label": labels[c]})
    return chart("Flips: share of pairs whose top features changed since the previous recorded epoch",
                 "epoch", "share of pairs", bars=bars, ylim=(0, 1), height=260) + \
        ('<p class="note">Dimension flips depend on the latent basis (a turn of the basis reorders dimensions); '
         'history flips do not.</p>')


def _shares_panel(run: Run) -> str:
    p = run.r.pairs[run.r.pairs["method"] == run.r.method]
    cols = [c for c in p.columns if c.startswith("share_")]
    if not cols:
        return '<p class="note">No group shares recorded.</p>'
    bands, series = [], []
    for k, c in enumerate(cols):
        band, line = band_series(ev.bands(p, c), ev.bands(p, c)["epoch"], COLORS[k % len(COLORS)],
                                  c.removeprefix("share_"))
        bands.append(band)
        series.append(line)
    fixed = ('<p class="note">Fixed by construction on this model and baseline (see the note at the top of this '
             'run).</p>') if run.fixed_totals else ""
    return chart(f"Group shares of the |group totals| ({run.r.method}): median and quartile band over pairs (basis-free)",
                 "epoch (-1 = before training)", "share", series=series, bands=bands, ylim=(0, 1), height=280) + fixed


def _history_words(h: pd.DataFrame, label: str) -> str:
    """One sentence per pair: which rated item raises the score most at the first, middle and final epoch."""
    epochs = sorted(h["epoch"].unique())
    picks = sorted({epochs[0], epochs[len(epochs) // 2], epochs[-1]})
    name_col = "history_item_name" if "history_item_name" in h else "history_item_id"
    parts = []
    own = h["history_item_id"].astype(str) == h["item_id"].astype(str) if "item_id" in h else False
    for e in picks:
        g = h[h["epoch"] == e].assign(_own=own).nlargest(2, "running_total")
        names = [f'"{n}"' + (" (the pair's own item)" if o else "")
                 for n, v, o in zip(g[name_col], g["running_total"], g["_own"]) if v > 0]
        parts.append(f"epoch {e}: {' and '.join(names) if names else 'none (no interaction raises it)'}")
    return f"<li><b>{esc(label)}</b>: the items that raise it most, by " + esc("; ".join(parts)) + ".</li>"


def _history_panel(run: Run) -> str:
    h = run.r.history
    if h.empty:
        return ('<p class="note">This run recorded no history influence. With <code>history: true</code> the callback '
                'records, per epoch, which of the user\'s rated items raise each probe pair\'s score (TracIn): a '
                'basis-free view of what drives a recommendation.</p>')
    highlighted = run.shown_pairs()
    shown = highlighted[:HISTORY_PAIRS]
    name_col = "history_item_name" if "history_item_name" in h else "history_item_id"
    charts, words = [], []
    for p in shown:
        hp = h[h["pair"] == p]
        final = hp[hp["epoch"] == hp["epoch"].max()]
        # the items that raise the score most at the final epoch, then those that lower it most, each labelled
        raise_ = final[final["running_total"] > 0].nlargest(3, "running_total")
        lower = final[final["running_total"] < 0].nsmallest(5 - len(raise_), "running_total")
        top = pd.concat([raise_, lower])
        series = []
        for k, (item, name, v) in enumerate(zip(top["history_item_id"], top[name_col], top["running_total"])):
            g = hp[hp["history_item_id"] == item].sort_values("epoch")
            own = " (the pair's own item)" if "item_id" in hp and str(item) == str(hp["item_id"].iloc[0]) else ""
            series.append({"x": g["epoch"].tolist(), "y": g["running_total"].tolist(),
                           "label": f"{'raises' if v > 0 else 'lowers'}: {shorten(name, 48)}{own}", "color": COLORS[k]})
        charts.append(chart(run.label(p), "epoch", "accumulated influence (TracIn)", series=series,
                            hlines=[{"y": 0.0}], width=560, height=260))
        words.append(_history_words(hp, run.label(p)))
    return ("".join(charts) + f"<ul>{''.join(words)}</ul>" +
            '<p class="note">Each line: one of the user\'s rated items, its influence on the pair accumulated over the '
            'epochs so far (positive: training on it raised the score). Shown: the items that raise the score most '
            'at the final epoch (up to three), then those that lower it most. A listed pair whose item the user '
            'rated in training has that item among them, marked as its own: training on the pair itself.</p>' +
            (f'<p class="note">History drawn for the first {len(shown)} of the {len(highlighted)} pairs highlighted '
             f'above (listed pairs first); every probe pair\'s is in the record\'s history_epoch=E.parquet.</p>'
             if len(highlighted) > len(shown) else ""))


HISTORY_PAIRS = 4  # pairs the history panel draws


def _bands_panel(run: Run, cols: Sequence[str], ylabel: str, note: str = "") -> str:
    """Per column, the method the evolution reads: median and quartile band over pairs, a dot per measured epoch,
    with the other methods' medians beside it; ``agreement_*`` columns become one chart per two methods."""
    pairs, m0 = run.r.pairs, run.r.method
    p = pairs[pairs["method"] == m0]
    charts, notes = [], []
    agreement = [c for c in cols if c.startswith("agreement_")]
    methods = [m0, *(x for x in pd.unique(pairs["method"]) if x != m0)]
    color = {m: COLORS[j % len(COLORS)] for j, m in enumerate(methods)}  # a method keeps its colour on every chart
    for c in (c for c in cols if not c.startswith("agreement_") and c in p and p[c].notna().any()):
        b = ev.bands(p.dropna(subset=[c]), c)
        band, line = band_series(b, b["epoch"], color[m0], f"{m0}: median, quartile band")
        series = [{**line, "markers": True}]
        for m in methods[1:]:  # the other methods' medians
            g = pairs[(pairs["method"] == m)].dropna(subset=[c])
            if len(g):
                med = g.groupby("epoch")[c].median()
                series.append({"x": med.index.tolist(), "y": med.tolist(), "label": f"{m}: median",
                               "color": color[m], "dash": True, "markers": True})
        charts.append(chart(f"{c} ({m0}" + (" and the other methods" if len(series) > 1 else "") + ")", "epoch",
                            ylabel, series=series, bands=[band], width=440, height=240))
    if agreement:  # every two dimension-level methods once
        done = set()
        for a in pd.unique(pairs["method"]):
            rows = pairs[pairs["method"] == a]
            for c in (x for x in rows.columns if x.startswith("agreement_") and rows[x].notna().any()):
                b_ = c.removeprefix("agreement_")
                key = frozenset((a, b_))
                if key in done:
                    continue
                done.add(key)
                if ev.coincide(run.r, a, b_):
                    notes.append(f"{a} and {b_} gave the same attributions (to float rounding) for every pair at every "
                                 f"epoch: on this model the two compute the same thing, so their agreement is 1 by "
                                 f"construction and is not charted.")
                    continue
                bb = ev.bands(rows.dropna(subset=[c]), c)
                band, line = band_series(bb, bb["epoch"], COLORS[len(charts) % len(COLORS)], "median, quartile band")
                charts.append(chart(f"agreement: {a} vs {b_}", "epoch", ylabel, series=[{**line, "markers": True}],
                                    bands=[band], width=440, height=240))
    if not charts and not notes:
        return '<p class="note">Not recorded.</p>'
    return "".join(charts) + "".join(f'<p class="note">{esc(n)}</p>' for n in [*notes, note] if n)


def _probe_panel(run: Run) -> str:
    last = run.r.pairs[(run.r.pairs["method"] == run.r.method) & (run.r.pairs["epoch"] == run.r.epochs[-1])] \
        if run.r.epochs else pd.DataFrame()
    cols = [c for c in ("pair", "user_id", "user_name", "item_id", "item_name", "kind", "score") if c in last]
    rows = last[cols].to_dict(orient="records")
    return f'<p class="note">Scores at the last recorded epoch.</p>{html_table(rows, cols)}'


def run_html(run: Run, anchor: str) -> str:
    r = run.r
    status = ""
    if run.partial:
        status = (f'<p class="warn"><b>Partial record</b>: the run did not finish its fit (killed, or still running); '
                  f'epochs recorded: {esc(", ".join(map(str, r.epochs)) or "none")} of max_epochs '
                  f'{esc(r.manifest.get("max_epochs", "?"))}. Similarities are to the last recorded epoch.</p>')
    cut = r.manifest.get("last_epoch_cut_short")
    if isinstance(cut, dict) and all(isinstance(cut.get(k), int) for k in ("epoch", "batches", "of")):
        status += (f'<p class="note">Training stopped within epoch {cut["epoch"]}, after {cut["batches"]} of its '
                   f'{cut["of"]} batches (max_time or max_steps): its record is of that part-trained model, and a '
                   f'run resumed from it starts the next epoch (Lightning counts the epoch as done).</p>')
    if run.fixed_totals:
        status += (f'<p class="warn">Every pair\'s per-embedding totals ({esc(r.method)}) point the same way at every '
                   f'epoch: on this model and baseline they are fixed by construction (GMF with a zero baseline gives '
                   f'the user and the item half of every product), so the group shares and the totals\' similarity '
                   f'are not measurements and are left out of the summary; record with the mean baseline, or read '
                   f'history influence and the per-dimension measures.</p>')
    if isinstance(r.manifest.get("added_on_resume_at_epoch"), int):
        status += (f'<p class="note">Recorded from epoch {r.manifest["added_on_resume_at_epoch"]}, where the run '
                   f'resumed: its epochs before it are not in this record (trained without the callback, or '
                   f'recorded in another folder).</p>')
    if not r.epochs:
        return f'<h2 id="{anchor}">{esc(run.name)}: {esc(r.folder)}</h2>{status}' + \
            section(f"{anchor}-panel-settings", "Settings", _settings_panel(run))
    panels = {
        "settings": ("Settings", _settings_panel),
        "summary": ("Summary", _summary_panel),
        "settle": ("When do explanations settle, compared with accuracy?", _settle_panel),
        "randomisation": ("Are the explanations about the model? (randomisation check)", _randomisation_panel),
        "pairs": ("Which pairs change, and when?", _pairs_panel),
        "flips": ("Flips per epoch", _flips_panel),
        "shares": ("Group shares (quartile bands)", _shares_panel),
        "history": ("What drives a recommendation at each stage? (history influence)", _history_panel),
        "stability": ("Stability with the previous recorded epoch and agreement between methods",
                      lambda x: _bands_panel(x, ["stability"] + [c for c in x.r.pairs.columns if c.startswith("agreement_")],
                                             "Spearman over dimensions",
                                             "A dot per recorded epoch; stability compares each with the recorded "
                                             "epoch before it.")),
        "faithfulness": ("Faithfulness (deletion/insertion gain over a random order, infidelity)",
                         lambda x: _bands_panel(x, ["deletion_gain", "insertion_gain", "infidelity"], "per pair",
                                                "Measured at the epochs with a dot only (epoch -1, every "
                                                "faithfulness_every_n_epochs-th epoch and the last of each fit, "
                                                "so a run trained further keeps its earlier last); the lines join "
                                                "them, nothing was measured between.")),
        "probe": ("Probe pairs", _probe_panel),
    }
    body = "".join(section(f"{anchor}-panel-{key}", title, fn(run)) for key, (title, fn) in panels.items())
    return f'<h2 id="{anchor}">{esc(run.name)}: {esc(r.folder)}</h2>{status}{body}'
