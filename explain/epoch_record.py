"""What one recorded epoch holds, as pure functions of the model, the probe set and the previous record.

:class:`~explain.callback.AttributionCallback` schedules these, logs their scalars and writes their frames
(:mod:`explain.record`); nothing here reads a trainer or a file.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import pandas as pd
import torch

from .core import Attribution, Target, attribute, explaining
from .faithfulness import COLUMNS as FAITH_COLUMNS, faithfulness
from .tables import agreement, dims_frame, pairs_frame, stability

__all__ = ["attribute_probe", "probe_faithfulness", "epoch_frames", "val_metrics", "history_frame", "logged_metrics"]

VAL_METRICS = ("val_ndcg10", "val_hr10")


def _probe_tensors(net: torch.nn.Module, probe: dict[str, list]) -> tuple[torch.Tensor, torch.Tensor]:
    dev = next(net.parameters()).device
    return torch.tensor(probe["user_index"], device=dev), torch.tensor(probe["item_index"], device=dev)


def attribute_probe(net: torch.nn.Module, probe: dict[str, list], settings: dict[str, dict], baseline: str,
                    seed: int, backend: str) -> dict[str, Attribution]:
    """Every method's attribution of the probe set (``settings``: per method), on the CPU."""
    users, items = _probe_tensors(net, probe)
    target = Target.build(net, users, items, baseline)
    return {m: attribute(net, users, items, m, baseline, seed, target=target, backend=backend, **s).cpu()
            for m, s in settings.items()}


