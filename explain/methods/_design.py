"""The randomized fold-over Hadamard design behind LIME's perturbations.

Each block picks, per pair, ``F`` random non-constant columns of a Sylvester-Hadamard matrix of order
``m >= F + 1`` with random signs, then appends its mirror image (``2m`` rows). Every feature is on in
exactly half the rows, columns are orthogonal, and the fold-over makes main effects free of two-feature
interactions (a resolution IV design), so a linear surrogate fitted on it is far less noisy than one
fitted on independent coin flips. Sylvester columns multiply by xor of their indices, which lets the
surrogate's normal equations be built with Walsh-Hadamard transforms (:func:`fwht`) instead of a design
matrix: :class:`Design` is LIME's perturbation that fits the surrogate that way, and draws blocks until the
fit is stable.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ._surrogate import Perturbation, Score, Similarity, is_identity, score_masks

__all__ = ["design_order", "design_params", "sylvester", "design_rows", "fwht", "Design"]


def design_order(n_samples: int, n_features: int) -> int:
    """Order ``m`` of the Hadamard blocks (``2m`` rows each, fold-over included): at least ``F + 1``, and as
    large as ``n_samples`` allows up to 4096, so large sample counts use few, large blocks."""
    m_min = 1 << math.ceil(math.log2(n_features + 1))
    m_fit = 1 << max(0, math.floor(math.log2(max(n_samples, 2) / 2)))
    return max(m_min, min(m_fit, 4096))


def design_params(b: int, n_samples: int, n_features: int, gen: torch.Generator) -> tuple[int, torch.Tensor, torch.Tensor]:
    """The random part of the fold-over Hadamard design: per pair and block, ``F`` distinct non-constant
    columns ``[B, blocks, F]`` (in ``1..m-1``) of the order-``m`` Sylvester matrix and their signs (+-1)."""
    m = design_order(n_samples, n_features)
    cols, signs = [], []
    for _ in range(max(1, round(n_samples / (2 * m)))):
        cols.append(torch.rand(b, m - 1, generator=gen).argsort(1)[:, :n_features] + 1)
        signs.append(torch.where(torch.rand(b, n_features, generator=gen) < 0.5, -1, 1))
    return m, torch.stack(cols, 1), torch.stack(signs, 1)


def sylvester(m: int) -> torch.Tensor:
    """Where the order-``m`` Sylvester-Hadamard matrix is +1 (``H[s, c] = (-1)^popcount(s & c)``), ``[m, m]`` bool."""
    h = torch.ones(1, 1, dtype=torch.bool)
    while h.shape[0] < m:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, ~h], 1)], 0)
    return h


def design_rows(table: torch.Tensor, r0: int, r1: int, cols: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """Rows ``r0:r1`` of a block's top half, then the same rows of its bottom half (the fold-over, ``1 -``
    the top), as masks ``[B, 2R, F]``: in the top half, feature ``j`` of row ``s`` is on when
    ``sign_j H[s, c_j] > 0`` (``table`` from :func:`sylvester`; ``cols, signs [B, F]``)."""
    b, f = cols.shape
    plus = table.index_select(0, cols.reshape(-1)).view(b, f, -1)[:, :, r0:r1]  # H is symmetric: rows are columns
    top = plus ^ (signs < 0)[:, :, None]
    return torch.cat([top, ~top], 2).transpose(1, 2).contiguous().float()  # transposed as bytes: cheaper


def fwht(v: torch.Tensor) -> torch.Tensor:
    """Walsh-Hadamard transform over the last axis (length a power of two), Sylvester order:
    ``out[c] = sum_s v[s] (-1)^popcount(s & c)``."""
    shape, m, h = v.shape, v.shape[-1], 1
    while h < m:
        v = v.reshape(-1, m // (2 * h), 2, h)
        v = torch.stack((v[:, :, 0] + v[:, :, 1], v[:, :, 0] - v[:, :, 1]), 2)
        h *= 2
    return v.reshape(shape)


def _accumulate_block(score_fn: Score, x, base, fmap, n_features, m, table, c, sg, gram, rhs, similarity: Similarity,
                      chunk) -> None:
    """Add one design block (``c, sg``: each pair's columns and signs, ``[b, F]``) to the pairs' weighted
    normal equations ``gram [b, F+1, F+1]`` and ``rhs [b, F+1]`` (see :meth:`Design.fit`)."""
    bsz, d = x.shape
    identity = is_identity(fmap, n_features)
    rows_per = max(1, chunk // max(2 * d, 1))  # rows of one pair per chunk (top and bottom halves)
    pairs_per = max(1, chunk // max(2 * m * d, 1))
    w = torch.empty(bsz, 2, m, dtype=torch.float64, device=x.device)
    y = torch.empty(bsz, 2, m, dtype=torch.float64, device=x.device)
    for lo in range(0, bsz, pairs_per):
        hi = min(bsz, lo + pairs_per)
        for r0 in range(0, m, rows_per):
            r1 = min(m, r0 + rows_per)
            z = design_rows(table, r0, r1, c[lo:hi], sg[lo:hi])  # [b, 2R, F]: top rows, then their mirrors
            w[lo:hi, :, r0:r1] = similarity(z, x[lo:hi], base[lo:hi], fmap, n_features).view(
                hi - lo, 2, r1 - r0).double()
            y[lo:hi, :, r0:r1] = score_masks(score_fn, x[lo:hi], base[lo:hi], fmap, identity, z).view(
                hi - lo, 2, r1 - r0).double()
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


class Design(Perturbation):
    """LIME's default perturbations: randomized fold-over Hadamard blocks (see the module docstring).
    ``n_samples`` is rounded to whole blocks (at least one)."""

    def drawn(self, n_samples: int, n_features: int) -> int:
        m = design_order(n_samples, n_features)
        return 2 * m * max(1, round(n_samples / (2 * m)))

    def masks(self, b: int, n_samples: int, n_features: int, gen: torch.Generator) -> torch.Tensor:
        m, cols, signs = design_params(b, n_samples, n_features, gen)
        table, blocks = sylvester(m), []
        for k in range(cols.shape[1]):
            blocks.append(design_rows(table, 0, m, cols[:, k], signs[:, k]))
        return torch.cat(blocks, 1)

    def fit(self, score_fn: Score, x: torch.Tensor, base: torch.Tensor, feature_of_dim: torch.Tensor,
            n_features: int, n_samples: int, gen: torch.Generator, similarity: Similarity,
            chunk: int = 1 << 22) -> torch.Tensor:
        """The surrogate on the design, block by block, never holding the design.

        The surrogate is fitted in the +-1 coding ``h = 2z - 1`` (the same column space as ``[1, z]``, so the
        same fit, coefficients halved). With Sylvester columns, ``H[s, a] H[s, b] = H[s, a xor b]``, so every
        entry of the weighted normal equations is a Walsh-Hadamard transform of the block's weights:
        ``sum_s w_s h_sj h_sk = sign_j sign_k WHT(w_top + w_bottom)[c_j xor c_k]``, likewise the intercept row
        and ``A^T W y``. A block of ``2m`` samples costs ``O(m log m + F^2)`` per pair instead of ``O(m F^2)``,
        which makes tens of thousands of samples cheap; the result equals the explicit least squares on
        :meth:`masks` (tested).
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
                              similarity, chunk)
        return _solve(gram, rhs)

    def until_stable(self, score_fn: Score, x: torch.Tensor, base: torch.Tensor, feature_of_dim: torch.Tensor,
                     n_features: int, gen: torch.Generator, similarity: Similarity, target: float, min_samples: int,
                     max_samples: int, ignore: Optional[torch.Tensor] = None, chunk: int = 1 << 22
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The surrogate on the design, drawing blocks until each pair's estimate is stable.

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
            _accumulate_block(score_fn, x if every else x[active], base if every else base[active], fmap,
                              n_features, m, table, c.to(x.device), sg.to(x.device), g, r, similarity, chunk)
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
