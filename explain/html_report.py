"""One self-contained HTML page per run (or per pipeline of runs) from attribution records.

Figures are inline SVG (:mod:`explain.svg`), tables plain HTML, styles in the page: no script, no external
file, so the page reads the same in any browser, mailed or archived, without the project installed. Every
figure is computed by :mod:`explain.evolution` from the record alone. Each run's panels are
:mod:`explain.html_panels`; the pipeline view (``pipeline-<name>`` sections) is here.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from . import evolution as ev
from .html_panels import RUN_PANELS, Run, band_series, esc, html_table, run_html, section, settle_text
from .record import Record, write_atomic
from .svg import COLORS, chart

__all__ = ["write_report", "render", "RUN_PANELS", "PIPELINE_PANELS", "COMPARE_PANELS", "order_stages",
           "pipeline_stages"]

PIPELINE_PANELS = ("stages", "timeline")
COMPARE_PANELS = ("runs", "timeline")  # runs that are not one pipeline: side by side on one epoch axis

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1150px;color:#222;
line-height:1.45;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block;margin:.5em 0}.note{color:#555;font-size:.92em}
.warn{background:#fff4d6;border:1px solid #e6c15c;padding:.5em .8em;border-radius:4px}
svg{display:inline-block;margin:.3em .3em .3em 0;max-width:100%;height:auto}section{margin-bottom:1.6em}code{background:#f4f4f4;padding:0 .2em}
"""


# ---------------------------------------------------------------------------------------------------
# the pipeline: several runs on one axis
# ---------------------------------------------------------------------------------------------------
_MODEL_ORDER = {"gmf": 0, "mlp": 1}


def order_stages(records: Sequence[Record]) -> list[Record]:
    """Training order: models without pretraining first (GMF, MLP, then others), pretrained ones last."""
    def key(r: Record):
        return (r.pretrained, _MODEL_ORDER.get(r.model, 2), str(r.folder))
    return sorted(records, key=key)


def _source(pre: Record, stage: str, records: Sequence[Record]) -> tuple[Optional[Record], list[str]]:
    """The record of the ``stage`` run (``gmf``, ``mlp``) that ``pre`` started from, and notes on records of that
    model that are not it. Matched by run id where the callback recorded it; for older records by the
    checkpoint's run folder (its last two parts, ``<dataset>/<name>``), else by the model when one run has it."""
    src = pre.pretrained_source(stage)
    same = [r for r in records if r.model == stage and not r.pretrained]
    if not src:
        return None, []
    name = {"gmf": "GMF", "mlp": "MLP"}[stage]
    if src.get("run_id"):
        match = [r for r in same if r.run_id == src["run_id"]]
    else:
        tail = Path(str(src.get("path", ""))).parent.parent.parts[-2:]
        match = [r for r in same if r.run_folder.parts[-2:] == tail] or (same if len(same) == 1 else [])
    if match:
        return match[0], []
    notes = []
    for r in same if src.get("run_id") else ():  # a record of the model, but of another run
        kept = r.run_folder / "superseded" / str(src["run_id"]) / r.folder.name  # where retraining moved it
        notes.append(f"{name} in {r.run_folder} is not the {name} run that {pre.stage_name} in {pre.run_folder} "
                     f"started from (run {src['run_id']}): retrained since, or another run; it is compared, not "
                     f"drawn as a stage." + (f" The record of run {src['run_id']} is kept in {kept}: add that "
                                             f"folder to the command to draw the pipeline." if kept.is_dir() else ""))
    if not notes:
        notes.append(f"{pre.stage_name} in {pre.run_folder} started from {name} "
                     f"{src.get('path') or ''} (run {src.get('run_id') or 'unknown'}), which is not among these "
                     f"records.")
    return None, notes


def _pipeline(records: Sequence[Record]) -> tuple[list[Record], list[str]]:
    """A pretraining pipeline's stages in order (the GMF and MLP runs a pretrained model started from, then
    the pretrained ones; empty when there is no such pipeline of two stages or more), and notes on runs that
    look like stages but are not."""
    ordered = order_stages(records)
    notes: list[str] = []
    # One chain: GMF and MLP, then the first pretrained run that started from any of them. Other pretrained
    # runs started from the same (or other) runs, beside it, not after it: the report compares them.
    chain: list[Record] = []
    others: list[Record] = []
    for p in (r for r in ordered if r.pretrained):
        found = [_source(p, stage, ordered) for stage in ("gmf", "mlp")]
        sources = [src for src, _ in found if src is not None]
        if sources and not chain:
            chain = order_stages(sources) + [p]
            notes = [n for _, why in found for n in why if n not in notes]  # the drawn pipeline's own
        elif chain:
            others.append(p)
        else:
            notes += [n for _, why in found for n in why if n not in notes]
    for p in others:  # the page draws one pipeline; the other pretrained runs are compared with it
        notes.append(f"{p.stage_name} in {p.run_folder} is another pretrained run: the page draws one pipeline, "
                     f"that of {chain[-1].stage_name} in {chain[-1].run_folder} (the first by folder name), and "
                     f"compares this one below.")
    return chain, notes


