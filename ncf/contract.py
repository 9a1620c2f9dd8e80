"""What every network here is, written down: the contract that explanations, training and checkpoints
rely on, so a new model implements these members and nothing reads meaning out of names.

A model maps (user, item) index pairs to a logit in two steps, so that explanations never patch layers:

* ``embed(users, items)``: the embedding tensors of the pairs, ``[B, d_k]`` each, named by
  ``embedding_names``;
* ``score(*embeddings)``: the logit from them, ``[B]``. It is ``score_features(*features(*embeddings))``:
  ``features`` does the element-wise work between embeddings (GMF's product; ``feature_sources`` says,
  for each feature, ``("identity", k)`` or ``("product", i, j)`` of which embeddings), and
  ``score_features`` is the network above it (what DeepLift propagates through).

``groups`` declares how the embeddings group for explanation: ``{"side": {"user": (...), "item": (...)}}``
and, for a model with branches, ``{"branch": {"gmf": (...), "mlp": (...)}}``, each a partition of the
embedding indices.
"""
from __future__ import annotations

from typing import ClassVar, Optional

import torch
from torch import nn

__all__ = ["Recommender"]


class Recommender(nn.Module):
    """Base class of GMF, MLP and NeuMF (see the module docstring for the contract)."""

    embedding_names: ClassVar[tuple[str, ...]]
    feature_sources: ClassVar[tuple[tuple, ...]]
    groups: ClassVar[dict[str, dict[str, tuple[int, ...]]]]
    n_users: int
    n_items: int

    def embed(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def features(self, *embeddings: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def score_features(self, *features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, *embeddings: torch.Tensor) -> torch.Tensor:
        """The logit from the embeddings ``embed`` returns."""
        return self.score_features(*self.features(*embeddings))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        from .fused import fast_logit

        logit: Optional[torch.Tensor] = fast_logit(self, users, items)
        return self.score(*self.embed(users, items)) if logit is None else logit

    def side_of(self, k: int) -> str:
        """``"user"`` or ``"item"``: the side embedding ``k`` belongs to."""
        return next(side for side, members in self.groups["side"].items() if k in members)
