"""Matrix factorisation with biases: ``p_u . q_i + b_u + b_i + b`` (Koren et al. 2009; Rendle et al., "Neural
Collaborative Filtering vs. Matrix Factorization Revisited", RecSys 2020, found it ahead of NeuMF when tuned).

A model in one file: it implements :class:`ncf.contract.Recommender` and is named in a config by its class,
``model.network: {class_path: ncf.mf.MF, init_args: {factor: 64}}`` (configs/mf.yaml); training, explaining,
history influence, prediction and the tuner find it there.
"""
from __future__ import annotations

import torch
from torch import nn

from .contract import Recommender

__all__ = ["MF"]


class MF(Recommender):
    """The dot product of user and item embeddings, plus a user bias, an item bias and a global bias.

    Explanations see four embeddings: the user and item vectors (their element-wise product is the feature the
    sum reads) and each side's bias, a width-1 embedding.

    >>> m = MF(5, 7, factor=4)
    >>> u, i = torch.tensor([0, 1]), torch.tensor([2, 3])
    >>> torch.allclose(m(u, i), (m.user_embedding(u) * m.item_embedding(i)).sum(-1) + m.user_bias(u)[:, 0]
    ...                + m.item_bias(i)[:, 0] + m.bias)
    True
    """

    embedding_names = ("user", "item", "user_bias", "item_bias")
    feature_sources = (("product", 0, 1), ("identity", 2), ("identity", 3))
    groups = {"side": {"user": (0, 2), "item": (1, 3)}}

    def __init__(self, n_users: int, n_items: int, factor: int = 64, biases: bool = True, init_std: float = 0.01):
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor must be at least 1, not {factor} (--model.network.factor)")
        if init_std <= 0:
            raise ValueError(f"init_std must be positive, not {init_std} (--model.network.init_std)")
        self.n_users, self.n_items, self.factor, self.biases = n_users, n_items, factor, biases
        self.user_embedding = nn.Embedding(n_users, factor)
        self.item_embedding = nn.Embedding(n_items, factor)
        nn.init.normal_(self.user_embedding.weight, std=init_std)
        nn.init.normal_(self.item_embedding.weight, std=init_std)
        # Biases start at zero; without them (biases=False) they stay zero and untrained: a plain dot product.
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        self.bias = nn.Parameter(torch.zeros(()))
        for p in (self.user_bias.weight, self.item_bias.weight):
            nn.init.zeros_(p)
            p.requires_grad_(biases)
        self.bias.requires_grad_(biases)

    def embed(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # [B, f], [B, f], [B, 1], [B, 1] (or [B, 1, .] and [B, W, .] for a row of a user's W items)
        return (_rows(self.user_embedding, users), _rows(self.item_embedding, items), _rows(self.user_bias, users),
                _rows(self.item_bias, items))

    def features(self, p, q, bu, bi) -> tuple[torch.Tensor, ...]:
        return p * q, bu, bi

    def score_features(self, z: torch.Tensor, bu: torch.Tensor, bi: torch.Tensor) -> torch.Tensor:
        return z.sum(-1) + bu.squeeze(-1) + bi.squeeze(-1) + self.bias  # [B]

    def score(self, p, q, bu, bi) -> torch.Tensor:
        """``score_features(*features(...))``; a user's row of items (``p [B, 1, f]``, ``q [B, W, f]``, as the
        sampled softmax trains) as one matrix product, without the ``[B, W, f]`` element-wise product."""
        if p.dim() == 3 and p.shape[1] == 1 and q.dim() == 3:
            dot = torch.matmul(q, p.transpose(1, 2)).squeeze(-1)  # [B, W]
            return dot + bu.squeeze(-1) + bi.squeeze(-1) + self.bias
        return super().score(p, q, bu, bi)

    def embedding_tables(self) -> tuple[torch.Tensor, ...]:
        return (self.user_embedding.weight, self.item_embedding.weight, self.user_bias.weight, self.item_bias.weight)


def _rows(table: nn.Embedding, index: torch.Tensor) -> torch.Tensor:
    """``table(index)``; with dense gradients by ``index_select``, whose backward (an ``index_add_``) costs
    less on CPU than the embedding's. Sparse tables (large catalogues, ``ncf.module``) stay embeddings."""
    if table.sparse:
        return table(index)
    return table.weight.index_select(0, index.reshape(-1)).view(*index.shape, table.weight.shape[1])
