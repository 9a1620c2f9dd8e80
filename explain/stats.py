"""Rank statistics over attributions: which dimensions carry nothing, and row-wise Spearman correlation."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from scipy.stats import rankdata

__all__ = ["inactive_dims", "spearman"]


def inactive_dims(x: torch.Tensor, base: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """``[B, D]`` bool: where ``|x - baseline|`` is below ``rtol`` times the pair's largest difference."""
    diff = (x - base).abs()
    return diff <= rtol * diff.amax(1, keepdim=True)


def spearman(a: torch.Tensor, b: torch.Tensor, ignore: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Row-wise Spearman rank correlation of ``[B, F]`` tensors (ties get their average rank).

    ``ignore`` (``[B, F]`` bool) leaves dimensions out of a row's correlation: used for dimensions whose
    input equals the baseline, whose attributions are zero up to rounding and whose order is noise.

    >>> spearman(torch.tensor([[1., 2., 3.]]), torch.tensor([[10., 20., 30.]])).tolist()
    [1.0]
    >>> spearman(torch.tensor([[1., 2., 3., 1e-9]]), torch.tensor([[1., 2., 3., -1e-9]]),
    ...          ignore=torch.tensor([[False, False, False, True]])).tolist()
    [1.0]
    """
    a64, b64 = a.detach().double().cpu().numpy(), b.detach().double().cpu().numpy()
    if ignore is None:
        return _pearson(rankdata(a64, axis=1), rankdata(b64, axis=1))
    keep = ~ignore.cpu().numpy()
    # Ignored entries become NaN: ranked among the kept ones only, then left out of the correlation.
    ra = rankdata(np.where(keep, a64, np.nan), axis=1, nan_policy="omit")
    rb = rankdata(np.where(keep, b64, np.nan), axis=1, nan_policy="omit")
    return _pearson(ra, rb, keep)


def _pearson(ra: np.ndarray, rb: np.ndarray, keep: Optional[np.ndarray] = None) -> torch.Tensor:
    if keep is None:
        keep = np.ones(ra.shape, dtype=bool)
    n = keep.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # a row with nothing kept gives NaN
        ra = np.where(keep, ra - np.where(keep, ra, 0).sum(1, keepdims=True) / n, 0)
        rb = np.where(keep, rb - np.where(keep, rb, 0).sum(1, keepdims=True) / n, 0)
        den = np.maximum(np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1)), 1e-12)
        out = np.where(n[:, 0] > 0, (ra * rb).sum(1) / den, np.nan)
    return torch.from_numpy(out).float()
