"""LIME over embedding dimensions, for all pairs at once, drawing samples until the answer is stable.

A linear surrogate of the logit on binary masks (1 = keep the dimension, 0 = set it to the baseline),
weighted by captum's exponential kernel on the ``distance`` between the input and each perturbed input:
what captum's ``Lime`` with ``SkLearnLinearRegression`` computes for the same perturbations (the
reference). The perturbations come from a randomized fold-over Hadamard design (``sampler="design"``,
:class:`~._design.Design`), far more stable than captum's independent coin flips (``sampler="bernoulli"``),
and the surrogate is fitted from Walsh-Hadamard transforms, so many samples cost little more than their
forward passes.

How many samples: with ``stability_target`` set, each pair draws design blocks until two fits on alternate
halves of its samples agree to that rank correlation, from ``min_samples`` up to ``max_samples``; the
samples drawn and the agreement reached are reported with every attribution. With
``stability_target=None``, a fixed ``n_samples``. :data:`DEFAULTS` holds every setting's default.
"""
from __future__ import annotations

import torch

from ..stats import EXACT_RTOL
from ..target import Target
from ._design import Design
from ._surrogate import Perturbation, Similarity, SurrogateMethod

__all__ = ["Lime", "METHOD", "PRESETS", "DEFAULTS", "SAMPLERS", "Bernoulli", "exp_kernel_similarity"]

# LIME's settings and their defaults, the one place they are written (the cosine kernel's width was chosen by
# measurement, benchmarks/attribution_quality.py).
DEFAULTS = {"n_samples": 65536, "kernel_width": 0.75, "distance": "cosine", "sampler": "design",
            "stability_target": 0.97, "min_samples": 16384, "max_samples": 524288}


class Bernoulli(Perturbation):
    """captum's default perturbations: each feature kept independently with probability 1/2."""

    def masks(self, b: int, n_samples: int, n_features: int, gen: torch.Generator) -> torch.Tensor:
        return (torch.rand(b, n_samples, n_features, generator=gen) < 0.5).float()


SAMPLERS: dict[str, Perturbation] = {"design": Design(), "bernoulli": Bernoulli()}


def _per_feature(v: torch.Tensor, fmap: torch.Tensor, n_features: int) -> torch.Tensor:
    """``[B, D] -> [B, F]``: the sum of ``v`` over each feature's dimensions."""
    return torch.zeros(v.shape[0], n_features, dtype=v.dtype, device=v.device).index_add_(1, fmap, v)


def _cosine_distance(masks, x, base, fmap, n_features) -> torch.Tensor:
    diff = x - base
    dot = (x * base).sum(1)[:, None] + (masks @ _per_feature(x * diff, fmap, n_features)[..., None])[..., 0]  # [B, S]
    sq = (base * base).sum(1)[:, None] + (masks @ _per_feature(2 * base * diff + diff * diff, fmap,
                                                               n_features)[..., None])[..., 0]
    return 1 - dot / (x.norm(dim=1)[:, None] * sq.clamp_min(0).sqrt()).clamp_min(1e-8)


def _euclidean_distance(masks, x, base, fmap, n_features) -> torch.Tensor:
    diff = x - base
    sq = (diff * diff).sum(1)[:, None] - (masks @ _per_feature(diff * diff, fmap, n_features)[..., None])[..., 0]
    return sq.clamp_min(0).sqrt()


_DISTANCES = {"cosine": _cosine_distance, "euclidean": _euclidean_distance}


def exp_kernel_similarity(distance: str, kernel_width: float) -> Similarity:
    """captum's ``get_exp_kernel_similarity_function`` (``exp(-d^2 / (2 width^2))``, ``d`` between the input
    and each perturbed input, all embeddings flattened together), without building the perturbed inputs.

    With ``x' = b + z (x - b)`` and binary ``z``, both ``x . x'`` and ``|x'|^2`` (and ``|x - x'|^2``) are
    linear in ``z``, so each distance is a matrix product of the masks with per-feature sums.
    """
    if distance not in _DISTANCES:
        raise ValueError(f"distance must be 'cosine' or 'euclidean', not {distance!r}")
    dist_fn = _DISTANCES[distance]

    def similarity(masks, x, base, feature_of_dim, n_features):
        dist = dist_fn(masks, x, base, feature_of_dim.to(x.device), n_features)
        return torch.exp(-(dist ** 2) / (2 * kernel_width ** 2))

    return similarity


class Lime(SurrogateMethod):
    name = "lime"
    random = True
    defaults = DEFAULTS
    captum_class = ("captum.attr.Lime with SkLearnLinearRegression, get_exp_kernel_similarity_function(distance, "
                    "kernel_width), the design's perturbations")

    def perturbation(self, *, sampler: str, **_) -> Perturbation:
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be 'design' or 'bernoulli', not {sampler!r}")
        return SAMPLERS[sampler]

    def similarity(self, *, distance: str, kernel_width: float, **_) -> Similarity:
        return exp_kernel_similarity(distance, kernel_width)

    def surrogate(self, t: Target, fmap, n_features, gen, *, n_samples, stability_target, min_samples, max_samples,
                  per_dimension=False, **settings):
        perturbation = self.perturbation(**settings)
        if (per_dimension and stability_target is not None and isinstance(perturbation, Design)
                and 2 ** n_features > min_samples):
            return perturbation.until_stable(t.flat_score(), t.x, t.b, fmap, n_features, gen,
                                             self.similarity(**settings), stability_target, min_samples, max_samples,
                                             ignore=t.inactive(EXACT_RTOL))
        return super().surrogate(t, fmap, n_features, gen, n_samples=n_samples, **settings)

    def captum_similarities(self, t: Target, masks, *, distance: str, kernel_width: float, **_):
        from captum.attr._core.lime import get_exp_kernel_similarity_function

        return [get_exp_kernel_similarity_function(distance, kernel_width)] * len(masks)

    def captum_algorithm(self, t: Target, *, distance: str, kernel_width: float, **_):
        from captum._utils.models.linear_model import SkLearnLinearRegression
        from captum.attr import Lime as CaptumLime
        from captum.attr._core.lime import get_exp_kernel_similarity_function

        return CaptumLime(t.flat_score(), interpretable_model=SkLearnLinearRegression(),
                          similarity_func=get_exp_kernel_similarity_function(distance, kernel_width))


# The starting notebook's LIME: a few coin-flip samples and a kernel so wide that every sample weighs about the same.
PRESETS = {
    "default": DEFAULTS,
    "notebook": {"n_samples": 100, "kernel_width": 1000.0, "distance": "euclidean", "sampler": "bernoulli",
                 "stability_target": None},
}
METHOD = Lime()
