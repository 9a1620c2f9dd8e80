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
embedding rows. A network whose embedding mixes several rows (RecentMF's recent vector, the mean of the
context rows of the user's latest items) says which in ``embedding_rows``: its term is the embedding
gradients' dot product times the weight the two pairs put on the same rows, so through the context table
rows of other users whose latest items overlap have influence too (:func:`tracin` counts any rows it is
given; history influence asks about the user's own).

``lr_c`` is the learning rate of the epoch that ended at checkpoint ``c`` (the ``lr`` of the run that
wrote it times its ``lr_decay ** epoch``). As in TracIn with any optimizer, gradients are taken raw: Adam's
per-coordinate scaling and the L2 penalty are not part of the sum. Positive influence marks a proponent:
training on that interaction lowered the loss of the explained pair as a positive, i.e. raised its score.

**A pretrained NeuMF** (``pretrained_gmf`` / ``pretrained_mlp``) learned its embeddings mostly before its
own training: its GMF-branch tables start as the trained GMF's tables and its MLP-branch tables as the
trained MLP's (:meth:`ncf.models.NeuMF.load_pretrained`). TracIn sums over the training steps of the
parameters that produced the final model, so the GMF and MLP runs' epoch checkpoints (up to the epoch
NeuMF was initialised from) enter the sum as stages of their own, next to NeuMF's own epochs:

    influence = sum over GMF checkpoints g of  lr_g * grad_GMF L_GMF(z_train; g) . grad_GMF L_NeuMF(z_test; init(g, MLP*))
              + sum over MLP checkpoints m of  lr_m * grad_MLP L_MLP(z_train; m) . grad_MLP L_NeuMF(z_test; init(GMF*, m))
              + sum over NeuMF checkpoints c of  lr_c * grad L_NeuMF(z_train; c) . grad L_NeuMF(z_test; c)

* The training pair's gradient is that of the stage's own loss over its own tables: it is what that run's
  optimizer followed, so ``lr * gradient`` is the step training on the pair took.
* The explained pair's gradient is that of NeuMF's loss, over the branch tables the stage trains, at the
  NeuMF the pipeline starts from when that stage stops at checkpoint ``g`` (``init(g, MLP*)``: NeuMF
  initialised from GMF checkpoint ``g`` and the MLP checkpoint it was actually initialised from, with its
  ``alpha``). The quantity explained is NeuMF's score, not the GMF's: a step on a GMF table changes
  NeuMF's initial tables by the same step, and how much that moves NeuMF's explained loss is this
  gradient. It passes through NeuMF's output layer, whose initial GMF half is ``alpha`` times the GMF's
  head (NeuMF's initial logit is ``alpha`` times the GMF's logit plus ``1 - alpha`` times the MLP's), so
  each branch's stage counts with the weight NeuMF gives that branch, and it is evaluated at a network
  the pipeline can produce, with the checkpoint's own tables and head (or tower), as TracIn evaluates
  gradients at the checkpoints of the training it sums over. (The GMF's own loss on the explained pair
  would explain the GMF's score instead, and count the GMF and MLP stages alike whatever ``alpha``.)
* A change of NeuMF's initial tables is taken to carry through NeuMF's own training unchanged (TracIn's
  first-order view); the stages' output layers and towers are not part of the sum
  (embedding tables only).

The stages' terms are kept apart (``HistoryInfluence.stages``), so a reader can see which stage
contributed how much.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ncf.checkpoint import DIGEST_KEY, PRETRAINED_KEY, load_network
from ncf.errors import CheckpointError, ConfigError
from ncf.contract import build_network, network_name, not_rows
from ncf.models import GMF, MLP, NeuMF
from ncf.run import RUN_KEY, run_defines

__all__ = ["epochs_folder", "EpochModel", "Pretrained", "load_epoch_models", "load_pretraining", "pretraining_of", "embedding_sides", "tracin",
           "history_influence", "HistoryInfluence", "STAGE_LABELS"]

STAGE_LABELS = {"gmf": "GMF", "mlp": "MLP", "neumf": "NeuMF"}


def epochs_folder(checkpoint: str | Path) -> Path:
    """The per-epoch checkpoints of a checkpoint's run: ``epochs/`` beside ``best.ckpt`` / ``last.ckpt``, or
    the folder of an ``epochs/epoch=E.ckpt`` itself.

    >>> [epochs_folder(p).as_posix() for p in ("r/checkpoints/best.ckpt", "r/checkpoints/epochs/epoch=3.ckpt")]
    ['r/checkpoints/epochs', 'r/checkpoints/epochs']
    """
    checkpoint = Path(checkpoint)
    return checkpoint.parent if _EPOCH_FILE.match(checkpoint.name) else checkpoint.parent / "epochs"


@dataclass
class Pretrained:
    """How a pretraining stage's weights become a NeuMF's initial weights: the GMF and MLP the NeuMF was
    initialised from, its ``alpha``, and a NeuMF of its shape to initialise (reused for every checkpoint)."""

    gmf: GMF
    mlp: MLP
    alpha: float
    neumf: NeuMF

    def initialised_from(self, stage: str, net: nn.Module) -> NeuMF:
        """The NeuMF the pipeline starts from when ``stage`` (``gmf`` or ``mlp``) stops at ``net``."""
        self.neumf.load_pretrained(net if stage == "gmf" else self.gmf, net if stage == "mlp" else self.mlp,
                                   self.alpha)
        return self.neumf.eval()


@dataclass
class EpochModel:
    """A network as it was at the end of ``epoch``, with the learning rate that epoch trained at.

    ``stage`` names the run it comes from (``gmf``, ``mlp``, ``neumf``; empty: the explained model's own).
    ``into`` is set for a pretraining stage of a NeuMF: the explained pair's gradient is then taken on the
    NeuMF initialised from this checkpoint, over the branch tables this stage trains.
    """

    epoch: int
    net: nn.Module
    lr: float
    stage: str = ""
    into: Optional[Pretrained] = field(default=None, repr=False)


def embedding_sides(net: nn.Module) -> list[str]:
    """``"user"`` or ``"item"`` for each of ``net.embed``'s outputs.

    >>> from ncf.models import NeuMF
    >>> embedding_sides(NeuMF(3, 4, 2, 1))
    ['user', 'item', 'user', 'item']
    """
    return [net.side_of(k) for k in range(len(net.embedding_names))]


def _mixed_rows(net: nn.Module, train_users, train_items, test_users, test_items, dtype) -> dict[int, torch.Tensor]:
    """For each embedding that mixes several table rows (:meth:`ncf.contract.Recommender.embedding_rows`):
    ``[n_test, n_train]``, how much of the same rows the two pairs' embeddings read, ``sum over rows r of
    w_test[r] * w_train[r]``. The embedding's gradient ``g`` reaches row ``r`` as ``w[r] * g``, so the tables'
    gradient dot product is ``(g_test . g_train)`` times it (for one-row embeddings: 1 where the row is shared)."""
    rows_train = net.embedding_rows(train_users, train_items) if not getattr(net, "embeddings_are_rows", True) else None
    if not rows_train:
        return {}
    rows_test = net.embedding_rows(test_users, test_items)
    out = {}
    for k, (r_train, w_train, _) in rows_train.items():
        r_test, w_test, _ = rows_test[k]
        w_test, w_train = w_test.to(dtype), w_train.to(dtype)
        shared = torch.zeros(len(test_users), len(train_users), dtype=dtype, device=w_test.device)
        for a in range(r_test.shape[1]):  # slot a of the test pair against slot b of the training row
            for b in range(r_train.shape[1]):
                same = r_test[:, a, None] == r_train[None, :, b]
                shared += same * (w_test[:, a, None] * w_train[None, :, b])
        out[k] = shared
    return out


def refuse_mixed_rows(net: nn.Module) -> None:
    """History influence sums over the table rows a pair touches; a network whose embedding mixes several rows
    (``embeddings_are_rows`` False) without saying which (``embedding_rows``) is refused rather than explained
    wrongly.

    Raises:
        ConfigError: such a network.
    """
    probe = torch.zeros(1, dtype=torch.long, device=next(net.parameters()).device)
    if not getattr(net, "embeddings_are_rows", True) and net.embedding_rows(probe, probe) is None:
        raise ConfigError(f"history influence is not available for {type(net).__name__}: its "
                          f"{'/'.join(net.embedding_names)} embeddings are not one table row each (TracIn here sums "
                          f"over the rows a pair touches); explain it without --history / history: true.")
    k = not_rows(net, probe, probe)
    if k is not None:  # it says its embeddings are rows, and one is not (a layer inside embed())
        raise ConfigError(f"history influence is not available for {type(net).__name__}: its embedding "
                          f"{net.embedding_names[k]!r} is not one row of its tables (a layer inside embed()?), though "
                          f"it does not set embeddings_are_rows = False; TracIn here sums over the rows a pair "
                          f"touches, so it would be wrong. Explain it without --history / history: true.")


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
        refuse_mixed_rows(m.net)
        sides = embedding_sides(m.net)
        g_train = _per_example_grads(m.net, train_users, train_items)
        if m.into is None:
            g_test = _per_example_grads(m.net, test_users, test_items)
        else:  # a pretraining stage: NeuMF's explained loss over the branch tables this stage trains
            neumf = m.into.initialised_from(m.stage, m.net)
            g_all = _per_example_grads(neumf, test_users, test_items)
            g_test = tuple(g_all[k] for k in neumf.groups["branch"][m.stage])
        dtype = g_test[0].dtype
        same_user = (test_users[:, None] == train_users[None, :]).to(dtype)
        same_item = (test_items[:, None] == train_items[None, :]).to(dtype)
        mixed = _mixed_rows(m.net, train_users, train_items, test_users, test_items, dtype)
        term = torch.zeros(len(test_users), len(train_users), dtype=dtype)
        for k, (side, gtr, gte) in enumerate(zip(sides, g_train, g_test)):
            shared = mixed.get(k, same_user if side == "user" else same_item)
            term += (gte @ gtr.T) * shared
        out.append(m.lr * term)
    return torch.stack(out)


@dataclass
class HistoryInfluence:
    """The influence of one user's training interactions on one (user, item) prediction.

    ``items``: the user's training items (indices); ``per_epoch[c, h]``: checkpoint ``c``'s term for item
    ``h``; ``epochs[c]`` and ``stages[c]``: that checkpoint's epoch and the run it comes from (``gmf``,
    ``mlp``, ``neumf``; empty for a model's own when not named); ``influence``: their sum; ``order``:
    items by decreasing influence.
    """

    user: int
    item: int
    items: torch.Tensor
    epochs: list[int]
    per_epoch: torch.Tensor
    stages: list[str] = field(default_factory=list)

    @property
    def stage_names(self) -> list[str]:
        """The stages in the order their checkpoints come."""
        return list(dict.fromkeys(self.stages))

    def stage_influence(self, stage: str) -> torch.Tensor:
        """The influence of each interaction summed over ``stage``'s checkpoints alone."""
        rows = torch.tensor([s == stage for s in self.stages], dtype=torch.bool)
        return self.per_epoch[rows].sum(0)

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


def history_influence(models: Sequence[EpochModel], user: int, item: int, history: torch.Tensor,
                      draws: Optional[torch.Tensor] = None) -> HistoryInfluence:
    """Rank ``history`` (the user's training items) by TracIn influence on the pair ``(user, item)``.
    ``draws``: how many times an epoch training drew each (``--data.recent_weight`` for a user's recent
    interactions); TracIn sums over every step an example took, so each term counts that many times."""
    users = torch.full_like(history, user)
    per = tracin(models, users, history, torch.tensor([user]), torch.tensor([item]))[:, 0, :]
    if draws is not None:
        per = per * draws.to(per.dtype)
    return HistoryInfluence(user, item, history, [m.epoch for m in models], per, [m.stage for m in models])


_EPOCH_FILE = re.compile(r"^epoch=(\d+)\.ckpt$")

PRETRAINING_FLAG = "--history-pretraining GMF_EPOCHS_DIR MLP_EPOCHS_DIR"


def _epoch_files(folder: Path, up_to_epoch: Optional[int]) -> dict[int, Path]:
    """``epoch=E.ckpt`` files in ``folder`` up to ``up_to_epoch``, by epoch."""
    out = {}
    for path in sorted(folder.iterdir()):
        match = _EPOCH_FILE.match(path.name)
        if not match:
            if path.suffix == ".ckpt":
                raise CheckpointError(f"{path}: not named epoch=E.ckpt; {folder} should hold one run's per-epoch "
                                      f"checkpoints only (a second run in the same folder writes -v1 files).")
            continue
        epoch = int(match.group(1))
        if up_to_epoch is None or epoch <= up_to_epoch:
            out[epoch] = path
    return out


def _run_id(ckpt: dict) -> Optional[str]:
    run = ckpt.get("ncf_run")
    return run.get("id") if isinstance(run, dict) and isinstance(run.get("id"), str) else None


def _data_sha256(ckpt: dict) -> Optional[str]:
    run = ckpt.get("ncf_run")
    defines = run.get("defines") if isinstance(run, dict) else None
    return defines.get("data_sha256") if isinstance(defines, dict) else None


def _same_data(ckpt: dict, like: dict) -> bool:
    """Same id mapping, and the same split (its hash) where both checkpoints record it."""
    ids, other = like.get("NCFDataModule") or {}, ckpt.get("NCFDataModule") or {}
    a, b = _data_sha256(ckpt), _data_sha256(like)
    return (other.get("user_ids"), other.get("item_ids")) == (ids.get("user_ids"), ids.get("item_ids")) \
        and (a is None or b is None or a == b)


def _epoch_lr(hp: dict, epoch: int) -> float:
    """The rate epoch ``epoch`` trained at: the run's ``lr`` decayed by ``lr_decay`` once per earlier epoch."""
    return float(hp.get("lr", 1e-3)) * float(hp.get("lr_decay", 1.0)) ** epoch


def load_epoch_models(folder: str | Path, like: dict, up_to_epoch: Optional[int] = None) -> list[EpochModel]:
    """The per-epoch checkpoints in ``folder`` (``epoch=E.ckpt``, as the configs' second ``ModelCheckpoint``
    writes them) of the run of the checkpoint ``like`` (its run id; and so its hyperparameters and id
    mapping), up to ``up_to_epoch``. Their stage is the model's name (``gmf``, ``mlp``, ``neumf``).

    Raises:
        CheckpointError: no such folder or no matching checkpoint, ``like`` without a run id, or a file of
            another run among them (named, with its run).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no per-epoch checkpoints (history influence needs them: train with the "
                              f"configs' epoch checkpoints, or pass --history-checkpoints DIR).")
    hp = like["hyper_parameters"]
    run = like.get(RUN_KEY) if isinstance(like.get(RUN_KEY), dict) else {}
    run_id = run.get("id")
    if not isinstance(run_id, str):
        raise CheckpointError(f"the explained checkpoint carries no run id ('{RUN_KEY}'), so nothing shows which epoch "
                              f"checkpoints in {folder} are of its run; explain a checkpoint written by "
                              f"`python train.py fit`.")
    models = []
    for epoch, path in _epoch_files(folder, up_to_epoch).items():
        net, ckpt = load_network(path)
        theirs = ckpt.get(RUN_KEY).get("id") if isinstance(ckpt.get(RUN_KEY), dict) else None
        if theirs != run_id:
            raise CheckpointError(f"{path} is an epoch checkpoint of run {theirs}, not of the explained checkpoint's run "
                                  f"{run_id}: history sums one run's epochs only; move it out of {folder} (or pass "
                                  f"--history-checkpoints with a folder of run {run_id}'s epoch checkpoints).")
        other = ckpt["hyper_parameters"]
        same = all(other.get(k) == hp.get(k) for k in ("network", "n_users", "n_items"))
        if not same or not _same_data(ckpt, like):
            raise CheckpointError(f"{path} belongs to another model or data than the explained checkpoint.")
        models.append(EpochModel(epoch, net, _epoch_lr(other, epoch), network_name(hp)))
    if not models:
        raise CheckpointError(f"{folder}: no epoch=E.ckpt files up to epoch {up_to_epoch}.")
    return sorted(models, key=lambda m: m.epoch)


def _pretraining_stage(stage: str, like: dict, folder: Optional[str | Path], notes: list[str]) -> list[EpochModel]:
    """The epoch checkpoints of the ``stage`` run (``gmf`` or ``mlp``) a NeuMF was initialised from, epochs
    0 to the one it started from, each checked to belong to that run and to the NeuMF's data."""
    name = STAGE_LABELS[stage]
    recorded = like["hyper_parameters"][f"pretrained_{stage}"]  # data: read, never written
    record = (like.get(PRETRAINED_KEY) or {}).get(stage)
    if isinstance(record, dict):
        run_id, used_epoch, digest = record.get("run_id"), record.get("epoch"), record.get("weights_sha256")
    else:  # a NeuMF checkpoint from before the record: the checkpoint at the recorded path is taken as the one
        path = Path(recorded)
        if not path.is_file():
            raise CheckpointError(f"{recorded}: the pretrained {name} checkpoint this NeuMF was initialised from is not "
                                  f"there, and the NeuMF checkpoint predates the record of its epoch; history influence "
                                  f"of a pretrained NeuMF sums over its pretraining: retrain the NeuMF, or pass "
                                  f"--history-pretraining none for NeuMF's own epochs only.")
        _, ckpt = load_network(path)
        run_id, used_epoch, digest = _run_id(ckpt), ckpt.get("epoch"), ckpt.get(DIGEST_KEY)
        notes.append(f"the NeuMF checkpoint predates the record of its pretrained runs: the {name} run at {recorded} "
                     f"(run {run_id}, epoch {used_epoch}) is taken as the one it was initialised from.")
    if not isinstance(used_epoch, int) or isinstance(used_epoch, bool) or used_epoch < 0:
        raise CheckpointError(f"the NeuMF checkpoint's record of its pretrained {name} ({used_epoch!r} as its epoch) is "
                              f"not of the kind train.py writes; the file was altered.")
    folder = Path(folder) if folder else epochs_folder(recorded)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no per-epoch checkpoints of the {name} this NeuMF was initialised from (its "
                              f"embeddings were learned there); pass {PRETRAINING_FLAG}, or --history-pretraining none "
                              f"for NeuMF's own epochs only.")
    files = _epoch_files(folder, used_epoch)
    missing = [e for e in range(used_epoch + 1) if e not in files]
    if missing and _kept(recorded, run_id):  # the stage was retrained (with fewer epochs) since
        raise CheckpointError(f"{folder}: epoch={missing[0]}.ckpt is missing, and the folder holds another {name} run "
                              f"than run {run_id}, which this NeuMF was initialised from; pass that run's epochs folder "
                              f"({PRETRAINING_FLAG}){_kept(recorded, run_id)}.")
    if missing:
        raise CheckpointError(f"{folder}: epoch={missing[0]}.ckpt is missing; the {name} run trained epochs 0 to "
                              f"{used_epoch} before NeuMF started from it, and every one enters the sum "
                              f"({PRETRAINING_FLAG}).")
    models = []
    for epoch, path in sorted(files.items()):
        net, ckpt = load_network(path, expect=GMF if stage == "gmf" else MLP)
        if run_id is not None and _run_id(ckpt) != run_id:
            raise CheckpointError(f"{path} belongs to run {_run_id(ckpt)}, but this NeuMF was initialised from {name} "
                                  f"run {run_id}; pass that run's epochs folder ({PRETRAINING_FLAG})"
                                  f"{_kept(recorded, run_id)}.")
        if not _same_data(ckpt, like):
            raise CheckpointError(f"{path} was trained on other data than this NeuMF (id mapping or split).")
        models.append(EpochModel(epoch, net, _epoch_lr(ckpt["hyper_parameters"], epoch), stage))
        if epoch == used_epoch and digest is not None and ckpt.get(DIGEST_KEY) != digest:
            raise CheckpointError(f"{path}: its weights are not those of the {name} checkpoint this NeuMF was "
                                  f"initialised from; pass that run's epochs folder ({PRETRAINING_FLAG})"
                                  f"{_kept(recorded, run_id)}.")
    return models


def load_pretraining(like: dict, folders: Optional[Sequence[str | Path]] = None) -> tuple[list[EpochModel], list[str]]:
    """The GMF and MLP epoch checkpoints a pretrained NeuMF (checkpoint ``like``) learned its embeddings in,
    as stages of its history; empty for any other model. Returns the checkpoints (GMF's, then MLP's), each
    wired to the NeuMF it initialises (:class:`Pretrained`), and notes for the reader.

    The runs are found from the paths the NeuMF checkpoint recorded (``pretrained_gmf`` / ``pretrained_mlp``:
    the ``epochs/`` folder beside each), or in ``folders`` (GMF's, MLP's). Only epochs up to the one the
    NeuMF was initialised from count, and each file must belong to that run (its run id, and at that
    epoch its weights hash, as the NeuMF checkpoint recorded them) and to the NeuMF's data.

    Raises:
        CheckpointError: a folder or epoch missing, or a file of another run or data, in one line naming
            ``--history-pretraining``.
    """
    hp = like["hyper_parameters"]
    if not hp.get("pretrained_gmf") or not hp.get("pretrained_mlp"):
        return [], []
    notes: list[str] = []
    gmf = _pretraining_stage("gmf", like, folders[0] if folders else None, notes)
    mlp = _pretraining_stage("mlp", like, folders[1] if folders else None, notes)
    neumf = build_network(hp["network"], int(hp["n_users"]), int(hp["n_items"]))
    into = Pretrained(gmf[-1].net, mlp[-1].net, float(hp.get("alpha", 0.5)), neumf)
    try:
        into.initialised_from("gmf", into.gmf)
    except (RuntimeError, ValueError) as err:
        raise CheckpointError(f"the pretrained GMF and MLP do not fit this NeuMF ({str(err).splitlines()[0]}).") from None
    for m in gmf + mlp:
        m.into = into
    return gmf + mlp, notes


def pretraining_of(module) -> list[EpochModel]:
    """:func:`load_pretraining` for a NeuMF in a fit (an ``NCFModule`` initialised from a GMF and an MLP, with
    its trainer's data module): the same checkpoints, checked the same way, found from what it records."""
    dm = module.trainer.datamodule
    like = {"hyper_parameters": dict(module.hparams), "NCFDataModule": dm.state_dict(),
            RUN_KEY: {"defines": run_defines(module)}, PRETRAINED_KEY: module.pretrained_record}
    return load_pretraining(like)[0]


def _kept(recorded, run_id) -> str:
    """``: kept in runs/<dataset>/gmf/superseded/<run id>/checkpoints/epochs`` when retraining the stage moved the
    run the NeuMF started from there (else nothing)."""
    if not recorded or not run_id:
        return ""
    folder = Path(str(recorded)).parent.parent / "superseded" / str(run_id) / "checkpoints" / "epochs"
    return f"; retraining kept it in {folder}" if folder.is_dir() else ""
