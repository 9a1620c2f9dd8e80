"""History influence as people and programs read it: text ("recommended because you rated ..."), a long
table (one row per pair and training interaction), JSON entries and a figure."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from .history import STAGE_LABELS, HistoryInfluence

__all__ = ["history_frame", "render_history", "share_sentence", "top_k_signs", "history_json", "history_figure",
           "render_counterfactual", "counterfactual_json", "summarize_counterfactual"]


def _name(titles: Optional[list], ids: list, k: int) -> str:
    return titles[k] if titles else str(ids[k])


def _staged(h: HistoryInfluence) -> bool:
    """Whether the sum runs over more than one training run (a pretrained NeuMF's GMF, MLP and own epochs)."""
    return len(h.stage_names) > 1


def history_frame(hs: Sequence[HistoryInfluence], user_ids: list, item_ids: list,
                  titles: Optional[list], user_names: Optional[list] = None) -> pd.DataFrame:
    """One row per (explained pair, training interaction of its user), strongest proponent first; with
    several stages, ``influence_<stage>`` (e.g. ``influence_gmf``) holds each stage's part."""
    rows = []
    for p, h in enumerate(hs):
        infl = h.influence
        parts = {s: h.stage_influence(s) for s in h.stage_names} if _staged(h) else {}
        for rank, k in enumerate(h.order.tolist(), 1):
            item = int(h.items[k])
            rows.append({"pair": p, "user_id": user_ids[h.user],
                         **({"user_name": user_names[h.user]} if user_names else {}), "item_id": item_ids[h.item],
                         "item_name": _name(titles, item_ids, h.item), "history_rank": rank,
                         "history_item_id": item_ids[item], "history_item_name": _name(titles, item_ids, item),
                         "influence": float(infl[k]), "epochs": len(h.epochs),
                         **{f"influence_{s}": float(v[k]) for s, v in parts.items()}})
    return pd.DataFrame(rows)


def checkpoints_text(h: HistoryInfluence) -> str:
    """``14 epoch checkpoints``, or per stage: ``40 GMF + 20 MLP + 3 NeuMF epoch checkpoints``."""
    n = len(h.epochs)
    if not _staged(h):
        return f"{n} epoch checkpoint{'s' if n != 1 else ''}"
    counts = " + ".join(f"{h.stages.count(s)} {STAGE_LABELS.get(s, s)}" for s in h.stage_names)
    return f"{counts} epoch checkpoints"


def top_k_signs(h: HistoryInfluence, k: int) -> tuple[int, int]:
    """How many of the ``k`` most influential interactions raised the pair's score (proponents) and how
    many lowered it (opponents: a user with few interactions has some among the top ``k``)."""
    top = h.influence[h.order[:k]]
    return int((top > 0).sum()), int((top < 0).sum())


def share_sentence(h: HistoryInfluence, k: int) -> str:
    """What the top ``k`` hold, said so that it is true: the share of positive influence is held by the
    proponents among them, and opponents are named as such.

    >>> import torch
    >>> h = HistoryInfluence(0, 9, torch.tensor([1, 2, 3]), [0], torch.tensor([[0.3, -0.1, 0.1]]))
    >>> share_sentence(h, 3)
    'of these 3, the 2 that raised the score hold 100% of the positive influence of 3 interactions; 1 lowered it'
    >>> share_sentence(h, 1)
    'this 1 holds 75% of the positive influence of 3 interactions'
    """
    n = min(k, len(h.items))
    pro, con = top_k_signs(h, k)
    total = f"{len(h.items)} interaction{'s' if len(h.items) != 1 else ''}"
    if pro == 0:
        return f"none of the {total} raised the score"
    share = f"{100 * h.top_share(k):.0f}% of the positive influence of {total}"
    if pro == n:
        return f"this 1 holds {share}" if n == 1 else f"these {n} hold {share}"
    rest = f"; {con} lowered it" if con else ""
    return f"of these {n}, the {pro} that raised the score hold{'s' if pro == 1 else ''} {share}{rest}"


def render_history(h: HistoryInfluence, item_ids: list, titles: Optional[list], k: int) -> str:
    """The text block under a pair: among its ``k`` most influential interactions of the user's own, those
    that raised the score ("recommended because you rated"), then those that lowered it, each apart (and, with
    several stages, how much of each one's influence each stage gave); the pair's own item is marked."""
    order = h.order[:k].tolist()
    infl = h.influence
    parts = {s: h.stage_influence(s) for s in h.stage_names} if _staged(h) else {}

    def line(r: int, j: int) -> str:
        item = int(h.items[j])
        name = f'"{_name(titles, item_ids, item)}"'
        split = ", ".join(f"{STAGE_LABELS.get(s, s)} {float(v[j]):+.3g}" for s, v in parts.items())
        own = "  (this item: its own training raises its score)" if item == int(h.item) else ""
        return (f"    {r:>2}. {name:<50} (item {item_ids[item]})  influence {float(infl[j]):+.4g}"
                + (f"  ({split})" if split else "") + own)

    raised = [j for j in order if float(infl[j]) > 0]
    lowered = sorted((j for j in order if float(infl[j]) < 0), key=lambda j: float(infl[j]))  # most lowering first
    head = f"TracIn over {checkpoints_text(h)}; {share_sentence(h, k)}"
    lines = [f"  recommended because you rated ({head}):" if raised else f"  no interaction raised the score ({head})"]
    lines += [line(r, j) for r, j in enumerate(raised, 1)]
    if lowered:
        lines.append("  lowered it:")
        lines += [line(r, j) for r, j in enumerate(lowered, 1)]
    zero = sum(1 for j in order if float(infl[j]) == 0)
    if zero:
        lines.append(f"  {zero} of the {len(order)} most influential interaction{'s' * (len(order) > 1)} had no "
                     f"influence on it (0); not listed.")
    return "\n".join(lines)


def history_json(h: HistoryInfluence, item_ids: list, titles: Optional[list], k: int) -> dict:
    """``epochs[c]`` and ``stages[c]`` name checkpoint ``c`` of each interaction's ``per_epoch``; with
    several stages, ``per_stage`` sums each stage's terms."""
    infl = h.influence
    parts = {s: h.stage_influence(s) for s in h.stage_names} if _staged(h) else {}
    return {
        "method": "tracin_embeddings", "epochs": h.epochs, "stages": h.stages, "top_k": k, "top_k_share": h.top_share(k),
        "top_k_proponents": top_k_signs(h, k)[0], "top_k_opponents": top_k_signs(h, k)[1],
        "interactions": [
            {"item_id": _prim(item_ids[int(h.items[j])]), "item_name": _name(titles, item_ids, int(h.items[j])),
             "influence": float(infl[j]), "per_epoch": [float(x) for x in h.per_epoch[:, j]],
             **({"per_stage": {s: float(v[j]) for s, v in parts.items()}} if parts else {})}
            for j in h.order.tolist()
        ],
    }


def render_counterfactual(c, k: int, epochs: int) -> str:
    """The counterfactual check under a pair's history block."""
    lines = [f"  counterfactual (fine-tuned {epochs} epoch{'s' if epochs != 1 else ''} from this checkpoint; as trained: logit "
             f"{c.logit['original']:+.3f}, rank {c.rank['original']}):"]
    n_top, n_random = len(c.removed_top), len(c.removed_random)  # fewer than k where the user has fewer
    for arm, what in (("control", "nothing removed"), ("top", f"top {n_top} removed"),
                      ("random", f"{n_random} random removed")):
        vs = f" ({_signed(c.logit[arm] - c.logit['control'])} vs nothing removed)" if arm != "control" else ""
        lines.append(f"    {what:<18} logit {c.logit[arm]:+.3f}{vs}  rank {c.rank[arm]}")
    if not has_control(c):
        lines.append(f"    (the user has only these {n_top} interactions: the random arm removes the same ones, "
                     f"so there is no control)")
    return "\n".join(lines)


def has_control(c) -> bool:
    """Whether the random arm removed other interactions than the top arm (not when the user has at most k)."""
    return set(c.removed_random) != set(c.removed_top)


def summarize_counterfactual(cfs, k: int) -> str:
    """One line over many pairs: mean logit drops against the fine-tune with nothing removed, over the pairs
    whose random arm is a control (their user has more than ``k`` interactions)."""
    kept = [c for c in cfs if has_control(c)]
    left = len(cfs) - len(kept)
    note = (f" ({left} pair{'s' if left != 1 else ''} left out: {'their users have' if left != 1 else 'its user has'} "
            f"at most {k} interactions, so no random control)") if left else ""
    if not kept:
        return f"counterfactual over {len(cfs)} pair{'s' if len(cfs) != 1 else ''}: none has a random control{note}."
    top = sum(c.drop_top for c in kept) / len(kept)
    rand = sum(c.drop_random for c in kept) / len(kept)
    wins = sum(c.drop_top > c.drop_random for c in kept)
    return (f"counterfactual over {len(kept)} pairs: removing the top {k} changes the logit by {_signed(-top)} on "
            f"average, {k} random by {_signed(-rand)} (against nothing removed); the top {k} lower it more in {wins} of "
            f"{len(kept)} pairs{note}.")


def _signed(v: float) -> str:
    """``+0.345``; a change that rounds to zero at 3 decimals in scientific notation (``-3.1e-05``), not ``-0.000``."""
    text = f"{v:+.3f}"
    return f"{v:+.1e}" if text in ("+0.000", "-0.000") and v != 0 else text


def counterfactual_json(c, item_ids: list, epochs: int) -> dict:
    return {"finetune_epochs": epochs, "optimizer": c.optimizer, "logit": c.logit, "rank": c.rank,
            "drop_top": c.drop_top,
            "drop_random": c.drop_random, "removed_top": [_prim(item_ids[i]) for i in c.removed_top],
            "removed_random": [_prim(item_ids[i]) for i in c.removed_random]}


def _prim(v):
    return v.item() if hasattr(v, "item") else v


def history_figure(hs: Sequence[HistoryInfluence], labels: list[str], item_ids: list, titles: Optional[list],
                   k: int, max_pairs: int = 6):
    """Per pair: the top-``k`` proponents' influence accumulating over the epoch checkpoints."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from .plots import line_styles, shorten, wrap

    hs = list(hs)[:max_pairs]
    shown = min(k, MAX_LINES)  # lines a reader can tell apart; every interaction is in history.csv
    fig, axes = plt.subplots(len(hs), 1, figsize=(9, 2.8 * len(hs)), squeeze=False, layout="constrained")
    for ax, h, label in zip(axes[:, 0], hs, labels):
        running = h.per_epoch.cumsum(0).numpy()
        # several stages (a pretrained NeuMF): the checkpoints one after another, GMF's, MLP's, then NeuMF's
        x = list(range(len(h.epochs))) if _staged(h) else h.epochs
        top = h.order[:shown].tolist()
        for j, style in zip(top, line_styles(len(top))):
            name = _name(titles, item_ids, int(h.items[j]))
            ax.plot(x, running[:, j], label=shorten(name, 44), **style)
        others = np.delete(running, h.order[:shown].numpy(), axis=1)
        if others.size:
            ax.plot(x, others.max(1), color="grey", ls=":", lw=1.5, label="strongest of the rest")
        ax.axhline(0, color="black", lw=0.5)
        more = f" (the top {shown} of {k} drawn; all in history.csv)" if shown < k else ""
        ax.set_title(wrap(f"{label}: influence of the user's interactions, accumulated{more}", ax, 9), fontsize=9)
        ax.set_xlabel("epoch")
        if _staged(h):
            starts = [c for c in range(len(h.stages)) if c == 0 or h.stages[c] != h.stages[c - 1]]
            for c in starts[1:]:
                ax.axvline(c - 0.5, color="black", lw=0.5, ls="--")
            ends = [*starts[1:], len(h.stages)]
            for c, e in zip(starts, ends):  # each stage named above its own span, inside the axes' width
                ax.annotate(STAGE_LABELS.get(h.stages[c], h.stages[c]), ((c + e - 1) / 2, 1.0),
                            xycoords=("data", "axes fraction"), fontsize=7, ha="center", va="bottom")
            # each checkpoint by its stage's own epoch: GMF 0, GMF 1, ..., MLP 0, ..., NeuMF 0
            ax.set_xticks(x, [str(e) for e in h.epochs], fontsize=7)
            ax.set_xlabel("epoch of each stage's run (GMF's, MLP's, then NeuMF's checkpoints)")
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(x) == 1:  # one checkpoint: a point per item, on an axis of whole epochs
            for line in ax.get_lines()[:-1]:
                line.set_marker("o")
            ax.set_xlim(x[0] - 1, x[0] + 1)
        ax.set_ylabel("TracIn influence")
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


MAX_LINES = 10  # history.png draws at most this many interactions per pair
