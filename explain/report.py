"""What explain.py shows and writes: the text per pair, ``explanations.json``, CSV tables and figures."""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import pandas as pd
import torch

from .core import Attribution
from .record import versions, write_atomic
from .tables import dims_frame, pairs_frame

if TYPE_CHECKING:
    from .explaining import ExplainSettings
    from .loading import Context, Loaded

__all__ = ["render_pair", "to_json", "write_outputs", "top_dims"]

log = logging.getLogger("ncf")


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """``frame`` as CSV at ``path``, whole or not at all."""
    from ncf.files import atomic_write

    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.7g"))


def top_dims(a: Attribution, pair: int, k: int) -> list[tuple[str, int, float]]:
    if a.dims is None:
        return []
    flat = [(name, d, float(t[pair, d])) for name, t in zip(a.embedding_names, a.dims) for d in range(t.shape[1])]
    return sorted(flat, key=lambda r: -abs(r[2]))[:k]


def _pct(x: float) -> str:
    return f"{100 * x:4.0f}%"


def render_pair(ld: "Loaded", res: dict, meta: pd.DataFrame, pair: int, k: int) -> str:
    row = meta.iloc[pair]
    first = next(iter(res["attrs"].values()))
    logit = float(first.prediction[pair])
    title = f' "{row.item_name}"' if row.item_name else ""
    who = f" ({row.user_name})" if row.user_name else ""
    run = f", run {ld.run_id}" if getattr(ld, "run_id", None) else ""
    lines = [
        f"user {row.user_id}{who} x item {row.item_id}{title}  [{type(ld.net).__name__}, epoch {ld.epoch}, {ld.path.name}{run}]",
        f"  score {1 / (1 + np.exp(-logit)):.3f} (logit {logit:+.3f}, baseline {float(first.baseline_prediction[pair]):+.3f})"
        f"  rank {_rank(row)} of {row.candidates} {_among(row)}",
    ]
    read = (res.get("read_items") or [None] * (pair + 1))[pair]
    if read is not None:  # a term computed from the user's own items: which, and how much each
        names = ", ".join(f'{_quoted(r["item_name"]) or ld.item_ids[r["item"]]} {_pct(r["share"]).strip()}'
                          for r in read["items"][:5]) or "none of them"
        lines.append(f"  {read['embedding']} {read['logit']:+.3f} of the logit, from the user's latest items: {names}")
    groups = [g for part in first.partitions.values() for g in part]  # user, item (, gmf, mlp)
    share_w = max([6] + [len(g) + 2 for g in groups])  # a group's name and its share, apart from the next
    head = f"  {'method':<12}" + "".join(f"{g:>{share_w}}" for g in groups) + \
           f"{'complete-gap':>14}{'deletion+':>11}{'insertion+':>11}{'infidelity':>12}{'seed-rho':>10}  top dimensions"
    lines.append(head)
    for m, a in res["attrs"].items():
        sh = a.shares
        f = res["faith"].get(m, {})
        cells = f"  {m:<12}" + "".join(f"{_pct(sh[g][pair]):>{share_w}}" for g in groups)
        cells += f"{float(a.completeness_gap[pair]):>14.2e}"
        for key, width in (("deletion_gain", 11), ("insertion_gain", 11), ("infidelity", 12)):
            cells += f"{float(f[key][pair]):>{width}.3f}" if key in f else f"{'-':>{width}}"
        st = res["seed_stability"].get(m)
        cells += f"{float(st[pair]):>10.3f}" if st is not None else f"{'-':>10}"
        tops = ", ".join(f"{n}[{d}] {v:+.3f}" for n, d, v in top_dims(a, pair, k))
        if a.samples is not None:  # a sampling method says how many it drew (and, drawn until stable, its rho)
            rho = f", split-half rho {float(a.stability[pair]):.3f}" if a.stability is not None else ""
            tops += f"  ({int(a.samples[pair])} samples{rho})"
        group_level = a.dims is None
        lines.append(cells + "  " + (tops or ("(group-level method)" if group_level else "(--top-dims 0)")))
    return "\n".join(lines)


def _rank(row) -> str:
    """``4``, or ``1-4 (tied with 3 at this score)``: tied items count against each other, as in HR@10."""
    tied = int(getattr(row, "tied_with", 0) or 0)
    rank = int(row["rank"])
    return f"{rank - tied}-{rank} (tied with {tied} at this score)" if tied else str(rank)


