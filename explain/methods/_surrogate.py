"""The surrogate behind LIME and KernelSHAP, composed as captum's ``LimeBase`` composes it.

A :class:`Perturbation` draws binary masks (1 = keep a feature, 0 = set it to the baseline), a
:data:`Similarity` weighs each perturbed input, and one batched weighted least squares fits the linear
surrogate of every pair at once: what captum's ``LimeBase`` with a linear regression computes for the same
perturbations and weights (tested). A :class:`SurrogateMethod` is that solver given the two functions;
LIME (:mod:`.lime`) and KernelSHAP (:mod:`.kernel_shap`) differ only in the functions they give it.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ..target import Target, feature_map
from .base import Method, Result, play_games

__all__ = ["Perturbation", "Similarity", "all_coalitions", "perturbations", "fit_on_masks", "fit_surrogate",
           "score_masks", "is_identity", "SurrogateMethod", "captum_pair_by_pair", "captum_replay"]

Score = Callable[[torch.Tensor], torch.Tensor]
"""The logit as a function of flattened embeddings, ``[N, D] -> [N]``."""

Similarity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
"""A perturbed input's weight (captum's ``similarity_func``), for all pairs and samples at once:
``(masks [B, S, F], x [B, D], base [B, D], feature_of_dim [D], n_features) -> weights [B, S]``."""


def all_coalitions(n_features: int) -> torch.Tensor:
    """Every binary mask over ``n_features`` features, ``[2^F, F]``."""
    codes = torch.arange(2 ** n_features)
    return ((codes[:, None] >> torch.arange(n_features)) & 1).float()


def is_identity(feature_of_dim: torch.Tensor, n_features: int) -> bool:
    """Whether every dimension is its own feature (then masks need no expansion to dimensions)."""
    d = feature_of_dim.numel()
    return n_features == d and bool((feature_of_dim == torch.arange(d, device=feature_of_dim.device)).all())


def score_masks(score_fn: Score, x: torch.Tensor, base: torch.Tensor, feature_of_dim: torch.Tensor,
                identity: bool, z: torch.Tensor) -> torch.Tensor:
    """The logits of the perturbed inputs ``b + z (x - b)``: ``x, base [b, D]``, masks ``z [b, R, F]`` ->
    ``[b, R]`` (``identity``: :func:`is_identity` of the feature map, which spares expanding the masks)."""
    zd = z if identity else z.index_select(2, feature_of_dim)  # [b, R, D]
    xp = torch.addcmul(base[:, None], zd, (x - base)[:, None])
    return score_fn(xp.reshape(-1, x.shape[1])).view(z.shape[0], z.shape[1])


class Perturbation:
    """How a surrogate's perturbations are drawn (captum's ``perturb_func``): :meth:`masks` for ``B`` pairs at
    once. :meth:`fit` builds them, weighs them and solves; a perturbation with structure (the Hadamard
    design, :class:`~._design.Design`) may solve without building them."""

    def masks(self, b: int, n_samples: int, n_features: int, gen: torch.Generator) -> torch.Tensor:
        """``[B, S, F]`` masks (``S`` may differ from ``n_samples`` where a scheme rounds it)."""
        raise NotImplementedError

    def drawn(self, n_samples: int, n_features: int) -> int:
        """How many perturbations :meth:`masks` and :meth:`fit` draw per pair for ``n_samples`` (a scheme may
        round it)."""
        return n_samples

    def fit(self, score_fn: Score, x: torch.Tensor, base: torch.Tensor, feature_of_dim: torch.Tensor,
            n_features: int, n_samples: int, gen: torch.Generator, similarity: Similarity,
            chunk: int = 1 << 22) -> torch.Tensor:
        """``[B, n_features]`` surrogate coefficients on masks drawn from ``gen``."""
        masks = self.masks(len(x), n_samples, n_features, gen)
        return fit_on_masks(score_fn, x, base, feature_of_dim, n_features, masks, similarity, chunk)


def perturbations(perturbation: Perturbation, b: int, n_samples: int, n_features: int,
                  gen: Optional[torch.Generator]) -> torch.Tensor:
    """The masks a surrogate fits on: every coalition once where they fit in ``n_samples`` (exact and
    seed-free, e.g. the group-level games), else ``perturbation``'s draw from ``gen``."""
    if 2 ** n_features <= n_samples:
        return all_coalitions(n_features).expand(b, -1, -1).clone()
    return perturbation.masks(b, n_samples, n_features, gen)


