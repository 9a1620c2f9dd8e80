"""What an attribution method is, and the registry that lists them.

A method is a small object (captum's habit: behaviour supplied by a class per algorithm, one verb for
all) that declares its ``name``, its ``defaults``, whether it is ``random`` (its result depends on a seed),
whether it attributes only embedding groups (``groups_only``), its ``run``, and its **captum reference**:
``reference`` computes with captum what the method is defined to compute (same settings, and for random
methods the same draws), which the tests compare against ``run``; ``captum`` runs captum's own
implementation with its own defaults, for ``--backend captum``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Optional

import torch

from ..target import Target

__all__ = ["Method", "GradientMethod", "Result", "play_games", "REGISTRY", "register", "get", "names"]


@dataclass
class Result:
    """A method's output on a :class:`~explain.target.Target` of ``B`` pairs and ``E`` embeddings."""

    dims: Optional[tuple[torch.Tensor, ...]]  # per embedding [B, d_k]; None for group-level methods
    totals: torch.Tensor  # [B, E]
    groups: dict[str, torch.Tensor]  # group name -> [B], for every partition but "embedding"
    delta: Optional[torch.Tensor] = None  # [B] convergence delta, where the method has one
    samples: Optional[torch.Tensor] = None  # [B] samples drawn per pair (random methods)
    stability: Optional[torch.Tensor] = None  # [B] split-half rank agreement reached (random methods)

    @classmethod
    def additive(cls, t: Target, per_dim: tuple[torch.Tensor, ...], delta: Optional[torch.Tensor] = None) -> "Result":
        """For additive methods a group's attribution is exactly the sum over its dimensions."""
        totals = torch.stack([a.sum(1) for a in per_dim], 1)
        groups = {g: totals[:, members].sum(1) for pname, part in t.partitions.items() if pname != "embedding"
                  for g, members in part.items()}
        return cls(tuple(per_dim), totals, groups, delta)


def play_games(t: Target, game: Callable[[list[list[int]]], torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Play each partition of the embeddings as its own game whose players are its groups (``game(groups)
    -> [B, G]``), once per distinct partition (for GMF/MLP, user/item *are* the embeddings): a group's value
    is read once, never summed over the dimensions captum would broadcast it to. Returns the per-embedding
    values and the named groups."""
    parts = {p: list(part.values()) for p, part in t.partitions.items()}
    vals: dict[str, torch.Tensor] = {}
    for pname, groups in parts.items():
        same = pname != "embedding" and groups == parts["embedding"]
        vals[pname] = vals["embedding"] if same else game(groups)
    named = {g: vals[pname][:, k] for pname, part in t.partitions.items() if pname != "embedding"
             for k, g in enumerate(part)}
    return vals["embedding"], named


class Method:
    """Base class of the attribution methods (see the module docstring)."""

    name: ClassVar[str]
    defaults: ClassVar[dict] = {}
    random: ClassVar[bool] = False
    groups_only: ClassVar[bool] = False
    captum_class: ClassVar[str] = ""  # the captum class that defines what the method computes

    def run(self, t: Target, gen: torch.Generator, **settings) -> Result:
        raise NotImplementedError

    def reference(self, t: Target, gen: torch.Generator, **settings) -> torch.Tensor:
        """What captum computes for the definition of this method, in the form of :meth:`comparable`, with
        the same settings and (random methods) the same draws from ``gen``: the tests hold ``run`` to it."""
        raise NotImplementedError

    def captum(self, t: Target, gen: torch.Generator, **settings) -> Result:
        """captum's own implementation (``--backend captum``)."""
        raise NotImplementedError(f"{self.name} has no captum implementation to run.")

    def comparable(self, t: Target, result: Result) -> torch.Tensor:
        """``result`` in the form :meth:`reference` returns: all dimensions concatenated ``[B, D]``, or the
        embedding totals ``[B, E]`` for group-level methods."""
        return torch.cat(result.dims, 1) if result.dims is not None else result.totals


class GradientMethod(Method):
    """An additive method: per-dimension attributions, groups as sums."""

    def attribute_dims(self, t: Target, **settings) -> tuple[tuple[torch.Tensor, ...], Optional[torch.Tensor]]:
        raise NotImplementedError

    def run(self, t: Target, gen: torch.Generator, **settings) -> Result:
        per_dim, delta = self.attribute_dims(t, **settings)
        return Result.additive(t, per_dim, delta)


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` under its name (a later one of the same name replaces it)."""
    REGISTRY[method.name] = method
    return method


def get(name: str) -> Method:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown method {name!r}; choose from {tuple(REGISTRY)}.") from None


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)
