"""The surrogate machinery shared by LIME and KernelSHAP: perturbation masks, the exponential and Shapley
kernels, and one batched weighted least squares for all pairs at once (equal to captum's ``LimeBase``
with a linear regression for the same perturbations and weights, tested).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ..target import Target, feature_map
from .base import Method, Result, play_games
from ._design import design_order, design_params, design_rows, fwht, sylvester

__all__ = ["lime_batched", "lime_until_stable", "lime_masks", "shap_masks", "PerturbationMethod",
           "captum_pair_by_pair"]


def _all_coalitions(n_features: int) -> torch.Tensor:
    """Every binary mask over ``n_features`` features, ``[2^F, F]``."""
    codes = torch.arange(2 ** n_features)
    return ((codes[:, None] >> torch.arange(n_features)) & 1).float()


def lime_masks(b: int, n_samples: int, n_features: int, gen: torch.Generator, sampler: str = "design") -> torch.Tensor:
    """Perturbation masks ``[B, S, F]`` (1 = keep the feature, 0 = set it to the baseline).

    * When ``2^F <= n_samples`` every coalition is used once (exact and seed-free; e.g. group-level runs).
    * ``bernoulli``: captum's default, each feature kept independently with probability 1/2.
    * ``design`` (default): randomized fold-over Hadamard blocks. Each block picks, per pair, ``F`` random
      columns of a Sylvester-Hadamard matrix of order ``m >= F + 1`` with random signs, then appends its
      mirror image (``2m`` rows). Every feature is on in exactly half the rows, columns are orthogonal, and
      the fold-over makes main effects free of two-feature interactions (a resolution IV design), so the
      linear surrogate is far less noisy than with independent coin flips.
      ``n_samples`` is rounded to whole blocks (at least one). :func:`lime_batched` fits this design
      without building it whole.
    """
    if 2 ** n_features <= n_samples:
        return _all_coalitions(n_features).expand(b, -1, -1).clone()
    if sampler == "bernoulli":
        return (torch.rand(b, n_samples, n_features, generator=gen) < 0.5).float()
    if sampler != "design":
        raise ValueError(f"sampler must be 'design' or 'bernoulli', not {sampler!r}")
    m, cols, signs = design_params(b, n_samples, n_features, gen)
    table, blocks = sylvester(m), []
    for k in range(cols.shape[1]):
        blocks.append(design_rows(table, 0, m, cols[:, k], signs[:, k]))
    return torch.cat(blocks, 1)


def shap_masks(b: int, n_samples: int, n_features: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """captum's KernelSHAP sampling: all-ones, all-zeros (weight 1e6), then ``k`` ones with
    ``p(k) ~ (M-1)/(k(M-k))``, uniformly placed (weight 1). When ``2^M <= n_samples`` every coalition is
    used once with the Shapley kernel weight instead, which gives exact Shapley values."""
    m = n_features
    if 2 ** m <= n_samples:
        masks = _all_coalitions(m)
        k = masks.sum(1)
        w = torch.full_like(k, 1e6)
        inner = (k > 0) & (k < m)
        kk = k[inner]
        w[inner] = (m - 1) / (torch.exp(torch.lgamma(torch.tensor(m + 1.0)) - torch.lgamma(kk + 1) - torch.lgamma(m - kk + 1)) * kk * (m - kk))
        return masks.expand(b, -1, -1).clone(), w.expand(b, -1).clone()
    masks = torch.zeros(b, n_samples, m)
    weights = torch.ones(b, n_samples)
    masks[:, 0] = 1.0
    weights[:, :2] = 1e6
    rest = n_samples - 2
    if rest > 0 and m > 1:
        ks = torch.arange(1, m, dtype=torch.float64)
        probs = (m - 1) / (ks * (m - ks))
        k = torch.multinomial(probs / probs.sum(), b * rest, replacement=True, generator=gen).view(b, rest) + 1
        scores = torch.rand(b, rest, m, generator=gen)
        kth = scores.sort(dim=2, descending=True).values.gather(2, (k - 1)[..., None])  # k-th largest score
        masks[:, 2:] = (scores >= kth).float()
    return masks, weights


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


def _similarity(masks: torch.Tensor, x: torch.Tensor, base: torch.Tensor, feature_of_dim: torch.Tensor,
                n_features: int, distance: str, width: float) -> torch.Tensor:
    """captum's ``get_exp_kernel_similarity_function`` (``exp(-d^2 / (2 width^2))``, ``d`` between the input
    and each perturbed input, all embeddings flattened together), without building the perturbed inputs.

    With ``x' = b + z (x - b)`` and binary ``z``, both ``x . x'`` and ``|x'|^2`` (and ``|x - x'|^2``) are
    linear in ``z``, so each distance is a matrix product of the masks with per-feature sums.
    """
    def per_feature(v):  # [B, D] -> [B, F]: sum of v over each feature's dimensions
        return torch.zeros(v.shape[0], n_features, dtype=v.dtype, device=v.device).index_add_(1, fmap, v)

    fmap = feature_of_dim.to(x.device)

    diff = x - base
    if distance == "cosine":
        dot = (x * base).sum(1)[:, None] + (masks @ per_feature(x * diff)[..., None])[..., 0]  # [B, S]
        sq = (base * base).sum(1)[:, None] + (masks @ per_feature(2 * base * diff + diff * diff)[..., None])[..., 0]
        dist = 1 - dot / (x.norm(dim=1)[:, None] * sq.clamp_min(0).sqrt()).clamp_min(1e-8)
    elif distance == "euclidean":
        sq = (diff * diff).sum(1)[:, None] - (masks @ per_feature(diff * diff)[..., None])[..., 0]
        dist = sq.clamp_min(0).sqrt()
    else:
        raise ValueError(f"distance must be 'cosine' or 'euclidean', not {distance!r}")
    return torch.exp(-(dist ** 2) / (2 * width ** 2))


def lime_batched(score_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, base: torch.Tensor,
                 feature_of_dim: torch.Tensor, n_features: int, n_samples: int, gen: torch.Generator,
                 kernel: str = "lime", kernel_width: float = 0.75, distance: str = "cosine",
                 masks: Optional[torch.Tensor] = None, sampler: str = "design", weights: Optional[torch.Tensor] = None,
                 chunk: int = 1 << 22) -> torch.Tensor:
    """LIME or KernelSHAP for all pairs at once.

    Args:
        score_fn: maps flattened embeddings ``[N, D]`` to logits ``[N]``.
        x, base: inputs and baselines, flattened ``[B, D]``.
        feature_of_dim: ``[D]`` interpretable feature of each dimension (``0..n_features-1``).
        kernel: ``lime`` (captum's exponential kernel on ``distance``) or ``shap`` (captum's KernelSHAP).
        sampler: LIME's perturbations, ``design`` or ``bernoulli`` (see :func:`lime_masks`).
        masks: optional ``[B, S, F]`` perturbations to use instead of sampling (for tests).
        weights: optional ``[B, S]`` sample weights to use with ``masks`` instead of the kernel's.

    Returns:
        ``[B, n_features]`` surrogate coefficients.
    """
    bsz, d = x.shape
    if masks is None and kernel == "lime" and sampler == "design" and 2 ** n_features > n_samples:
        return _lime_design_fit(score_fn, x, base, feature_of_dim, n_features, n_samples, gen, kernel_width, distance,
                                chunk)
    if masks is None:
        if kernel == "shap":
            masks, weights = shap_masks(bsz, n_samples, n_features, gen)
        else:
            masks = lime_masks(bsz, n_samples, n_features, gen, sampler)
    masks = masks.to(x.device, torch.float32)
    s = masks.shape[1]
    if weights is None:
        weights = _similarity(masks, x, base, feature_of_dim, n_features, distance, kernel_width)
    ys = []
    step = max(1, chunk // max(s * d, 1))
    identity = _is_identity(feature_of_dim, n_features)
    for lo in range(0, bsz, step):
        hi = min(bsz, lo + step)
        zd = masks[lo:hi] if identity else masks[lo:hi].index_select(2, feature_of_dim.to(masks.device))  # [b, S, D]
        xp = torch.addcmul(base[lo:hi, None], zd, (x[lo:hi] - base[lo:hi])[:, None])  # b + z (x - b)
        ys.append(score_fn(xp.reshape(-1, d)).view(hi - lo, s))
    return _weighted_lstsq(masks, torch.cat(ys), weights.to(x))


def _is_identity(feature_of_dim: torch.Tensor, n_features: int) -> bool:
    """Whether every dimension is its own feature (then masks need no expansion to dimensions)."""
    d = feature_of_dim.numel()
    return n_features == d and bool((feature_of_dim == torch.arange(d, device=feature_of_dim.device)).all())


def _accumulate_block(score_fn, x, base, fmap, n_features, m, table, c, sg, gram, rhs, kernel_width, distance,
                      chunk) -> None:
    """Add one design block (``c, sg``: each pair's columns and signs, ``[b, F]``) to the pairs' weighted
    normal equations ``gram [b, F+1, F+1]`` and ``rhs [b, F+1]`` (see :func:`_lime_design_fit`)."""
    bsz, d = x.shape
    identity = _is_identity(fmap, n_features)
    rows_per = max(1, chunk // max(2 * d, 1))  # rows of one pair per chunk (top and bottom halves)
    pairs_per = max(1, chunk // max(2 * m * d, 1))
    w = torch.empty(bsz, 2, m, dtype=torch.float64, device=x.device)
    y = torch.empty(bsz, 2, m, dtype=torch.float64, device=x.device)
    for lo in range(0, bsz, pairs_per):
        hi = min(bsz, lo + pairs_per)
        for r0 in range(0, m, rows_per):
            r1 = min(m, r0 + rows_per)
            z = design_rows(table, r0, r1, c[lo:hi], sg[lo:hi])  # [b, 2R, F]: top rows, then their mirrors
            w[lo:hi, :, r0:r1] = _similarity(z, x[lo:hi], base[lo:hi], fmap, n_features, distance,
                                             kernel_width).view(hi - lo, 2, r1 - r0).double()
            zd = z if identity else z.index_select(2, fmap)
            xp = torch.addcmul(base[lo:hi, None], zd, (x[lo:hi] - base[lo:hi])[:, None])
            y[lo:hi, :, r0:r1] = score_fn(xp.reshape(-1, d)).view(hi - lo, 2, r1 - r0).double()
    w_sum, w_diff = w[:, 0] + w[:, 1], w[:, 0] - w[:, 1]
    wy = w * y
    t_sum, t_diff, t_wy = fwht(w_sum), fwht(w_diff), fwht(wy[:, 0] - wy[:, 1])
    sgd = sg.double()
    gram[:, 0, 0] += w_sum.sum(1)
    edge = sgd * t_diff.gather(1, c)
    gram[:, 0, 1:] += edge
    gram[:, 1:, 0] += edge
    xor = (c[:, :, None] ^ c[:, None, :]).reshape(bsz, -1)
    gram[:, 1:, 1:] += sgd[:, :, None] * sgd[:, None, :] * t_sum.gather(1, xor).view(bsz, n_features, n_features)
    rhs[:, 0] += wy.sum((1, 2))
    rhs[:, 1:] += sgd * t_wy.gather(1, c)


def _solve(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Coefficients of the features (intercept dropped), back from the +-1 coding: ``[b, F]``."""
    sol, info = torch.linalg.solve_ex(gram, rhs[..., None])
    if bool((info != 0).any()):
        sol = torch.linalg.lstsq(gram, rhs[..., None], driver="gelsd").solution
    return (2 * sol[:, 1:, 0]).float()


def _lime_design_fit(score_fn, x, base, feature_of_dim, n_features, n_samples, gen, kernel_width, distance,
                     chunk) -> torch.Tensor:
    """LIME on the fold-over Hadamard design (:func:`lime_masks`), block by block, never holding the design.

    The surrogate is fitted in the +-1 coding ``h = 2z - 1`` (the same column space as ``[1, z]``, so the
    same fit, coefficients halved). With Sylvester columns, ``H[s, a] H[s, b] = H[s, a xor b]``, so every
    entry of the weighted normal equations is a Walsh-Hadamard transform of the block's weights:
    ``sum_s w_s h_sj h_sk = sign_j sign_k WHT(w_top + w_bottom)[c_j xor c_k]``, likewise the intercept row
    and ``A^T W y``. A block of ``2m`` samples costs ``O(m log m + F^2)`` per pair instead of ``O(m F^2)``,
    which makes tens of thousands of samples cheap; the result equals the explicit least squares on
    :func:`lime_masks` (tested).
    """
    bsz, d = x.shape
    m, cols, signs = design_params(bsz, n_samples, n_features, gen)
    cols, signs = cols.to(x.device), signs.to(x.device)
    table = sylvester(m).to(x.device)
    fmap = feature_of_dim.to(x.device)
    f1 = n_features + 1
    gram = torch.zeros(bsz, f1, f1, dtype=torch.float64, device=x.device)
    rhs = torch.zeros(bsz, f1, dtype=torch.float64, device=x.device)
    for k in range(cols.shape[1]):
        _accumulate_block(score_fn, x, base, fmap, n_features, m, table, cols[:, k], signs[:, k], gram, rhs,
                          kernel_width, distance, chunk)
    return _solve(gram, rhs)


def lime_until_stable(score_fn, x, base, feature_of_dim, n_features, gen, kernel_width, distance, target: float,
                      min_samples: int, max_samples: int, ignore: Optional[torch.Tensor] = None,
                      chunk: int = 1 << 22) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LIME on the design, drawing blocks until each pair's estimate is stable.

    Blocks go alternately to two halves. Once a pair has ``min_samples``, and after every further two
    blocks, both halves are solved and their rank agreement (Spearman, leaving out ``ignore``d dimensions)
    is taken; a pair stops when it reaches ``target`` or ``max_samples``. Two independent fits on half the
    samples agreeing to ``target`` bound the noise of the fit on all of them, which is less: the answer is
    at least that stable from seed to seed. Returns the coefficients on all samples ``[B, F]``, the
    samples each pair drew ``[B]`` and the split-half agreement it reached ``[B]``.
    """
    from ..stats import spearman

    bsz, d = x.shape
    m = design_order(min_samples, n_features)
    table = sylvester(m).to(x.device)
    fmap = feature_of_dim.to(x.device)
    f1 = n_features + 1
    gram = torch.zeros(2, bsz, f1, f1, dtype=torch.float64, device=x.device)
    rhs = torch.zeros(2, bsz, f1, dtype=torch.float64, device=x.device)
    samples = torch.zeros(bsz, dtype=torch.int64)
    agreement = torch.full((bsz,), float("nan"))
    active = torch.arange(bsz)
    block = 0
    while len(active):
        # the same draws per block as design_params, for the pairs still sampling
        c = torch.rand(len(active), m - 1, generator=gen).argsort(1)[:, :n_features] + 1
        sg = torch.where(torch.rand(len(active), n_features, generator=gen) < 0.5, -1, 1)
        half = block % 2
        every = len(active) == bsz  # accumulate in place; a subset of pairs needs a gathered copy
        g, r = (gram[half], rhs[half]) if every else (gram[half, active], rhs[half, active])
        _accumulate_block(score_fn, x if every else x[active], base if every else base[active], fmap, n_features,
                          m, table, c.to(x.device), sg.to(x.device), g, r, kernel_width, distance, chunk)
        if not every:
            gram[half, active], rhs[half, active] = g, r
        samples[active] += 2 * m
        block += 1
        if half == 1 and int(samples[active[0]]) >= min_samples:
            a, b = _solve(gram[0, active], rhs[0, active]), _solve(gram[1, active], rhs[1, active])
            agreement[active] = spearman(a, b, ignore[active] if ignore is not None else None)
            done = (agreement[active] >= target) | (samples[active] + 4 * m > max_samples)
            active = active[~done]
    return _solve(gram[0] + gram[1], rhs[0] + rhs[1]), samples, agreement


class PerturbationMethod(Method):
    """A method that fits a surrogate on perturbed inputs: per-dimension coefficients, and each partition
    of the embeddings played as its own game whose features are the groups."""

    groups_only = False

    def surrogate(self, t: Target, fmap: torch.Tensor, n_features: int, gen: torch.Generator, **settings):
        """``[B, n_features]`` coefficients (and optionally samples and agreement per pair)."""
        raise NotImplementedError

    def captum_surrogate(self, t: Target, fmap: torch.Tensor, n_features: int, gen: torch.Generator,
                         **settings) -> torch.Tensor:
        """The same surrogate by captum's own implementation, pair by pair (``--backend captum``)."""
        raise NotImplementedError

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
