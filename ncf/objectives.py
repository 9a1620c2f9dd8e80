"""Training objectives: how the logits of a training batch become the loss.

The maths are pure functions; each objective is a small class with one verb, ``loss``, and a ``layout``
that says which batches it needs from the training loader (:class:`ncf.data.TrainLoader`):

* ``"pointwise"``: shuffled (user, item, label) pairs, positives and their negatives mixed;
  ``loss(logits [N], labels [N])``. :class:`PointwiseLogLoss`, the paper's binary cross-entropy, is the
  default and trains exactly as the project always has.
* ``"grouped"``: each positive with its own ``k`` negatives (``data.num_negatives``), drawn fresh every
  epoch and never a training positive of the user; ``loss(pos_logits [B], neg_logits [B, k])``.
  :class:`BPR` (Rendle et al., 2009) and :class:`SampledSoftmax` (cross-entropy of the positive among
  itself and its negatives, as in Rendle, *Item recommendation from implicit feedback*, 2021).

The module takes an objective by composition, so a config names it by class:

.. code-block:: yaml

    model:
      objective:
        class_path: ncf.objectives.SampledSoftmax
        init_args: {temperature: 0.5}

A checkpoint stores the objective as its class path and constructor arguments (plain values, see
:meth:`Objective.spec`), never the object. A new objective is a new subclass: a ``layout``, a ``loss``,
and its constructor arguments kept as attributes of the same names.
"""
from __future__ import annotations

import inspect
from typing import Any, ClassVar, Optional, Union

import torch
import torch.nn.functional as F

from .errors import ConfigError, known_subclasses

__all__ = ["Objective", "PointwiseLogLoss", "BPR", "SampledSoftmax", "pointwise_log_loss", "bpr_loss",
           "sampled_softmax_loss", "as_objective", "LAYOUTS"]

LAYOUTS = ("pointwise", "grouped")


def pointwise_log_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of the logits against 0/1 labels (the paper's log loss).

    >>> round(float(pointwise_log_loss(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]))), 4)
    1.41
    """
    return F.binary_cross_entropy_with_logits(logits, labels)


def bpr_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: the mean over positives and their ``k`` negatives of
    ``-log sigmoid(pos - neg)`` (``softplus(neg - pos)``, stable for large gaps).

    Args:
        pos_logits: ``[B]`` logit of each positive.
        neg_logits: ``[B, k]`` logits of its negatives.

    >>> round(float(bpr_loss(torch.tensor([1.0]), torch.tensor([[1.0, 3.0]]))), 4)  # (log 2 + softplus(2)) / 2
    1.41
    """
    return F.softplus(neg_logits - pos_logits.unsqueeze(1)).mean()


