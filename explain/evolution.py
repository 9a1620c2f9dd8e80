"""How explanations evolve over a run: pure functions over an attribution record (:mod:`explain.record`).

The callback records; this module answers the questions asked of a record, as data frames:

* **When do explanations settle?** :func:`similarity_to_final` gives, per pair and epoch, the similarity of
  the pair's explanation to its final-epoch one, in up to three measures, and :func:`settle_epoch` the first
  epoch after which the median similarity stays at or above a threshold (:data:`SETTLE_THRESHOLD`), to set beside
  :func:`best_val_epoch`.
* **Are the explanations about the model at all?** :func:`randomisation_check`: the untrained model's (epoch
  -1) explanations against the final ones (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).
  A trained model's explanations should differ from a random one's: a high rank correlation means the
  method shows the input or the architecture, not what was learned.
* **Which pairs change, and when?** :func:`flips` (epochs where a pair's top-k dimensions or top-k history
  items change), :func:`bands` (quartiles per epoch), :func:`changing_pairs`.

The measures of similarity to the final epoch:

``totals_cosine`` (basis-free)
    cosine between the pair's per-embedding attribution totals (user/item, and GMF/MLP branch for NeuMF) at
    the epoch and at the final epoch. A total is the sum of an embedding's dimensions, which for the additive
    methods (DeepLift, IG) is the attribution of the whole embedding: it does not depend on the embedding's
    basis. The MLP's first layer absorbs any invertible map of an embedding (rotate the embeddings, counter-
    rotate the layer: the same scores), and GMF's product any signed permutation of its dimensions; the
    totals are unchanged by either (tested), the per-dimension attributions are not.
``dims_spearman`` (basis-dependent)
    per-pair Spearman rank correlation over embedding dimensions (dimensions at the baseline left out). Across
    epochs it mixes a change of basis with a change of explanation: read it as an upper bound on how much
    the dimensions' roles persist, never as proof that the explanation changed.
``history_spearman`` (basis-free; records made with ``history=True``)
    Spearman rank correlation, over the user's own training interactions, of their accumulated TracIn
    influence on the pair (``running_total``) at the epoch and at the final epoch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from . import record as rec
from .record import Record
from .stats import spearman

__all__ = ["SETTLE_THRESHOLD", "MEASURES", "dims_matrix", "similarity_to_final", "measures_in", "settle_epoch",
           "best_val_epoch", "val_metrics", "run_validation", "randomisation_check", "flips", "history_flips", "bands", "changing_pairs",
           "evolution_table", "write_evolution"]

SETTLE_THRESHOLD = 0.9
MEASURES = {"totals_cosine": "per-embedding totals, cosine (basis-free)",
            "history_spearman": "history influence over the user's items, Spearman (basis-free)",
            "dims_spearman": "per-dimension Spearman (depends on the latent basis)"}


def dims_matrix(dims: pd.DataFrame, method: str, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """``(attributions [pairs, D], at_baseline [pairs, D])`` of one method at one epoch, pairs in order,
    embeddings in model order.

    >>> d = pd.DataFrame({"epoch": 0, "method": "m", "pair": [0, 0, 1, 1], "embedding": "u", "dim": [0, 1, 0, 1],
    ...                   "attribution": [1., 2., 3., 4.]})
    >>> dims_matrix(d, "m", 0)[0].tolist()
    [[1.0, 2.0], [3.0, 4.0]]
    """
    d = dims[(dims["method"] == method) & (dims["epoch"] == epoch)]
    order = {e: k for k, e in enumerate(pd.unique(d["embedding"]))}
    d = d.assign(_e=d["embedding"].map(order)).sort_values(["pair", "_e", "dim"], kind="stable")
    n = d["pair"].nunique()
    values = d["attribution"].to_numpy(dtype=np.float64, copy=True).reshape(n, -1)
    base = d["at_baseline"].to_numpy(dtype=bool, copy=True).reshape(n, -1) if "at_baseline" in d \
        else np.zeros_like(values, bool)
    return values, base


def _totals(pairs: pd.DataFrame, method: str) -> dict[int, np.ndarray]:
    p = pairs[pairs["method"] == method].sort_values(["epoch", "pair"])
    cols = [c for c in p.columns if c.startswith("total_")]
    return {int(e): g[cols].to_numpy(dtype=np.float64) for e, g in p.groupby("epoch")}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = (a * b).sum(1)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1e-300), np.nan)


def _history_spearman(history: pd.DataFrame, final: int) -> pd.DataFrame:
    """Per (epoch, pair): Spearman of running_total over the user's items against the final epoch's."""
    h = history[["epoch", "pair", "history_item_id", "running_total"]]
    last = h[h["epoch"] == final].rename(columns={"running_total": "_final"}).drop(columns="epoch")
    out = []
    for e, g in h.groupby("epoch"):
        m = g.merge(last, on=["pair", "history_item_id"], how="inner").sort_values(["pair", "history_item_id"])
        for p, gp in m.groupby("pair"):
            rho = spearman(torch.tensor(gp["running_total"].to_numpy()[None]), torch.tensor(gp["_final"].to_numpy()[None]))
            out.append((int(e), int(p), float(rho[0])))
    return pd.DataFrame(out, columns=["epoch", "pair", "history_spearman"])


def similarity_to_final(r: Record, method: Optional[str] = None) -> pd.DataFrame:
    """One row per (epoch, pair): each pair's similarity to its own final-epoch explanation (see the module
    doc for the measures; a measure the record cannot give is left out).

    >>> pairs = pd.DataFrame({"epoch": [-1, 0, 1], "method": "m", "pair": 0,
    ...                       "total_user": [1., 1., 2.], "total_item": [-1., 2., 4.]})
    >>> r = Record(Path("."), {"methods": ["m"]}, pairs, pd.DataFrame(columns=["epoch", "method", "pair"]))
    >>> similarity_to_final(r)["totals_cosine"].round(3).tolist()
    [-0.316, 1.0, 1.0]
    """
    method = method or r.method
    key = ("similarity", method)
    if key not in r._cache:
        r._cache[key] = _similarity_to_final(r, method)
    return r._cache[key].copy()


def _similarity_to_final(r: Record, method: str) -> pd.DataFrame:
    epochs = r.epochs
    if not epochs:
        return pd.DataFrame(columns=["epoch", "pair"])
    final = epochs[-1]
    tot = _totals(r.pairs, method)
    frames = []
    for e in epochs:
        if e not in tot:
            continue
        f = pd.DataFrame({"epoch": e, "pair": np.arange(len(tot[e]))})
        f["totals_cosine"] = _cosine(tot[e], tot[final])
        frames.append(f)
    out = pd.concat(frames, ignore_index=True)
    mats = r.matrices(method)
    if final in mats:
        want, want_base = mats[final]
        rho = {}
        for e in epochs:
            if e not in mats:
                continue
            cur, base = mats[e]
            if cur.shape == want.shape:
                rho[e] = spearman(torch.from_numpy(cur), torch.from_numpy(want),
                                  torch.from_numpy(base | want_base)).numpy()
        out["dims_spearman"] = [float(rho[e][p]) if e in rho else np.nan for e, p in zip(out["epoch"], out["pair"])]
    if len(r.history):
        hist_final = int(r.history["epoch"].max())
        out = out.merge(_history_spearman(r.history, hist_final), on=["epoch", "pair"], how="left")
    return out


def coincide(r: Record, a: str, b: str) -> bool:
    """Whether methods ``a`` and ``b`` gave the same per-dimension attributions (to float rounding) for every
    pair at every recorded epoch: on some models two methods compute the same thing (DeepLift and IG on GMF,
    whose logit is a sum of products of one user and one item value), and their agreement is then 1 by
    construction, not a measurement."""
    ma, mb = r.matrices(a), r.matrices(b)
    if not ma or set(ma) != set(mb):
        return False
    for e, (va, _) in ma.items():
        vb = mb[e][0]
        if va.shape != vb.shape or not np.allclose(va, vb, rtol=1e-4, atol=1e-6 * max(np.abs(va).max(), 1e-12)):
            return False
    return True


def fixed_totals(r: Record) -> bool:
    """Whether every pair's per-embedding totals point the same way (up to sign) at every recorded epoch, for
    the method the evolution reads: then group shares and ``totals_cosine`` are fixed by the model and
    baseline, not measured (GMF with a zero baseline gives the user and the item half of every product)."""
    p = r.pairs[r.pairs["method"] == r.method] if len(r.pairs) else r.pairs
    cols = [c for c in p.columns if c.startswith("total_")]
    if len(p) < 2 or len(cols) < 2:
        return False
    t = np.abs(p[cols].to_numpy(dtype=np.float64))
    norm = np.linalg.norm(t, axis=1, keepdims=True)
    t = t[norm[:, 0] > 0] / norm[norm[:, 0] > 0]
    return len(t) > 1 and float((t.max(0) - t.min(0)).max()) < 1e-4


def measures_in(sim: pd.DataFrame) -> list[str]:
    """The similarity columns a frame holds, basis-free ones first."""
    return [m for m in MEASURES if m in sim.columns and sim[m].notna().any()]


def settle_epoch(sim: pd.DataFrame, column: str = "totals_cosine", threshold: float = SETTLE_THRESHOLD) -> Optional[int]:
    """The first recorded epoch from which the median over pairs of ``column`` stays ``>= threshold`` at every
    later recorded epoch before the final one (the final epoch is 1 by construction, so it cannot settle
    anything). Epoch -1 counts: a pretrained model's explanations may be settled before training (-1). None:
    not settled before the final epoch, or a frame without that column or two recorded epochs.

    >>> sim = pd.DataFrame({"epoch": [-1, 0, 1, 2, 3], "pair": 0, "totals_cosine": [0.1, 0.95, 0.8, 0.92, 1.0]})
    >>> settle_epoch(sim), settle_epoch(sim.assign(totals_cosine=[0.95, 0.95, 0.96, 0.92, 1.0]))
    (2, -1)
    """
    if column not in sim.columns:
        return None
    med = sim.groupby("epoch")[column].median().sort_index().iloc[:-1]
    if med.empty or med.isna().all():
        return None
    settled = None
    for e, v in med.items():
        if v >= threshold:
            settled = int(e) if settled is None else settled
        else:
            settled = None
    return settled


def val_metrics(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per recorded epoch: the validation metrics the run logged at that epoch (``val_*`` columns)."""
    cols = [c for c in pairs.columns if c.startswith("val_")]
    if not cols:
        return pd.DataFrame(columns=["epoch"])
    return pairs.groupby("epoch", sort=True)[cols].first().reset_index()


