"""Attribution results as long-form tables (pandas), shared by the callback record and explain.py."""
from __future__ import annotations

from itertools import combinations
from typing import Mapping, Optional

import numpy as np
import pandas as pd
import torch

from .core import Attribution, spearman

__all__ = ["agreement", "stability", "dims_frame", "pairs_frame"]


def agreement(attrs: Mapping[str, Attribution]) -> dict[tuple[str, str], torch.Tensor]:
    """Per-pair Spearman correlation over embedding dimensions between every two dimension-level methods,
    ``{(m1, m2): [B]}``. A group-level method (exact Shapley) is compared with nothing: over a handful of
    embedding totals the complete methods rank alike by construction, so such a figure cannot vary."""
    out = {}
    for a, b in combinations(list(attrs), 2):
        if attrs[a].dims is not None and attrs[b].dims is not None:
            out[(a, b)] = spearman(attrs[a].features, attrs[b].features, _either(attrs[a].inactive, attrs[b].inactive))
    return out


def _either(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if a is None or b is None:
        return a if b is None else b
    return a | b


def stability(prev: Optional[tuple[torch.Tensor, Optional[torch.Tensor]]], cur: torch.Tensor,
              ignore: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-pair Spearman correlation with the previous epoch's features (``prev``: ``(features, inactive)``;
    NaN without one); dimensions whose input is at the baseline at either epoch (:attr:`Attribution.inactive`)
    are left out, as in :mod:`explain.evolution`'s ``dims_spearman``."""
    if prev is None or prev[0].shape != cur.shape:
        return torch.full((cur.shape[0],), float("nan"))
    masks = [m for m in (ignore, prev[1]) if m is not None and m.shape == cur.shape]
    return spearman(prev[0], cur, _either(*masks) if len(masks) == 2 else (masks[0] if masks else None))


def _repeat_meta(pairs_meta: pd.DataFrame, method: str, repeats: int) -> dict:
    """``pairs_meta``'s columns with every row repeated ``repeats`` times, after a ``method`` column
    (``take`` on the columns' own arrays: their dtypes kept, no per-row Python objects)."""
    rows = np.repeat(np.arange(len(pairs_meta)), repeats)
    cols = {"method": _constant(method, len(rows))}
    for c in pairs_meta.columns:
        cols[c] = pairs_meta[c].array.take(rows)
    return cols


def _constant(value, n: int):
    """A column holding ``value`` ``n`` times, with the dtype pandas infers for ``value``."""
    return pd.Series([value]).array.take(np.zeros(n, dtype=np.int64))


def _frame(columns: list[dict], epoch: Optional[int]) -> pd.DataFrame:
    """One frame from per-method column dicts (a column a method lacks is NaN there), ``epoch`` first."""
    if not columns:
        return pd.DataFrame()
    out = pd.concat([pd.DataFrame(cols) for cols in columns], ignore_index=True)
    if epoch is not None:
        out.insert(0, "epoch", epoch)
    return out


def dims_frame(attrs: Mapping[str, Attribution], pairs_meta: pd.DataFrame, epoch: Optional[int] = None) -> pd.DataFrame:
    """One row per method x pair x embedding x dimension. ``pairs_meta`` has one row per pair (``pair``,
    ``user_id``, ``item_id``, ...), in the order the pairs were attributed."""
    columns = []
    b = len(pairs_meta)
    for method, a in attrs.items():
        if a.dims is None:
            continue
        at_base = torch.split(a.inactive, [t.shape[1] for t in a.dims], 1) if a.inactive is not None else None
        for k, (name, t) in enumerate(zip(a.embedding_names, a.dims)):
            d = t.shape[1]
            cols = _repeat_meta(pairs_meta, method, d)
            cols["embedding"] = _constant(name, b * d)
            cols["dim"] = np.tile(np.arange(d), b)
            cols["attribution"] = t.reshape(-1).numpy()
            if at_base is not None:  # the input is at the baseline here: nothing worth ranking
                cols["at_baseline"] = at_base[k].reshape(-1).numpy()
            columns.append(cols)
    if not columns:  # per-group methods only (exact Shapley): the columns without rows, one schema for every file
        cols = _repeat_meta(pairs_meta, "", 0)
        cols.update(embedding=np.array([], dtype=object), dim=np.array([], dtype=np.int64),
                    attribution=np.array([], dtype=np.float32))
        columns.append(cols)
    return _frame(columns, epoch)


def pairs_frame(attrs: Mapping[str, Attribution], pairs_meta: pd.DataFrame, epoch: Optional[int] = None,
                faith: Optional[Mapping[str, Mapping[str, torch.Tensor]]] = None,
                stab: Optional[Mapping[str, torch.Tensor]] = None,
                agree: Optional[Mapping[tuple[str, str], torch.Tensor]] = None) -> pd.DataFrame:
    """One row per method x pair with predictions, completeness, group totals and shares, and (when
    given) faithfulness, stability and agreement columns."""
    columns = []
    b = len(pairs_meta)
    for method, a in attrs.items():
        f = _repeat_meta(pairs_meta, method, 1)
        f["prediction"] = a.prediction.numpy()
        f["score"] = torch.sigmoid(a.prediction).numpy()
        f["baseline_prediction"] = a.baseline_prediction.numpy()
        f["completeness_gap"] = a.completeness_gap.numpy()
        f["convergence_delta"] = a.convergence_delta.numpy() if a.convergence_delta is not None else np.full(b, np.nan)
        if a.samples is not None:  # sampling methods: what they drew (and, drawn until stable, the agreement reached)
            f["samples"] = a.samples.numpy()
            f["sample_stability"] = a.stability.numpy() if a.stability is not None else np.full(b, np.nan)
        for k, name in enumerate(a.embedding_names):
            f[f"total_{name}"] = a.embedding_totals[:, k].numpy()
        for g, v in a.groups.items():
            f[f"group_{g}"] = v.numpy()
        for g, v in a.shares.items():
            f[f"share_{g}"] = v.numpy()
        if faith and method in faith:
            for k, v in faith[method].items():
                f[k] = v.numpy()
        if stab is not None and method in stab:
            f["stability"] = stab[method].numpy()
        if agree:
            for (m1, m2), v in agree.items():
                if method in (m1, m2):
                    f[f"agreement_{m2 if method == m1 else m1}"] = v.numpy()
        columns.append(f)
    return _frame(columns, epoch)
