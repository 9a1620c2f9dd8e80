import math

import pytest
import torch
from torchmetrics.retrieval import RetrievalHitRate, RetrievalNormalizedDCG

from ncf.metrics import HitRateNDCG, hit_ndcg, positive_rank


def test_hand_computed_with_ties():
    scores = torch.tensor([
        [0.9, 0.1, 0.2, 0.3],   # rank 0: hit, ndcg 1
        [0.2, 0.5, 0.2, 0.1],   # one above, one tied -> rank 2
        [0.1, 0.1, 0.1, 0.1],   # all tied -> rank 3 (ties count against the positive)
        [0.0, 0.5, 0.6, 0.7],   # rank 3
    ])
    assert positive_rank(scores).tolist() == [0, 2, 3, 3]
    hit, ndcg = hit_ndcg(scores, k=3)
    assert hit.tolist() == [1, 1, 0, 0]
    assert ndcg.tolist() == pytest.approx([1.0, 1 / math.log2(4), 0.0, 0.0])
    m = HitRateNDCG(k=3)
    m.update(scores[:2]); m.update(scores[2:])
    res = m.compute()
    assert res["hr"].item() == pytest.approx(0.5)
    assert res["ndcg"].item() == pytest.approx((1 + 0.5) / 4)


def test_matches_torchmetrics_retrieval():
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(200, 100, generator=gen)  # continuous: no ties
    scores[:50, 0] += 0.5  # make some hits likely
    target = torch.zeros_like(scores, dtype=torch.bool)
    target[:, 0] = True
    indexes = torch.arange(200)[:, None].expand_as(scores)
    hr = RetrievalHitRate(top_k=10)(scores.reshape(-1), target.reshape(-1), indexes=indexes.reshape(-1))
    nd = RetrievalNormalizedDCG(top_k=10)(scores.reshape(-1), target.reshape(-1), indexes=indexes.reshape(-1))
    m = HitRateNDCG(k=10)
    m.update(scores)
    res = m.compute()
    assert res["hr"].item() == pytest.approx(hr.item(), abs=1e-6)
    assert res["ndcg"].item() == pytest.approx(nd.item(), abs=1e-6)


def test_states_sum_across_processes():
    """What DDP does: each rank updates on its shard, states are summed, compute gives the global mean."""
    gen = torch.Generator().manual_seed(1)
    scores = torch.rand(101, 100, generator=gen)
    full, a, b = HitRateNDCG(), HitRateNDCG(), HitRateNDCG()
    full.update(scores); a.update(scores[::2]); b.update(scores[1::2])
    a.merge_state(b)
    assert a.compute()["ndcg"].item() == pytest.approx(full.compute()["ndcg"].item())
    assert a.compute()["hr"].item() == pytest.approx(full.compute()["hr"].item())
