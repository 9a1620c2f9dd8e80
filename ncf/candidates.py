"""A user's candidate items and their ranking: the one rule behind ``train.py predict`` (:func:`top_candidates`
on the batch's scores), ``explain.py``'s top-N (:func:`recommend`) and rank, and the counterfactual check
(:func:`rank_items`).

A user's **candidates** are the items they never interacted with: training rows and held-out items
(validation and test) are all excluded, so nothing a user already has is recommended to them. Candidates
are **ranked** by score, best first; equal scores keep item order (a stable sort), so the same model gives
the same list everywhere. The **rank** of one item counts the candidates scored at least as high, ties
against it as HR@10 counts them (:func:`ncf.metrics.rank_among`); an item that is not a candidate (e.g. a
held-out item being explained) is ranked among the candidates plus itself.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from .fused import FoldedScorer
from .metrics import rank_among
from .sampling import is_member, key_lookup, pair_keys
from .splits import Split

__all__ = ["score_items", "interacted_keys", "interacted", "top_candidates", "candidate_rank", "recommend",
           "rank_items"]


@torch.no_grad()
def score_items(net: nn.Module, users: torch.Tensor, score: Optional[Callable] = None) -> torch.Tensor:
    """Logits of every item for each user: ``[B, n_items]``, by ``score(users, items)`` (default: the
    network's fast scorer, :class:`ncf.fused.FoldedScorer`, which computes what ``net`` computes).

    >>> from ncf.models import GMF
    >>> score_items(GMF(3, 4, 2), torch.tensor([0, 2])).shape
    torch.Size([2, 4])
    """
    n = net.n_items
    items = torch.arange(n, device=users.device)
    score = FoldedScorer(net) if score is None else score
    return score(users.repeat_interleave(n), items.repeat(len(users))).view(len(users), n)


def interacted_keys(split: Split) -> torch.Tensor:
    """Every (user, item) pair the data knows: training rows and held-out items, as a membership table
    for :func:`interacted` (:func:`~ncf.splits.key_lookup` of :func:`~ncf.splits.pair_keys`)."""
    users = [split.train_users, split.test_users] + ([split.val_users] if split.val_users is not None else [])
    items = [split.train_items, split.test_candidates[:, 0]] + (
        [split.val_candidates[:, 0]] if split.val_users is not None else [])
    keys = torch.unique(pair_keys(torch.cat(users), torch.cat(items), split.n_items))
    return key_lookup(keys, split.n_users * split.n_items)


def interacted(known: Optional[torch.Tensor], users: torch.Tensor, n_items: int) -> torch.Tensor:
    """``[B, n_items]`` bool: the items each user interacted with (not candidates). ``known`` comes from
    :func:`interacted_keys`; ``None`` (no data at hand) excludes nothing.

    >>> known = key_lookup(torch.tensor([1, 4]), 6)  # user 0 has item 1, user 1 has item 1 (3 items)
    >>> interacted(known, torch.tensor([0, 1]), 3).tolist()
    [[False, True, False], [False, True, False]]
    """
    if known is None:
        return torch.zeros(len(users), n_items, dtype=torch.bool, device=users.device)
    items = torch.arange(n_items, device=users.device)
    return is_member(known.to(users.device), pair_keys(users[:, None], items[None, :], n_items))


def top_candidates(scores: torch.Tensor, exclude: torch.Tensor, n: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's ``n`` best candidates, best first, equal scores in item order.

    Returns ``items [B, k]``, their ``scores [B, k]`` (``k = min(n, n_items)``) and ``count [B]``: how many
    of the ``k`` are candidates (fewer when a user interacted with almost everything; the rest are padding).

    >>> s = torch.tensor([[0.1, 0.9, 0.5, 0.9]])
    >>> items, top, count = top_candidates(s, torch.tensor([[False, True, False, False]]), 2)
    >>> items.tolist(), top.tolist(), count.tolist()
    ([[3, 2]], [[0.8999999761581421, 0.5]], [2])
    """
    masked = scores.masked_fill(exclude, float("-inf"))
    k = min(n, scores.shape[1])
    values, order = masked.sort(dim=1, descending=True, stable=True)
    count = (~exclude).sum(1).clamp(max=k)
    return order[:, :k], values[:, :k], count


def candidate_rank(scores: torch.Tensor, items: torch.Tensor, exclude: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """1-based rank of ``items[b]`` among row ``b``'s candidates plus the item itself, ties against it, and
    how many items it was ranked among.

    >>> s = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1, 0.7]])
    >>> candidate_rank(s, torch.tensor([0]), torch.tensor([[False, False, False, False, True, True]]))
    (tensor([4]), tensor([4]))
    """
    rows = torch.arange(len(items), device=items.device)
    exclude = exclude.clone()
    exclude[rows, items] = False
    return rank_among(scores, items, exclude) + 1, (~exclude).sum(1)


def recommend(net: nn.Module, users: torch.Tensor, n: int, known: Optional[torch.Tensor] = None) -> list[list[int]]:
    """Each user's ``n`` best candidate items (indices), as ``train.py predict`` writes them.

    >>> from ncf.models import GMF
    >>> net = GMF(2, 5, 2)
    >>> len(recommend(net, torch.tensor([0]), 3, key_lookup(torch.tensor([1, 2]), 10))[0])
    3
    """
    exclude = interacted(known, users, net.n_items)
    items, _, count = top_candidates(score_items(net, users), exclude, n)
    return [row[:c].tolist() for row, c in zip(items, count.tolist())]


def rank_items(net: nn.Module, users: torch.Tensor, items: torch.Tensor, known: Optional[torch.Tensor] = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each pair's rank as ``explain.py`` and the counterfactual report it: the 1-based rank of ``items[b]``
    among user ``users[b]``'s candidates plus the item itself (:func:`candidate_rank`), how many items that
    is, and the item's logit. ``known`` comes from :func:`interacted_keys`; ``None`` ranks among all items.

    >>> from ncf.models import GMF
    >>> net = GMF(2, 5, 2)
    >>> rank, among, logit = rank_items(net, torch.tensor([0]), torch.tensor([3]), key_lookup(torch.tensor([1]), 10))
    >>> among.tolist(), bool(logit[0] == score_items(net, torch.tensor([0]))[0, 3])
    ([4], True)
    """
    scores = score_items(net, users)
    rank, among = candidate_rank(scores, items, interacted(known, users, net.n_items))
    return rank, among, scores.gather(1, items[:, None])[:, 0]
