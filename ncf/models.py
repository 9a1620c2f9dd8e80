"""GMF, MLP and NeuMF (He et al., "Neural Collaborative Filtering", WWW 2017) as plain ``nn.Module``s.

Each follows the contract of :class:`ncf.contract.Recommender`: ``embed`` (GMF/MLP: user, item; NeuMF:
GMF user, GMF item, MLP user, MLP item), ``features`` / ``score_features`` and the groups it declares.
``forward(users, items) == score(*embed(users, items))``: the plain computation. Training and evaluation of MLP
and NeuMF may score through :class:`ncf.fused.FoldedScorer` instead (the same function, faster).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .contract import Recommender

__all__ = ["GMF", "MLP", "NeuMF", "mlp_layers"]


def mlp_layers(factor: int, num_layers: int) -> list[int]:
    """The paper's tower: halving layer by layer down to ``factor`` predictive factors.

    >>> mlp_layers(8, 3)
    [32, 16, 8]
    """
    return [factor * 2 ** (num_layers - 1 - k) for k in range(num_layers)]


def _check(dropout: float = 0.0, **sizes: Optional[int]) -> None:
    """Raise ``ValueError`` naming the first size below 1 (None: not given) or a dropout outside [0, 1)."""
    for name, value in sizes.items():
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, not {value} (--model.network.{name})")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), not {dropout} (--model.network.dropout)")


def _tower(sizes: Sequence[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:]):
        lin = nn.Linear(d_in, d_out)
        nn.init.xavier_uniform_(lin.weight)
        nn.init.zeros_(lin.bias)
        # One ReLU module per layer (DeepLift hooks each separately); a Dropout even at p=0 keeps the
        # state_dict keys the same whatever the dropout, so pretrained towers load into any NeuMF.
        layers += [lin, nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


def _embedding(n: int, dim: int) -> nn.Embedding:
    emb = nn.Embedding(n, dim)
    nn.init.normal_(emb.weight, std=0.01)  # the paper's N(0, 0.01) initialisation
    return emb


def _head(dim: int) -> nn.Linear:
    head = nn.Linear(dim, 1)
    nn.init.kaiming_uniform_(head.weight, a=1, nonlinearity="sigmoid")  # LeCun-uniform, as the paper's code
    nn.init.zeros_(head.bias)
    return head


class GMF(Recommender):
    """Generalized matrix factorization: ``h . (p_u * q_i) + b``.

    >>> m = GMF(5, 7, factor=4)
    >>> m(torch.tensor([0, 1]), torch.tensor([2, 3])).shape
    torch.Size([2])
    """

    embedding_names = ("user", "item")
    feature_sources = (("product", 0, 1),)
    groups = {"side": {"user": (0,), "item": (1,)}}

    def __init__(self, n_users: int, n_items: int, factor: int = 8):
        super().__init__()
        _check(factor=factor)
        self.n_users, self.n_items, self.factor = n_users, n_items, factor
        self.user_embedding = _embedding(n_users, factor)
        self.item_embedding = _embedding(n_items, factor)
        self.head = _head(factor)

    def embed(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.user_embedding(users), self.item_embedding(items)  # [B, f] each

    def features(self, p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (p * q,)

    def score_features(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z).squeeze(-1)  # [B]


class MLP(Recommender):
    """Multi-layer perceptron over concatenated user and item embeddings.

    ``num_layers`` ReLU layers halve down to ``factor``; each embedding is as wide as the first layer,
    so their concatenation is twice that (the paper's ``[64, 32, 16, 8]`` for factor 8).

    >>> m = MLP(5, 7, factor=8, num_layers=3)
    >>> [e.shape[-1] for e in m.embed(torch.tensor([0]), torch.tensor([0]))]
    [32, 32]
    """

    embedding_names = ("user", "item")
    feature_sources = (("identity", 0), ("identity", 1))
    groups = {"side": {"user": (0,), "item": (1,)}}

    def __init__(self, n_users: int, n_items: int, factor: int = 8, num_layers: int = 3, dropout: float = 0.0,
                 embedding: Optional[int] = None):
        super().__init__()
        _check(dropout, factor=factor, num_layers=num_layers, embedding=embedding)
        self.n_users, self.n_items, self.factor, self.num_layers = n_users, n_items, factor, num_layers
        sizes = mlp_layers(factor, num_layers)
        self.embedding = embedding or sizes[0]  # per side; the paper's: as wide as the first layer
        self.user_embedding = _embedding(n_users, self.embedding)
        self.item_embedding = _embedding(n_items, self.embedding)
        self.tower = _tower([2 * self.embedding] + sizes, dropout)  # e.g. factor 8: 64 -> 32 -> 16 -> 8
        self.head = _head(factor)

    def embed(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.user_embedding(users), self.item_embedding(items)

    def features(self, p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return p, q

    def mlp_vector(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.tower(torch.cat([p, q], dim=-1))  # [B, 2*d] -> [B, factor]

    def score_features(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp_vector(p, q)).squeeze(-1)


class NeuMF(Recommender):
    """Neural matrix factorization: a GMF branch and an MLP branch with their own embeddings, fused by one
    output layer over ``[gmf_vector ; last_mlp_layer]``.

    >>> m = NeuMF(5, 7, factor=8, num_layers=3)
    >>> [tuple(e.shape) for e in m.embed(torch.tensor([0]), torch.tensor([0]))]
    [(1, 8), (1, 8), (1, 32), (1, 32)]
    """

    embedding_names = ("gmf_user", "gmf_item", "mlp_user", "mlp_item")
    feature_sources = (("product", 0, 1), ("identity", 2), ("identity", 3))
    groups = {"side": {"user": (0, 2), "item": (1, 3)}, "branch": {"gmf": (0, 1), "mlp": (2, 3)}}

    def __init__(self, n_users: int, n_items: int, factor: int = 8, num_layers: int = 3, dropout: float = 0.0,
                 mlp_embedding: Optional[int] = None):
        super().__init__()
        _check(dropout, factor=factor, num_layers=num_layers, mlp_embedding=mlp_embedding)
        self.n_users, self.n_items, self.factor, self.num_layers = n_users, n_items, factor, num_layers
        # The branches are a GMF and an MLP without output layers of their own: NeuMF's head reads both.
        # (Built whole and then dropped, their heads draw from the generator as a GMF and an MLP built alone.)
        self.gmf = GMF(n_users, n_items, factor)
        self.gmf.head = None
        self.mlp = MLP(n_users, n_items, factor, num_layers, dropout, embedding=mlp_embedding)
        self.mlp.head = None
        self.head = _head(2 * factor)

    @torch.no_grad()
    def load_pretrained(self, gmf: GMF, mlp: MLP, alpha: float = 0.5) -> None:
        """Initialise from trained GMF and MLP: embeddings and tower copied, head ``[alpha h_gmf ; (1-alpha) h_mlp]``.

        Raises:
            ValueError: ``gmf`` or ``mlp`` is not a GMF / MLP of this NeuMF's sizes.
        """
        for name, got, want in (("GMF", type(gmf), GMF), ("MLP", type(mlp), MLP)):
            if got is not want:
                raise ValueError(f"the pretrained {name} is a {got.__name__}")
        for name, got, want in (("GMF factor", gmf.factor, self.factor), ("MLP factor", mlp.factor, self.factor),
                                ("MLP num_layers", mlp.num_layers, self.num_layers),
                                ("GMF users", gmf.n_users, self.n_users), ("GMF items", gmf.n_items, self.n_items),
                                ("MLP users", mlp.n_users, self.n_users), ("MLP items", mlp.n_items, self.n_items),
                                ("MLP embedding", mlp.embedding, self.mlp.embedding)):
            if got != want:
                raise ValueError(f"{name} {got} where this NeuMF has {want}")
        for name in ("user_embedding", "item_embedding"):
            getattr(self.gmf, name).weight.copy_(getattr(gmf, name).weight)
            getattr(self.mlp, name).weight.copy_(getattr(mlp, name).weight)
        self.mlp.tower.load_state_dict(mlp.tower.state_dict())
        self.head.weight.copy_(torch.cat([alpha * gmf.head.weight, (1 - alpha) * mlp.head.weight], dim=1))
        self.head.bias.copy_(alpha * gmf.head.bias + (1 - alpha) * mlp.head.bias)

    def embed(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.gmf.embed(users, items) + self.mlp.embed(users, items)

    def features(self, gu, gi, mu, mi) -> tuple[torch.Tensor, ...]:
        return gu * gi, mu, mi

    def score_features(self, z: torch.Tensor, mu: torch.Tensor, mi: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([z, self.mlp.mlp_vector(mu, mi)], dim=-1)).squeeze(-1)  # [B, 2f] -> [B]
