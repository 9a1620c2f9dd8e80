"""History influence: which of a user's own training interactions led to a recommendation.

An id-based model like NCF sees a user's history only through training, so "recommended because you
watched ..." is training-data attribution. This module computes TracInCP (Pruthi et al., NeurIPS 2020;
captum's :class:`captum.influence.TracInCP`) restricted to the embedding tables:

    influence(z_train, z_test) = sum over checkpoints c of  lr_c * grad L(z_train; theta_c) . grad L(z_test; theta_c)

with ``L`` the training loss (binary cross-entropy on the logit, label 1 for a positive) and gradients
taken with respect to the embedding tables only, as ``TracInCP(..., layers=[the embedding modules])``
computes. A training row's gradient touches only its own user's and its own item's rows of each table,
so only training rows that share the user or the item with the explained pair can have any influence on
it: the sum is computed for those rows alone (every other row's influence is exactly zero), which makes
it a few small batched backwards per checkpoint instead of one per training row. Since the explained item
is one the user never interacted with, the influence of the user's own history flows through the user's
embedding rows.

``lr_c`` is the learning rate of the epoch that ended at checkpoint ``c`` (the model's ``lr`` times
``lr_decay ** epoch``). As in TracIn with any optimizer, gradients are taken raw: Adam's per-coordinate
scaling and the L2 penalty are not part of the sum. Positive influence marks a proponent: training on that
interaction lowered the loss of the explained pair as a positive, i.e. raised its score.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ncf.checkpoint import load_network
from ncf.errors import CheckpointError
from ncf.run import RUN_KEY

__all__ = ["EpochModel", "load_epoch_models", "embedding_sides", "tracin", "history_influence", "HistoryInfluence"]


@dataclass
class EpochModel:
    """A network as it was at the end of ``epoch``, with the learning rate that epoch trained at."""

    epoch: int
    net: nn.Module
    lr: float


def embedding_sides(net: nn.Module) -> list[str]:
    """``"user"`` or ``"item"`` for each of ``net.embed``'s outputs.

    >>> from ncf.models import NeuMF
    >>> embedding_sides(NeuMF(3, 4, 2, 1))
    ['user', 'item', 'user', 'item']
    """
    return [net.side_of(k) for k in range(len(net.embedding_names))]


def _per_example_grads(net: nn.Module, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Gradient of each pair's loss (BCE, label 1) with respect to its own embedding rows, one per table.

    Each pair gathers its own copy of its rows, so the gradient of the summed loss with respect to the
    gathered tensors is each pair's own gradient: one backward for the whole batch.
    """
    with torch.enable_grad(), torch.inference_mode(False):
        embs = [e.detach().clone().requires_grad_(True) for e in net.embed(users.clone(), items.clone())]
        logits = net.score(*embs)
        loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="sum")
        return torch.autograd.grad(loss, embs)


def tracin(models: Sequence[EpochModel], train_users: torch.Tensor, train_items: torch.Tensor,
           test_users: torch.Tensor, test_items: torch.Tensor) -> torch.Tensor:
    """TracInCP influence of training positives on test pairs over the embedding tables.

    Returns ``[len(models), n_test, n_train]``: each checkpoint's term (``lr_c`` times the gradient dot
    product); sum over the first dimension for the influence. Rows that share neither the user nor the
    item of a test pair get exactly zero.

    Example:
        >>> from ncf.models import GMF
        >>> m = [EpochModel(0, GMF(3, 4, 2).eval(), 0.1)]
        >>> tracin(m, torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([0]), torch.tensor([3])).shape
        torch.Size([1, 1, 2])
    """
    out = []
    for m in models:
        sides = embedding_sides(m.net)
        g_train = _per_example_grads(m.net, train_users, train_items)
        g_test = _per_example_grads(m.net, test_users, test_items)
        same_user = (test_users[:, None] == train_users[None, :]).to(g_test[0].dtype)
        same_item = (test_items[:, None] == train_items[None, :]).to(g_test[0].dtype)
        term = torch.zeros(len(test_users), len(train_users), dtype=g_test[0].dtype)
        for side, gtr, gte in zip(sides, g_train, g_test):
            term += (gte @ gtr.T) * (same_user if side == "user" else same_item)
        out.append(m.lr * term)
    return torch.stack(out)


