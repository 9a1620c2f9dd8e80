"""The randomized fold-over Hadamard design behind LIME's perturbations.

Each block picks, per pair, ``F`` random non-constant columns of a Sylvester-Hadamard matrix of order
``m >= F + 1`` with random signs, then appends its mirror image (``2m`` rows). Every feature is on in
exactly half the rows, columns are orthogonal, and the fold-over makes main effects free of two-feature
interactions (a resolution IV design), so a linear surrogate fitted on it is far less noisy than one
fitted on independent coin flips. Sylvester columns multiply by xor of their indices, which lets the
surrogate's normal equations be built with Walsh-Hadamard transforms (:func:`fwht`) instead of a design
matrix.
"""
from __future__ import annotations

import math

import torch

__all__ = ["design_order", "design_params", "sylvester", "design_rows", "fwht"]


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
