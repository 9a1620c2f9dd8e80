"""The NCF protocol: leave-one-out splits, vectorized and seeded (their sampling is :mod:`ncf.sampling`).

* Each user's latest interaction (by timestamp; ties broken by file order, later row wins) is the test
  item; the validation item is, by default, one of the user's other interactions drawn at random (the
  paper's rule; ``validation_item="previous"`` takes the one before the test item). Both are removed
  from training. Data without time uses ``holdout="random"`` instead: one random item per user for test (and one for
  validation), drawn from a generator seeded by the split seed, so every model and run holds out the same.
* :func:`cold_shares` says whether the held-out items are as familiar to training as the sampled
  negatives; when they are far colder, the evaluation measures cold start, not preference.
* Validation and test each get ``num_eval_negatives`` (99) items the user never interacted with,
  sampled once without replacement from a generator seeded only by the split seed, so every model
  and run is scored on identical candidate lists.
* Training negatives (:func:`ncf.sampling.sample_negatives`) are drawn afresh every epoch, never from the
  user's training positives.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import torch

from .datasets import DataError, Interactions, unique_sorted
from .sampling import key_lookup, pair_keys, sample_eval_negatives

__all__ = ["Split", "HOLDOUTS", "leave_one_out", "train_draws", "weighted_positives", "without_rows", "k_core", "without_short_users", "cold_shares"]


@dataclass
class Split:
    """Training positives and the evaluation candidate lists.

    ``val_candidates`` / ``test_candidates`` have shape ``[U, 1 + num_eval_negatives]`` with the held-out
    positive in column 0, for the users in ``val_users`` / ``test_users``.
    """

    n_users: int
    n_items: int
    train_users: torch.Tensor
    train_items: torch.Tensor
    val_users: Optional[torch.Tensor]
    val_candidates: Optional[torch.Tensor]
    test_users: torch.Tensor
    test_candidates: torch.Tensor
    holdout: str = "latest"
    diagnostic: Optional[dict] = None
    # [train rows]: how many of the user's training rows are later than this one (0: the user's latest);
    # with ``holdout="latest"`` only (by time), None otherwise
    train_recency: Optional[torch.Tensor] = None


HOLDOUTS = ("latest", "random")
VALIDATION_ITEMS = ("random", "previous")


def _validation_positions(firsts: np.ndarray, lasts: np.ndarray, rule: str, seed: int) -> np.ndarray:
    """Per user, the position in the hold-out order of the validation row, from ``firsts`` to ``lasts``
    inclusive (the rows left once the test row is out): ``previous`` takes the last of them (the item
    just before the test item), ``random`` one drawn uniformly (seeded)."""
    if rule == "previous":
        return lasts
    if rule != "random":
        raise DataError(f"Unknown validation item rule {rule!r}; use one of {VALIDATION_ITEMS} (--data.validation_item).")
    n = lasts - firsts + 1
    draw = np.random.default_rng([seed, 0x7A11]).random(len(firsts))
    return firsts + np.minimum((draw * n).astype(np.int64), n - 1)


def _latest_order(inter: Interactions, holdout: str = "latest", seed: int = 0) -> np.ndarray:
    """Rows sorted so that each user's held-out rows come last: by timestamp (then file order) for
    ``latest``, by a seeded random key for ``random``."""
    if holdout == "random":
        key = np.random.default_rng([seed, 0x401D]).random(len(inter))
        return np.lexsort((key, inter.users))
    if holdout != "latest":
        raise DataError(f"Unknown hold-out rule {holdout!r}; use one of {HOLDOUTS} (--data.holdout).")
    users, ts = inter.users, inter.timestamps
    if len(ts):
        span = int(ts.max()) - int(ts.min()) + 1
        if span * (int(users.max()) + 1) < 2 ** 63:  # one int64 key, stably sorted: the same order as a lexsort, faster
            return np.argsort(users * np.int64(span) + (ts - ts.min()), kind="stable")
    return np.lexsort((np.arange(len(inter)), ts, users))


def cold_shares(train_items: torch.Tensor, n_items: int, held_out: torch.Tensor, negatives: torch.Tensor) -> dict:
    """Share of held-out items and of sampled negatives that never occur in training.

    >>> cold_shares(torch.tensor([0, 0, 1]), 4, torch.tensor([2, 0]), torch.tensor([1, 3, 0, 0]))
    {'held_out_cold': 0.5, 'negatives_cold': 0.25}
    """
    seen = torch.bincount(train_items.reshape(-1), minlength=n_items) > 0
    return {"held_out_cold": float((~seen[held_out.reshape(-1)]).float().mean()) if held_out.numel() else 0.0,
            "negatives_cold": float((~seen[negatives.reshape(-1)]).float().mean()) if negatives.numel() else 0.0}


def leave_one_out(inter: Interactions, validation: bool = True, num_eval_negatives: int = 99, seed: int = 0,
                  drop_short_users: bool = False, holdout: str = "latest", validation_item: str = "random") -> Split:
    """Split interactions with the leave-one-out protocol of He et al. (2017).

    Args:
        inter: the interactions.
        validation: also hold out one more interaction per user for model selection.
        num_eval_negatives: sampled negatives per held-out item.
        seed: seeds the evaluation negatives and, for ``holdout="random"``, which items are held out.
        drop_short_users: drop users with too few interactions instead of raising; the split's indices
            are then those of :func:`without_short_users` (``inter``'s mapping without them).
        holdout: ``latest`` (by timestamp: the paper's rule) or ``random`` (one random item per user, for
            data without time). A paper split keeps its published test items either way; the rule then
            picks the validation items held out of its training rows.
        validation_item: which of the user's remaining interactions is the validation item: ``random``
            (drawn uniformly, seeded: the paper's rule, and it keeps the interaction just before the test
            item in training, where it helps most) or ``previous`` (the one just before the test item by
            the hold-out order, as RecBole splits).

    Raises:
        DataError: a user has too few interactions to hold items out and still train on one, or too few
            unseen items to sample negatives from.

    Example:
        >>> split = leave_one_out(load_movielens("ml-100k"))  # doctest: +SKIP
        >>> split.test_candidates.shape  # doctest: +SKIP
        torch.Size([943, 100])
    """
    if inter.presplit is not None:
        return _with_diagnostic(_presplit(inter, validation, num_eval_negatives, seed, holdout, validation_item))
    need = 3 if validation else 2
    counts = np.bincount(inter.users, minlength=inter.n_users)
    short = np.flatnonzero(counts < need)
    if len(short):
        if not drop_short_users:
            ex = ", ".join(f"{inter.user_ids[u]!r} ({counts[u]})" for u in short[:5])
            raise DataError(
                f"{inter.source}: {len(short)} users have fewer than {need} interactions (e.g. {ex}); leave-one-out "
                f"needs {need} per user. Drop them with --data.drop_short_users true, or filter the file."
            )
        inter = without_short_users(inter, need)
        counts = np.bincount(inter.users, minlength=inter.n_users)
    order = _latest_order(inter, holdout, seed)
    users_sorted = inter.users[order]
    ends = np.cumsum(np.bincount(users_sorted, minlength=inter.n_users))  # one past each user's last row
    active = np.flatnonzero(counts > 0)
    test_rows = order[ends[active] - 1]
    held = [test_rows]
    val_rows = None
    if validation:
        val_rows = order[_validation_positions(ends[active] - counts[active], ends[active] - 2, validation_item, seed)]
        held.append(val_rows)
    train_mask = np.ones(len(inter), dtype=bool)
    for rows in held:
        train_mask[rows] = False
    all_keys = key_lookup(torch.from_numpy(unique_sorted(inter.users * np.int64(inter.n_items) + inter.items)),
                          inter.n_users * inter.n_items)
    gen = torch.Generator().manual_seed(seed)
    users_t = torch.from_numpy(active.astype(np.int64))
    test_items = torch.from_numpy(inter.items[test_rows])
    test_neg = sample_eval_negatives(users_t, all_keys, inter.n_items, num_eval_negatives, gen, counts[active],
                                     source=inter.source)
    val_users = val_cands = None
    if validation:
        val_items = torch.from_numpy(inter.items[val_rows])
        val_neg = sample_eval_negatives(users_t, all_keys, inter.n_items, num_eval_negatives, gen, counts[active],
                                        source=inter.source)
        val_users, val_cands = users_t, torch.cat([val_items[:, None], val_neg], 1)
    recency = None
    if holdout == "latest":  # later training rows of the same user, counted along the time order
        later = np.cumsum(train_mask[order])  # training rows up to each position of the order
        per_row = np.empty(len(inter), dtype=np.int64)
        per_row[order] = later[ends[users_sorted] - 1] - later
        recency = torch.from_numpy(per_row[train_mask])
    return _with_diagnostic(Split(
        inter.n_users, inter.n_items,
        torch.from_numpy(inter.users[train_mask]), torch.from_numpy(inter.items[train_mask]),
        val_users, val_cands, users_t, torch.cat([test_items[:, None], test_neg], 1), holdout,
        train_recency=recency,
    ))


def train_draws(split: Split, recent_positives: int = 0, recent_weight: int = 1) -> Optional[torch.Tensor]:
    """How many times an epoch training draws each of ``split``'s training rows: ``recent_weight`` for each
    user's ``recent_positives`` latest (``--data.recent_positives``, ``--data.recent_weight``), once for the
    others; None when every row is drawn once."""
    if not recent_positives or recent_weight <= 1:
        return None
    if split.train_recency is None:
        raise DataError(f"--data.recent_positives needs to know which interactions are recent, and this split "
                        f"holds out {split.holdout} items: give the data a time column (--data.timestamp_col) "
                        f"and use --data.holdout latest, or set --data.recent_positives 0.")
    return torch.where(split.train_recency < recent_positives, recent_weight, 1)


def weighted_positives(split: Split, recent_positives: int = 0,
                       recent_weight: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``split``'s training (users, items), each row repeated to its :func:`train_draws` copies (the extra
    copies after the rows, in their order); as they are when off."""
    users, items = split.train_users, split.train_items
    draws = train_draws(split, recent_positives, recent_weight)
    if draws is None:
        return users, items
    recent, extra = draws > 1, recent_weight - 1
    return torch.cat([users, users[recent].repeat(extra)]), torch.cat([items, items[recent].repeat(extra)])


def without_rows(split: Split, users: torch.Tensor, items: torch.Tensor) -> Split:
    """``split`` as if its users never had the training rows ``(users, items)``: those rows are gone, and each
    remaining row's recency counts only the user's remaining later rows (the held-out items are unchanged)."""
    keys = pair_keys(split.train_users, split.train_items, split.n_items)
    drop = torch.isin(keys, pair_keys(users, items, split.n_items))
    recency = split.train_recency
    if recency is not None:
        recency = recency.clone()
        for u, r in zip(split.train_users[drop].tolist(), split.train_recency[drop].tolist()):
            recency[(split.train_users == u) & (split.train_recency > r)] -= 1  # its earlier rows move up one
        recency = recency[~drop]
    return replace(split, train_users=split.train_users[~drop], train_items=split.train_items[~drop],
                   train_recency=recency)


def _with_diagnostic(split: Split) -> Split:
    """Attach :func:`cold_shares` of the held-out items against their negatives: of the validation or the
    test items, whichever are colder (a random validation item can be warm while the test items are not)."""
    cands = [c for c in (split.val_candidates, split.test_candidates) if c is not None]
    shares = [cold_shares(split.train_items, split.n_items, c[:, 0], c[:, 1:]) for c in cands]
    split.diagnostic = max(shares, key=lambda d: d["held_out_cold"] - d["negatives_cold"])
    return split


def without_short_users(inter: Interactions, need: int) -> Interactions:
    """``inter`` without the users of fewer than ``need`` interactions, and without the items only they had:
    both leave the id mapping (indices stay contiguous), so no model holds rows it never trained and
    nothing recommends to or for them. Returned unchanged when every user has ``need``.

    >>> from ncf.datasets import Interactions
    >>> d = Interactions(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 2, 0, 1]), np.arange(5), ["a", "b", "c"],
    ...                  ["x", "y", "z"])
    >>> kept = without_short_users(d, 2); kept.user_ids, kept.item_ids, kept.users.tolist()
    (['a', 'c'], ['x', 'y'], [0, 0, 1, 1])
    """
    if (np.bincount(inter.users, minlength=inter.n_users) >= need).all():
        return inter
    return k_core(inter, min_user=need)


def k_core(inter: Interactions, min_user: int = 0, min_item: int = 0) -> Interactions:
    """Keep the interactions whose user has at least ``min_user`` and whose item at least ``min_item`` of
    them, repeating until both hold for every row left (as RecBole's interaction-count filters and k-core
    do: dropping a user can leave an item short). Users and items that lose every row are dropped from the
    id mapping, so indices stay contiguous.

    >>> inter = Interactions(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 0, 1, 2]), np.arange(5), [7, 8, 9], [1, 2, 3])
    >>> kept = k_core(inter, 2, 2); kept.user_ids, kept.item_ids, kept.users.tolist()
    ([7, 8], [1, 2], [0, 0, 1, 1])
    """
    keep = np.ones(len(inter), dtype=bool)
    while True:
        u_count = np.bincount(inter.users[keep], minlength=inter.n_users)
        i_count = np.bincount(inter.items[keep], minlength=inter.n_items)
        short = keep & ((u_count[inter.users] < min_user) | (i_count[inter.items] < min_item))
        if not short.any():
            break
        keep &= ~short
    users, items = inter.users[keep], inter.items[keep]
    u_kept, i_kept = np.flatnonzero(np.bincount(users, minlength=inter.n_users)), \
        np.flatnonzero(np.bincount(items, minlength=inter.n_items))
    u_new = np.full(inter.n_users, -1, dtype=np.int64)
    u_new[u_kept] = np.arange(len(u_kept))
    i_new = np.full(inter.n_items, -1, dtype=np.int64)
    i_new[i_kept] = np.arange(len(i_kept))
    pick = lambda names, kept: [names[k] for k in kept] if names is not None else None  # noqa: E731
    return Interactions(u_new[users], i_new[items], inter.timestamps[keep], pick(inter.user_ids, u_kept),
                        pick(inter.item_ids, i_kept), pick(inter.item_titles, i_kept), inter.source,
                        has_timestamps=inter.has_timestamps, user_names=pick(inter.user_names, u_kept))


def _subset_users(inter: Interactions, keep: np.ndarray) -> Interactions:
    return Interactions(inter.users[keep], inter.items[keep], inter.timestamps[keep], inter.user_ids, inter.item_ids,
                        inter.item_titles, inter.source, has_timestamps=inter.has_timestamps,
                        user_names=inter.user_names)


def _presplit(inter: Interactions, validation: bool, num_eval_negatives: int, seed: int, holdout: str,
              validation_item: str = "random") -> Split:
    """Use the published test lists as they are; validation (if any) is held out of the training rows."""
    ps = inter.presplit
    have = ps["test_negatives"].shape[1]
    if have != num_eval_negatives:
        raise DataError(f"{inter.source}.test.negative lists {have} negatives per user, but num_eval_negatives is "
                        f"{num_eval_negatives}: HR@10 over {have + 1} candidates is not comparable. Pass "
                        f"--data.num_eval_negatives {have} to evaluate on the file's lists as they are.")
    test_users = torch.tensor(ps["test_users"])
    test_cands = torch.cat([torch.tensor(ps["test_items"])[:, None], torch.tensor(ps["test_negatives"])], 1)
    train_users, train_items = torch.from_numpy(inter.users), torch.from_numpy(inter.items)
    val_users = val_cands = None
    if validation:
        counts = np.bincount(inter.users, minlength=inter.n_users)
        order = _latest_order(inter, holdout, seed)
        ends = np.cumsum(counts)
        active = np.flatnonzero(counts >= 2)  # keep at least one training row per user
        val_rows = order[_validation_positions(ends[active] - counts[active], ends[active] - 1, validation_item, seed)]
        mask = np.ones(len(inter), dtype=bool)
        mask[val_rows] = False
        keys = np.concatenate([inter.users * np.int64(inter.n_items) + inter.items,
                               ps["test_users"] * np.int64(inter.n_items) + ps["test_items"]])
        gen = torch.Generator().manual_seed(seed)
        val_users = torch.from_numpy(active.astype(np.int64))
        known = key_lookup(torch.from_numpy(unique_sorted(keys)), inter.n_users * inter.n_items)
        neg = sample_eval_negatives(val_users, known, inter.n_items, num_eval_negatives, gen, counts[active] + 1,
                                source=inter.source)
        val_cands = torch.cat([torch.from_numpy(inter.items[val_rows])[:, None], neg], 1)
        train_users, train_items = train_users[mask], train_items[mask]
    return Split(inter.n_users, inter.n_items, train_users, train_items, val_users, val_cands, test_users, test_cands,
                 holdout)
