"""The work ``explain.py`` does, once its inputs are read: attributions, faithfulness and seed-to-seed
stability for each checkpoint, each pair's rank among its user's candidates, and history influence.

Pure of the command line: :class:`ExplainSettings` says what to compute, :mod:`explain.loading` gives the
checkpoints and their data, and the results go to :mod:`explain.report` to be shown and written.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd
import torch

from ncf.candidates import candidate_rank, interacted, score_items
from ncf.sampling import is_member, pair_keys
from ncf.errors import CheckpointError

from . import methods as registry
from .core import Attribution, Target, attribute, learned_nothing, spearman
from .faithfulness import faithfulness
from .loading import Context, ExplainError, Loaded, data_hint
from .methods.lime import PRESETS as LIME_PRESETS

__all__ = ["DEFAULT_METHODS", "LEARNED_NOTHING", "ExplainSettings", "explain_checkpoint", "explain_checkpoints",
           "explain_history", "pair_ranks", "pairs_meta"]

DEFAULT_METHODS = ("lime", "deeplift")
LEARNED_NOTHING = ("every score equals the baseline's and every attribution is 0: the model has not learned "
                   "anything to explain (did training run? check the checkpoint's epoch and val_ndcg10)")


@dataclass
class ExplainSettings:
    """What to compute, resolved from the command line (or written by hand in Python)."""

    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    baseline: str = "mean"
    seed: int = 0
    n_samples: Optional[int] = None
    lime_preset: str = "default"
    backend: str = "ours"
    faithfulness: bool = True
    history_k: int = 5
    cf_epochs: int = 3

    @property
    def settings(self) -> dict[str, dict]:
        """Each method's settings: defaults, the LIME preset, and a sample count if one was given."""
        return {m: registry.settings_for(m, self.n_samples, LIME_PRESETS[self.lime_preset] if m == "lime" else None)
                for m in self.methods}


def pair_ranks(net, users: list[int], items: list[int], known: Optional[torch.Tensor]) -> list[tuple[int, int, int]]:
    """Each pair's 1-based rank among its user's candidates (plus the item itself), how many items that is
    (:func:`ncf.candidates.candidate_rank`, as `rank_items`; without the data, ``known`` None, among all items), and how many other
    of them score exactly as it does: the rank counts those against it, as HR@10 does, where ``predict`` lists
    tied items in item order."""
    u, i = torch.tensor(users, dtype=torch.int64), torch.tensor(items, dtype=torch.int64)
    scores = score_items(net, u)  # once: the rank and the ties read the same scores
    exclude = interacted(known, u, net.n_items)
    rank, among = candidate_rank(scores, i, exclude)
    candidates = ~exclude
    candidates[torch.arange(len(i)), i] = True
    tied = ((scores == scores.gather(1, i[:, None])) & candidates).sum(1) - 1
    return list(zip(rank.tolist(), among.tolist(), tied.tolist()))


def explain_checkpoint(ld: Loaded, users: list[int], items: list[int], cfg: ExplainSettings, ctx: Context) -> dict:
    """Attributions, faithfulness and seed-to-seed stability (random methods) for the pairs, and each
    pair's rank among the user's unseen items."""
    net = ld.net
    u, i = torch.tensor(users), torch.tensor(items)
    settings = cfg.settings
    target = Target.build(net, u, i, cfg.baseline)
    attrs: dict[str, Attribution] = {}
    faith: dict[str, dict] = {}
    seed_stab: dict[str, torch.Tensor] = {}
    for m in cfg.methods:
        attrs[m] = attribute(net, u, i, m, cfg.baseline, cfg.seed, target=target, backend=cfg.backend, **settings[m])
        if cfg.faithfulness:
            faith[m] = faithfulness(net, u, i, attrs[m], seed=cfg.seed, target=target)
        if m in registry.random_methods():  # how much the answer depends on the seed
            other = attribute(net, u, i, m, cfg.baseline, cfg.seed + 1, target=target, backend=cfg.backend,
                              **settings[m])
            seed_stab[m] = spearman(attrs[m].features, other.features, attrs[m].inactive)
    ranks = pair_ranks(net, users, items, ctx.known)
    return {"attrs": attrs, "faith": faith, "seed_stability": seed_stab, "ranks": ranks,
            "read_items": read_items(ld, u, i, ctx)}


def read_items(ld: Loaded, users: torch.Tensor, items: torch.Tensor, ctx: Context) -> Optional[list[dict]]:
    """For a network with an embedding computed from the user's own items (``Recommender.read_items``), per
    pair: that embedding's name and value (its logit term) and the items it read, largest part first, each with
    its index, title, part and share of the parts; None for other networks."""
    found = getattr(ld.net, "read_items", lambda u, i: None)(users, items)
    if found is None:
        return None
    k, read, parts = found
    with torch.no_grad():
        value = ld.net.embed(users, items)[k].reshape(len(users), -1).sum(-1)
    out = []
    for p in range(len(users)):
        total = float(parts[p].sum())
        rows = sorted(((float(v), int(j)) for j, v in zip(read[p].tolist(), parts[p].tolist())
                       if j < len(ld.item_ids) and v > 0), reverse=True)
        out.append({"embedding": ld.net.embedding_names[k], "logit": float(value[p]),
                    "items": [{"item": j, "item_name": ctx.titles[j] if ctx.titles else "", "part": v, "share": v / total}
                              for v, j in rows]})
    return out


