"""KernelSHAP: the surrogate of LIME given captum's KernelSHAP sampling and Shapley kernel weights.

As captum's ``KernelShap`` is its ``Lime`` with other functions, :class:`KernelShap` is the
:class:`~._surrogate.SurrogateMethod` LIME is, given :class:`ShapleySampling` and :func:`shapley_similarity`.
The reference is captum's ``LimeBase`` (``Lime`` with a linear regression) on the same samples and weights.
With ``2^F <= n_samples`` every coalition is used once, which gives exact Shapley values.
"""
from __future__ import annotations

import torch

from ..target import Target
from ._surrogate import Perturbation, Similarity, SurrogateMethod

__all__ = ["KernelShap", "METHOD", "ShapleySampling", "shapley_similarity"]

END_POINT_WEIGHT = 1e6  # captum's weight of the empty and the full coalition (the constraints f(0), f(x))


class ShapleySampling(Perturbation):
    """captum's KernelSHAP sampling: all-ones, all-zeros, then ``k`` ones with ``p(k) ~ (M-1)/(k(M-k))``,
    uniformly placed."""

    def masks(self, b: int, n_samples: int, n_features: int, gen: torch.Generator) -> torch.Tensor:
        m = n_features
        masks = torch.zeros(b, n_samples, m)
        masks[:, 0] = 1.0
        rest = n_samples - 2
        if rest > 0 and m > 1:
            ks = torch.arange(1, m, dtype=torch.float64)
            probs = (m - 1) / (ks * (m - ks))
            k = torch.multinomial(probs / probs.sum(), b * rest, replacement=True, generator=gen).view(b, rest) + 1
            scores = torch.rand(b, rest, m, generator=gen)
            kth = scores.sort(dim=2, descending=True).values.gather(2, (k - 1)[..., None])  # k-th largest score
            masks[:, 2:] = (scores >= kth).float()
        return masks


def shapley_similarity(masks: torch.Tensor, *_) -> torch.Tensor:
    """KernelSHAP's weights ``[B, S]``. Where the masks are every coalition once (each pair the same), the
    Shapley kernel itself, ``(M-1) / (C(M, k) k (M-k))`` for ``k`` features kept, which gives exact Shapley
    values; on :class:`ShapleySampling`'s draws, whose sizes already follow the kernel, captum's weights:
    :data:`END_POINT_WEIGHT` for its all-ones and all-zeros rows (the first two), 1 for the rest."""
    b, s, m = masks.shape
    if s == 2 ** m:
        k = masks[0].cpu().sum(1)
        w = torch.full_like(k, END_POINT_WEIGHT)
        inner = (k > 0) & (k < m)
        kk = k[inner]
        w[inner] = (m - 1) / (torch.exp(torch.lgamma(torch.tensor(m + 1.0)) - torch.lgamma(kk + 1)
                                        - torch.lgamma(m - kk + 1)) * kk * (m - kk))
        return w.expand(b, -1).clone()
    weights = torch.ones(b, s)
    weights[:, :2] = END_POINT_WEIGHT
    return weights


class KernelShap(SurrogateMethod):
    name = "kernel_shap"
    random = True
    defaults = {"n_samples": 1000}
    captum_class = "captum.attr.KernelShap (LimeBase, Shapley kernel, linear regression) on the same samples"

    def perturbation(self, **_) -> Perturbation:
        return ShapleySampling()

    def similarity(self, **_) -> Similarity:
        return shapley_similarity

    def captum_similarities(self, t: Target, masks: torch.Tensor, **_):
        """Our weights replayed: captum's KernelShap weighs by the number of features kept, which on every
        coalition once is not the Shapley kernel."""
        weights = shapley_similarity(masks)

        def replay(p):
            w = iter(weights[p].tolist())
            return lambda *a, **k: next(w)

        return [replay(p) for p in range(len(masks))]

    def captum_algorithm(self, t: Target, **_):
        from captum.attr import KernelShap as CaptumKernelShap

        return CaptumKernelShap(t.flat_score())


METHOD = KernelShap()
