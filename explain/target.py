"""What is explained: a batch of (user, item) pairs of a network, as every method and metric sees it.

A :class:`Target` is built once per batch: the embeddings the network gives the pairs and their baselines,
the embedding sizes and names, the partitions of the embeddings into groups (from the groups the model
declares, :class:`ncf.contract.Recommender`), the logits at the input and at the baseline, the flat
score (all embeddings concatenated, for perturbation methods) and the dimensions whose input equals the
baseline. Methods and faithfulness metrics read it; none rebuilds it.

Baselines: ``mean`` (the mean user / item embedding of the trained tables, an in-distribution "average
user and average item", so attributions answer "why this pair rather than an average one") or ``zero``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from .stats import RANK_RTOL, inactive_dims

__all__ = ["Target", "explaining", "partitions", "baselines_for", "feature_map", "split_flat"]


@contextlib.contextmanager
def explaining(net: nn.Module) -> Iterator[None]:
    """Eval mode with gradients on, even under ``trainer.validate``/``test`` (inference mode); restores
    the previous mode on exit."""
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        net.train(was_training)


def partitions(net: nn.Module) -> dict[str, dict[str, list[int]]]:
    """The groupings of the embeddings: ``embedding`` (one group each) and the model's own
    (``side``: user vs item; ``branch``: GMF vs MLP for NeuMF), as ``{partition: {group: [indices]}}``.

    >>> from ncf.models import NeuMF
    >>> partitions(NeuMF(3, 4, 2, 1))["branch"]
    {'gmf': [0, 1], 'mlp': [2, 3]}
    """
    parts = {"embedding": {name: [k] for k, name in enumerate(net.embedding_names)}}
    for pname, groups in net.groups.items():
        parts[pname] = {g: list(members) for g, members in groups.items()}
    return parts


@torch.no_grad()
def baselines_for(net: nn.Module, users: torch.Tensor, kind: str = "mean") -> tuple[torch.Tensor, ...]:
    """Baseline embeddings ``[B, d_k]`` for each embedding: ``zero`` or ``mean`` (over the table).

    An embedding computed from the user's own items rather than read from a table (``Recommender.read_items``,
    e.g. TransitionMF's ``next``) is zero under both: the value of a pair whose user's items read nothing. It
    depends on the item as much as on the user, and its mean over the users at one item would be that item's.
    """
    if kind not in ("mean", "zero"):
        raise ValueError(f"Unknown baseline {kind!r}; use 'mean' or 'zero'.")
    dev = users.device
    n_users, n_items = net.n_users, net.n_items
    by_user = net.embed(torch.arange(n_users, device=dev), torch.zeros(n_users, dtype=torch.long, device=dev))
    by_item = net.embed(torch.zeros(n_items, dtype=torch.long, device=dev), torch.arange(n_items, device=dev))
    out = []
    for k, (eu, ei) in enumerate(zip(by_user, by_item)):
        table = eu if net.side_of(k) == "user" else ei
        vec = table.mean(0) if kind == "mean" else torch.zeros_like(table[0])
        out.append(vec.expand(len(users), -1).clone())
    read = getattr(net, "read_items", lambda u, i: None)(users[:1], torch.zeros_like(users[:1]))
    if read is not None:
        out[read[0]] = torch.zeros_like(out[read[0]])
    return tuple(out)


def split_flat(flat: torch.Tensor, dims: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """``[N, sum(dims)]`` back into one tensor per embedding."""
    return tuple(torch.split(flat, list(dims), dim=-1))


def feature_map(dims: Sequence[int], groups: Optional[Sequence[Sequence[int]]] = None) -> tuple[torch.Tensor, int]:
    """Feature id of each flattened dimension: one per dimension, or one per group of embeddings.

    >>> feature_map([2, 3], [[0, 1]])
    (tensor([0, 0, 0, 0, 0]), 1)
    """
    if groups is None:
        return torch.arange(sum(dims)), sum(dims)
    owner = torch.cat([torch.full((d,), k) for k, d in enumerate(dims)])
    emb_to_group = torch.empty(len(dims), dtype=torch.long)
    for g, members in enumerate(groups):
        emb_to_group[list(members)] = g
    return emb_to_group[owner], len(groups)


@dataclass
class Target:
    """A batch of pairs of ``net`` to explain (build with :meth:`build`, inside :func:`explaining`)."""

    net: nn.Module
    users: torch.Tensor
    items: torch.Tensor
    baseline: str
    embs: tuple[torch.Tensor, ...]  # [B, d_k] each, detached
    base: tuple[torch.Tensor, ...]  # [B, d_k] each
    prediction: torch.Tensor  # [B] logits at the input
    baseline_prediction: torch.Tensor  # [B] logits at the baseline

    @classmethod
    def build(cls, net: nn.Module, users: torch.Tensor, items: torch.Tensor, baseline: str = "mean") -> "Target":
        with explaining(net):
            users = users.clone().to(torch.long)
            items = items.clone().to(torch.long)
            embs = tuple(e.detach().clone() for e in net.embed(users, items))
            base = baselines_for(net, users, baseline)
            with torch.no_grad():
                pred = net.score(*embs).detach()
                base_pred = net.score(*base).detach()
        return cls(net, users, items, baseline, embs, base, pred, base_pred)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.net.embedding_names)

    @property
    def dims(self) -> list[int]:
        return [e.shape[1] for e in self.embs]

    @property
    def partitions(self) -> dict[str, dict[str, list[int]]]:
        return partitions(self.net)

    @property
    def x(self) -> torch.Tensor:
        """The inputs, all embeddings concatenated ``[B, D]``."""
        return torch.cat(self.embs, 1)

    @property
    def b(self) -> torch.Tensor:
        """The baselines, concatenated ``[B, D]``."""
        return torch.cat(self.base, 1)

    def flat_score(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The logit as a function of concatenated embeddings ``[N, D] -> [N]``."""
        dims = self.dims
        return lambda flat: self.net.score(*split_flat(flat, dims))

    def inactive(self, rtol: float = RANK_RTOL) -> torch.Tensor:
        """``[B, D]`` bool: dimensions whose input is at the baseline (:func:`~explain.stats.inactive_dims`)."""
        return inactive_dims(self.x, self.b, rtol).cpu()
