"""The fast scoring path for MLP and NeuMF: :class:`FoldedScorer`, which the module chooses (its
``fast_path`` option) beside the networks' plain ``forward``. The same function as ``forward``; the models
never call it.

For a batch of more pairs than half the users and items together, the MLP tower's first layer, which is
linear in the concatenation ``[p_u ; q_i]``, is applied once per embedding-table row and gathered:
``W [p_u ; q_i] + b = (P W_u^T + b)[u] + (Q W_i^T)[i]`` (fewer multiply-adds than once per pair, and no
concatenation). The logit and its gradients are then computed by one function with a hand-written
backward (:class:`_FoldedLogit`) that performs the same floating-point operations in the same order as
autograd on the same expression, in fewer passes over the activations: the same bits (tested).

With dropout active in training, or under autocast (``--trainer.precision bf16-mixed``), the scorer keeps the
folded first layer and lets autograd do the rest; with sparse embedding gradients (large catalogues) it
splits the concatenations into sums of matrix products. :meth:`FoldedScorer.l2` is the L2 penalty on the same
batches, counted per table row, so that ``weight_decay`` does not need the per-pair embeddings. The embedding
backward is an ``index_add_`` on CPU (the same order of additions as autograd's, in less time); on other
devices it is the embedding backward itself. Inside a scoring pass (:meth:`FoldedScorer.scoring_pass`:
validation, test and prediction epochs), where the weights hold still, scoring without gradients folds the
tables once, not per batch.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .models import MLP, NeuMF

__all__ = ["FoldedScorer", "folded_hidden"]


def _scatter_rows(grad: torch.Tensor, index: torch.Tensor, n_rows: int) -> torch.Tensor:
    """The backward of ``F.embedding(index, table)``: ``grad``'s rows summed into ``n_rows`` rows.

    On CPU ``index_add_`` adds the rows in the same order as the embedding backward (the same bits, tested)
    in less time; elsewhere the embedding backward itself, as autograd would run it.
    """
    if grad.device.type == "cpu":
        return grad.new_zeros(n_rows, grad.shape[1]).index_add_(0, index, grad)
    return torch.ops.aten.embedding_dense_backward(grad, index, n_rows, -1, False)


def _folded_forward(users, items, table, n_users, head_w, head_b, gmf_user, gmf_item, tower):
    """The logit from the folded first-layer tables stacked in one ``table`` (users' rows, then items'),
    and what the backward of :class:`_FoldedLogit` needs: ``(logit, pu, qi, last, hidden, weights)``."""
    f = 0 if gmf_user is None else gmf_user.shape[1]
    last = table.new_empty(users.shape[0], head_w.shape[1])  # the head's input: [gmf product ; tower output]
    pairs = torch.stack([users, items + n_users], dim=1)
    h = F.embedding_bag(pairs, table, mode="sum").relu_()
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
    return torch.addmm(head_b, last, head_w.t()).squeeze(-1), pu, qi, last, hidden, weights


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
        logit, pu, qi, last, hidden, weights = _folded_forward(
            users, items, torch.cat([by_user, by_item]), by_user.shape[0], head_w, head_b, gmf_user, gmf_item, tower)
        ctx.save_for_backward(users, items, pu, qi, last, head_w, *hidden, *weights)
        ctx.f, ctx.depth = 0 if gmf_user is None else gmf_user.shape[1], len(hidden)
        ctx.rows = (by_user.shape[0], by_item.shape[0])
        return logit

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


def _branches(net: nn.Module) -> Optional[tuple[nn.Module, Optional[nn.Module], nn.Linear]]:
    """``(mlp branch, gmf branch or None, output layer)`` of a model the fast path serves."""
    if isinstance(net, NeuMF):
        return net.mlp, net.gmf, net.head
    if isinstance(net, MLP):
        return net, None, net.head
    return None


def _applies(mlp: nn.Module, users: torch.Tensor) -> bool:
    return 2 * users.numel() > mlp.n_users + mlp.n_items


def _folded_tables(mlp: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P W_u^T + b, Q W_i^T)``: the first layer applied to every user and item row."""
    first = mlp.tower[0]
    d = mlp.user_embedding.embedding_dim
    by_user = torch.addmm(first.bias, mlp.user_embedding.weight, first.weight[:, :d].t())
    return by_user, mlp.item_embedding.weight @ first.weight[:, d:].t()