def _weighted_lstsq(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Batched weighted least squares with intercept: ``z [B,S,F]``, ``y, w [B,S]`` -> coefficients ``[B,F]``."""
    a = torch.cat([torch.ones_like(z[..., :1]), z], dim=2).double()  # [B, S, F+1]
    aw = a * w.double()[..., None]
    # Normal equations (A^T W A) beta = A^T W y in float64 (KernelSHAP's 1e6 end-point weights would
    # swamp float32); lstsq if the system is singular.
    gram = aw.transpose(1, 2) @ a  # [B, F+1, F+1]
    rhs = aw.transpose(1, 2) @ y.double()[..., None]
    sol, info = torch.linalg.solve_ex(gram, rhs)
    if bool((info != 0).any()):
        sw = w.double().sqrt()[..., None]
        sol = torch.linalg.lstsq(a * sw, y.double()[..., None] * sw, driver="gelsd").solution
    return sol[:, 1:, 0].float()


def fit_on_masks(score_fn: Score, x: torch.Tensor, base: torch.Tensor, feature_of_dim: torch.Tensor,
                 n_features: int, masks: torch.Tensor, similarity: Similarity, chunk: int = 1 << 22) -> torch.Tensor:
    """The surrogate of every pair on the given masks, weighted by ``similarity``.

    Args:
        score_fn: maps flattened embeddings ``[N, D]`` to logits ``[N]``.
        x, base: inputs and baselines, flattened ``[B, D]``.
        feature_of_dim: ``[D]`` interpretable feature of each dimension (``0..n_features-1``).
        masks: ``[B, S, F]`` perturbations.
        similarity: the weight of each perturbed input (:data:`Similarity`).
        chunk: perturbed inputs scored per forward, in dimensions (``S * D`` per pair).

    Returns:
        ``[B, n_features]`` surrogate coefficients.
    """
    bsz, d = x.shape
    masks = masks.to(x.device, torch.float32)
    s = masks.shape[1]
    weights = similarity(masks, x, base, feature_of_dim, n_features)
    ys = []
    step = max(1, chunk // max(s * d, 1))
    identity = is_identity(feature_of_dim, n_features)
    fmap = feature_of_dim.to(masks.device)
    for lo in range(0, bsz, step):
        hi = min(bsz, lo + step)
        ys.append(score_masks(score_fn, x[lo:hi], base[lo:hi], fmap, identity, masks[lo:hi]))
    return _weighted_lstsq(masks, torch.cat(ys), weights.to(x))


def fit_surrogate(score_fn: Score, x: torch.Tensor, base: torch.Tensor, feature_of_dim: torch.Tensor,
                  n_features: int, n_samples: int, gen: Optional[torch.Generator], perturbation: Perturbation,
                  similarity: Similarity, chunk: int = 1 << 22) -> torch.Tensor:
    """The surrogate of every pair at once (captum's ``LimeBase.attribute`` for a batch): on every coalition
    where they fit in ``n_samples`` (:func:`perturbations`), else on ``perturbation``'s draw from ``gen``.
    Arguments as :func:`fit_on_masks`; returns ``[B, n_features]`` coefficients."""
    if 2 ** n_features <= n_samples:
        masks = perturbations(perturbation, len(x), n_samples, n_features, gen)
        return fit_on_masks(score_fn, x, base, feature_of_dim, n_features, masks, similarity, chunk)
    return perturbation.fit(score_fn, x, base, feature_of_dim, n_features, n_samples, gen, similarity, chunk)


class SurrogateMethod(Method):
    """A linear surrogate on perturbed inputs (captum's ``LimeBase``): per-dimension coefficients, and each
    partition of the embeddings played as its own game whose features are the groups.

    A subclass gives the surrogate's two functions from its settings, :meth:`perturbation` and
    :meth:`similarity`; for the captum reference, the similarity captum is handed
    (:meth:`captum_similarities`), and for ``--backend captum`` captum's own class (:meth:`captum_algorithm`).
    """

    groups_only = False

    def perturbation(self, **settings) -> Perturbation:
        raise NotImplementedError

    def similarity(self, **settings) -> Similarity:
        raise NotImplementedError

    def captum_similarities(self, t: Target, masks: torch.Tensor, **settings) -> list[Callable]:
        """Per pair, the ``similarity_func`` captum's ``Lime`` is given in :meth:`reference`."""
        raise NotImplementedError

    def captum_algorithm(self, t: Target, **settings):
        """captum's own implementation, built on the flat score (``--backend captum``)."""
        raise NotImplementedError

    def surrogate(self, t: Target, fmap: torch.Tensor, n_features: int, gen: torch.Generator, *, n_samples: int,
                  per_dimension: bool = False, **settings):
        """``[B, n_features]`` coefficients (and optionally samples and agreement per pair)."""
        return fit_surrogate(t.flat_score(), t.x, t.b, fmap, n_features, n_samples, gen,
                             self.perturbation(**settings), self.similarity(**settings))

    def captum_surrogate(self, t: Target, fmap: torch.Tensor, n_features: int, gen: torch.Generator, *,
                         n_samples: int, **settings) -> torch.Tensor:
        """The same surrogate by captum's own implementation, pair by pair."""
        return captum_pair_by_pair(t, fmap, self.captum_algorithm(t, **settings), n_samples=n_samples)

    def reference(self, t: Target, gen: torch.Generator, *, n_samples: int, **settings) -> torch.Tensor:
        """captum's ``Lime`` with a linear regression replaying the perturbations drawn from ``gen`` (a
        fixed sample count), weighted by :meth:`captum_similarities`."""
        masks = perturbations(self.perturbation(**settings), len(t.x), n_samples, t.x.shape[1], gen)
        return captum_replay(t, masks, self.captum_similarities(t, masks, **settings))

    def run(self, t: Target, gen: torch.Generator, **settings) -> Result:
        return self._play(t, gen, self.surrogate, **settings)

    def captum(self, t: Target, gen: torch.Generator, **settings) -> Result:
        return self._play(t, gen, self.captum_surrogate, **settings)

    def _play(self, t: Target, gen: torch.Generator, surrogate, **settings) -> Result:
        dims = t.dims
        with torch.no_grad():
            fmap, nf = feature_map(dims, None)
            coef = surrogate(t, fmap, nf, gen, per_dimension=True, **settings)
            extra = {}
            if isinstance(coef, tuple):
                coef, extra["samples"], extra["stability"] = coef
            elif "n_samples" in settings:  # a fixed count: what was drawn (a scheme may round it up)
                n = settings["n_samples"]
                drawn = 2 ** nf if 2 ** nf <= n else self.perturbation(**settings).drawn(n, nf)
                extra["samples"] = torch.full((len(t.x),), drawn, dtype=torch.int64)
            per_dim = torch.split(coef, list(dims), dim=-1)

            def game(groups):  # one surrogate whose features are the groups themselves
                fm, n = feature_map(dims, groups)
                out = surrogate(t, fm, n, gen, **settings)
                return out[0] if isinstance(out, tuple) else out

            totals, named = play_games(t, game)
        return Result(tuple(per_dim), totals, named, **extra)


def captum_pair_by_pair(t: Target, fmap: torch.Tensor, algorithm, **kwargs) -> torch.Tensor:
    """Run a captum perturbation ``algorithm`` (built on the flat score) on each pair, ``[B, F]``."""
    x, b = t.x, t.b
    rows = [algorithm.attribute(x[p:p + 1], baselines=b[p:p + 1], feature_mask=fmap[None].to(x.device),
                                return_input_shape=False, **kwargs) for p in range(len(x))]
    return torch.cat(rows, 0).float()


def captum_replay(t: Target, masks: torch.Tensor, similarities: list[Callable]) -> torch.Tensor:
    """captum's ``Lime`` with ``SkLearnLinearRegression``, pair by pair, replaying ``masks [B, S, D]`` (one
    feature per dimension) and weighting pair ``p``'s samples with ``similarities[p]``: ``[B, D]``."""
    from captum._utils.models.linear_model import SkLearnLinearRegression
    from captum.attr import Lime as CaptumLime

    fmap = torch.arange(t.x.shape[1])
    score = t.flat_score()
    rows = []
    for p in range(len(t.x)):
        replay = iter(masks[p].long()[:, None, :])
        lime = CaptumLime(score, interpretable_model=SkLearnLinearRegression(), similarity_func=similarities[p],
                          perturb_func=lambda inp, **kw: next(replay))
        rows.append(lime.attribute(t.x[p:p + 1], baselines=t.b[p:p + 1], n_samples=masks.shape[1],
                                   feature_mask=fmap[None], return_input_shape=False).float())
    return torch.cat(rows, 0)