def pairs_meta(ld: Loaded, users: list[int], items: list[int], ctx: Context, ranks) -> pd.DataFrame:
    """One row per pair: original ids, names, rank and how many candidates it was ranked among."""
    return pd.DataFrame({
        "pair": range(len(users)),
        "user_id": [ld.user_ids[u] for u in users],
        "item_id": [ld.item_ids[i] for i in items],
        "item_name": [ctx.titles[i] if ctx.titles else "" for i in items],
        "user_name": [ctx.user_names[u] if ctx.user_names else "" for u in users],
        "rank": [r for r, _, _ in ranks],
        "candidates": [c for _, c, _ in ranks],
        # other candidates with exactly this score: the rank counts them against the pair (as HR@10 does)
        "tied_with": [t for _, _, t in ranks],
        # without the training data the user's own items cannot be left out of the ranking
        "ranked_among": ["unseen items" if ctx.known is not None else "all items"] * len(users),
        # an item the user has (training, validation or test) is ranked among their candidates plus itself
        "user_has_item": _has(ctx.known, users, items, len(ld.item_ids)),
    })


def _has(known: Optional[torch.Tensor], users: list[int], items: list[int], n_items: int) -> list:
    """Whether each user interacted with each item (None per pair without the data)."""
    if known is None:
        return [None] * len(users)
    keys = pair_keys(torch.tensor(users, dtype=torch.int64), torch.tensor(items, dtype=torch.int64), n_items)
    return is_member(known, keys).tolist()


def explain_checkpoints(loaded: Sequence[Loaded], users: list[int], items: list[int], cfg: ExplainSettings,
                        ctx: Context, quiet: bool = False) -> list[tuple[Loaded, dict, pd.DataFrame]]:
    """:func:`explain_checkpoint` for each checkpoint, with a progress bar on long runs in a terminal (unless ``quiet``)
    and a warning, always shown, for a checkpoint that learned nothing. Returns ``(checkpoint, results, pairs
    table)`` per checkpoint."""
    runs = []
    progress = None
    if not quiet and len(loaded) * len(cfg.methods) * len(users) > 64 and sys.stderr.isatty():  # not into a log
        from tqdm.auto import tqdm

        progress = tqdm(total=len(loaded), desc="checkpoints", unit="ckpt", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*required_grads has been set automatically.*")
        for ld in loaded:
            res = explain_checkpoint(ld, users, items, cfg, ctx)
            if ctx.known is None and ctx.note:  # saved with the results, not only printed
                res["warnings"] = [ctx.note]
            if learned_nothing(res["attrs"]):  # shown even when quiet: nothing below means anything
                res.setdefault("warnings", []).append(LEARNED_NOTHING)
                print(f"warning: {ld.path.name} (epoch {ld.epoch}): {LEARNED_NOTHING}", file=sys.stderr)
            runs.append((ld, res, pairs_meta(ld, users, items, ctx, res["ranks"])))
            if progress:
                progress.update(1)
    if progress:
        progress.close()
    return runs


def explain_history(ld: Loaded, users: list[int], items: list[int], ctx: Context,
                    folder: Optional[str] = None, pretraining: Optional[Sequence[str]] = None,
                    quiet: bool = False) -> list:
    """TracIn influence of each user's training interactions on each pair, over the per-epoch checkpoints
    up to the explained one and, for a pretrained NeuMF, those of the GMF and MLP runs it started from
    (``pretraining``: their epochs folders, GMF's then MLP's; ``["none"]``: NeuMF's own epochs only)."""
    from .history import epochs_folder, history_influence, load_epoch_models, load_pretraining

    if ctx.train_items is None:
        raise ExplainError(f"--history needs the training data (to know each user's interactions); {data_hint(ld)}.")
    folder = Path(folder) if folder else epochs_folder(ld.path)
    skip = list(pretraining or []) == ["none"]
    try:
        models = load_epoch_models(folder, ld.meta, up_to_epoch=ld.epoch if ld.epoch >= 0 else None)
        earlier, notes = ([], []) if skip else load_pretraining(ld.meta, pretraining)
    except CheckpointError as err:
        raise ExplainError(str(err)) from None
    if pretraining and not skip and not earlier:
        raise ExplainError(f"--history-pretraining: {ld.path} is not a NeuMF initialised from a GMF and an MLP; "
                           f"drop the option.")
    if not quiet:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    models = earlier + models
    out = []
    for u, i in zip(users, items):
        history = torch.tensor(sorted(ctx.train_items.get(u, ())), dtype=torch.int64)
        out.append(history_influence(models, u, i, history, _draws(ld, ctx, u, history)))
    return out


def _draws(ld: Loaded, ctx: Context, user: int, history: torch.Tensor) -> Optional[torch.Tensor]:
    """How many times an epoch the explained run drew each of ``user``'s training items (``history``), by
    :func:`ncf.splits.train_draws`; None when it drew each once."""
    from ncf.splits import train_draws

    hp = ld.dm_hparams or {}
    split = ctx.split
    if split is None:
        return None
    draws = train_draws(split, int(hp.get("recent_positives") or 0), int(hp.get("recent_weight") or 1))
    if draws is None:
        return None
    mine = split.train_users == user
    per_item = dict(zip(split.train_items[mine].tolist(), draws[mine].tolist()))
    return torch.tensor([per_item.get(h, 1) for h in history.tolist()], dtype=torch.int64)
