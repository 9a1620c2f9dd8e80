"""Matrix factorisation plus what other users watched next: MF with biases, and a count-based prior of the
item following the user's latest items (the Markov-chain half of FPMC, Rendle et al., WWW 2010, and of
item-to-item "watched next" lists, counted rather than factorised):

    score(u, i) = p_u . q_i + b_u + b_i + b + weight * log(1 + next(u, i) / eps)
    next(u, i)  = sum over l in R(u) of  N(l, i) / (n_l + 1)

``R(u)`` is the user's ``history`` latest training interactions by time; ``N(l, i)`` counts the training
sequences (every user's rows in time order) in which ``i`` comes at most ``window`` positions after ``l``;
``n_l`` is how often ``l`` was trained on. ``next`` is zero for an item none of the user's latest items ever led
to, and grows with how often they did. The counts are data, not weights, and MF is fitted without them: in
training mode (``train()``) ``next`` is zero, and MF is fitted exactly as :class:`ncf.mf.MF` is; in
evaluation mode (``eval()``: validation, test, prediction, explanations) the prior is added with ``weight``, a
hyperparameter chosen on validation. (Fitting MF around the prior, the prior on in training too, scored lower on
validation: BENCHMARKS.md, Training objectives.) A user's own transitions are taken out of the count of their
own latest items, so a training pair never reads itself (the held-out items never are in the counts).

A model in one file (:class:`ncf.contract.Recommender`), named in a config as ``ncf.transitions.TransitionMF``
(configs/transition_mf.yaml). It counts the transitions of the training split before a fit (:meth:`observe`)
and keeps them in buffers saved with the weights, so every tool that rebuilds it from a checkpoint scores as
training did. Explanations see five embeddings: the user and item vectors, the two biases, and ``next``, the
prior's term (width 1): what the user's latest items say the next item is, apart from the user's taste.
"""
from __future__ import annotations

import torch

from .contract import Recommender, _physical_memory
from .errors import DataError
from .mf import MF, _rows
from .recent import latest_items

__all__ = ["TransitionMF"]