def _among(row) -> str:
    """What a pair's rank is among, as the pair line says it."""
    if row.ranked_among != "unseen items":
        return "items (all: the data was not given)"
    if row.user_has_item is not None and bool(row.user_has_item):
        return "items: the user's candidates and this one, which the user already has"
    return "candidate items"


def _quoted(title: str) -> str:
    return f'"{title}"' if title else ""


def to_json(ld: "Loaded", res: dict, meta: pd.DataFrame) -> dict:
    out = {"checkpoint": str(ld.path), "model": type(ld.net).__name__, "epoch": ld.epoch, "run_id": ld.run_id,
           "warnings": list(res.get("warnings", [])), "pairs": []}
    for p in range(len(meta)):
        row = meta.iloc[p]
        entry = {"user_id": _prim(row.user_id), "item_id": _prim(row.item_id), "item_name": row.item_name,
                 **({"user_name": row.user_name} if row.user_name else {}),
                 "rank": int(row["rank"]), "tied_with": int(row.tied_with), "candidates": int(row.candidates),
                 "ranked_among": row.ranked_among,
                 "user_has_item": None if row.user_has_item is None else bool(row.user_has_item),
                 "methods": {}}
        for m, a in res["attrs"].items():
            entry["methods"][m] = {
                "prediction_logit": float(a.prediction[p]), "score": float(torch.sigmoid(a.prediction[p])),
                "baseline_logit": float(a.baseline_prediction[p]), "completeness_gap": float(a.completeness_gap[p]),
                "convergence_delta": float(a.convergence_delta[p]) if a.convergence_delta is not None else None,
                "samples": int(a.samples[p]) if a.samples is not None else None,
                "sample_stability": float(a.stability[p]) if a.stability is not None else None,
                "groups": {g: float(v[p]) for g, v in a.groups.items()},
                "shares": {g: float(v[p]) for g, v in a.shares.items()},
                "embedding_totals": {n: float(a.embedding_totals[p, k]) for k, n in enumerate(a.embedding_names)},
                "faithfulness": {k: float(v[p]) for k, v in res["faith"].get(m, {}).items()},
                "seed_stability": float(res["seed_stability"][m][p]) if m in res["seed_stability"] else None,
                "top_dimensions": [{"embedding": n, "dim": d, "attribution": v} for n, d, v in top_dims(a, p, 10)],
                "attributions": ({n: t[p].tolist() for n, t in zip(a.embedding_names, a.dims)}
                                 if a.dims is not None else None),
            }
        read = (res.get("read_items") or [None] * (p + 1))[p]
        if read is not None:  # a term computed from the user's own items (Recommender.read_items)
            entry["read_items"] = {"embedding": read["embedding"], "logit": read["logit"],
                                   "items": [{"item_id": _prim(ld.item_ids[r["item"]]), "item_name": r["item_name"],
                                              "part": r["part"], "share": r["share"]} for r in read["items"]]}
        out["pairs"].append(entry)
    return out


def _prim(v):
    return v.item() if hasattr(v, "item") else v