def sampled_softmax_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Sampled softmax: the mean over positives of the cross-entropy of the positive among itself and its
    ``k`` negatives, ``logsumexp([pos ; neg] / T) - pos / T``. Negatives are uniform over the items the
    user has not interacted with, so no log-Q correction is needed (it is the same constant for every item).

    Args:
        pos_logits: ``[B]`` logit of each positive.
        neg_logits: ``[B, k]`` logits of its negatives.
        temperature: ``T``; below 1 sharpens the softmax (hard negatives weigh more).

    >>> round(float(sampled_softmax_loss(torch.tensor([0.0]), torch.tensor([[0.0, 0.0, 0.0]]))), 4)  # log 4
    1.3863
    """
    scaled = torch.cat([pos_logits.unsqueeze(1), neg_logits], dim=1) / temperature  # [B, 1 + k]
    return (torch.logsumexp(scaled, dim=1) - scaled[:, 0]).mean()


class Objective:
    """An objective: ``layout`` (``"pointwise"`` or ``"grouped"``, see the module docstring) and ``loss``.

    Constructor arguments are kept as attributes of the same names, with plain values (numbers, strings,
    booleans), so that :meth:`spec` can store the objective in a checkpoint.
    """

    layout: ClassVar[str] = "grouped"

    def loss(self, *logits: torch.Tensor) -> torch.Tensor:
        """``pointwise``: ``loss(logits [N], labels [N])``; ``grouped``: ``loss(pos_logits [B], neg_logits [B, k])``."""
        raise NotImplementedError

    def spec(self) -> dict:
        """The objective as plain values: ``{"class_path": ..., "init_args": {...}}`` (what a config writes).

        >>> SampledSoftmax(temperature=0.5).spec()
        {'class_path': 'ncf.objectives.SampledSoftmax', 'init_args': {'temperature': 0.5}}
        """
        cls = type(self)
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        names = [p.name for p in inspect.signature(cls.__init__).parameters.values()
                 if p.name != "self" and p.kind in named]
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": {n: getattr(self, n) for n in names}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.spec()["init_args"].items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Objective) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(repr(self))


class PointwiseLogLoss(Objective):
    """The paper's objective: binary cross-entropy of every (user, item) pair of a shuffled batch, label 1
    for a positive, 0 for a sampled negative (:func:`pointwise_log_loss`). The default.

    >>> PointwiseLogLoss().loss(torch.tensor([0.0]), torch.tensor([1.0]))
    tensor(0.6931)
    """

    layout: ClassVar[str] = "pointwise"

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return pointwise_log_loss(logits, labels)


class BPR(Objective):
    """Bayesian personalised ranking over each positive and its own ``k`` negatives (:func:`bpr_loss`).

    >>> BPR().loss(torch.tensor([0.0]), torch.tensor([[0.0]]))
    tensor(0.6931)
    """

    def loss(self, pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
        return bpr_loss(pos_logits, neg_logits)


class SampledSoftmax(Objective):
    """Cross-entropy of each positive among itself and its own ``k`` negatives (:func:`sampled_softmax_loss`).

    Args:
        temperature: divides the logits before the softmax; must be positive.

    >>> SampledSoftmax(temperature=0.5).loss(torch.tensor([0.0]), torch.tensor([[0.0]]))
    tensor(0.6931)
    """

    def __init__(self, temperature: float = 1.0):
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
            raise ConfigError(f"SampledSoftmax's temperature must be a positive number, not {temperature!r} "
                              f"(--model.objective.init_args.temperature).")
        self.temperature = float(temperature)

    def loss(self, pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
        return sampled_softmax_loss(pos_logits, neg_logits, self.temperature)


def as_objective(value: Union[Objective, dict, None]) -> Objective:
    """An objective from what a module is given: an :class:`Objective`, ``None`` (the paper's
    :class:`PointwiseLogLoss`), or its :meth:`~Objective.spec` as stored in a checkpoint. A stored class path
    names only a class already imported: nothing is imported because a file says so.

    >>> as_objective(None), as_objective({"class_path": "ncf.objectives.BPR"})
    (PointwiseLogLoss(), BPR())
    """
    if value is None:
        return PointwiseLogLoss()
    if isinstance(value, Objective):
        if value.layout not in LAYOUTS:
            raise ConfigError(f"{type(value).__name__}.layout must be one of {LAYOUTS}, not {value.layout!r}.")
        return value
    if isinstance(value, dict) and isinstance(value.get("class_path"), str):
        known = known_subclasses(Objective)
        cls: Optional[Any] = known.get(value["class_path"])
        if cls is None:
            near = [k for k in known if k.rsplit(".", 1)[-1] == value["class_path"].rsplit(".", 1)[-1]]
            raise ConfigError(f"model.objective: {value['class_path']!r} is not a known objective; use one of "
                              f"{', '.join(sorted(known))}" + (f" (did you mean {near[0]}?)" if near else "")
                              + ", or import the module that defines yours first.")
        args = value.get("init_args") or {}
        if not isinstance(args, dict):
            raise ConfigError(f"model.objective: init_args must be a mapping, not {args!r}.")
        try:
            return as_objective(cls(**args))
        except TypeError as err:
            raise ConfigError(f"model.objective: {value['class_path']} does not take {sorted(args)} ({err}).") from None
    raise ConfigError(f"model.objective must name an objective by class_path (e.g. {{class_path: "
                      f"ncf.objectives.SampledSoftmax, init_args: {{temperature: 0.5}}}}), not {value!r}.")