def _split_notes(runs: list[Run]) -> list[str]:
    """A note when the runs were evaluated on different splits (the records' split fingerprints differ):
    their validation figures and probe pairs are then not comparable. Names the data settings that differ."""
    data = [(run.name, run.r.manifest["data"]) for run in runs  # records older than the key are not checked
            if isinstance(run.r.manifest.get("data"), dict) and run.r.manifest["data"].get("split_fingerprint")]
    prints = {d["split_fingerprint"] for _, d in data}
    if len(prints) < 2:
        return []
    keys = sorted({k for _, d in data for k in d if k != "split_fingerprint"})
    differ = [k for k in keys if len({repr(d.get(k)) for _, d in data}) > 1]
    groups: dict[str, list[str]] = {}  # runs by what their split differs in, each group once
    for name, d in data:
        key = ", ".join(f"{k}={d.get(k)!r}" for k in differ) if differ else \
            f"split {str(d.get('split_fingerprint'))[:12]}"
        groups.setdefault(key, []).append(name)
    which = "; ".join(f"{key}: {', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''}"
                      for key, names in groups.items())
    return [f"These runs were evaluated on {len(prints)} different splits ({which}): their validation NDCG@10 "
            f"and their probe pairs are not comparable from one split to another."]


def pipeline_stages(records: Sequence[Record]) -> list[Record]:
    """The records that form a pretraining pipeline, in order: the GMF and MLP runs a pretrained model started
    from, then the pretrained ones. Runs trained apart (GMF and MLP with no pretrained model, a model from
    scratch, a GMF retrained since) are no stage: the report compares them."""
    return _pipeline(records)[0]


def _pipeline_html(runs: list[Run], stacked: bool = True, colors: Optional[dict] = None) -> str:
    """Stages one after another on one time axis (``stacked``: a pipeline), or independent runs over each
    other on one epoch axis."""
    word = "stage" if stacked else "run"
    rows, late_runs = [], []
    for run in runs:
        meas = run.basis_free
        start = run.sim[run.sim["epoch"] == run.r.epochs[0]][meas].median() if meas and run.r.epochs else np.nan
        late = bool(run.r.epochs) and run.r.epochs[0] != -1  # the callback joined when the run resumed
        if late and pd.notna(start):
            late_runs.append(run.name)
        row = {word: run.name, "record": str(run.r.folder), "epochs trained": max(run.r.epochs, default=-1) + 1,
               "best val epoch": run.best, "best val NDCG@10": float(run.val["val_ndcg10"].max())
               if "val_ndcg10" in run.val and run.val["val_ndcg10"].notna().any() else None,
               "settle epoch (basis-free)": settle_text(run, run.settle.get(meas)) if meas else None,
               "movement: 1 - first vs final (basis-free)": (f"{1 - start:.3f} (from epoch {run.r.epochs[0]})" if late
                                                             else 1 - start) if pd.notna(start) else None,
               "dims: epoch -1 vs final": run.random.get("dims_spearman"),
               "flip rate (top-5 dims)": float(run.flips["flip_dims"].mean()) if "flip_dims" in run.flips and
               len(run.flips) else None,
               "status": "partial" if run.partial else "finished"}
        rows.append(row)
    offset = 0.0
    shades, acc, sims = [], [], []
    bands = []
    for k, run in enumerate(runs):
        if not run.r.epochs:
            continue
        first = run.r.epochs[0]
        c = (colors or {}).get(id(run), COLORS[k % len(COLORS)])  # a run keeps its colour across the page
        shift = offset - first if stacked else 0.0
        x = lambda e: (np.asarray(e, dtype=float) + shift).tolist()  # noqa: E731
        span = (x([run.r.epochs[0]])[0] - 0.5, x([run.r.epochs[-1]])[0] + 0.5)
        if stacked:
            shades.append({"x0": span[0], "x1": span[1], "color": c, "label": run.name})
        if "val_ndcg10" in run.val:
            acc.append({"x": x(run.val["epoch"]), "y": run.val["val_ndcg10"].tolist(), "color": c,
                        **({} if stacked else {"label": run.name})})
        if run.basis_free:
            b = ev.bands(run.sim, run.basis_free)
            band, line = band_series(b, x(b["epoch"]), c, f"{run.name}: {ev.MEASURES[run.basis_free]}")
            bands.append(band)
            sims.append(line)
        if "dims_spearman" in run.sim:
            b = ev.bands(run.sim, "dims_spearman")
            sims.append({"x": x(b["epoch"]), "y": b["median"].tolist(), "color": c, "dash": True, "width": 1.2,
                         "label": f"{run.name}: per-dimension Spearman (median)"})
        offset = span[1] + 1.5
    xlabel = ("epochs of the pipeline, stage after stage (each stage starts at its epoch -1)" if stacked else
              "epoch (-1: before training)")
    timeline = chart(f"Validation NDCG@10 per {word}", xlabel, "validation NDCG@10", series=acc, shades=shades,
                     height=230) + \
        chart(f"Similarity to the {word}'s final explanation: median and quartile band", xlabel,
              "similarity to the final epoch", series=sims, bands=bands, shades=shades,
              hlines=[{"y": ev.SETTLE_THRESHOLD}], ylim=(-1.05, 1.05), height=300)
    moved = [r for r in rows if isinstance(r["movement: 1 - first vs final (basis-free)"], float)]
    words = ""
    if moved:
        top = max(moved, key=lambda r: r["movement: 1 - first vs final (basis-free)"])
        words = (f"<p>The explanations move most in the {esc(top[word])} {word} (basis-free movement "
                 f"{top['movement: 1 - first vs final (basis-free)']:.2f} from its start to its end).</p>")
    note = ('<p class="note">Movement: how far the first recorded epoch (the untrained or pretrained start) is from '
            'the final explanation, basis-free; ' + ('the stage with the largest movement is where the explanations '
                                                      'are formed.</p>' if stacked else
                                                      'each run is drawn over its own epochs, on one axis.</p>'))
    if late_runs:
        note += (f'<p class="note">{esc(", ".join(late_runs))}: the record starts after training began (the callback '
                 f'joined when the run resumed), so its movement is from its first recorded epoch and is not ranked '
                 f'with the others, and a settle epoch at that first epoch may be earlier.</p>')
    if stacked:
        return (section("pipeline-stages", "Stages", words + html_table(rows) + note) +
                section("pipeline-timeline", "The pipeline on one time axis", timeline))
    return (section("compare-runs", "Runs", words + html_table(rows) + note) +
            section("compare-timeline", "The runs on one epoch axis", timeline))


