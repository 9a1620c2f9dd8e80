"""LIME over embedding dimensions, for all pairs at once, drawing samples until the answer is stable.

A linear surrogate of the logit on binary masks (1 = keep the dimension, 0 = set it to the baseline),
weighted by captum's exponential kernel on the ``distance`` between the input and each perturbed input:
what captum's ``Lime`` with ``SkLearnLinearRegression`` computes for the same perturbations (the
reference). The perturbations come from a randomized fold-over Hadamard design (``sampler="design"``,
see :mod:`explain.methods._design`), far more stable than captum's independent coin flips
(``sampler="bernoulli"``), and the surrogate is fitted from Walsh-Hadamard transforms, so many samples
cost little more than their forward passes.

How many samples: with ``stability_target`` (default 0.97) each pair draws design blocks until two fits on
alternate halves of its samples agree to that rank correlation, from ``min_samples`` up to
``max_samples``; the samples drawn and the agreement reached are reported with every attribution. With
``stability_target=None``, a fixed ``n_samples``.
"""
from __future__ import annotations

import torch

from ..target import Target
from ._surrogate import PerturbationMethod, captum_pair_by_pair, lime_batched, lime_masks, lime_until_stable

__all__ = ["Lime", "METHOD", "PRESETS"]


class Lime(PerturbationMethod):
    name = "lime"
    random = True
    defaults = {"n_samples": 65536, "kernel_width": 0.75, "distance": "cosine", "sampler": "design",
                "stability_target": 0.97, "min_samples": 16384, "max_samples": 524288}
    captum_class = ("captum.attr.Lime with SkLearnLinearRegression, get_exp_kernel_similarity_function(distance, "
                    "kernel_width), the design's perturbations")

    def surrogate(self, t: Target, fmap, n_features, gen, n_samples=65536, kernel_width=0.75, distance="cosine",
                  sampler="design", stability_target=0.97, min_samples=16384, max_samples=524288,
                  per_dimension=False, **_):
        score = t.flat_score()
        if (per_dimension and stability_target is not None and sampler == "design"
                and 2 ** n_features > min_samples):
            return lime_until_stable(score, t.x, t.b, fmap, n_features, gen, kernel_width, distance,
                                     stability_target, min_samples, max_samples, ignore=t.inactive())
        return lime_batched(score, t.x, t.b, fmap, n_features, n_samples, gen, kernel="lime",
                            kernel_width=kernel_width, distance=distance, sampler=sampler)

    def reference(self, t: Target, gen: torch.Generator, n_samples=65536, kernel_width=0.75, distance="cosine",
                  sampler="design", **_) -> torch.Tensor:
        """captum's Lime replaying the perturbations drawn from ``gen`` (a fixed sample count)."""
        from captum._utils.models.linear_model import SkLearnLinearRegression
        from captum.attr import Lime as CaptumLime
        from captum.attr._core.lime import get_exp_kernel_similarity_function

        fmap, nf = torch.arange(t.x.shape[1]), t.x.shape[1]
        masks = lime_masks(len(t.x), n_samples, nf, gen, sampler)
        score = t.flat_score()
        rows = []
        for p in range(len(t.x)):
            replay = iter(masks[p].long()[:, None, :])
            lime = CaptumLime(score, interpretable_model=SkLearnLinearRegression(),
                              similarity_func=get_exp_kernel_similarity_function(distance, kernel_width),
                              perturb_func=lambda inp, **kw: next(replay))
            rows.append(lime.attribute(t.x[p:p + 1], baselines=t.b[p:p + 1], n_samples=masks.shape[1],
                                       feature_mask=fmap[None], return_input_shape=False).float())
        return torch.cat(rows, 0)

    def captum_surrogate(self, t: Target, fmap, n_features, gen, n_samples=65536, kernel_width=0.75,
                         distance="cosine", **_):
        from captum._utils.models.linear_model import SkLearnLinearRegression
        from captum.attr import Lime as CaptumLime
        from captum.attr._core.lime import get_exp_kernel_similarity_function

        lime = CaptumLime(t.flat_score(), interpretable_model=SkLearnLinearRegression(),
                          similarity_func=get_exp_kernel_similarity_function(distance, kernel_width))
        return captum_pair_by_pair(t, fmap, lime, n_samples=n_samples)


# The starting notebook's LIME: 100 coin-flip samples and a kernel so wide every weight is ~1.
PRESETS = {
    "default": Lime.defaults,
    "notebook": {"n_samples": 100, "kernel_width": 1000.0, "distance": "euclidean", "sampler": "bernoulli",
                 "stability_target": None},
}
METHOD = Lime()
