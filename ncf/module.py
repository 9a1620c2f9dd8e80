"""The LightningModule: any :class:`~ncf.contract.Recommender` network, an objective from :mod:`ncf.objectives`
(the paper's BCE-with-logits by default), HR@10 / NDCG@10."""
from __future__ import annotations

import logging
from typing import Callable, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch import nn

from .candidates import score_items
from .checkpoint import PRETRAINED_KEY, SOURCE_KEY, network_source, warn_if_source_changed
from .distributed import SparseExchange, exchange_gradients
from .errors import ConfigError, UserError
from .contract import Recommender, build_network, check_network, network_spec
from .fused import FoldedScorer, l2_per_row
from .metrics import HitRateNDCG, rank_among
from .objectives import Objective, PointwiseLogLoss, as_objective
from .pretraining import load_pretrained
from .run import restore_run, save_run, setup_run, start_run, trainer_of

__all__ = ["NCFModule", "DivergedError"]

log = logging.getLogger("ncf")

# Embedding rows (users + items) per batch sample above which SGD gets sparse embedding gradients.
SPARSE_ROWS_PER_SAMPLE = 4


def sparse_embeddings(optimizer: str, rows: int, batch, world: int = 1, clipping=None, gloo: bool = True) -> bool:
    """Whether training takes sparse embedding gradients (see ``NCFModule._choose_sparse_embeddings``).

    >>> sparse_embeddings("adam", 165_000, 1024), sparse_embeddings("adam", 165_000, 1024, world=2)
    (False, True)
    """
    if not isinstance(batch, int) or clipping or rows <= SPARSE_ROWS_PER_SAMPLE * batch:
        return False
    if world == 1:
        return optimizer == "sgd"
    return gloo