class TransitionMF(MF):
    """MF with biases plus ``weight * log(1 + next(u, i) / eps)``, the transition prior of the module docstring.

    >>> m = TransitionMF(2, 4, factor=3, history=2, window=1)
    >>> # user 0 watched 0, 1, 2; user 1 watched 0, 1, 3 (in time order)
    >>> class S: n_users, n_items = 2, 4
    >>> S.train_users, S.train_items = torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 1, 2, 0, 1, 3])
    >>> S.train_recency = torch.tensor([2, 1, 0, 2, 1, 0])
    >>> m.observe(S); m = m.eval()
    >>> m.recent_items.tolist()  # latest first
    [[2, 1], [3, 1]]
    >>> # user 0's latest are 2 and 1: 1 led to 2 (user 0) and to 3 (user 1), each once; item 1 trained twice
    >>> [round(v, 4) for v in m.next_counts(torch.tensor([0, 0]), torch.tensor([3, 0])).tolist()]
    [0.3333, 0.0]
    >>> round(float(m.next_counts(torch.tensor([0]), torch.tensor([2]))), 4)  # its own 1 -> 2 left out
    0.0
    """

    embedding_names = ("user", "item", "user_bias", "item_bias", "next")
    feature_sources = (("product", 0, 1), ("identity", 2), ("identity", 3), ("identity", 4))
    groups = {"side": {"user": (0, 2, 4), "item": (1, 3)}}
    # ``next`` is no table row: it has no weights (embedding_rows says so, and history influence gives it none)
    embeddings_are_rows = False

    def __init__(self, n_users: int, n_items: int, factor: int = 64, history: int = 3, window: int = 10,
                 weight: float = 2.0, eps: float = 0.01, init_std: float = 0.01):
        if not 1 <= history <= n_items:
            raise ValueError(f"history must be from 1 to the number of items ({n_items}), not {history} "
                             f"(--model.network.history)")
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window} (--model.network.window)")
        if weight < 0 or eps <= 0:
            raise ValueError(f"need weight >= 0 and eps > 0, not {weight} and {eps} (--model.network.weight / eps)")
        super().__init__(n_users, n_items, factor=factor, init_std=init_std)  # MF's tables, drawn as MF draws them
        self.history, self.window, self.weight, self.eps = history, window, float(weight), float(eps)
        # [n_users, history]: each user's latest training items, latest first; n_items where there are fewer
        self.register_buffer("recent_items", torch.full((n_users, history), n_items, dtype=torch.long))
        # [n_users, history]: 1 / (n_l + 1) of each of those items (what one transition from it counts)
        self.register_buffer("recent_norm", torch.zeros(n_users, history))
        # the transition counts, sparse: sorted keys l * n_items + i, and N(l, i) / (n_l + 1) for each; their
        # length depends on the data (set by observe, and by loading a checkpoint)
        self.register_buffer("next_keys", torch.zeros(0, dtype=torch.long))
        self.register_buffer("next_values", torch.zeros(0))

    # -- what the network reads of the training data -------------------------------------------------
    def observe(self, split) -> None:
        """Count the transitions of ``split`` (:class:`ncf.splits.Split`, which must know the order of each
        user's rows: ``train_recency``) and keep each user's ``history`` latest items."""
        recent = latest_items(split, self.n_users, self.n_items, self.history, "TransitionMF",
                              "latest items and what followed them")
        users, items, recency = split.train_users.cpu(), split.train_items.cpu(), split.train_recency.cpu()
        longest = int(recency.max()) + 1
        n = self.n_items
        # every user's rows in time order: by user, then from the oldest (largest recency) to the latest
        order = torch.argsort(users * (longest + 1) + (longest - recency), stable=True)
        u, i = users[order], items[order]
        # no transition is further apart than a user's sequence is long; a window past it adds nothing
        reach = min(self.window, longest - 1)
        lengths = torch.bincount(users).double()
        m = lengths.sub(1).clamp(0, reach)
        pairs = int((m * lengths - m * (m + 1) / 2).sum())  # the (earlier, later) row pairs counted
        memory = _physical_memory()
        if memory is not None and pairs * 32 > memory:  # keys, their sort and the counts
            raise DataError(f"window {self.window} counts {pairs:,} pairs of training rows ({pairs * 32 / 2 ** 30:,.1f} "
                            f"GiB to count), more than this machine's {memory / 2 ** 30:,.0f} GiB of memory; use a "
                            f"smaller --model.network.init_args.window (the config's is 10).")
        keys = [torch.zeros(0, dtype=torch.long)]
        for d in range(1, reach + 1):
            same = u[d:] == u[:-d]
            keys.append(i[:-d][same] * n + i[d:][same])
        keys, counts = torch.unique(torch.cat(keys), return_counts=True)
        norm = 1.0 / (torch.bincount(items, minlength=n).double() + 1.0)  # 1 / (n_l + 1)
        values = (counts.double() * norm[keys // n]).float()
        device = self.recent_items.device
        self.recent_items = recent.to(device)
        self.recent_norm = torch.where(recent < n, norm[recent.clamp_max(n - 1)], 0.0).float().to(device)
        self.next_keys, self.next_values = keys.to(device), values.to(device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the counts' length is the data's: take the stored length before loading them
        for name in ("next_keys", "next_values"):
            stored = state_dict.get(prefix + name)
            if isinstance(stored, torch.Tensor) and stored.dim() == 1:
                setattr(self, name, torch.empty_like(getattr(self, name)).resize_(stored.shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def next_parts(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``[..., history]``: what each of the user's latest items adds to ``next(u, i)`` (the module docstring),
        for broadcastable ``users`` and ``items``; an empty slot adds nothing."""
        recent = self.recent_items[users]  # [..., H]
        keys = recent * self.n_items + items.unsqueeze(-1)  # [..., H]; an empty slot's key matches nothing
        if len(self.next_keys):
            at = torch.searchsorted(self.next_keys, keys.reshape(-1)).clamp_max(len(self.next_keys) - 1)
            parts = torch.where(self.next_keys[at] == keys.reshape(-1), self.next_values[at], 0.0).view(keys.shape)
        else:
            parts = torch.zeros(keys.shape, device=keys.device)
        # the item among the user's own latest: their own transitions into it (from the older slots at most
        # `window` places back) are out
        slot = torch.arange(self.history, device=keys.device)
        match = recent == items.unsqueeze(-1)
        at_slot = torch.where(match.any(-1), match.int().argmax(-1), self.history).unsqueeze(-1)  # [..., 1]
        own = (slot > at_slot) & (slot <= at_slot + self.window)
        return (parts - own * self.recent_norm[users]).clamp_min(0.0)

    def next_counts(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``next(u, i)`` of the module docstring, for broadcastable ``users`` and ``items`` (its shape)."""
        return self.next_parts(users, items).sum(-1)

    def read_items(self, users: torch.Tensor, items: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
        """``next`` reads the user's latest items: ``(4, recent [N, H], parts [N, H])``, each latest item
        (``n_items``: an empty slot) and what it adds to ``next(u, i)``."""
        return 4, self.recent_items[users], self.next_parts(users, items)

    # -- the contract ---------------------------------------------------------------------------------
    def embed(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # [B, f], [B, f], [B, 1], [B, 1], [B, 1] (or [B, 1, .] user side and [B, W, .] for a row of W items)
        if self.training:  # MF is fitted alone: the prior is added when scoring (module docstring)
            prior = torch.zeros(torch.broadcast_shapes(users.shape, items.shape), device=self.bias.device)
        else:
            prior = self.weight * torch.log1p(self.next_counts(users, items) / self.eps)
        return (_rows(self.user_embedding, users), _rows(self.item_embedding, items), _rows(self.user_bias, users),
                _rows(self.item_bias, items), prior.unsqueeze(-1))

    def features(self, p, q, bu, bi, nx) -> tuple[torch.Tensor, ...]:
        return p * q, bu, bi, nx

    def score_features(self, z, bu, bi, nx) -> torch.Tensor:
        return z.sum(-1) + bu.squeeze(-1) + bi.squeeze(-1) + nx.squeeze(-1) + self.bias

    def score(self, p, q, bu, bi, nx) -> torch.Tensor:
        """As MF's: a user's row of items (``p [B, 1, f]``, ``q [B, W, f]``) as one matrix product."""
        if p.dim() == 3 and p.shape[1] == 1 and q.dim() == 3:
            dot = torch.matmul(q, p.transpose(1, 2)).squeeze(-1)  # [B, W]
            return dot + bu.squeeze(-1) + bi.squeeze(-1) + nx.squeeze(-1) + self.bias
        return Recommender.score(self, p, q, bu, bi, nx)

    def embedding_rows(self, users: torch.Tensor, items: torch.Tensor) -> dict[int, tuple]:
        """``next`` (embedding 4) reads no table row: no rows, so no training row's gradient reaches it."""
        empty = torch.zeros(len(users), 0, dtype=torch.long, device=users.device)
        return {4: (empty, empty.float(), 1)}
