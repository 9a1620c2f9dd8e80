"""HR@K and NDCG@K on leave-one-out candidate lists.

Scores come as a ``[U, C]`` matrix whose column 0 is the held-out positive. Its rank is the number of
candidates scored strictly higher plus the number tied with it (ties count against the positive, so a
model that scores everything equal gets no credit). HR@K is ``rank < K``; NDCG@K with one relevant item
is ``1 / log2(rank + 2)`` when it is a hit.

:class:`HitRateNDCG` keeps three summed states, so it is exact under DDP and costs one pass over the
matrix; it agrees with ``torchmetrics.retrieval`` (checked in the tests) at a fraction of the cost.
"""
from __future__ import annotations

import torch
from torchmetrics import Metric

__all__ = ["positive_rank", "hit_ndcg", "HitRateNDCG"]


def positive_rank(scores: torch.Tensor) -> torch.Tensor:
    """0-based rank of column 0 within each row, ties counted against it.

    >>> positive_rank(torch.tensor([[0.5, 0.9, 0.5, 0.1]]))
    tensor([2])
    """
    pos = scores[:, :1]
    others = scores[:, 1:]
    return (others >= pos).sum(dim=1)


def hit_ndcg(scores: torch.Tensor, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row hit and NDCG at ``k``.

    >>> hit, ndcg = hit_ndcg(torch.tensor([[0.9, 0.1, 0.2], [0.1, 0.5, 0.9]]), k=2)
    >>> hit.tolist(), [round(x, 4) for x in ndcg.tolist()]
    ([1.0, 0.0], [1.0, 0.0])
    """
    rank = positive_rank(scores)
    hit = (rank < k).to(torch.float32)
    ndcg = hit / torch.log2(rank.to(torch.float32) + 2.0)
    return hit, ndcg


class HitRateNDCG(Metric):
    """Mean HR@K and NDCG@K over users; ``compute()`` returns ``{"hr": ..., "ndcg": ...}``."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, k: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.k = k
        self.add_state("hits", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("ndcg", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor) -> None:  # scores: [B, C], positive in column 0
        hit, ndcg = hit_ndcg(scores, self.k)
        self.hits += hit.sum().to(torch.float64)
        self.ndcg += ndcg.sum().to(torch.float64)
        self.total += scores.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.total.clamp_min(1).to(torch.float64)
        return {"hr": (self.hits / n).float(), "ndcg": (self.ndcg / n).float()}