def _gloo() -> bool:
    """Whether this run's processes talk through gloo (CPU processes), where the sparse exchange is tested;
    elsewhere (NCCL) DDP keeps dense gradients, which NCCL all-reduces natively."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo"


class DivergedError(UserError):
    """Training produced a non-finite loss; the message names the epoch and step."""


class NCFModule(pl.LightningModule):
    """Train a recommender network on implicit feedback.

    Args:
        network: the network, by class and constructor arguments: in a config ``network: {class_path:
            ncf.models.NeuMF, init_args: {factor: 64}}`` (on the command line ``--model.network ncf.models.GMF
            --model.network.factor 32``); in Python that dict, the class, or ``functools.partial(Class, ...)``.
            Any :class:`~ncf.contract.Recommender` taking ``(n_users, n_items, ...)``.
        n_users, n_items: catalogue sizes (linked from the data module by the CLI).
        optimizer: ``adam`` (the paper's default) or ``sgd`` (the paper's choice after pretraining).
        lr: learning rate.
        weight_decay: L2 penalty on the embedding rows used in each batch (per sample).
        lr_decay: multiply the learning rate by this after every epoch (1.0: constant).
        pretrained_gmf, pretrained_mlp: checkpoints of a trained GMF and MLP to initialise a network with
            ``load_pretrained(gmf, mlp, alpha)`` from (NeuMF).
        alpha: the paper's trade-off between the pretrained GMF and MLP output layers.
        k: cutoff for HR@k and NDCG@k.
        fast_path: score training and evaluation batches through :class:`ncf.fused.FoldedScorer` (the same
            function as the network's ``forward``, faster for MLP and NeuMF); False: the plain ``forward``.
        objective: the training objective (:mod:`ncf.objectives`), named in a config by ``class_path``;
            default (``None``) the paper's pointwise log loss. Its layout picks the training batches.

    Example:
        >>> module = NCFModule({"class_path": "ncf.models.GMF", "init_args": {"factor": 4}}, n_users=10, n_items=20)
        >>> module(torch.tensor([0]), torch.tensor([1])).shape
        torch.Size([1])
    """

    def __init__(self, network: Optional[Callable[[int, int], Recommender]] = None, n_users: int = 0, n_items: int = 0,
                 optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0, lr_decay: float = 1.0,
                 pretrained_gmf: Optional[str] = None, pretrained_mlp: Optional[str] = None, alpha: float = 0.5,
                 k: int = 10, fast_path: bool = True, objective: Optional[Objective] = None):
        super().__init__()
        if network is None:
            raise ConfigError("no network given: name one, e.g. --model.network ncf.models.NeuMF (configs/*.yaml "
                              "set model.network).")
        if n_users <= 0 or n_items <= 0:
            raise ConfigError("n_users and n_items must be positive (the CLI links them from the data module).")
        if optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer must be 'adam' or 'sgd', not {optimizer!r} (--model.optimizer).")
        if k < 1:
            raise ConfigError(f"k must be at least 1, not {k} (--model.k).")
        if lr <= 0 or weight_decay < 0 or lr_decay <= 0 or not 0.0 <= alpha <= 1.0:
            bad = [f"{name} {value}" for name, value, ok in (("lr", lr, lr > 0), ("weight_decay", weight_decay, weight_decay >= 0),
                                                             ("lr_decay", lr_decay, lr_decay > 0),
                                                             ("alpha", alpha, 0.0 <= alpha <= 1.0)) if not ok]
            raise ConfigError(f"Out of range: {', '.join(bad)}; need lr > 0, weight_decay >= 0, lr_decay > 0, "
                              f"0 <= alpha <= 1 (--model.<name>).")
        if (pretrained_gmf is None) != (pretrained_mlp is None):
            raise ConfigError("Pretraining needs both --model.pretrained_gmf and --model.pretrained_mlp.")
        network = network_spec(network)  # saved as plain values: class path and constructor arguments
        self.save_hyperparameters()
        self.hparams["network"] = network
        self.objective = self._keep_objective(objective)
        self._rows_broadcast: Optional[bool] = None  # grouped layout: see _scores_rows_by_broadcast
        self.net = build_network(network, n_users, n_items)
        if pretrained_gmf is not None and not hasattr(self.net, "load_pretrained"):
            raise ConfigError(f"--model.pretrained_gmf/--model.pretrained_mlp initialise a NeuMF; a "
                              f"{type(self.net).__name__} cannot start from a GMF and an MLP.")
        # The fast path, chosen here: scores as net.forward does (tested to the bit), faster for MLP and NeuMF.
        self.scorer = FoldedScorer(self.net) if fast_path else None
        self.run_id: Optional[str] = None  # drawn when a fit starts fresh, restored by a resume (ncf.run)
        self.resuming = False  # set by the CLI when fit resumes a checkpoint (pretrained files are then not read)
        self.pretrained_record: Optional[dict] = None  # the GMF and MLP checkpoints NeuMF started from (saved)
        self._loss_sum = torch.zeros(())
        self._steps = 0
        self._dense_grads: dict[str, torch.Tensor] = {}  # DDP with Adam: each table's reused dense gradient
        self.val_metric = HitRateNDCG(k)
        self.test_metric = HitRateNDCG(k)
        # Full ranking (against every item the user has not interacted with), when the data asks for it.
        self.val_full_metric = HitRateNDCG(k)
        self.test_full_metric = HitRateNDCG(k)

    def _keep_objective(self, objective) -> Objective:
        """The objective to train with; the hyperparameters keep it as plain values (its class path and
        arguments, :meth:`Objective.spec`), and not at all when it is the default, so a run of the paper's
        objective has the hyperparameters and run identity it always had."""
        found = as_objective(objective)
        if found == PointwiseLogLoss():
            self.hparams.pop("objective", None)
        else:
            self.hparams["objective"] = found.spec()
        return found

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.net(users, items)

    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits of (user, item) pairs ``[B]`` by the chosen path (``fast_path``): what training and evaluation use."""
        return self.net(users, items) if self.scorer is None else self.scorer(users, items)

    def setup(self, stage: str) -> None:
        self.run_id = setup_run(self, stage)  # run keeping (ncf.run): identity, atomic checkpoint writes
        # Pretrained weights for a fit; a resumed run then restores its own weights over them.
        if stage == "fit" and self.hparams.pretrained_gmf and not self.resuming:
            self.load_pretrained(self.hparams.pretrained_gmf, self.hparams.pretrained_mlp)
        if stage == "fit":
            dm = getattr(trainer_of(self), "datamodule", None)
            if getattr(dm, "split", None) is not None:
                self.net.observe(dm.split)  # what the network reads of the training data (a resume restores its own)
            check_network(self.net, getattr(dm, "num_users", None), getattr(dm, "num_items", None))  # refused before it trains
            self._choose_sparse_embeddings()

    def _choose_sparse_embeddings(self) -> None:
        """Sparse embedding gradients where the tables dwarf a batch (e.g. 165k users and items against a
        batch of 8192): a dense gradient fills and updates every row each step, which then costs more than
        the step itself. In one process only with plain SGD (it updates only the rows a batch touches, the
        same update as with a dense gradient) and without gradient clipping; Adam's moments need every row.
        Under DDP over gloo (CPU processes) with any optimiser, so that each step sends the rows the
        ranks' batches touched instead of whole tables, in one all-gather (:meth:`on_train_start`);
        Adam's gradients become dense again after it (:meth:`on_before_optimizer_step`): the same update
        as a dense all-reduce. Small catalogues (ML-100k, ML-1M) keep dense gradients."""
        trainer = trainer_of(self)
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        batch = getattr(getattr(dm, "hparams", None), "batch_size", None)
        if self.objective.layout == "grouped" and isinstance(batch, int):  # rows of 1 + k pairs each
            batch *= 1 + int(getattr(dm.hparams, "num_negatives", 0))
        world = getattr(trainer, "world_size", 1) if trainer is not None else 1
        rows = self.hparams.n_users + self.hparams.n_items
        clipping = getattr(trainer, "gradient_clip_val", None) if trainer is not None else None
        sparse = sparse_embeddings(self.hparams.optimizer, rows, batch, world, clipping, _gloo())
        for mod in self.net.modules():
            if isinstance(mod, nn.Embedding):
                mod.sparse = sparse
        if sparse and rank_zero_only.rank == 0:
            what = ("SGD updates only the rows each batch touches" if world == 1 else
                    f"the {world} processes exchange only the rows their batches touch")
            log.info(f"{rows} embedding rows against batches of {batch}: sparse embedding gradients ({what}).")

    def on_train_start(self) -> None:
        resumed = getattr(self, "_resumed_loss", None)
        if resumed is not None:  # resumed within an epoch: its loss so far, on the training device
            self._loss_sum, self._steps = torch.tensor(resumed[0], device=self.device), resumed[1]
            self._resumed_loss = None
        # Under DDP, a sparse gradient is all-reduced per table (three round trips each with gloo); one
        # all-gather carries all of a step's gradients instead (ncf.distributed). Dense gradients alone keep
        # DDP's own all-reduce, which costs less CPU than packing them (benchmarks/ddp_speed.py).
        from torch.nn.parallel import DistributedDataParallel

        ddp = self.trainer.strategy.model
        sparse = any(m.sparse for m in self.net.modules() if isinstance(m, nn.Embedding))
        if sparse and isinstance(ddp, DistributedDataParallel) and not getattr(ddp, "_comm_hooks", None):
            ddp.register_comm_hook(SparseExchange(self.trainer.datamodule.hparams.batch_size), exchange_gradients)

    def on_before_optimizer_step(self, optimizer) -> None:
        # Sparse embedding gradients under DDP arrive here exchanged; Adam's moments need every row, so its
        # gradients become dense (SGD takes them as they are). Each table keeps one dense buffer, zeroed and
        # filled each step: a fresh table-sized tensor each step costs more (its memory is new every time).
        if self.hparams.optimizer == "sgd":
            return
        for name, p in self.net.named_parameters():
            g = p.grad
            if g is None or not g.is_sparse:
                continue
            if g.sparse_dim() != 1:
                p.grad = g.to_dense()
                continue
            dense = self._dense_grads.get(name)
            if dense is None or dense.shape != p.shape or dense.device != p.device:
                dense = self._dense_grads[name] = torch.empty_like(p)
            p.grad = dense.zero_().index_add_(0, g._indices()[0], g._values())

    def on_fit_start(self) -> None:
        self.run_id = start_run(self)  # a new run moves other runs' checkpoints aside (ncf.run)

    def load_pretrained(self, gmf_path: str, mlp_path: str) -> None:
        """Initialise the network from trained GMF and MLP checkpoints (:func:`ncf.pretraining.load_pretrained`)."""
        self.pretrained_record = load_pretrained(self, gmf_path, mlp_path)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.pretrained_record is not None:
            checkpoint[PRETRAINED_KEY] = self.pretrained_record
        source = network_source(type(self.net))
        if source is not None:  # the network's file as it trained: loading it under other code is said
            checkpoint[SOURCE_KEY] = source
        # the epoch's loss so far: a run resumed within the epoch logs the whole epoch's mean
        checkpoint["ncf_epoch_loss"] = [float(self._loss_sum), int(self._steps)]
        save_run(self, checkpoint)  # last: checksums, run identity, RNG state (ncf.run)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.run_id = restore_run(self, checkpoint)  # checks it, and restores the RNG when a fit resumes (ncf.run)
        self._checkpoint_epoch = checkpoint.get("epoch")  # test logs it: the trainer's own epoch starts at 0
        loss = checkpoint.get("ncf_epoch_loss")
        if _within_epoch(checkpoint) and isinstance(loss, list) and len(loss) == 2:
            self._resumed_loss = (float(loss[0]), int(loss[1]))  # set on the training device in on_train_start
        trainer = self._trainer  # None when loaded outside a trainer
        # a resume of --ckpt_path last included: said where the network's file changed since it was written
        warn_if_source_changed(getattr(trainer, "ckpt_path", None) or "the checkpoint", checkpoint, type(self.net))
        if isinstance(checkpoint.get(PRETRAINED_KEY), dict):  # a resumed run did not read the pretrained files
            self.pretrained_record = checkpoint[PRETRAINED_KEY]

    # -- steps --------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        loss = self._grouped_loss(*batch) if self.objective.layout == "grouped" else self._pointwise_loss(*batch)
        self._loss_sum += loss.detach()
        self._steps += 1
        return loss

    def _pointwise_loss(self, users: torch.Tensor, items: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The objective over shuffled (user, item, label) pairs, plus the L2 penalty on their embedding rows."""
        wd = self.hparams.weight_decay
        l2 = self.scorer.l2(users, items) if wd > 0 and self.scorer is not None else None  # per table row
        if wd > 0 and l2 is None:  # L2 on the embedding rows of the batch, per sample
            embs = self.net.embed(users, items)  # gathered once, for the logit and the penalty
            loss = self.objective.loss(self.net.score(*embs), labels)
            loss = loss + wd * sum(e.pow(2).sum() for e in embs) / len(users)
        else:
            loss = self.objective.loss(self.score_pairs(users, items), labels)
            if l2 is not None:
                loss = loss + wd * l2 / len(users)
        return loss

    def _grouped_loss(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The objective over rows of a positive (column 0 of ``items [B, W]``) and its own negatives, plus
        the L2 penalty on the embedding rows of the row's ``W`` (user, item) pairs, per pair as above."""
        b, w = items.shape
        wd = self.hparams.weight_decay
        if self._rows_broadcast is None:
            self._rows_broadcast = self._scores_rows_by_broadcast(users, items)
        if self._rows_broadcast:  # each row's user embeddings gathered once, for its W pairs
            embs = self.net.embed(users.unsqueeze(1), items)  # [B, 1, d] user side, [B, W, d] item side
            logits = self.net.score(*embs)
            tables = self.net.embedding_tables() if wd > 0 else None
            if tables is not None:  # once per table row: each user row counts W pairs, each item one
                l2 = l2_per_row(tables, [self.net.side_of(k) for k in range(len(tables))], users, items, user_weight=w)
            elif wd > 0:
                l2 = sum(e.pow(2).sum() * (w if e.shape[1] == 1 else 1) for e in embs)
            else:
                l2 = None
        else:  # every pair on its own, by the pointwise step's path (MLP and NeuMF: the folded fast path)
            pair_users, pair_items = users.repeat_interleave(w), items.reshape(-1)
            l2 = self.scorer.l2(pair_users, pair_items) if wd > 0 and self.scorer is not None else None
            if wd > 0 and l2 is None:
                embs = self.net.embed(pair_users, pair_items)
                logits = self.net.score(*embs).view(b, w)
                l2 = sum(e.pow(2).sum() for e in embs)
            else:
                logits = self.score_pairs(pair_users, pair_items).view(b, w)
        loss = self.objective.loss(logits[:, 0], logits[:, 1:])
        return loss if l2 is None else loss + wd * l2 / (b * w)

    @torch.no_grad()
    def _scores_rows_by_broadcast(self, users: torch.Tensor, items: torch.Tensor) -> bool:
        """Whether the network scores a row's pairs from its user's embeddings broadcast over the row's items
        (``score`` of ``[B, 1, d]`` and ``[B, W, d]`` embeddings gives the ``[B, W]`` logits the pairs give):
        GMF and MF do, which saves gathering and scattering each user row ``W`` times; a network that
        concatenates its embeddings (MLP, NeuMF) does not and scores pairs. Checked once, on a few rows, in
        eval mode (dropout draws nothing, so the random stream is the same with or without the check)."""
        users, items = users[:4], items[:4]
        was_training = self.net.training
        self.net.eval()
        try:
            rows = self.net.score(*self.net.embed(users.unsqueeze(1), items))
            pairs = self.net(users.repeat_interleave(items.shape[1]), items.reshape(-1)).view(items.shape)
            return rows.shape == items.shape and torch.allclose(rows, pairs, rtol=1e-5, atol=1e-6)
        except (RuntimeError, ValueError, IndexError):  # e.g. a concatenation of embeddings of other shapes
            return False
        finally:
            self.net.train(was_training)

    def on_train_epoch_start(self) -> None:
        self._end_scoring()  # none is open unless an evaluation ended in an exception: training moves the weights
        self._checkpoint_epoch = None  # the weights are no longer a checkpoint's
        self._loss_sum = torch.zeros((), device=self.device)
        self._steps = 0

    def on_train_epoch_end(self) -> None:
        # Logged once per epoch: per-step logging costs more than a tiny model's step.
        if self._steps == 0:  # resumed at the very end of an epoch
            return
        if not bool(torch.isfinite(self._loss_sum)):  # one check per epoch: no host sync in the steps
            raise DivergedError(
                f"The training loss became NaN or infinite in epoch {self.current_epoch} (by step {self.global_step}); "
                f"the checkpoints of earlier epochs are kept. Lower --model.lr or raise --model.weight_decay.")
        self.log("train_loss", self._loss_sum / max(self._steps, 1), sync_dist=True)

    def _scores(self, batch) -> torch.Tensor:
        users, cands = batch[0], batch[1]  # [B], [B, C]
        b, c = cands.shape
        return self.score_pairs(users.repeat_interleave(c), cands.reshape(-1)).view(b, c)

    def all_scores(self, users: torch.Tensor) -> torch.Tensor:
        """Logits of every item for each user: ``[B, n_items]`` (:func:`ncf.candidates.score_items`)."""
        return score_items(self.net, users, self.score_pairs)

    def _evaluate(self, batch, metric: HitRateNDCG, full_metric: HitRateNDCG) -> None:
        metric.update(self._scores(batch))
        if len(batch) > 2 and batch[2] is not None:  # full ranking: every item not excluded is a candidate
            full_metric.update(rank=rank_among(self.all_scores(batch[0]), batch[1][:, 0], batch[2]))

    # An evaluation or prediction epoch does not change the weights: a scoring pass folds the MLP's first
    # layer into the tables once for all its batches (ncf.fused.FoldedScorer.scoring_pass).
    def _begin_scoring(self) -> None:
        if self.scorer is not None:
            self.scorer.begin()

    def _end_scoring(self) -> None:
        if self.scorer is not None:
            self.scorer.end()

    def on_validation_epoch_start(self) -> None:
        self._begin_scoring()

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_metric, self.val_full_metric)

    def on_validation_epoch_end(self) -> None:
        self._end_scoring()
        self._log_metric(self.val_metric, "val", prog_bar=True)
        self._log_metric(self.val_full_metric, "val_full")

    def on_test_epoch_start(self) -> None:
        self._begin_scoring()

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_metric, self.test_full_metric)

    def on_test_epoch_end(self) -> None:
        self._end_scoring()
        self._log_metric(self.test_metric, "test")
        self._log_metric(self.test_full_metric, "test_full")
        epoch = getattr(self, "_checkpoint_epoch", None)
        if isinstance(epoch, int):  # the epoch of the tested weights (metrics.csv's `epoch` is the trainer's)
            self.log("checkpoint_epoch", float(epoch))

    def on_predict_epoch_start(self) -> None:
        self._begin_scoring()

    def on_predict_epoch_end(self) -> None:
        self._end_scoring()

    def predict_step(self, batch, batch_idx):
        """Logits of every item for the batch's users; the writer ranks their candidates
        (:func:`ncf.candidates.top_candidates` with the batch's ``exclude``)."""
        return self.all_scores(batch[0])

    def _log_metric(self, metric: HitRateNDCG, prefix: str, prog_bar: bool = False) -> None:
        if not metric.update_called:  # e.g. full ranking not asked for
            return
        res = metric.compute()  # summed states: every rank calls this, then all hold the global means
        metric.reset()
        k = self.hparams.k
        out = {f"{prefix}_hr{k}": res["hr"], f"{prefix}_ndcg{k}": res["ndcg"]}
        if prefix.endswith("_full"):
            out[f"{prefix}_recall{k}"] = res["hr"]  # one held-out item per user: recall@k is HR@k
        self.log_dict(out, prog_bar=prog_bar)

    def configure_optimizers(self):
        h = self.hparams
        if h.optimizer == "sgd":
            opt = torch.optim.SGD(self.parameters(), lr=h.lr, foreach=True)
        else:
            # Fused Adam (CPU and CUDA): one kernel for all parameters instead of one per tensor.
            opt = torch.optim.Adam(self.parameters(), lr=h.lr, fused=True)
        if h.lr_decay == 1.0:
            return opt
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=h.lr_decay)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def _within_epoch(checkpoint: dict) -> bool:
    """A checkpoint written where max_steps or max_time stopped a run within an epoch counts that epoch as
    processed, and a run resumed from it would count it again when it finishes it: one epoch short of
    ``max_epochs``, and the next epoch numbered one ahead. The epoch is marked as still in progress, as a
    checkpoint written mid-epoch has it, so the run trains its remaining batches (:class:`ncf.loaders.TrainLoader`
    starts there) and goes on with the next one. Returns whether the checkpoint is within an epoch."""
    loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    epochs, batches = loop.get("epoch_progress") or {}, loop.get("epoch_loop.batch_progress") or {}
    done = (batches.get("current") or {}).get("completed")
    if not isinstance(done, int) or done <= 0 or batches.get("is_last_batch", True):
        return False
    for part in ("current", "total"):
        tracker = epochs.get(part)
        if isinstance(tracker, dict) and tracker.get("processed", 0) > tracker.get("completed", 0):
            tracker["processed"] = tracker["completed"]
    return True