def write_outputs(out: Path, runs: list[tuple["Loaded", dict, pd.DataFrame]], cfg: "ExplainSettings",
                  hist: Optional[list] = None, ctx: Optional["Context"] = None, cf: Optional[list] = None) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_stages(out)
    # every file is written into a hidden folder first and moved in at the end: a run killed midway leaves
    # the earlier explanation whole (and its hidden folder, removed by the next run), never half of each
    stage = out / f".explain-{os.getpid()}-{secrets.token_hex(3)}"
    stage.mkdir()
    try:
        return _write_outputs(out, stage, runs, cfg, hist, ctx, cf)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _write_outputs(out: Path, stage: Path, runs, cfg, hist, ctx, cf) -> list[str]:
    from .history_report import counterfactual_json, history_figure, history_frame, history_json
    from .plots import heatmap_figure, save, shares_figure, shorten

    doc = {
        "settings": {"methods": list(cfg.methods), "baseline": cfg.baseline, "seed": cfg.seed,
                     "lime_preset": cfg.lime_preset, "backend": cfg.backend, "method_settings": cfg.settings},
        "versions": versions(),
        "checkpoints": [to_json(ld, res, meta) for ld, res, meta in runs],
    }
    titles = ctx.titles if ctx else None
    if hist is not None:  # history influence belongs to the explained (last) checkpoint
        for entry, h in zip(doc["checkpoints"][-1]["pairs"], hist):
            entry["history"] = history_json(h, runs[-1][0].item_ids, titles, cfg.history_k)
    if cf is not None:
        for entry, c in zip(doc["checkpoints"][-1]["pairs"], cf):
            entry["history"]["counterfactual"] = counterfactual_json(c, runs[-1][0].item_ids, cfg.cf_epochs)
    earlier = _earlier_outputs(out)
    dims, pairs = [], []
    for ld, res, meta in runs:
        # the file name as given to explain.py, and which run and where: two runs' last.ckpt are told apart
        m = meta.assign(checkpoint=ld.path.name, epoch=ld.epoch, run_id=ld.run_id, checkpoint_path=str(ld.path))
        dims.append(dims_frame(res["attrs"], m))
        pairs.append(pairs_frame(res["attrs"], m, faith=res["faith"]))
    _write_csv(pd.concat(dims, ignore_index=True), stage / "attributions.csv")
    pairs_df = pd.concat(pairs, ignore_index=True)
    _write_csv(pairs_df, stage / "pairs.csv")
    written = ["attributions.csv", "pairs.csv"]
    ld, res, meta = runs[-1]
    labels = _pair_labels(meta, shorten)
    rows = min(len(labels), HEATMAP_PAIRS)  # a row per pair: a picture of thousands of rows cannot be read
    more = f"; the first {rows} of {len(labels)} pairs, all in attributions.csv" if rows < len(labels) else ""
    if len(runs) > 1:  # the figures below show one checkpoint: say which
        more += f"; {ld.path.name}{f' of run {ld.run_id}' if ld.run_id else ''}, the last of {len(runs)} checkpoints"
    for mth, a in res["attrs"].items():
        if a.dims is None:
            continue
        for name, t in zip(a.embedding_names, a.dims):
            fig = heatmap_figure(t[:rows].numpy(), labels[:rows],
                                 f"{mth} on {name} ({type(ld.net).__name__}, epoch {ld.epoch}{more})")
            written.append(os.path.basename(save(fig, str(stage / f"heatmap_{mth}_{name}.png"))))
    last = pairs_df[pairs_df["checkpoint_path"] == str(ld.path)]  # by path: two runs' best.ckpt share a name
    first = next(iter(res["attrs"].values()))
    parts = [list(groups) for groups in first.partitions.values()]  # [user, item] (, [gmf, mlp])
    which = f", run {ld.run_id}, the last of {len(runs)} checkpoints" if len(runs) > 1 and ld.run_id else ""
    fig = shares_figure(last, f"Share of the |group totals| ({type(ld.net).__name__}, {ld.path.name}{which})",
                        parts)
    written.append(os.path.basename(save(fig, str(stage / "group_shares.png"))))
    if len(runs) > 1:
        fig = _evolution_figure(pairs_df, parts, dict(zip(meta["pair"], labels)) if "pair" in meta else None)
        written.append(os.path.basename(save(fig, str(stage / "evolution.png"))))
    if hist is not None:
        _write_csv(history_frame(hist, ld.user_ids, ld.item_ids, titles, ctx.user_names if ctx else None), stage / "history.csv")
        fig = history_figure(hist, labels, ld.item_ids, titles, cfg.history_k)
        written += ["history.csv", os.path.basename(save(fig, str(stage / "history.png")))]
    # an earlier explanation's files this one does not write again would sit beside it as if they were its own
    stale = sorted(n for n in set(earlier) - set(written) - {"explanations.json"} if (out / n).is_file())
    doc["files"] = ["explanations.json", *written]
    write_atomic(stage / "explanations.json", json.dumps(doc, indent=2))  # each file whole or not at all
    for name in [*written, "explanations.json"]:  # the files, then the JSON that lists them
        os.replace(stage / name, out / name)
    for name in stale:  # after the new explanations.json, which no longer lists them
        (out / name).unlink(missing_ok=True)
    if stale:
        log.info(f"{out} held an earlier explanation: removed its {', '.join(stale)}, which this one does not write.")
    return ["explanations.json", *written]


