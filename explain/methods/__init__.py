"""The attribution methods, one module each, and their registry.

To add a method, write a module here whose ``METHOD`` is an instance of a :class:`~.base.Method`
subclass, and add the module's name to ``MODULES``: ``explain.attribute``, ``explain.py --methods``, the
callback and the benchmarks read the registry. For example, gradient times input::

    # explain/methods/grad_x_input.py
    import torch
    from .base import GradientMethod

    class GradientTimesInput(GradientMethod):
        name = "grad_x_input"

        def attribute_dims(self, t, **settings):
            embs = tuple(e.clone().requires_grad_() for e in t.embs)
            grads = torch.autograd.grad(t.net.score(*embs).sum(), embs)
            return tuple((g * (e - b)).detach() for g, e, b in zip(grads, t.embs, t.base)), None

    METHOD = GradientTimesInput()
"""
from __future__ import annotations

import importlib

from .base import REGISTRY, GradientMethod, Method, Result, get, names, register

__all__ = ["REGISTRY", "Method", "GradientMethod", "Result", "get", "names", "register", "MODULES",
           "settings_for", "random_methods", "MAX_SAMPLES"]

MAX_SAMPLES = 1 << 22  # a fixed sample count per pair: beyond this LIME's forwards take minutes per pair

MODULES = ("deeplift", "ig", "lime", "kernel_shap", "shapley")

for _module in MODULES:
    register(importlib.import_module(f"{__name__}.{_module}").METHOD)


def settings_for(name: str, n_samples: int | None = None, preset: dict | None = None) -> dict:
    """A method's settings: its defaults, then ``preset``, then ``n_samples`` where the method samples (a
    sample count given by the user is used as it is: no convergence rule)."""
    s = {**get(name).defaults, **(preset or {})}
    if n_samples is not None and "n_samples" in s:
        s["n_samples"] = n_samples
        if "stability_target" in s:
            s["stability_target"] = None
    return s


def random_methods() -> tuple[str, ...]:
    """The methods whose result depends on their seed."""
    return tuple(n for n, m in REGISTRY.items() if m.random)