def run_validation(r) -> pd.DataFrame:
    """A record's validation metrics per epoch: every epoch the run validated, as the manifest keeps them
    (``validation``, written at each record, so a killed run's too), else those of the recorded epochs (records
    older than it)."""
    kept = r.manifest.get("validation")
    if isinstance(kept, dict) and kept:
        rows = [{"epoch": int(e), **{k: float(v) for k, v in m.items() if isinstance(v, (int, float))}}
                for e, m in kept.items() if isinstance(m, dict) and str(e).lstrip("-").isdigit()]
        if rows:
            return pd.DataFrame(rows).sort_values("epoch", kind="stable").reset_index(drop=True)
    return val_metrics(r.pairs) if len(r.pairs) else pd.DataFrame(columns=["epoch"])


def best_val_epoch(pairs: pd.DataFrame, metric: str = "val_ndcg10") -> Optional[int]:
    """The recorded epoch with the highest validation ``metric`` (the first of ties), None without it.

    >>> best_val_epoch(pd.DataFrame({"epoch": [0, 1, 2], "val_ndcg10": [0.3, 0.5, 0.5]}))
    1
    """
    v = val_metrics(pairs)
    if metric not in v or v[metric].isna().all():
        return None
    return int(v.loc[v[metric].idxmax(), "epoch"])


