"""Faithfulness of an attribution: deletion/insertion curves and captum's infidelity.

All are computed on a method's own features (embedding dimensions, or embedding groups for group-level
methods), in logit space, against the same baseline the attribution used:

* **deletion**: features are set to the baseline in decreasing order of attribution; a faithful
  explanation makes the score fall fast (lower area under the curve is better).
* **insertion**: starting from the baseline, features are restored in that order; the score should
  rise fast (higher area is better).
* Both are also run with a random order (a generator per pair, seeded by the run's seed and the pair, so a
  pair's figures do not depend on the pairs explained beside it), so ``deletion_gain =
  auc_random - auc`` and ``insertion_gain = auc - auc_random`` are positive when the attribution order
  beats chance. Where there are at most :data:`EXACT_ORDERS_UP_TO` features (the embedding groups of a
  group-level method), ``auc_random`` is the mean over every order instead: the expected area of a random
  order, exactly (one draw among two orders would be the attribution's own order half the time, a gain of
  exactly 0).
* **infidelity** (captum ``infidelity``) with subset-masking perturbations: each sample sets a random
  half of the features to the baseline and compares ``I . attr`` with the score change it causes. Plain
  Gaussian noise on embeddings barely moves these models' scores and does not separate methods.
"""
from __future__ import annotations

import itertools
from typing import Optional

import torch
from captum.metrics import infidelity
from torch import nn

from .core import Attribution
from .target import Target, explaining, feature_map

__all__ = ["faithfulness", "COLUMNS", "EXACT_ORDERS_UP_TO"]

EXACT_ORDERS_UP_TO = 4  # features: 4! = 24 orders, each a curve; more features draw one random order per pair

# Every figure :func:`faithfulness` can return: a record has these columns at every epoch (empty where the
# figures were not computed), so its epoch files share one schema.
COLUMNS = ("deletion_auc", "deletion_auc_random", "insertion_auc", "insertion_auc_random", "deletion_gain",
           "insertion_gain", "infidelity")


def _curve(score, x, b, order, fmap, steps: int, insert: bool) -> torch.Tensor:
    """Scores ``[B, steps+1]`` after removing (or inserting) the first ``k`` features of ``order``."""
    bsz, n_feat = order.shape
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n_feat, device=order.device).expand(bsz, -1))  # rank of each feature in the order
    rank_dim = rank[:, fmap]  # [B, D]
    ks = torch.round(torch.linspace(0, n_feat, steps + 1)).long().to(x.device)
    keep = rank_dim[:, None, :] < ks[None, :, None]  # [B, steps+1, D]: first k features affected
    if insert:
        xs = torch.where(keep, x[:, None], b[:, None])
    else:
        xs = torch.where(keep, b[:, None], x[:, None])
    return score(xs.reshape(-1, x.shape[1])).view(bsz, steps + 1)


@torch.no_grad()
def _auc(curve: torch.Tensor) -> torch.Tensor:
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), dim=1)


def _pair_seed(seed: int, user: int, item: int) -> int:
    """A seed for one (user, item) pair under the run's ``seed``."""
    return (seed * 0x9E3779B1 + user * 1_000_003 + item) % (2 ** 63)


def faithfulness(net: nn.Module, users: torch.Tensor, items: torch.Tensor, attr: Attribution, steps: int = 10,
                 n_perturb: int = 32, seed: int = 0, target: Optional[Target] = None) -> dict[str, torch.Tensor]:
    """Per-pair faithfulness figures for ``attr`` (computed on ``net`` for the same pairs; pass the
    ``target`` the attribution was computed on to reuse it).

    Returns a dict of ``[B]`` tensors: ``deletion_auc``, ``deletion_auc_random``, ``deletion_gain``,
    ``insertion_auc``, ``insertion_auc_random``, ``insertion_gain``, ``infidelity``.

    Example:
        >>> from ncf.models import MLP
        >>> from explain.core import attribute
        >>> net = MLP(6, 7, factor=4, num_layers=2)
        >>> u, i = torch.tensor([0, 1]), torch.tensor([2, 3])
        >>> sorted(faithfulness(net, u, i, attribute(net, u, i, "deeplift")))[:2]
        ['deletion_auc', 'deletion_auc_random']
    """
    # one generator per pair, seeded by the pair: its figures do not depend on the pairs explained beside it
    gens = [torch.Generator().manual_seed(_pair_seed(seed, u, i)) for u, i in zip(users.tolist(), items.tolist())]
    t = target if target is not None else Target.build(net, users, items, attr.settings.get("baseline", "mean"))
    with explaining(net):
        dims = t.dims
        x, b = t.x, t.b
        group_level = attr.dims is None
        fmap, n_feat = feature_map(dims, list(t.partitions["embedding"].values()) if group_level else None)
        feats = attr.features.to(x)
        score = t.flat_score()
        with torch.no_grad():
            order = feats.argsort(dim=1, descending=True)
            if n_feat <= EXACT_ORDERS_UP_TO:  # every order, each pair alike: the expected area of a random order
                rands = [torch.tensor(o, device=x.device).expand(len(x), -1)
                         for o in itertools.permutations(range(n_feat))]
            else:
                rands = [torch.stack([torch.rand(n_feat, generator=g) for g in gens]).argsort(dim=1).to(x.device)]
            fmap = fmap.to(x.device)
            out = {}
            for name, insert in (("deletion", False), ("insertion", True)):
                out[f"{name}_auc"] = _auc(_curve(score, x, b, order, fmap, steps, insert))
                out[f"{name}_auc_random"] = torch.stack([_auc(_curve(score, x, b, r, fmap, steps, insert))
                                                         for r in rands]).mean(0)
            out["deletion_gain"] = out["deletion_auc_random"] - out["deletion_auc"]
            out["insertion_gain"] = out["insertion_auc"] - out["insertion_auc_random"]
        # Per-dimension attribution for captum: a group's value spread over its dimensions, so that
        # masking a whole group gives I . attr = the group's value.
        if group_level:
            sizes = torch.tensor(dims, dtype=x.dtype, device=x.device)
            per_dim = (feats / sizes)[:, fmap]
        else:
            per_dim = feats

        per_dim_features = not group_level

        def perturb(inputs, baselines):  # captum repeats each pair n_perturb times in a row, all in one batch
            per = inputs.shape[0] // max(len(gens), 1)
            drop = (torch.cat([torch.rand(per, n_feat, generator=g) for g in gens]) >= 0.5).to(inputs.device)
            if not per_dim_features:
                drop = drop[:, fmap]
            perturbation = (inputs - baselines).mul_(drop)  # what is removed
            return perturbation, inputs - perturbation

        infid = infidelity(score, perturb, x, per_dim, baselines=b,
                           n_perturb_samples=n_perturb, max_examples_per_batch=max(len(x), 1) * n_perturb)
        out["infidelity"] = infid.detach()
    return {k: v.float() for k, v in out.items()}
