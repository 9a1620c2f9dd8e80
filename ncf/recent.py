"""Matrix factorisation that also reads what the user did last: the user's vector is their own embedding plus
the mean of the embeddings of their ``history`` latest training items (a context table of its own, as in
FISM, Kabbur et al., KDD 2013, and SVD++, Koren, KDD 2008, over the latest items only):

    score(u, i) = (p_u + mean_{j in R(u), j != i} c_j) . q_i + b_u + b_i + b

``R(u)`` is the user's ``history`` latest training interactions by time; the pair's own item is left out of it,
so that a training positive never reads itself (the held-out items never are in ``R(u)``). On MovieLens-100k's
leave-one-out split each user's latest items say much about the next one (BENCHMARKS.md, Training objectives).

A model in one file (:class:`ncf.contract.Recommender`), named in a config as ``ncf.recent.RecentMF``
(configs/recent_mf.yaml). It keeps ``R(u)`` in a buffer, filled from the training split before a fit
(:meth:`observe`) and saved with the weights, so every tool that rebuilds it from a checkpoint scores as
training did. Explanations see five embeddings: the user's own vector, the recent-items vector, the item's
vector and the two biases.
"""
from __future__ import annotations

import torch
from torch import nn

from .contract import Recommender
from .errors import DataError

__all__ = ["RecentMF", "latest_items"]


class RecentMF(Recommender):
    """MF whose user vector adds the mean context embedding of the user's latest training items.

    >>> m = RecentMF(3, 6, factor=4, history=2)
    >>> m.recent_items.tolist()  # nothing observed yet: every slot empty (item index n_items)
    [[6, 6], [6, 6], [6, 6]]
    >>> m.recent_items[0] = torch.tensor([1, 2])  # user 0's latest two items
    >>> u, i = torch.tensor([0, 0]), torch.tensor([1, 4])
    >>> p, r, q, bu, bi = m.embed(u, i)
    >>> torch.allclose(r[0], m.context(torch.tensor(2)))  # item 1 scored: only item 2 is read
    True
    >>> torch.allclose(r[1], m.context(torch.tensor([1, 2])).mean(0))
    True
    """

    embedding_names = ("user", "recent", "item", "user_bias", "item_bias")
    feature_sources = (("product", 0, 2), ("product", 1, 2), ("identity", 3), ("identity", 4))
    groups = {"side": {"user": (0, 1, 3), "item": (2, 4)}}
    embeddings_are_rows = False  # the recent vector is a mean of several context rows (embedding_rows)

    def __init__(self, n_users: int, n_items: int, factor: int = 64, history: int = 10, init_std: float = 0.01):
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor must be at least 1, not {factor} (--model.network.factor)")
        if not 1 <= history <= n_items:
            raise ValueError(f"history must be from 1 to the number of items ({n_items}), not {history} "
                             f"(--model.network.history)")
        if init_std <= 0:
            raise ValueError(f"init_std must be positive, not {init_std} (--model.network.init_std)")
        self.n_users, self.n_items, self.factor, self.history = n_users, n_items, factor, history
        self.user_embedding = nn.Embedding(n_users, factor)
        self.item_embedding = nn.Embedding(n_items, factor)
        # one row more than the catalogue: index n_items marks an empty slot (a user with fewer items), all zero
        self.context = nn.Embedding(n_items + 1, factor, padding_idx=n_items)
        for table in (self.user_embedding, self.item_embedding, self.context):
            nn.init.normal_(table.weight, std=init_std)
        with torch.no_grad():
            self.context.weight[n_items].zero_()
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)
        self.bias = nn.Parameter(torch.zeros(()))
        # [n_users, history]: each user's latest training items, latest first; n_items where there are fewer
        self.register_buffer("recent_items", torch.full((n_users, history), n_items, dtype=torch.long))

    def observe(self, split) -> None:
        """Keep each user's ``history`` latest training items of ``split`` (:class:`ncf.splits.Split`, which
        must know the order of each user's rows: ``train_recency``)."""
        self.recent_items.copy_(latest_items(split, self.n_users, self.n_items, self.history, "RecentMF",
                                             "latest items").to(self.recent_items.device))

    def embedding_rows(self, users: torch.Tensor, items: torch.Tensor) -> dict[int, tuple]:
        """The recent vector (embedding 1) of pairs ``[N]``: the context rows it averages and their weights."""
        recent = self.recent_items[users]  # [N, K]
        keep = (recent != self.n_items) & (recent != items.unsqueeze(-1))
        return {1: (recent, keep / keep.sum(-1, keepdim=True).clamp_min(1), self.n_items + 1)}

    def embed(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # users [...], items [...] (broadcastable: [B] and [B], or [B, 1] and [B, W])
        recent = self.recent_items[users]  # [..., K]
        total = self.context(recent).sum(-2)  # [..., f]: empty slots read the zero row
        # the pair's own item, where the user's history holds it, is taken out of the sum and the count
        own = (recent == items.unsqueeze(-1)).sum(-1, keepdim=True)  # [..., 1], items' shape
        count = (recent != self.n_items).sum(-1, keepdim=True) - own
        mean = (total - own * self.context(items)) / count.clamp_min(1)
        return (self.user_embedding(users), mean, self.item_embedding(items),
                self.user_bias(users), self.item_bias(items))

    def features(self, p, r, q, bu, bi) -> tuple[torch.Tensor, ...]:
        return p * q, r * q, bu, bi

    def score_features(self, own: torch.Tensor, recent: torch.Tensor, bu: torch.Tensor, bi: torch.Tensor) -> torch.Tensor:
        return own.sum(-1) + recent.sum(-1) + bu.squeeze(-1) + bi.squeeze(-1) + self.bias  # [...]


def latest_items(split, n_users: int, n_items: int, history: int, network: str, reads: str) -> torch.Tensor:
    """``[n_users, history]``: each user's ``history`` latest training items of ``split``, latest first, and
    ``n_items`` in the slots of a user with fewer.

    Raises:
        DataError: ``split`` has no order by time (``train_recency``), or ``history`` is more than any user's
            training items; the message names ``network``, what it ``reads``, and the fix.
    """
    if split.train_recency is None:
        raise DataError(f"{network} reads each user's {reads}, and this split has no order by time (a random "
                        f"holdout, or a file without timestamps); use --data.holdout latest on data with a time "
                        f"column, or a config that does not read the order (configs/mf_softmax.yaml).")
    longest = int(split.train_recency.max()) + 1 if len(split.train_recency) else 0
    if history > max(longest, 1):
        raise DataError(f"history {history} is more than any user's training items (at most {longest}); "
                        f"use --model.network.init_args.history {max(longest, 1)} or less.")
    recent = torch.full((n_users, history), n_items, dtype=torch.long)
    keep = split.train_recency < history
    recent[split.train_users[keep], split.train_recency[keep]] = split.train_items[keep]
    return recent
