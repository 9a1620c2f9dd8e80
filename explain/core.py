"""The attribution verb: one call, any registered method, a common result.

Everything is attributed on the embedding tensors the network exposes (``net.embed``) through its
scoring function (``net.score``); no layer is swapped, patched or re-registered. :func:`attribute` looks
the method up in the registry (:mod:`explain.methods`), runs it on a :class:`~explain.target.Target` and
returns an :class:`Attribution`: per pair, per-dimension attributions (``None`` for group-level methods),
one value per embedding, one per group of each partition the model declares (user vs item; GMF vs MLP
for NeuMF), the logits at the input and the baseline, and the completeness gap
``|sum(attr) - (f(x) - f(baseline))|``. The README's methods table says what each method computes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import torch
from torch import nn

from . import methods as registry
from .stats import inactive_dims, spearman
from .target import Target, baselines_for, explaining, partitions

__all__ = ["Attribution", "attribute", "learned_nothing", "BACKENDS", "spearman", "inactive_dims", "explaining",
           "partitions", "baselines_for", "Target"]

BACKENDS = ("ours", "captum")


@dataclass
class Attribution:
    """The result of one method on a batch of ``B`` pairs (all tensors float32)."""

    method: str
    embedding_names: tuple[str, ...]
    dims: Optional[tuple[torch.Tensor, ...]]  # per embedding [B, d_k]; None for group-level methods
    embedding_totals: torch.Tensor  # [B, E]
    groups: dict[str, torch.Tensor]  # group name -> [B]
    prediction: torch.Tensor  # [B] logits f(x)
    baseline_prediction: torch.Tensor  # [B] logits f(baseline)
    completeness_gap: torch.Tensor  # [B]
    convergence_delta: Optional[torch.Tensor] = None  # [B], where the method reports one
    settings: dict = field(default_factory=dict)
    # [B, D] bool: dimensions whose input is at the baseline (e.g. embedding columns L2 drove towards zero).
    # No method can attribute anything to them; rank comparisons leave them out (see :func:`spearman`).
    inactive: Optional[torch.Tensor] = None
    partitions: dict[str, tuple[str, ...]] = field(default_factory=dict)  # e.g. {"side": ("user", "item")}
    samples: Optional[torch.Tensor] = None  # [B] samples drawn (random methods that choose their count)
    stability: Optional[torch.Tensor] = None  # [B] split-half rank agreement reached (likewise)

    @property
    def features(self) -> torch.Tensor:
        """Attributions on the method's own features: all dimensions concatenated ``[B, D]``, or
        ``[B, E]`` embedding totals for group-level methods."""
        return torch.cat(self.dims, dim=1) if self.dims is not None else self.embedding_totals

    @property
    def shares(self) -> dict[str, torch.Tensor]:
        """Each group's share of its partition's total absolute attribution, per pair (``user`` and
        ``item`` sum to 1; for NeuMF ``gmf`` and ``mlp`` too)."""
        out = {}
        for part in self.partitions.values():
            tot = sum(self.groups[g].abs() for g in part).clamp_min(1e-12)
            out.update({g: self.groups[g].abs() / tot for g in part})
        return out

    def cpu(self) -> "Attribution":
        def c(t):
            return t.detach().cpu() if isinstance(t, torch.Tensor) else t

        return replace(self, dims=tuple(c(t) for t in self.dims) if self.dims is not None else None,
                       embedding_totals=c(self.embedding_totals), groups={k: c(v) for k, v in self.groups.items()},
                       prediction=c(self.prediction), baseline_prediction=c(self.baseline_prediction),
                       completeness_gap=c(self.completeness_gap), convergence_delta=c(self.convergence_delta),
                       inactive=c(self.inactive), samples=c(self.samples), stability=c(self.stability))


def attribute(net: nn.Module, users: torch.Tensor, items: torch.Tensor, method: str = "deeplift",
              baseline: str = "mean", seed: int = 0, target: Optional[Target] = None, backend: str = "ours",
              **settings) -> Attribution:
    """Attribute the logits of ``net`` for (user, item) index pairs to its embeddings.

    Args:
        net: a model following :class:`ncf.contract.Recommender` (GMF, MLP, NeuMF).
        users, items: ``[B]`` index tensors.
        method: a registered method (:func:`explain.methods.names`).
        baseline: ``mean`` or ``zero``.
        seed: seeds the method's own generator (LIME, KernelSHAP); the global RNG is never touched.
        target: the pairs already built as a :class:`Target` (to share it between methods); else built here.
        backend: ``ours`` or ``captum`` (captum's own implementation of the method: slower, and for
            DeepLift on GMF not complete).
        settings: overrides of the method's ``defaults`` (``n_samples``, ``kernel_width``, ...).

    Example:
        >>> from ncf.models import GMF
        >>> net = GMF(4, 5, factor=3)
        >>> a = attribute(net, torch.tensor([0, 1]), torch.tensor([2, 3]), "deeplift", baseline="zero")
        >>> bool(a.completeness_gap.max() < 1e-5), [d.shape[1] for d in a.dims]
        (True, [3, 3])
    """
    m = registry.get(method)
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}; use one of {BACKENDS}.")
    cfg = {**m.defaults, **settings}
    t = target if target is not None else Target.build(net, users, items, baseline)
    gen = torch.Generator().manual_seed(seed)
    with explaining(net):
        r = m.run(t, gen, **cfg) if backend == "ours" else m.captum(t, gen, **cfg)
    gap = (r.totals.sum(1) - (t.prediction - t.baseline_prediction)).abs()
    parts = {p: tuple(groups) for p, groups in t.partitions.items() if p != "embedding"}
    return Attribution(method, t.names, r.dims, r.totals.float(), {k: v.float() for k, v in r.groups.items()},
                       t.prediction, t.baseline_prediction, gap, r.delta,
                       {"baseline": t.baseline, "seed": seed, "backend": backend, **cfg},
                       t.inactive() if r.dims is not None else None, parts, r.samples, r.stability)


def learned_nothing(attrs: dict[str, Attribution], tol: float = 1e-6) -> bool:
    """Whether every pair scores what its baseline scores and every attribution is zero: a model whose
    embeddings sit at the baseline (e.g. training never ran, or collapsed them), with nothing to explain.

    >>> from ncf.models import GMF
    >>> net = GMF(3, 4, factor=2)
    >>> u, i = torch.tensor([0, 1]), torch.tensor([2, 3])
    >>> learned_nothing({"deeplift": attribute(net, u, i)})
    False
    >>> with torch.no_grad():
    ...     net.user_embedding.weight.fill_(0.5), net.item_embedding.weight.fill_(-0.2)  # doctest: +ELLIPSIS
    (...)
    >>> learned_nothing({"deeplift": attribute(net, u, i)})
    True
    """
    if not attrs:
        return False
    first = next(iter(attrs.values()))
    scale = 1.0 + first.baseline_prediction.abs()
    if not bool(((first.prediction - first.baseline_prediction).abs() <= tol * scale).all()):
        return False
    return all(bool((a.features.abs() <= tol * scale[:, None]).all()) for a in attrs.values())
