"""GMF, MLP and NeuMF (He et al., "Neural Collaborative Filtering", WWW 2017) as plain ``nn.Module``s.

Each model splits its forward pass in two so that explanations never patch layers:

* ``embed(users, items)`` returns the embedding tensors (GMF/MLP: user, item; NeuMF: GMF user, GMF item,
  MLP user, MLP item), named by ``embedding_names``;
* ``score(*embeddings)`` maps them to the logit.

``forward(users, items) == score(*embed(users, items))`` up to float rounding: for large batches the MLP
tower's first layer is folded into the embedding tables (see :meth:`MLP.hidden`). For DeepLift,
``score`` is further split into ``features(*embeddings)`` (the element-wise products of GMF,
concatenations left to the network) and ``score_features(*features)``; ``feature_sources`` says which
embeddings each feature comes from.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GMF", "MLP", "NeuMF", "MODELS", "build_model", "mlp_layers"]


def mlp_layers(factor: int, num_layers: int) -> list[int]:
    """The paper's tower: halving layer by layer down to ``factor`` predictive factors.

    >>> mlp_layers(8, 3)
    [32, 16, 8]
    """
    return [factor * 2 ** (num_layers - 1 - k) for k in range(num_layers)]


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


class GMF(nn.Module):
    """Generalized matrix factorization: ``h . (p_u * q_i) + b``.

    >>> m = GMF(5, 7, factor=4)
    >>> m(torch.tensor([0, 1]), torch.tensor([2, 3])).shape
    torch.Size([2])
    """

    embedding_names = ("user", "item")
    feature_sources = (("product", 0, 1),)

    def __init__(self, n_users: int, n_items: int, factor: int = 8):
        super().__init__()
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

    def gmf_vector(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.features(*self.embed(users, items))[0]

    def score(self, *embeddings: torch.Tensor) -> torch.Tensor:
        return self.score_features(*self.features(*embeddings))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.score(*self.embed(users, items))


class MLP(nn.Module):
    """Multi-layer perceptron over concatenated user and item embeddings.

    ``num_layers`` ReLU layers halve down to ``factor``; each embedding is as wide as the first layer,
    so their concatenation is twice that (the paper's ``[64, 32, 16, 8]`` for factor 8).

    >>> m = MLP(5, 7, factor=8, num_layers=3)
    >>> [e.shape[-1] for e in m.embed(torch.tensor([0]), torch.tensor([0]))]
    [32, 32]
    """

    embedding_names = ("user", "item")
    feature_sources = (("identity", 0), ("identity", 1))

    def __init__(self, n_users: int, n_items: int, factor: int = 8, num_layers: int = 3, dropout: float = 0.0):
        super().__init__()
        self.n_users, self.n_items, self.factor, self.num_layers = n_users, n_items, factor, num_layers
        sizes = mlp_layers(factor, num_layers)
        self.user_embedding = _embedding(n_users, sizes[0])
        self.item_embedding = _embedding(n_items, sizes[0])
        self.tower = _tower([2 * sizes[0]] + sizes, dropout)  # e.g. factor 8: 64 -> 32 -> 16 -> 8
        self.head = _head(factor)

    def embed(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.user_embedding(users), self.item_embedding(items)

    def features(self, p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return p, q

    def mlp_vector(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.tower(torch.cat([p, q], dim=-1))  # [B, 2*d] -> [B, factor]

    def score_features(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp_vector(p, q)).squeeze(-1)

    def score(self, *embeddings: torch.Tensor) -> torch.Tensor:
        return self.score_features(*self.features(*embeddings))

    def hidden(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``mlp_vector(*embed(users, items))`` by the cheaper of two equal routes.

        The first layer is linear in the concatenation, ``W [p_u ; q_i] + b = (P W_u^T + b)[u] + (Q W_i^T)[i]``,
        so for a batch with more pairs than half the users and items together it is applied once per table
        row and then gathered (fewer multiply-adds, no concatenation), rather than once per pair.

        >>> m = MLP(5, 7, factor=4, num_layers=2)
        >>> u, i = torch.randint(5, (64,)), torch.randint(7, (64,))
        >>> torch.allclose(m.hidden(u, i), m.mlp_vector(*m.embed(u, i)), atol=1e-6)
        True
        """
        if 2 * users.numel() <= self.n_users + self.n_items:
            return self.mlp_vector(*self.embed(users, items))
        first = self.tower[0]
        d = self.user_embedding.embedding_dim
        by_user = torch.addmm(first.bias, self.user_embedding.weight, first.weight[:, :d].t())
        by_item = self.item_embedding.weight @ first.weight[:, d:].t()
        h = F.embedding(users, by_user) + F.embedding(items, by_item)
        for layer in list(self.tower)[1:]:
            h = layer(h)
        return h

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(users, items)).squeeze(-1)


class NeuMF(nn.Module):
    """Neural matrix factorization: a GMF branch and an MLP branch with their own embeddings, fused by one
    output layer over ``[gmf_vector ; last_mlp_layer]``.

    >>> m = NeuMF(5, 7, factor=8, num_layers=3)
    >>> [tuple(e.shape) for e in m.embed(torch.tensor([0]), torch.tensor([0]))]
    [(1, 8), (1, 8), (1, 32), (1, 32)]
    """

    embedding_names = ("gmf_user", "gmf_item", "mlp_user", "mlp_item")
    feature_sources = (("product", 0, 1), ("identity", 2), ("identity", 3))

    def __init__(self, n_users: int, n_items: int, factor: int = 8, num_layers: int = 3, dropout: float = 0.0):
        super().__init__()
        self.n_users, self.n_items, self.factor, self.num_layers = n_users, n_items, factor, num_layers
        self.gmf = GMF(n_users, n_items, factor)
        self.mlp = MLP(n_users, n_items, factor, num_layers, dropout)
        del self.gmf.head, self.mlp.head  # NeuMF's own head replaces the branch heads
        self.head = _head(2 * factor)

    @torch.no_grad()
    def load_pretrained(self, gmf: GMF, mlp: MLP, alpha: float = 0.5) -> None:
        """Initialise from trained GMF and MLP: embeddings and tower copied, head ``[alpha h_gmf ; (1-alpha) h_mlp]``."""
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

    def score(self, *embeddings: torch.Tensor) -> torch.Tensor:
        return self.score_features(*self.features(*embeddings))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        z = self.gmf.gmf_vector(users, items)
        return self.head(torch.cat([z, self.mlp.hidden(users, items)], dim=-1)).squeeze(-1)


MODELS = {"gmf": GMF, "mlp": MLP, "neumf": NeuMF}


def build_model(name: str, n_users: int, n_items: int, factor: int = 8, num_layers: int = 3, dropout: float = 0.0) -> nn.Module:
    """Build a network by name (``gmf``, ``mlp``, ``neumf``).

    >>> type(build_model("neumf", 10, 20)).__name__
    'NeuMF'
    """
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.")
    if key == "gmf":
        return GMF(n_users, n_items, factor)
    return MODELS[key](n_users, n_items, factor, num_layers, dropout)