def randomisation_check(sim: pd.DataFrame) -> dict[str, float]:
    """Median over pairs of each similarity measure between epoch -1 (the model before training) and the final
    epoch: the model-randomisation check. Near 0 (or below): the explanations reflect what training learned.

    >>> randomisation_check(pd.DataFrame({"epoch": [-1, -1, 3, 3], "pair": [0, 1, 0, 1],
    ...                                   "dims_spearman": [0.1, -0.1, 1., 1.]}))
    {'dims_spearman': 0.0}
    """
    before = sim[sim["epoch"] == -1]
    if not (sim["epoch"] >= 0).any():  # nothing trained recorded yet: epoch -1 would be compared with itself
        return {}
    return {m: float(before[m].median()) for m in measures_in(sim) if len(before) and before[m].notna().any()}


def _topk_sets(values: np.ndarray, k: int) -> list[frozenset]:
    idx = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k]
    return [frozenset(row.tolist()) for row in idx]


def flips(r: Record, k: int = 5, method: Optional[str] = None) -> pd.DataFrame:
    """One row per (epoch, pair) from the second recorded epoch on: ``flip_dims`` is True where the pair's top-k
    dimensions by |attribution| differ from the previous recorded epoch's (as a set); with a history record,
    ``flip_history`` likewise for its top-k history items by accumulated influence.

    >>> d = pd.DataFrame({"epoch": [0, 0, 1, 1], "method": "m", "pair": 0, "embedding": "u", "dim": [0, 1, 0, 1],
    ...                   "attribution": [1., 0., 0., 1.]})
    >>> r = Record(Path("."), {"methods": ["m"]}, pd.DataFrame({"epoch": [0, 1], "method": "m", "pair": 0}), d)
    >>> flips(r, k=1)["flip_dims"].tolist()
    [True]
    """
    method = method or r.method
    key = ("flips", method, k)
    if key not in r._cache:
        r._cache[key] = _flips(r, method, k)
    return r._cache[key].copy()


