"""KernelSHAP: captum's sampling scheme and Shapley kernel weights, fitted by the same batched least
squares as LIME. The reference is captum's ``LimeBase`` (what captum's ``KernelShap`` is: LIME with the
Shapley kernel and a linear regression) on the same samples and weights. With ``2^F <= n_samples`` every
coalition is used once, which gives exact Shapley values."""
from __future__ import annotations

import torch

from ..target import Target
from ._surrogate import PerturbationMethod, captum_pair_by_pair, lime_batched, shap_masks

__all__ = ["KernelShap", "METHOD"]


class KernelShap(PerturbationMethod):
    name = "kernel_shap"
    random = True
    defaults = {"n_samples": 1000}
    captum_class = "captum.attr.KernelShap (LimeBase, Shapley kernel, linear regression) on the same samples"

    def surrogate(self, t: Target, fmap, n_features, gen, n_samples=1000, **_):
        return lime_batched(t.flat_score(), t.x, t.b, fmap, n_features, n_samples, gen, kernel="shap")

    def reference(self, t: Target, gen: torch.Generator, n_samples=1000, **_) -> torch.Tensor:
        from captum._utils.models.linear_model import SkLearnLinearRegression
        from captum.attr import Lime as CaptumLime

        nf = t.x.shape[1]
        masks, weights = shap_masks(len(t.x), n_samples, nf, gen)
        rows = []
        for p in range(len(t.x)):
            replay, w = iter(masks[p].long()[:, None, :]), iter(weights[p].tolist())
            lime = CaptumLime(t.flat_score(), interpretable_model=SkLearnLinearRegression(),
                              similarity_func=lambda *a, **k: next(w), perturb_func=lambda inp, **k: next(replay))
            rows.append(lime.attribute(t.x[p:p + 1], baselines=t.b[p:p + 1], n_samples=masks.shape[1],
                                       feature_mask=torch.arange(nf)[None], return_input_shape=False).float())
        return torch.cat(rows, 0)

    def captum_surrogate(self, t: Target, fmap, n_features, gen, n_samples=1000, **_):
        from captum.attr import KernelShap as CaptumKernelShap

        return captum_pair_by_pair(t, fmap, CaptumKernelShap(t.flat_score()), n_samples=n_samples)


METHOD = KernelShap()