def probe_faithfulness(net: torch.nn.Module, probe: dict[str, list], attrs: dict[str, Attribution],
                       seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Each method's faithfulness figures on the probe set (:func:`explain.faithfulness.faithfulness`), on the CPU."""
    users, items = _probe_tensors(net, probe)
    return {m: {k: v.cpu() for k, v in faithfulness(net, users, items, a, seed=seed).items()} for m, a in attrs.items()}


def epoch_frames(attrs: dict[str, Attribution], meta: pd.DataFrame, epoch: int, faith: Optional[dict],
                 previous: dict[str, tuple], faithfulness_columns: bool, val: dict[str, float]
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The epoch's ``(dims, pairs)`` frames: attributions, stability against the ``previous`` recorded epoch's
    ``(features, inactive)``, agreement between methods, faithfulness (``faith``; with ``faithfulness_columns``
    its columns are there, NaN, at epochs that skip it, so every epoch file has one schema) and the validation
    metrics."""
    stab = {m: stability(previous.get(m), a.features, a.inactive) for m, a in attrs.items()}
    agree = agreement(attrs)
    dims = dims_frame(attrs, meta, epoch)
    pairs = pairs_frame(attrs, meta, epoch, faith, stab, agree)
    if faithfulness_columns:
        for col in FAITH_COLUMNS:
            if col not in pairs:
                pairs[col] = float("nan")
    for name, value in val.items():  # accuracy beside the explanations, per epoch
        pairs[name] = value
    return dims, pairs


def val_metrics(logged: Mapping, epoch: int, before: Optional[pd.DataFrame] = None) -> dict[str, float]:
    """The validation metrics ``logged`` this epoch (NaN before training, or without validation). An epoch
    that Lightning closes again after a resume, without validating again, keeps the values of its first
    record (``before``: that epoch's pairs frame, if it was recorded)."""
    out = {}
    for name in VAL_METRICS:
        v = logged.get(name) if epoch >= 0 else None
        out[name] = float(v) if v is not None else float("nan")
    if epoch >= 0 and all(v != v for v in out.values()) and before is not None:
        out = {k: float(before[k].iloc[0]) if k in before and len(before) else v for k, v in out.items()}
    return out


def history_frame(net: torch.nn.Module, split, interactions, probe: dict[str, list], epoch: int, lr: float,
                  pretraining: Optional[Sequence] = None, previous: Optional[pd.DataFrame] = None,
                  recent: tuple[int, int] = (0, 1)) -> pd.DataFrame:
    """This epoch's TracIn term of each probe pair's user interactions (``lr``: the rate the epoch trained
    at), and the running total from the ``previous`` recorded history frame. At epoch -1 of a pretrained
    NeuMF (``pretraining``: its GMF and MLP runs' epochs, :func:`explain.history.pretraining_of`): the sum over
    those epochs (``contribution_gmf`` and ``contribution_mlp`` apart), where its embeddings were learned; the
    running total starts there. ``recent``: the run's ``(recent_positives, recent_weight)``: an interaction
    drawn ``recent_weight`` times an epoch contributes that many steps' terms."""
    from ncf.splits import train_draws

    from .history import EpochModel, tracin

    dev = next(net.parameters()).device
    train_u, train_i = split.train_users.to(dev), split.train_items.to(dev)
    every = train_draws(split, *recent)  # None: each row drawn once an epoch
    weighted = every is not None
    pair_of_row, rows_i, draws = [], [], []
    for p, u in enumerate(probe["user_index"]):
        mine = train_u == u
        pair_of_row.append(torch.full_like(train_i[mine], p))
        rows_i.append(train_i[mine])
        if weighted:
            draws.append(every[mine.cpu()])
    pair_of_row, rows_i = torch.cat(pair_of_row), torch.cat(rows_i)
    users, items = _probe_tensors(net, probe)
    stages = {}
    if epoch < 0:
        pair_of_row, rows_i, users, items = pair_of_row.cpu(), rows_i.cpu(), users.cpu(), items.cpu()
        term = tracin(pretraining, users[pair_of_row], rows_i, users, items)[:, pair_of_row, torch.arange(len(rows_i))]
        for stage in dict.fromkeys(m.stage for m in pretraining):
            stages[f"contribution_{stage}"] = term[torch.tensor([m.stage == stage for m in pretraining])].sum(0)
        contribution, lr = term.sum(0), float("nan")
    else:
        with explaining(net):  # eval mode (no dropout), gradients on
            term = tracin([EpochModel(epoch, net, lr)], users[pair_of_row], rows_i, users, items)[0]
        contribution = term[pair_of_row, torch.arange(len(rows_i), device=dev)].cpu()
        if weighted:  # the run's own epochs drew its recent interactions more often
            contribution = contribution * torch.cat(draws).to(contribution.dtype)
    pair_of_row, rows_i = pair_of_row.cpu(), rows_i.cpu()
    frame = pd.DataFrame({"epoch": epoch, "pair": pair_of_row.numpy(),
                          "user_id": [probe["user_id"][p] for p in pair_of_row.tolist()],
                          "item_id": [probe["item_id"][p] for p in pair_of_row.tolist()],
                          "history_item_id": [interactions.item_ids[i] for i in rows_i.tolist()]})
    if "user_name" in probe:
        frame.insert(3, "user_name", [probe["user_name"][p] for p in pair_of_row.tolist()])
    if interactions.item_titles:
        frame["history_item_name"] = [interactions.item_titles[i] for i in rows_i.tolist()]
    frame["lr"] = lr
    frame["contribution"] = contribution.numpy()
    for col, values in stages.items():
        frame[col] = values.numpy()
    running = frame["contribution"].to_numpy().copy()
    if previous is not None:
        before = previous[["pair", "history_item_id", "running_total"]]
        merged = frame[["pair", "history_item_id"]].merge(before, how="left", on=["pair", "history_item_id"])
        running += merged["running_total"].fillna(0.0).to_numpy()
    frame["running_total"] = running
    return frame


def logged_metrics(pairs: pd.DataFrame, epoch: int, seconds: float) -> dict[str, float]:
    """The scalars logged per recorded epoch: per method, the mean group shares, the largest completeness gap,
    the median stability and agreements and the mean faithfulness; the epoch and the seconds it took."""
    metrics: dict[str, float] = {}
    for m, g in pairs.groupby("method"):
        for col in g.columns:
            if col.startswith("share_"):
                metrics[f"attr/{m}/{col}"] = float(g[col].mean())
        metrics[f"attr/{m}/completeness_gap_max"] = float(g["completeness_gap"].max())
        for col in ("stability", "deletion_gain", "insertion_gain", "infidelity"):
            if col in g and g[col].notna().any():
                metrics[f"attr/{m}/{col}"] = float(g[col].median() if col == "stability" else g[col].mean())
        for col in g.columns:
            if col.startswith("agreement_"):
                metrics[f"attr/{m}/{col}"] = float(g[col].median())
    metrics["attr/epoch"] = float(epoch)
    metrics["attr/seconds"] = float(seconds)
    return metrics
