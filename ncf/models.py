"""GMF, MLP and NeuMF (He et al., "Neural Collaborative Filtering", WWW 2017) as plain ``nn.Module``s.

Each model splits its forward pass in two so that explanations never patch layers:

* ``embed(users, items)`` returns the embedding tensors (GMF/MLP: user, item; NeuMF: GMF user, GMF item,
  MLP user, MLP item), named by ``embedding_names``;
* ``score(*embeddings)`` maps them to the logit.

``forward(users, items) == score(*embed(users, items))`` up to float rounding: for large batches the MLP
tower's first layer is folded into the embedding tables (see :meth:`MLP.hidden`), and the logit and its
gradients are then computed by one function with a hand-written backward (``_FoldedLogit``). For DeepLift,
``score`` is further split into ``features(*embeddings)`` (the element-wise products of GMF,
concatenations left to the network) and ``score_features(*features)``; ``feature_sources`` says which
embeddings each feature comes from.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

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


def _scatter_rows(grad: torch.Tensor, index: torch.Tensor, n_rows: int) -> torch.Tensor:
    """The backward of ``F.embedding(index, table)``: ``grad``'s rows summed into ``n_rows`` rows.

    On CPU ``index_add_`` adds the rows in the same order as the embedding backward (the same bits, tested)
    in about half the time; elsewhere the embedding backward itself, as autograd would run it.
    """
    if grad.device.type == "cpu":
        return grad.new_zeros(n_rows, grad.shape[1]).index_add_(0, index, grad)
    return torch.ops.aten.embedding_dense_backward(grad, index, n_rows, -1, False)


class _FoldedLogit(torch.autograd.Function):
    """The logit of MLP or NeuMF from folded first-layer tables, with a hand-written backward.

    Computes ``head([gmf_user[u] * gmf_item[i] ;] tower(relu(by_user[u] + by_item[i])))`` and exactly the
    gradients autograd computes for the same expression (the same operations in the same order: the same
    bits, tested), in fewer passes over the ``[batch, width]`` activations: the gather-and-add is one
    ``embedding_bag``, the ReLUs and their backwards work in place, the last layer and the GMF product are
    written straight into the head's input (no concatenation), and the embedding backwards are ``index_add_``.
    ``tower`` holds the weight and bias of every layer after the first.
    """

    @staticmethod
    def forward(ctx, users, items, by_user, by_item, head_w, head_b, gmf_user, gmf_item, *tower):
        f = 0 if gmf_user is None else gmf_user.shape[1]
        last = by_user.new_empty(users.shape[0], head_w.shape[1])  # the head's input: [gmf product ; tower output]
        pairs = torch.stack([users, items + by_user.shape[0]], dim=1)
        h = F.embedding_bag(pairs, torch.cat([by_user, by_item]), mode="sum").relu_()
        hidden = [h]
        weights = tower[0::2]
        for k, (w, b) in enumerate(zip(weights, tower[1::2])):
            h = torch.addmm(b, h, w.t(), out=last[:, f:] if k == len(weights) - 1 else None).relu_()
            hidden.append(h)
        if not weights:
            last[:, f:].copy_(h)
        pu = qi = None
        if f:
            pu, qi = F.embedding(users, gmf_user), F.embedding(items, gmf_item)
            torch.mul(pu, qi, out=last[:, :f])
        ctx.save_for_backward(users, items, pu, qi, last, head_w, *hidden, *weights)
        ctx.f, ctx.depth = f, len(hidden)
        ctx.rows = (by_user.shape[0], by_item.shape[0])
        return torch.addmm(head_b, last, head_w.t()).squeeze(-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        users, items, pu, qi, last, head_w, *rest = ctx.saved_tensors
        hidden, weights = rest[:ctx.depth], rest[ctx.depth:]
        f, (n_users, n_items) = ctx.f, ctx.rows
        grad = grad.contiguous()
        g = grad.unsqueeze(1)
        grad_head_w, grad_head_b = g.t().mm(last), g.sum(0)
        grad_gu = grad_gi = None
        if f:
            gz = torch.outer(grad, head_w[0, :f])
            grad_gu = _scatter_rows(gz * qi, users, n_users)
            grad_gi = _scatter_rows(gz.mul_(pu), items, n_items)
        gh = torch.outer(grad, head_w[0, f:])
        grad_tower: list[torch.Tensor] = []
        for k in range(len(weights), 0, -1):
            torch.ops.aten.threshold_backward.grad_input(gh, hidden[k], 0, grad_input=gh)
            grad_tower = [gh.t().mm(hidden[k - 1]), gh.sum(0)] + grad_tower
            gh = gh.mm(weights[k - 1])
        torch.ops.aten.threshold_backward.grad_input(gh, hidden[0], 0, grad_input=gh)
        return (None, None, _scatter_rows(gh, users, n_users), _scatter_rows(gh, items, n_items),
                grad_head_w, grad_head_b, grad_gu, grad_gi, *grad_tower)


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

    def _fold(self, users: torch.Tensor) -> bool:
        return 2 * users.numel() > self.n_users + self.n_items

    def _folded_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P W_u^T + b, Q W_i^T)``: the first layer applied to every user and item row."""
        first = self.tower[0]
        d = self.user_embedding.embedding_dim
        by_user = torch.addmm(first.bias, self.user_embedding.weight, first.weight[:, :d].t())
        return by_user, self.item_embedding.weight @ first.weight[:, d:].t()

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
        if not self._fold(users):
            return self.mlp_vector(*self.embed(users, items))
        by_user, by_item = self._folded_tables()
        h = F.embedding(users, by_user) + F.embedding(items, by_item)
        for layer in list(self.tower)[1:]:
            h = layer(h)
        return h

    def folded_logit(self, users: torch.Tensor, items: torch.Tensor, head: nn.Linear,
                     gmf: Optional[GMF] = None) -> Optional[torch.Tensor]:
        """``head([gmf_vector ;] hidden)`` through ``_FoldedLogit``, or None where that route does not apply
        (small batches, or dropout active in training)."""
        if not self._fold(users) or (self.training and any(m.p > 0 for m in self.tower if isinstance(m, nn.Dropout))):
            return None
        later = [m for m in self.tower if isinstance(m, nn.Linear)][1:]
        tower = [p for layer in later for p in (layer.weight, layer.bias)]
        gmf_tables = (None, None) if gmf is None else (gmf.user_embedding.weight, gmf.item_embedding.weight)
        return _FoldedLogit.apply(users, items, *self._folded_tables(), head.weight, head.bias, *gmf_tables, *tower)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        logit = self.folded_logit(users, items, self.head)
        return self.head(self.hidden(users, items)).squeeze(-1) if logit is None else logit


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
        logit = self.mlp.folded_logit(users, items, self.head, self.gmf)
        if logit is not None:
            return logit
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
