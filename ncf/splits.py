"""The NCF protocol: leave-one-out splits and negative sampling, vectorized and seeded.

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
* Training negatives (:func:`sample_negatives`) are drawn afresh every epoch, never from the user's
  training positives, by rejection sampling against a sorted key array: memory and time are linear in
  the number of interactions, with no per-sample Python loop, on whatever device holds the tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .datasets import DataError, Interactions, unique_sorted

__all__ = ["Split", "HOLDOUTS", "leave_one_out", "k_core", "without_short_users", "cold_shares", "sample_eval_negatives",
           "sample_negatives", "pair_keys", "key_lookup", "distinct_draws", "rank_within"]


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


def pair_keys(users: torch.Tensor, items: torch.Tensor, n_items: int) -> torch.Tensor:
    """One int64 key per (user, item): ``user * n_items + item``."""
    return users.to(torch.int64) * n_items + items.to(torch.int64)


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
    test_neg = sample_eval_negatives(users_t, all_keys, inter.n_items, num_eval_negatives, gen, counts[active])
    val_users = val_cands = None
    if validation:
        val_items = torch.from_numpy(inter.items[val_rows])
        val_neg = sample_eval_negatives(users_t, all_keys, inter.n_items, num_eval_negatives, gen, counts[active])
        val_users, val_cands = users_t, torch.cat([val_items[:, None], val_neg], 1)
    return _with_diagnostic(Split(
        inter.n_users, inter.n_items,
        torch.from_numpy(inter.users[train_mask]), torch.from_numpy(inter.items[train_mask]),
        val_users, val_cands, users_t, torch.cat([test_items[:, None], test_neg], 1), holdout,
    ))


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
        neg = sample_eval_negatives(val_users, known, inter.n_items, num_eval_negatives, gen, counts[active] + 1)
        val_cands = torch.cat([torch.from_numpy(inter.items[val_rows])[:, None], neg], 1)
        train_users, train_items = train_users[mask], train_items[mask]
    return Split(inter.n_users, inter.n_items, train_users, train_items, val_users, val_cands, test_users, test_cands,
                 holdout)


def key_lookup(sorted_keys: torch.Tensor, n_keys: int, max_bytes: int = 1 << 26,
               max_bit_bytes: int = 1 << 30) -> torch.Tensor:
    """A faster stand-in for ``sorted_keys`` in membership tests: a boolean table over all ``n_keys`` keys
    when it takes at most ``max_bytes`` (one lookup per key instead of a binary search), else a table of
    bits (``uint8``, eight keys a byte) when that takes at most ``max_bit_bytes`` (ML-20M's 3.7 billion
    pairs: 470 MB), else the sorted keys themselves.

    >>> key_lookup(torch.tensor([1, 3]), 5)
    tensor([False,  True, False,  True, False])
    >>> bits = key_lookup(torch.tensor([1, 3, 9]), 12, max_bytes=4); bits.dtype, bits.tolist()
    (torch.uint8, [10, 2])
    """
    if n_keys <= max_bytes:
        table = torch.zeros(n_keys, dtype=torch.bool, device=sorted_keys.device)
        table[sorted_keys] = True
        return table
    n_bytes = (n_keys + 7) // 8
    if n_bytes > max_bit_bytes:
        return sorted_keys
    # keys are sorted and distinct: each byte's value is the sum of its keys' bits
    byte = sorted_keys >> 3
    where, counts = torch.unique_consecutive(byte, return_counts=True)
    csum = torch.cumsum(torch.ones_like(sorted_keys) << (sorted_keys & 7), 0)
    ends = torch.cumsum(counts, 0) - 1
    sums = csum[ends] - torch.cat([csum.new_zeros(1), csum[ends[:-1]]])
    table = torch.zeros(n_bytes, dtype=torch.uint8, device=sorted_keys.device)
    table[where] = sums.to(torch.uint8)
    return table


def _is_member(known: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``keys in known``; ``known`` is sorted keys or a :func:`key_lookup` table (of bools or of bits)."""
    if known.dtype == torch.bool:
        return known[keys]
    if known.dtype == torch.uint8:
        return (torch.bitwise_right_shift(known[keys >> 3], (keys & 7).to(torch.uint8)) & 1).bool()
    if len(known) == 0:
        return torch.zeros(keys.shape, dtype=torch.bool, device=keys.device)
    pos = torch.searchsorted(known, keys).clamp_max(len(known) - 1)
    return known[pos] == keys


