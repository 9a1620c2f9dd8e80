"""Integrated Gradients, integrated piecewise between the points where a ReLU switches along the path.

The networks here are piecewise linear in the MLP and bilinear in the GMF product, so on every piece of
the straight path from baseline to input between two ReLU switches the gradient is constant or linear,
and the midpoint rule is exact: completeness holds to float precision. Every pair has its own cut points;
the sum is taken in one batched backward over all pairs' midpoints, which equals captum's
``IntegratedGradients`` run pair by pair with those ``step_sizes_and_alphas`` (the reference).
``integration="gausslegendre"`` (or any captum method) runs captum's ``IntegratedGradients`` with
``n_steps`` fixed points, which converge only ~1/steps across ReLU kinks: that is ``--backend captum``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from captum.attr import IntegratedGradients as CaptumIG
from torch import nn

from ..target import Target, explaining
from .base import GradientMethod, Result

__all__ = ["IntegratedGradients", "METHOD"]


def _relu_inputs(net: nn.Module, embs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Pre-activations of every ``nn.ReLU`` of ``net`` for ``net.score(*embs)``, ``[N, neurons]``
    (read with temporary forward hooks, removed before returning)."""
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().flatten(1)))
             for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            net.score(*embs)
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(seen, 1) if seen else torch.zeros(embs[0].shape[0], 0, device=embs[0].device)


def _linear_pieces(net, embs, base, grid: int, rounds: int = 4) -> list[torch.Tensor]:
    """Per pair, the points in [0, 1] of the straight path from baseline to input where a ReLU switches.

    Pre-activations are sampled on a grid and each sign change is located by linear interpolation in its
    cell; the crossings found are added to the sample points and the search repeats, so a deeper ReLU,
    whose input is linear only between the switches of the layers before it, is located on a piece
    where it is linear. Returns sorted cut points including 0 and 1.
    """
    out = []
    for p in range(embs[0].shape[0]):
        pts = torch.linspace(0, 1, grid + 1, device=embs[0].device)
        cross = pts[:0]
        for _ in range(rounds):
            path = [bb[p:p + 1] + pts[:, None] * (e[p:p + 1] - bb[p:p + 1]) for e, bb in zip(embs, base)]
            z = _relu_inputs(net, path)  # [points, neurons]
            cell, unit = ((z[1:] > 0) != (z[:-1] > 0)).nonzero(as_tuple=True)
            z0, z1 = z[cell, unit], z[cell + 1, unit]
            new = (pts[cell] + (pts[cell + 1] - pts[cell]) * z0 / (z0 - z1)).clamp(0, 1)
            if new.numel() == cross.numel() and torch.allclose(new.sort().values, cross.sort().values, atol=1e-9):
                break
            cross = new
            pts = torch.unique(torch.cat([pts, cross]))
        out.append(torch.unique(torch.cat([pts[:1], cross, pts[-1:]])))
    return out


def _ig_pieces(net, embs, base, pieces: Sequence[torch.Tensor], chunk: int = 1 << 15) -> tuple[torch.Tensor, ...]:
    """IG as captum computes it with ``step_sizes_and_alphas``, ``(x - b) * sum_k step_k grad f(b + alpha_k
    (x - b))``, with each pair's own steps (the widths of its pieces) and alphas (their midpoints), for all
    pairs in batched forwards and backwards of up to ``chunk`` path points."""
    dev = embs[0].device
    counts = torch.tensor([len(c) - 1 for c in pieces], device=dev)
    cuts = [c.to(dev) for c in pieces]
    steps = torch.cat([c[1:] - c[:-1] for c in cuts])
    alphas = torch.cat([(c[1:] + c[:-1]) / 2 for c in cuts])
    pid = torch.repeat_interleave(torch.arange(len(cuts), device=dev), counts)
    sums = [torch.zeros_like(e) for e in embs]
    for lo in range(0, len(pid), chunk):
        sl = slice(lo, lo + chunk)
        p, a = pid[sl], alphas[sl, None]
        points = [(bb[p] + a * (e[p] - bb[p])).requires_grad_() for e, bb in zip(embs, base)]
        grads = torch.autograd.grad(net.score(*points).sum(), points)
        for acc, g in zip(sums, grads):
            acc.index_add_(0, p, g * steps[sl, None])
    return tuple((acc * (e - bb)).detach() for acc, e, bb in zip(sums, embs, base))


class IntegratedGradients(GradientMethod):
    name = "ig"
    defaults = {"integration": "piecewise", "n_steps": 128}
    captum_class = "captum.attr.IntegratedGradients with each pair's step_sizes_and_alphas (piece widths, midpoints)"

    def attribute_dims(self, t: Target, n_steps: int = 128, integration: str = "piecewise", grid: int = 256, **_):
        net, embs, base = t.net, t.embs, t.base
        if integration != "piecewise":
            return self._captum_ig(t, n_steps, integration)
        attrs = _ig_pieces(net, embs, base, _linear_pieces(net, embs, base, grid))
        with torch.no_grad():
            delta = (sum(a.sum(1) for a in attrs) - (net.score(*embs) - net.score(*base))).abs()
        return attrs, delta

    @staticmethod
    def _captum_ig(t: Target, n_steps: int, integration: str):
        ig = CaptumIG(lambda *e: t.net.score(*e))
        inputs = tuple(e.detach().requires_grad_() for e in t.embs)
        attrs, delta = ig.attribute(inputs, baselines=tuple(t.base), n_steps=n_steps, method=integration,
                                    internal_batch_size=max(len(t.embs[0]), 1) * 8, return_convergence_delta=True)
        return tuple(a.detach() for a in attrs), delta.detach().abs()

    def reference(self, t: Target, gen: torch.Generator, grid: int = 256, **settings) -> torch.Tensor:
        """captum's IntegratedGradients pair by pair, with the step sizes and alphas of the pieces."""
        net, embs, base = t.net, t.embs, t.base
        out = []
        with explaining(net):
            ig = CaptumIG(lambda *e: net.score(*e))
            for p, cuts in enumerate(_linear_pieces(net, embs, base, grid)):
                steps, mids = (cuts[1:] - cuts[:-1]).tolist(), ((cuts[1:] + cuts[:-1]) / 2).tolist()
                ref = ig._attribute(tuple(e[p:p + 1].clone().requires_grad_() for e in embs),
                                    tuple(b[p:p + 1] for b in base), n_steps=len(steps),
                                    step_sizes_and_alphas=(steps, mids))
                out.append(torch.cat([r.detach() for r in ref], 1))
        return torch.cat(out, 0)

    def captum(self, t: Target, gen: torch.Generator, n_steps: int = 128, integration: str = "piecewise", **_) -> Result:
        method = "gausslegendre" if integration == "piecewise" else integration
        return Result.additive(t, *self._captum_ig(t, n_steps, method))


METHOD = IntegratedGradients()