def folded_hidden(mlp: nn.Module, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """The MLP tower's output with the first layer folded into the tables (any batch size).

    >>> from ncf.models import MLP
    >>> m = MLP(5, 7, factor=4, num_layers=2)
    >>> u, i = torch.randint(5, (64,)), torch.randint(7, (64,))
    >>> torch.allclose(folded_hidden(m, u, i), m.mlp_vector(*m.embed(u, i)), atol=1e-6)
    True
    """
    by_user, by_item = _folded_tables(mlp)
    h = F.embedding(users, by_user) + F.embedding(items, by_item)
    for layer in list(mlp.tower)[1:]:
        h = layer(h)
    return h


def _split_logit(mlp: nn.Module, gmf: Optional[nn.Module], head: nn.Linear, users: torch.Tensor,
                 items: torch.Tensor) -> torch.Tensor:
    """The per-pair logit with the concatenations split into sums of matrix products:
    ``W [p ; q] + b = (b + p W_u^T) + q W_i^T`` for the first layer and likewise for the output layer over
    ``[gmf product ; tower output]``. The same function (tested), in less time per step on large
    catalogues: no ``[batch, 2 d]`` copy forward and no slicing of its gradient backward."""
    first, d = mlp.tower[0], mlp.user_embedding.embedding_dim
    h = torch.addmm(first.bias, mlp.user_embedding(users), first.weight[:, :d].t())
    h = h.addmm_(mlp.item_embedding(items), first.weight[:, d:].t())
    for layer in list(mlp.tower)[1:]:
        h = layer(h)
    if gmf is None:
        return head(h).squeeze(-1)
    z = gmf.user_embedding(users) * gmf.item_embedding(items)
    f = z.shape[1]
    return torch.addmm(head.bias, z, head.weight[:, :f].t()).addmm_(h, head.weight[:, f:].t()).squeeze(-1)


class FoldedScorer:
    """Scores (user, item) pairs of a network as its ``forward`` does, by the fast path where it applies (MLP
    and NeuMF; see the module docstring) and by ``forward`` elsewhere.

    Example:
        >>> from ncf.models import NeuMF
        >>> net = NeuMF(5, 7, factor=4, num_layers=2)
        >>> scorer = FoldedScorer(net)
        >>> u, i = torch.randint(5, (64,)), torch.randint(7, (64,))
        >>> torch.allclose(scorer(u, i), net(u, i), atol=1e-6)
        True
        >>> with torch.no_grad(), scorer.scoring_pass():  # the weights hold still: tables folded once
        ...     kept = scorer(u, i)
    """

    def __init__(self, net: nn.Module):
        self.net = net
        self._parts = _branches(net)
        self._open = False  # inside a scoring pass
        self._table: Optional[torch.Tensor] = None  # the pass's folded tables, once computed

    def __call__(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        logit = self._fast(users, items) if self._parts is not None else None
        return self.net(users, items) if logit is None else logit

    # -- scoring passes: the module opens one per validation, test and prediction epoch. Nothing here can see
    # whether the weights changed (fused optimisers update them without counting versions), hence explicit.
    def begin(self) -> None:
        """Start a scoring pass: until :meth:`end`, the weights must hold still, and scoring without gradients
        folds the MLP's first layer into the tables once instead of once per batch."""
        self._open, self._table = True, None

    def end(self) -> None:
        """End the scoring pass (if any): the kept tables are dropped."""
        self._open, self._table = False, None

    @contextlib.contextmanager
    def scoring_pass(self):
        """:meth:`begin` and :meth:`end` around a block in which the weights hold still."""
        self.begin()
        try:
            yield self
        finally:
            self.end()

    def _scoring_table(self, mlp: nn.Module) -> torch.Tensor:
        if not self._open:
            return torch.cat(_folded_tables(mlp))
        if self._table is None:
            self._table = torch.cat(_folded_tables(mlp))
        return self._table

    def _fast(self, users: torch.Tensor, items: torch.Tensor) -> Optional[torch.Tensor]:
        """The logit by the fast path, or ``None`` where it does not apply."""
        mlp, gmf, head = self._parts
        if not _applies(mlp, users):
            # Large catalogues (sparse embedding gradients: see NCFModule) train per pair, without concatenating.
            if mlp.user_embedding.sparse and torch.is_grad_enabled() \
                    and not torch.is_autocast_enabled(users.device.type):
                return _split_logit(mlp, gmf, head, users, items)
            return None
        dropout = mlp.training and any(m.p > 0 for m in mlp.tower if isinstance(m, nn.Dropout))
        if dropout or torch.is_autocast_enabled(users.device.type):
            # Dropout in training, or mixed precision (the hand-written function computes in the tables'
            # dtype): the folded first layer, the rest through autograd.
            hidden = folded_hidden(mlp, users, items)
            if gmf is not None:
                hidden = torch.cat([gmf.user_embedding(users) * gmf.item_embedding(items), hidden], dim=-1)
            return head(hidden).squeeze(-1)
        later = [m for m in mlp.tower if isinstance(m, nn.Linear)][1:]
        tower = [p for layer in later for p in (layer.weight, layer.bias)]
        gmf_tables = (None, None) if gmf is None else (gmf.user_embedding.weight, gmf.item_embedding.weight)
        if not torch.is_grad_enabled():  # scoring: no autograd function; inside a scoring pass, tables kept
            return _folded_forward(users, items, self._scoring_table(mlp), mlp.n_users, head.weight, head.bias,
                                   *gmf_tables, tower)[0]
        return _FoldedLogit.apply(users, items, *_folded_tables(mlp), head.weight, head.bias, *gmf_tables, *tower)

    def l2(self, users: torch.Tensor, items: torch.Tensor) -> Optional[torch.Tensor]:
        """The sum over the batch's pairs of the squared norms of every embedding row they use, computed once
        per table row (``sum_r count_r * |row_r|^2``), or ``None`` where the fast path does not apply.

        The same penalty as gathering each pair's rows (and the same gradient up to rounding), without the
        ``[batch, width]`` gathers and their backward: the folded path never gathers the MLP's embeddings.

        >>> from ncf.models import NeuMF
        >>> m = NeuMF(5, 7, factor=4, num_layers=2)
        >>> u, i = torch.randint(5, (64,)), torch.randint(7, (64,))
        >>> torch.allclose(FoldedScorer(m).l2(u, i), sum(e.pow(2).sum() for e in m.embed(u, i)))
        True
        """
        if self._parts is None or not _applies(self._parts[0], users):
            return None
        mlp, gmf = self._parts[0], self._parts[1]
        branches = [mlp] if gmf is None else [gmf, mlp]
        tables = [t.weight for b in branches for t in (b.user_embedding, b.item_embedding)]
        return l2_per_row(tables, ["user", "item"] * len(branches), users, items)


def l2_per_row(tables: Sequence[torch.Tensor], sides: Sequence[str], users: torch.Tensor, items: torch.Tensor,
               user_weight: int = 1) -> torch.Tensor:
    """The sum over a batch's pairs of the squared norms of the embedding rows they use, computed once per
    table row: ``sum_r count_r * |row_r|^2``. ``tables[k]`` is on side ``sides[k]`` (``"user"``: indexed by
    ``users``, each counting ``user_weight`` pairs; ``"item"``: by ``items``, any shape, each counting one).

    >>> t_u, t_i = torch.randn(3, 2), torch.randn(5, 2)
    >>> u, i = torch.tensor([0, 2]), torch.tensor([[1, 4, 4], [0, 1, 3]])  # rows of a user and 3 items
    >>> by_pair = 3 * t_u[u].pow(2).sum() + t_i[i].pow(2).sum()
    >>> torch.allclose(l2_per_row([t_u, t_i], ["user", "item"], u, i, user_weight=3), by_pair)
    True
    """
    counts: dict[str, torch.Tensor] = {}
    total = None
    for table, side in zip(tables, sides):
        if side not in counts:
            index, weight = (users, user_weight) if side == "user" else (items.reshape(-1), 1)
            # index_add_, not bincount: bincount on CUDA reads the largest index back to the host
            ones = torch.full(index.shape, float(weight), dtype=table.dtype, device=index.device)
            counts[side] = ones.new_zeros(table.shape[0]).index_add_(0, index, ones)
        term = counts[side].dot(table.pow(2).sum(1))
        total = term if total is None else total + term
    return total