# ---------------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------------
def render(folders: Sequence["str | os.PathLike | Record"], title: Optional[str] = None) -> str:
    """The report's HTML for one or several record folders or loaded records (several: a pipeline view first)."""
    records = order_stages([f if isinstance(f, Record) else Record.read(f) for f in folders])
    runs = [Run(r) for r in records]
    names = [run.name for run in runs]
    for run in runs:  # two runs of one stage (e.g. NeuMF pretrained twice): each named by its run folder
        if names.count(run.name) > 1:
            run.name = f"{run.name} ({run.r.run_folder.name})"
    names = [run.name for run in runs]
    for run in runs:  # run folders of one name in other places (a/gmf, b/gmf): named by the folder above too
        if names.count(run.name) > 1:
            run.name = f"{run.r.stage_name} ({run.r.run_folder.parent.name}/{run.r.run_folder.name})"
    stages, notes = _pipeline(records)
    name = {id(run.r): run.name for run in runs}
    others = [r for r in records if all(r is not st for st in stages)]
    if stages:
        title = title or ("Attribution evolution: " + " -> ".join(name[id(r)] for r in stages)
                          + ("; " + ", ".join(name[id(r)] for r in others) if others else ""))
    title = title or ("Attribution evolution: " + ", ".join(run.name for run in runs))
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>"]
    partial = sum(run.partial for run in runs)
    if partial:
        parts.append(f'<p class="warn">This report includes {"a" if partial == 1 else partial} <b>partial</b> '
                     f'record{"s" * (partial > 1)} (a run that did not finish).</p>')
    missing = [f"{run.name} ({run.r.folder}) lacks the files of epoch{'s' * (len(run.r.missing_epochs) > 1)} "
               f"{', '.join(map(str, run.r.missing_epochs))}, which its run recorded: what follows is read from the "
               f"epochs left, and differs from the run's." for run in runs if run.r.missing_epochs]
    parts += [f'<p class="warn">{esc(n)}</p>' for n in missing + notes + _split_notes(runs)]
    toc = "".join(f'<li><a href="#run-{k}">{esc(run.name)}</a>: {esc(run.r.folder)}'
                  f'{" (partial)" if run.partial else ""}</li>' for k, run in enumerate(runs))
    parts.append(f"<ul>{toc}</ul>")
    colors = {id(run): COLORS[k % len(COLORS)] for k, run in enumerate(runs)}
    if stages:
        parts.append(f"<h2>Pipeline</h2>"
                     f"{_pipeline_html([next(x for x in runs if x.r is r) for r in stages], colors=colors)}")
    if len(runs) > 1 and (not stages or others):  # runs trained apart: every run over the same epochs
        parts.append(f"<h2>Runs compared</h2>{_pipeline_html(runs, stacked=False, colors=colors)}")
    parts += [run_html(run, f"run-{k}") for k, run in enumerate(runs)]
    parts.append('<p class="note">Written by ncf-explain (explain.html_report) from the attribution records alone.</p>'
                 "</body></html>")
    return "".join(parts)


def write_report(folders: Sequence["str | os.PathLike | Record"], out: str | os.PathLike,
                 title: Optional[str] = None) -> Path:
    """Write the report for ``folders`` to ``out`` (atomically) and return its path."""
    page = render(folders, title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, page)
    return out
