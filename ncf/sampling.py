"""Negative sampling and membership tests, vectorized and seeded.

Training negatives (:func:`sample_negatives`) are drawn afresh every epoch, never from the user's training
positives, by rejection sampling against a sorted key array (or a :func:`key_lookup` table): memory and time
are linear in the number of interactions, with no per-sample Python loop, on whatever device holds the
tensors. Evaluation negatives (:func:`sample_eval_negatives`) are drawn once, without replacement, from items
the user never interacted with. A (user, item) pair is one ``int64`` key, ``user * n_items + item``
(:func:`pair_keys`).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .datasets import DataError

__all__ = ["pair_keys", "key_lookup", "is_member", "rank_within", "distinct_draws", "sample_eval_negatives",
           "sample_negatives"]


def pair_keys(users: torch.Tensor, items: torch.Tensor, n_items: int) -> torch.Tensor:
    """One int64 key per (user, item): ``user * n_items + item``."""
    return users.to(torch.int64) * n_items + items.to(torch.int64)


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


def is_member(known: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
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
            ok = ~is_member(known, torch.from_numpy(new)).numpy()
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
            taken |= is_member(known, torch.from_numpy(u[:, None] * n + np.arange(n_items))).numpy()
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
                          chunk_elems: int = 1 << 24, dense_pairs: int = DENSE_EVAL_PAIRS,
                          source: Optional[str] = None) -> torch.Tensor:
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
                f"{source + ': ' if source else ''}{len(too_few)} users have fewer than {k} items they never "
                f"interacted with (of its {n_items} items); lower num_eval_negatives (--data.num_eval_negatives)."
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
        known = is_member(known_keys, pair_keys(u[:, None], items[None, :], n_items))
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
    bad = is_member(positive_keys, pair_keys(neg_users, neg_items, n_items)).nonzero().squeeze(1)
    for _ in range(max_rounds):
        if bad.numel() == 0:
            return neg_users, neg_items
        redraw = torch.randint(n_items, bad.shape, generator=generator, device=users.device)
        neg_items[bad] = redraw
        still = is_member(positive_keys, pair_keys(neg_users[bad], redraw, n_items))
        bad = bad[still]
    raise DataError(f"Could not sample negatives in {max_rounds} rounds: some users interacted with almost every item.")