def rank_within(groups: np.ndarray, position: np.ndarray) -> np.ndarray:
    """For each row, its rank within its group by ``position`` (0 = smallest).

    >>> rank_within(np.array([0, 1, 0, 0]), np.array([5, 1, 2, 9]))
    array([1, 0, 0, 2])
    """
    order = np.lexsort((position, groups))
    ranks = np.empty(len(groups), dtype=np.int64)
    g = groups[order]
    starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]]))
    lengths = np.diff(np.concatenate([starts, [len(g)]]))
    ranks[order] = np.arange(len(g)) - np.repeat(starts, lengths)
    return ranks


def distinct_draws(need: np.ndarray, draw, n_items: int, rng: np.random.Generator,
                   known: Optional[torch.Tensor] = None, rounds: int = 8, extra: float = 0.25,
                   chunk_elems: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """``need[u]`` distinct items for every user ``u``, none of them ``known`` to the user, in draw order.

    ``draw(users, rng)`` returns one item per listed user (uniform, or by popularity). Each round draws
    what the users still lack (plus ``extra`` against repeats), drops known items and repeats, and keeps
    each user's earliest draws; later rounds involve only the users still short, so the work is linear in
    ``need.sum()``. Users still short after ``rounds`` (asking for most of what they may get, from a
    skewed ``draw``) are completed uniformly from the items they lack. Keeping the first distinct draws
    of a uniform ``draw`` gives a uniform sample without replacement.

    Args:
        known: sorted :func:`pair_keys` (or their :func:`key_lookup` table) of items a user may not get.

    Returns:
        ``(users, items)`` sorted by user, each user's items in the order drawn.
    """
    n_users = len(need)
    need = need.astype(np.int64)
    n = np.int64(n_items)
    done_keys, done_pos = [], []
    keys = pos = np.empty(0, dtype=np.int64)  # accepted draws of users still short
    have = np.zeros(n_users, dtype=np.int64)  # accepted draws of users still short
    complete = need <= 0
    drawn = 0
    for _ in range(rounds):
        short = np.where(complete, 0, need - have)
        users = np.flatnonzero(short > 0)
        if not len(users):
            break
        m = short[users] + (short[users] * extra).astype(np.int64) + 1
        u = np.repeat(users, m)
        new = u * n + np.asarray(draw(u, rng), dtype=np.int64)
        new_pos = drawn + np.arange(len(new), dtype=np.int64)
        drawn += len(new)
        if known is not None:
            ok = ~_is_member(known, torch.from_numpy(new)).numpy()
            new, new_pos = new[ok], new_pos[ok]
        keys, pos = np.concatenate([keys, new]), np.concatenate([pos, new_pos])
        order = np.lexsort((pos, keys))  # a repeated pair keeps its earliest draw
        keys, pos = keys[order], pos[order]
        first = np.ones(len(keys), dtype=bool)
        first[1:] = keys[1:] != keys[:-1]
        keys, pos = keys[first], pos[first]
        owner = keys // n
        take = rank_within(owner, pos) < need[owner]
        keys, pos, owner = keys[take], pos[take], owner[take]
        full = np.bincount(owner, minlength=n_users)[owner] >= need[owner]
        complete[owner[full]] = True
        done_keys.append(keys[full]); done_pos.append(pos[full])
        keys, pos = keys[~full], pos[~full]
        have = np.bincount(keys // n, minlength=n_users)
    short = np.where(complete, 0, need - have)
    users = np.flatnonzero(short > 0)
    done_keys.append(keys); done_pos.append(pos)
    step = max(1, chunk_elems // max(n_items, 1))
    for s in range(0, len(users), step):  # the rare users still short: uniform over what they lack
        u = users[s:s + step]
        scores = rng.random((len(u), n_items))
        taken = np.zeros((len(u), n_items), dtype=bool)
        mine = np.isin(keys // n, u)
        taken[np.searchsorted(u, keys[mine] // n), keys[mine] % n] = True
        if known is not None:
            taken |= _is_member(known, torch.from_numpy(u[:, None] * n + np.arange(n_items))).numpy()
        scores[taken] = np.inf
        width = int(short[u].max())
        picked = np.argsort(scores, axis=1, kind="stable")[:, :width]
        col = np.arange(width)[None, :] < short[u][:, None]
        if np.isinf(np.take_along_axis(scores, picked, 1)[col]).any():
            raise DataError("a user needs more distinct items than the catalogue leaves them.")
        rows = np.broadcast_to(u[:, None], picked.shape)[col]
        done_keys.append(rows * n + picked[col]); done_pos.append(drawn + np.arange(col.sum(), dtype=np.int64))
        drawn += int(col.sum())
    keys, pos = np.concatenate(done_keys), np.concatenate(done_pos)
    order = np.lexsort((pos, keys // n))
    keys = keys[order]
    return keys // n, keys % n


DENSE_EVAL_PAIRS = 1 << 25  # users x items up to which evaluation negatives are drawn by dense top-k


def sample_eval_negatives(users: torch.Tensor, known_keys: torch.Tensor, n_items: int, k: int,
                          generator: torch.Generator, counts: Optional[np.ndarray] = None,
                          chunk_elems: int = 1 << 24, dense_pairs: int = DENSE_EVAL_PAIRS) -> torch.Tensor:
    """``[len(users), k]`` distinct items per user (distinct ``users``), none in ``known_keys`` (sorted
    pair keys, or their :func:`key_lookup` table).

    Uniform without replacement, two ways: up to ``dense_pairs`` users x items (ML-100k, ML-1M), random
    scores over the whole catalogue with the user's known items masked out, then top-k, in chunks of
    users; above it (where that would score billions of pairs), :func:`distinct_draws` of uniform items,
    linear in ``len(users) * k``, seeded from ``generator``. Both give each user a uniform random set.
    """
    if counts is not None:
        too_few = np.flatnonzero(n_items - counts < k)
        if len(too_few):
            raise DataError(
                f"{len(too_few)} users have fewer than {k} items they never interacted with; lower num_eval_negatives."
            )
    if len(users) * n_items > dense_pairs:
        rng = np.random.default_rng(int(torch.randint(2 ** 62, (1,), generator=generator)))
        u = users.numpy()
        need = np.zeros(int(u.max()) + 1 if len(u) else 0, dtype=np.int64)
        need[u] = k
        _, items = distinct_draws(need, lambda who, r: r.integers(0, n_items, len(who)), n_items, rng, known_keys)
        rows = np.searchsorted(np.flatnonzero(need), u)  # distinct_draws lists users in index order
        return torch.from_numpy(items.reshape(-1, k)[rows])
    out = torch.empty(len(users), k, dtype=torch.int64)
    step = max(1, chunk_elems // n_items)
    items = torch.arange(n_items)
    for s in range(0, len(users), step):
        u = users[s:s + step]
        scores = torch.rand(len(u), n_items, generator=generator)
        known = _is_member(known_keys, pair_keys(u[:, None], items[None, :], n_items))
        scores[known] = -1.0
        out[s:s + step] = scores.topk(k, dim=1).indices
    return out


def sample_negatives(users: torch.Tensor, positive_keys: torch.Tensor, n_items: int, num_negatives: int,
                     generator: torch.Generator, max_rounds: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``num_negatives`` items per positive, none of them a training positive of that user.

    Args:
        users: ``[N]`` user of each training positive (on the training device).
        positive_keys: sorted :func:`pair_keys` of all training positives (same device), or their
            :func:`key_lookup` table.
        n_items: catalogue size.
        num_negatives: negatives per positive.
        generator: a generator on the same device, seeded by the caller (per epoch).

    Returns:
        ``(neg_users, neg_items)``, each ``[N * num_negatives]``.

    Example:
        >>> keys = pair_keys(torch.tensor([0, 0]), torch.tensor([1, 2]), 5).sort().values
        >>> _, items = sample_negatives(torch.tensor([0, 0]), keys, 5, 4, torch.Generator().manual_seed(0))
        >>> bool(((items != 1) & (items != 2)).all())
        True
    """
    neg_users = users.repeat_interleave(num_negatives)
    neg_items = torch.randint(n_items, neg_users.shape, generator=generator, device=users.device)
    bad = _is_member(positive_keys, pair_keys(neg_users, neg_items, n_items)).nonzero().squeeze(1)
    for _ in range(max_rounds):
        if bad.numel() == 0:
            return neg_users, neg_items
        redraw = torch.randint(n_items, bad.shape, generator=generator, device=users.device)
        neg_items[bad] = redraw
        still = _is_member(positive_keys, pair_keys(neg_users[bad], redraw, n_items))
        bad = bad[still]
    raise DataError(f"Could not sample negatives in {max_rounds} rounds: some users interacted with almost every item.")