def _flips(r: Record, method: str, k: int) -> pd.DataFrame:
    epochs = r.epochs
    rows = []
    mats = r.matrices(method)
    if mats:
        prev = None
        for e in epochs:
            if e not in mats:
                continue
            cur = _topk_sets(mats[e][0], k)
            if prev is not None and len(prev) == len(cur):
                rows += [(e, p, a != b) for p, (a, b) in enumerate(zip(prev, cur))]
            prev = cur
    out = pd.DataFrame(rows, columns=["epoch", "pair", "flip_dims"])
    if len(r.history):
        hf = history_flips(r.history, k=min(k, 3))
        out = hf if out.empty else out.merge(hf, on=["epoch", "pair"], how="outer")
    return out


def history_flips(history: pd.DataFrame, k: int = 3) -> pd.DataFrame:
    """Per (epoch, pair) from the second history epoch on: whether the top-k history items by accumulated
    influence (``running_total``) differ from the previous history epoch's."""
    tops = {}
    for (e, p), g in history.groupby(["epoch", "pair"]):
        tops[(int(e), int(p))] = frozenset(g.nlargest(k, "running_total")["history_item_id"].tolist())
    epochs = sorted({e for e, _ in tops})
    rows = []
    for a, b in zip(epochs[:-1], epochs[1:]):
        for (e, p), s in tops.items():
            if e == b and (a, p) in tops:
                rows.append((b, p, s != tops[(a, p)]))
    return pd.DataFrame(rows, columns=["epoch", "pair", "flip_history"])


def bands(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per epoch: the quartiles of ``column`` over pairs (``q25``, ``median``, ``q75``).

    >>> bands(pd.DataFrame({"epoch": 0, "x": [0., 1., 2., 3., 4.]}), "x").iloc[0].tolist()
    [0.0, 1.0, 2.0, 3.0]
    """
    g = frame.groupby("epoch")[column]
    return pd.DataFrame({"q25": g.quantile(0.25), "median": g.median(), "q75": g.quantile(0.75)}).reset_index()


def changing_pairs(sim: pd.DataFrame, column: str, n: int = 5) -> list[int]:
    """The ``n`` pairs whose explanation stays furthest from the final one over the trained epochs (lowest
    mean similarity over epochs ``>= 0``).

    >>> changing_pairs(pd.DataFrame({"epoch": [0, 0, 1, 1], "pair": [0, 1, 0, 1], "x": [.9, .2, 1., 1.]}), "x", 1)
    [1]
    """
    s = sim[sim["epoch"] >= 0].groupby("pair")[column].mean().dropna().sort_values(kind="stable")
    return [int(p) for p in s.index[:n]]


def evolution_table(r: Record, sim: Optional[pd.DataFrame] = None, fl: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """One row per recorded epoch: quartiles of each similarity measure, the share of pairs that flipped,
    and the validation metrics."""
    sim = similarity_to_final(r) if sim is None else sim
    fl = flips(r) if fl is None else fl
    out = pd.DataFrame({"epoch": r.epochs, "method": r.method})
    for m in measures_in(sim):
        b = bands(sim, m).rename(columns={"q25": f"{m}_q25", "median": f"{m}_median", "q75": f"{m}_q75"})
        out = out.merge(b, on="epoch", how="left")
    for c in ("flip_dims", "flip_history"):
        if c in fl:
            out = out.merge(fl.groupby("epoch")[c].mean().rename(f"{c}_rate").reset_index(), on="epoch", how="left")
    return out.merge(val_metrics(r.pairs), on="epoch", how="left")


def write_evolution(folder: "str | os.PathLike | Record") -> Optional[pd.DataFrame]:
    """Write ``evolution.csv`` (per epoch) and ``evolution_pairs.parquet`` (per epoch and pair: similarity to
    the final epoch and flips) into a record folder (or a loaded :class:`Record`'s); returns the per-epoch
    table (None: nothing recorded). The final epoch is the last one recorded, so these files are rewritten
    whenever the record grows."""
    r = folder if isinstance(folder, Record) else Record.read(folder)
    folder = r.folder
    if not r.epochs:
        return None
    sim, fl = similarity_to_final(r), flips(r)
    per_pair = sim.merge(fl, on=["epoch", "pair"], how="left") if len(fl) else sim
    table = evolution_table(r, sim, fl)
    rec.write_parquet(Path(folder) / "evolution_pairs.parquet", per_pair)
    rec.write_atomic(Path(folder) / "evolution.csv", table.to_csv(index=False, float_format="%.6g"))
    return table