def _remove_abandoned_stages(out: Path) -> None:
    """The hidden folders of explain.py runs into ``out`` that were killed (their process is gone)."""
    for folder in out.glob(".explain-*-*"):
        try:
            pid = int(folder.name.split("-")[1])
            os.kill(pid, 0)  # raises where no such process runs
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


_OUTPUT_PATTERNS = ("attributions.csv", "pairs.csv", "history.csv", "history.png", "group_shares.png", "evolution.png",
                    "heatmap_*_*.png")


def _earlier_outputs(out: Path) -> list[str]:
    """The files an earlier ``explain.py`` run wrote to ``out``: those its ``explanations.json`` lists, or, for
    one written before it listed them, the files of its names found there; none without an explanations.json
    of explain.py's own (with its settings, versions and checkpoints): a folder of other files is left alone."""
    doc = out / "explanations.json"
    if not doc.is_file():
        return []
    try:
        earlier = json.loads(doc.read_text())
    except (ValueError, OSError):
        return []
    if not isinstance(earlier, dict) or not {"settings", "versions", "checkpoints"} <= set(earlier):
        return []  # another tool's explanations.json: its folder is left alone
    listed = earlier.get("files")
    if isinstance(listed, list):
        return [str(f) for f in listed if isinstance(f, str) and "/" not in f and "\\" not in f and f not in ("", ".", "..")]
    return sorted({p.name for pattern in _OUTPUT_PATTERNS for p in out.glob(pattern)})


HEATMAP_PAIRS = 100  # rows of a heatmap (pairs); the CSV and JSON hold every pair


def _pair_labels(meta: pd.DataFrame, shorten) -> list[str]:
    """``196 x 216 When Harry Met Sally... (1989)``: ids, then the title shortened at a word boundary."""
    return [f"{r.user_id} x {r.item_id}" + (f" {shorten(r.item_name, 44)}" if r.item_name else "") for r in meta.itertuples()]


def _evolution_figure(pairs: pd.DataFrame, partitions: list[list[str]], names: Optional[dict] = None):
    """Per partition (user vs item; GMF vs MLP), the first group's share per pair and method across the
    checkpoints: one line each, in styles that stay visible where lines coincide."""
    import matplotlib.pyplot as plt

    from .plots import _group, _lines, _partition_label

    parts = [p for p in partitions if f"share_{p[0]}" in pairs]
    # one run's checkpoints along its epochs; checkpoints of several runs side by side, in the order given
    runs = pairs["run_id"].nunique(dropna=False) > 1 if "run_id" in pairs else False
    order = list(dict.fromkeys(pairs["checkpoint_path"])) if runs and "checkpoint_path" in pairs else None
    x_of = (lambda g: g["checkpoint_path"].map(order.index)) if order else (lambda g: g["epoch"])
    fig, axes = plt.subplots(1, len(parts), figsize=(7 * len(parts), 4.6), squeeze=False, layout="constrained")
    for ax, part in zip(axes[0], parts):
        col, part = f"share_{part[0]}", [f"share_{g}" for g in part]
        series = []
        for (method, pair), g in pairs.groupby(["method", "pair"]):
            g = g.assign(_x=x_of(g)).sort_values("_x")
            series.append((f"{method}: {names.get(pair, f'pair {pair}') if names else f'pair {pair}'}", g["_x"], g[col]))
        _lines(ax, series, f"{_group(col)} share of the |group totals| ({_partition_label(part)}: the shares add up to 1) "
                           f"across checkpoints", "share",
               xlabel="checkpoint (run, file, epoch)" if order else "epoch of the checkpoint")
        if order:  # checkpoints of several runs: no line joins one run's model to another's
            for line in ax.get_lines():
                line.set_linestyle("none")
                if line.get_marker() in ("None", "", None):
                    line.set_marker("o")
            first = pairs.drop_duplicates("checkpoint_path").set_index("checkpoint_path")
            ax.set_xticks(range(len(order)), [f"{str(first.loc[c, 'run_id'])[:6]}/{Path(c).name}\nepoch "
                                              f"{first.loc[c, 'epoch']}" for c in order], fontsize=7)
        ax.set_ylim(0, 1)
        if ax.get_legend():
            ax.legend(fontsize=6)
    return fig
