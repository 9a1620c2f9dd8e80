"""Rank statistics over attributions: which dimensions carry nothing, and row-wise Spearman correlation."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from scipy.stats import rankdata

__all__ = ["inactive_dims", "spearman", "RANK_RTOL", "EXACT_RTOL"]

# A dimension whose input is this close to the baseline (relative to the pair's largest difference) carries
# nothing worth ranking: L2 drives unused embedding columns towards zero (to 1e-5..1e-3 of a row's largest
# value, not to zero), and their attributions (products of such values) are 1e-6 of the others or less.
RANK_RTOL = 1e-3
EXACT_RTOL = 1e-6  # the input equals the baseline up to rounding: nothing to perturb (LIME's sampling)


def inactive_dims(x: torch.Tensor, base: torch.Tensor, rtol: float = RANK_RTOL) -> torch.Tensor:
    """``[B, D]`` bool: where ``|x - baseline|`` is at most ``rtol`` times the pair's largest difference.

    >>> inactive_dims(torch.tensor([[0.5, -0.3, 2e-4, 0.0]]), torch.zeros(1, 4)).tolist()
    [[False, False, True, True]]
    """
    diff = (x - base).abs()
    return diff <= rtol * diff.amax(1, keepdim=True)


def spearman(a: torch.Tensor, b: torch.Tensor, ignore: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Row-wise Spearman rank correlation of ``[B, F]`` tensors (ties get their average rank).

    ``ignore`` (``[B, F]`` bool) leaves dimensions out of a row's correlation: used for dimensions whose
    input is at the baseline (:func:`inactive_dims`), whose attributions are next to zero and whose order is
    noise. A row with fewer than 3 values to rank gives NaN: over 2 a rank correlation can only be -1 or 1.

    >>> spearman(torch.tensor([[1., 2., 3.]]), torch.tensor([[10., 20., 30.]])).tolist()
    [1.0]
    >>> spearman(torch.tensor([[1., 2., 3., 1e-9]]), torch.tensor([[1., 2., 3., -1e-9]]),
    ...          ignore=torch.tensor([[False, False, False, True]])).tolist()
    [1.0]
    >>> spearman(torch.tensor([[1., 2.]]), torch.tensor([[2., 1.]])).tolist()
    [nan]
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
        out = np.where(n[:, 0] >= 3, (ra * rb).sum(1) / den, np.nan)
    return torch.from_numpy(out).float()
