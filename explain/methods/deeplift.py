"""DeepLift (Rescale rule) with the Shapley rule for GMF's element-wise product.

captum's ``DeepLift`` on ``net.score_features`` gives the multipliers ``m = d(score)/d(feature)`` of the
network above the embeddings. A feature that is an embedding gets ``m * (x - x0)``; GMF's product
``p * q`` is split between its factors by the Shapley rule for a product,
``d(pq) = dp * (q + q0)/2 + dq * (p + p0)/2``, which is exact, so completeness holds. captum alone treats
the product with plain gradients and double counts it (on GMF its attributions sum to twice the score
change): that is what ``--backend captum`` runs.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
from captum.attr import DeepLift as CaptumDeepLift
from torch import nn

from ..target import Target, explaining
from .base import GradientMethod, Result

__all__ = ["DeepLift", "METHOD"]


class _Call(nn.Module):
    """One of the network's scoring functions (``score_features`` or ``score``) as a module, so captum's
    DeepLift can hook the network's ReLUs."""

    def __init__(self, net: nn.Module, fn: str):
        super().__init__()
        self.net, self.fn = net, fn

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return getattr(self.net, self.fn)(*inputs)


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks")  # captum removes them after
        return fn()


class DeepLift(GradientMethod):
    name = "deeplift"
    captum_class = "captum.attr.DeepLift (Rescale) on net.score_features, products split by the Shapley rule"

    def _multipliers(self, t: Target, **kw) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        net = t.net
        feats, base_feats = net.features(*t.embs), net.features(*t.base)
        feats = tuple(f.detach().requires_grad_() for f in feats)
        dl = CaptumDeepLift(_Call(net, "score_features"))
        out = _quiet(lambda: dl.attribute(feats, baselines=tuple(f.detach() for f in base_feats), **kw))
        return out, base_feats

    def attribute_dims(self, t: Target, **settings) -> tuple[tuple[torch.Tensor, ...], None]:
        embs, base = t.embs, t.base
        mults, _ = self._multipliers(t, custom_attribution_func=lambda m: m)
        out: list[Optional[torch.Tensor]] = [None] * len(embs)

        def add(k: int, part: torch.Tensor) -> None:  # an embedding may feed several features (RecentMF's item)
            out[k] = part if out[k] is None else out[k] + part

        for m, src in zip(mults, t.net.feature_sources):
            if src[0] == "identity":
                k = src[1]
                add(k, m * (embs[k] - base[k]))
            else:  # element-wise product p * q: Shapley split of the product's change
                i, j = src[1], src[2]
                add(i, m * (embs[i] - base[i]) * (embs[j] + base[j]) / 2)
                add(j, m * (embs[j] - base[j]) * (embs[i] + base[i]) / 2)
        return tuple(o.detach() for o in out), None

    def reference(self, t: Target, gen: torch.Generator, **settings) -> torch.Tensor:
        """captum's DeepLift attributions on the network's features ``[B, sum of feature sizes]``."""
        with explaining(t.net):
            attrs, _ = self._multipliers(t)
        return torch.cat([a.detach() for a in attrs], 1)

    def comparable(self, t: Target, result: Result) -> torch.Tensor:
        """Per-embedding attributions mapped onto the features: a product's two factors add up (for networks
        whose embeddings each feed one feature, as GMF, MLP, NeuMF and MF)."""
        parts = []
        for src in t.net.feature_sources:
            parts.append(result.dims[src[1]] if src[0] == "identity" else result.dims[src[1]] + result.dims[src[2]])
        return torch.cat(parts, 1)

    def captum(self, t: Target, gen: torch.Generator, **settings) -> Result:
        dl = CaptumDeepLift(_Call(t.net, "score"))
        inputs = tuple(e.detach().requires_grad_() for e in t.embs)
        attrs, delta = _quiet(lambda: dl.attribute(inputs, baselines=t.base, return_convergence_delta=True))
        return Result.additive(t, tuple(a.detach() for a in attrs), delta.detach().abs())


METHOD = DeepLift()