@dataclass
class HistoryInfluence:
    """The influence of one user's training interactions on one (user, item) prediction.

    ``items``: the user's training items (indices); ``per_epoch[c, h]``: checkpoint ``c``'s term for item
    ``h``; ``influence``: their sum; ``order``: items by decreasing influence.
    """

    user: int
    item: int
    items: torch.Tensor
    epochs: list[int]
    per_epoch: torch.Tensor

    @property
    def influence(self) -> torch.Tensor:
        return self.per_epoch.sum(0)

    @property
    def order(self) -> torch.Tensor:
        return torch.sort(self.influence, descending=True, stable=True).indices

    def top_share(self, k: int) -> float:
        """Share of the total positive influence held by the ``k`` strongest proponents."""
        pos = self.influence.clamp_min(0)
        total = float(pos.sum())
        return float(pos[self.order[:k]].sum()) / total if total > 0 else 0.0


def history_influence(models: Sequence[EpochModel], user: int, item: int,
                      history: torch.Tensor) -> HistoryInfluence:
    """Rank ``history`` (the user's training items) by TracIn influence on the pair ``(user, item)``."""
    users = torch.full_like(history, user)
    per = tracin(models, users, history, torch.tensor([user]), torch.tensor([item]))[:, 0, :]
    return HistoryInfluence(user, item, history, [m.epoch for m in models], per)


_EPOCH_FILE = re.compile(r"^epoch=(\d+)\.ckpt$")


def load_epoch_models(folder: str | Path, like: dict, up_to_epoch: Optional[int] = None) -> list[EpochModel]:
    """The per-epoch checkpoints in ``folder`` (``epoch=E.ckpt``, as the configs' second ``ModelCheckpoint``
    writes them) of the run of the checkpoint ``like`` (its run id; and so its hyperparameters and id
    mapping), up to ``up_to_epoch``.

    Raises:
        CheckpointError: no such folder or no matching checkpoint, ``like`` without a run id, or a file of
            another run among them (named, with its run).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no per-epoch checkpoints (history influence needs them: train with the "
                              f"configs' epoch checkpoints, or pass --history-checkpoints DIR).")
    hp = like["hyper_parameters"]
    ids = like.get("NCFDataModule") or {}
    run = like.get(RUN_KEY) if isinstance(like.get(RUN_KEY), dict) else {}
    run_id = run.get("id")
    if not isinstance(run_id, str):
        raise CheckpointError(f"the explained checkpoint carries no run id ('{RUN_KEY}'), so nothing shows which epoch "
                              f"checkpoints in {folder} are of its run; explain a checkpoint written by "
                              f"`python train.py fit`.")
    models = []
    for path in sorted(folder.iterdir()):
        match = _EPOCH_FILE.match(path.name)
        if not match:
            if path.suffix == ".ckpt":
                raise CheckpointError(f"{path}: not named epoch=E.ckpt; {folder} should hold one run's per-epoch "
                                      f"checkpoints only (a second run in the same folder writes -v1 files).")
            continue
        epoch = int(match.group(1))
        if up_to_epoch is not None and epoch > up_to_epoch:
            continue
        net, ckpt = load_network(path)
        theirs = ckpt.get(RUN_KEY).get("id") if isinstance(ckpt.get(RUN_KEY), dict) else None
        if theirs != run_id:
            raise CheckpointError(f"{path} is an epoch checkpoint of run {theirs}, not of the explained checkpoint's run "
                                  f"{run_id}: history sums one run's epochs only; move it out of {folder} (or pass "
                                  f"--history-checkpoints with a folder of run {run_id}'s epoch checkpoints).")
        other = ckpt["hyper_parameters"]
        same = all(other.get(k) == hp.get(k) for k in ("model", "n_users", "n_items", "factor", "num_layers"))
        other_ids = ckpt.get("NCFDataModule") or {}
        if not same or other_ids.get("user_ids") != ids.get("user_ids") or other_ids.get("item_ids") != ids.get("item_ids"):
            raise CheckpointError(f"{path} belongs to another model or data than the explained checkpoint.")
        lr = float(other.get("lr", 1e-3)) * float(other.get("lr_decay", 1.0)) ** epoch
        models.append(EpochModel(epoch, net, lr))
    if not models:
        raise CheckpointError(f"{folder}: no epoch=E.ckpt files up to epoch {up_to_epoch}.")
    return sorted(models, key=lambda m: m.epoch)
