"""Exact Shapley values over embedding groups (group level only).

Every coalition of a partition's groups is scored in one batched forward (``2^G`` copies of the pairs),
then weighted by the Shapley weights: the values captum's ``ShapleyValues`` gives with a group feature
mask (the reference), without its per-permutation forwards. Complete by construction.
"""
from __future__ import annotations

import math

import torch

from ..target import Target, explaining
from .base import Method, Result, play_games

__all__ = ["ExactShapley", "METHOD", "shapley_groups"]


def shapley_groups(net, embs, base, groups: list[list[int]]) -> torch.Tensor:
    """Exact Shapley values of each group of embeddings, ``[B, G]``: every coalition's score in one batched
    forward (``2^G`` copies of the pairs), then the Shapley weights. The same values as captum's
    ``ShapleyValues`` with a group feature mask (tested), without its per-permutation forwards."""
    n_groups = len(groups)
    if n_groups > 12:
        raise ValueError(f"Exact Shapley values over {n_groups} groups need 2^{n_groups} forwards; use kernel_shap.")
    coalitions = torch.tensor([[(c >> g) & 1 for g in range(n_groups)] for c in range(2 ** n_groups)],
                              dtype=torch.bool)  # [C, G]
    member_of = {k: g for g, members in enumerate(groups) for k in members}
    inputs = []
    for k, (e, b) in enumerate(zip(embs, base)):
        on = coalitions[:, member_of[k]].to(e.device)[:, None, None]  # [C, 1, 1]
        inputs.append(torch.where(on, e.detach()[None], b.detach()[None]).reshape(-1, e.shape[1]))
    with torch.no_grad():
        value = net.score(*inputs).view(len(coalitions), -1).double()  # [C, B]
    size = coalitions.sum(1)
    weight = torch.tensor([math.factorial(k) * math.factorial(n_groups - k - 1) / math.factorial(n_groups)
                           for k in range(n_groups)], dtype=torch.float64)
    out = torch.zeros(value.shape[1], n_groups, dtype=torch.float64, device=value.device)
    for g in range(n_groups):
        without = (~coalitions[:, g]).nonzero().squeeze(1)  # coalitions S without g; S + g is c | 2^g
        w = weight[size[without]].to(value.device)
        out[:, g] = (w[:, None] * (value[without + 2 ** g] - value[without])).sum(0)
    return out.to(embs[0].dtype)


class ExactShapley(Method):
    name = "shapley"
    groups_only = True
    captum_class = "captum.attr.ShapleyValues with a feature mask of the groups"

    def run(self, t: Target, gen: torch.Generator, **settings) -> Result:
        totals, groups = play_games(t, lambda g: shapley_groups(t.net, t.embs, t.base, g))
        return Result(None, totals, groups)

    def _captum_game(self, t: Target, groups: list[list[int]]) -> torch.Tensor:
        from captum.attr import ShapleyValues

        mask = [torch.zeros(1, e.shape[1], dtype=torch.long) for e in t.embs]
        for g, members in enumerate(groups):
            for k in members:
                mask[k][:] = g
        ref = ShapleyValues(lambda *e: t.net.score(*e)).attribute(tuple(t.embs), baselines=tuple(t.base),
                                                                  feature_mask=tuple(mask))
        return torch.stack([ref[members[0]][:, 0] for members in groups], 1)

    def reference(self, t: Target, gen: torch.Generator, **settings) -> torch.Tensor:
        with explaining(t.net):
            return play_games(t, lambda g: self._captum_game(t, g))[0]

    def captum(self, t: Target, gen: torch.Generator, **settings) -> Result:
        totals, groups = play_games(t, lambda g: self._captum_game(t, g))
        return Result(None, totals.float(), {k: v.float() for k, v in groups.items()})


METHOD = ExactShapley()
