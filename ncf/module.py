"""The LightningModule: one network from :mod:`ncf.models`, BCE-with-logits, HR@10 / NDCG@10."""
from __future__ import annotations

import logging
import os
from typing import Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch import nn

from .candidates import score_items
from .checkpoint import (DIGEST_KEY, PRETRAINED_KEY, STATE_KEY, check_digest, check_state_digest, load_network,
                         state_digest, weights_digest)
from .distributed import SparseExchange, exchange_gradients
from .errors import ConfigError, UserError
from .fused import batch_l2, begin_scoring, end_scoring
from .metrics import HitRateNDCG, rank_among
from .models import GMF, MLP, NeuMF, build_model
from .run import (RUN_KEY, check_identity, check_resume, defining, fingerprint, interrupted_start, move_aside,
                  new_run_id, remove_partial, trainer_settings, use_atomic_checkpoints)

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


def _checkpoint_record(path: str, ckpt: dict) -> dict:
    """Plain values naming a checkpoint: its path, run id, epoch and weights digest."""
    run = ckpt.get(RUN_KEY) if isinstance(ckpt.get(RUN_KEY), dict) else {}
    epoch = ckpt.get("epoch")
    return {"path": str(path), "run_id": run.get("id") if isinstance(run.get("id"), str) else None,
            "epoch": epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
            "weights_sha256": ckpt.get(DIGEST_KEY) if isinstance(ckpt.get(DIGEST_KEY), str) else None}


def _gloo() -> bool:
    """Whether this run's processes talk through gloo (CPU processes), where the sparse exchange is tested;
    elsewhere (NCCL) DDP keeps dense gradients, which NCCL all-reduces natively."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo"


class DivergedError(UserError):
    """Training produced a non-finite loss; the message names the epoch and step."""


class NCFModule(pl.LightningModule):
    """Train GMF, MLP or NeuMF on implicit feedback.

    Args:
        model: ``gmf``, ``mlp`` or ``neumf``.
        n_users, n_items: catalogue sizes (linked from the data module by the CLI).
        factor: predictive factors (GMF embedding size, last MLP layer).
        num_layers: MLP layers, halving down to ``factor``.
        dropout: dropout after each MLP layer.
        optimizer: ``adam`` (the paper's default) or ``sgd`` (the paper's choice after pretraining).
        lr: learning rate.
        weight_decay: L2 penalty on the embedding rows used in each batch (per sample).
        lr_decay: multiply the learning rate by this after every epoch (1.0: constant).
        pretrained_gmf, pretrained_mlp: checkpoints of a trained GMF and MLP to initialise NeuMF from.
        alpha: the paper's trade-off between the pretrained GMF and MLP output layers.
        k: cutoff for HR@k and NDCG@k.
        mlp_embedding: width of each MLP embedding (MLP, NeuMF); default the first layer's width, as in the
            paper (factor 64, 2 layers: 128 per side into 256 -> 128 -> 64); 64 gives 128 -> 128 -> 64.

    Example:
        >>> module = NCFModule("gmf", n_users=10, n_items=20, factor=4)
        >>> module(torch.tensor([0]), torch.tensor([1])).shape
        torch.Size([1])
    """

    def __init__(self, model: str = "neumf", n_users: int = 0, n_items: int = 0, factor: int = 8, num_layers: int = 3,
                 dropout: float = 0.0, optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0,
                 lr_decay: float = 1.0, pretrained_gmf: Optional[str] = None, pretrained_mlp: Optional[str] = None,
                 alpha: float = 0.5, k: int = 10, mlp_embedding: Optional[int] = None):
        super().__init__()
        if n_users <= 0 or n_items <= 0:
            raise ConfigError("n_users and n_items must be positive (the CLI links them from the data module).")
        if model not in ("gmf", "mlp", "neumf"):
            raise ConfigError(f"Unknown model {model!r}; use --model.model gmf, mlp or neumf.")
        if optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer must be 'adam' or 'sgd', not {optimizer!r} (--model.optimizer).")
        for name, value in (("factor", factor), ("num_layers", num_layers), ("k", k),
                            ("mlp_embedding", 1 if mlp_embedding is None else mlp_embedding)):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, not {value} (--model.{name}).")
        if not 0.0 <= dropout < 1.0 or lr <= 0 or weight_decay < 0 or lr_decay <= 0 or not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"Out of range: need 0 <= dropout < 1 ({dropout}), lr > 0 ({lr}), weight_decay >= 0 "
                              f"({weight_decay}), lr_decay > 0 ({lr_decay}), 0 <= alpha <= 1 ({alpha}).")
        if (pretrained_gmf is None) != (pretrained_mlp is None):
            raise ConfigError("Pretraining needs both --model.pretrained_gmf and --model.pretrained_mlp.")
        if pretrained_gmf is not None and model != "neumf":
            raise ConfigError("--model.pretrained_gmf/--model.pretrained_mlp only apply to --model.model neumf.")
        self.save_hyperparameters()
        self.run_id: Optional[str] = None  # drawn when a fit starts fresh, restored by a resume (ncf.run)
        self._resumed = False
        self.resuming = False  # set by the CLI when fit resumes a checkpoint (pretrained files are then not read)
        self.pretrained_record: Optional[dict] = None  # the GMF and MLP checkpoints NeuMF started from (saved)
        self.net = build_model(model, n_users, n_items, factor, num_layers, dropout, mlp_embedding)
        self._loss_sum = torch.zeros(())
        self._steps = 0
        self.val_metric = HitRateNDCG(k)
        self.test_metric = HitRateNDCG(k)
        # Full ranking (against every item the user has not interacted with), when the data asks for it.
        self.val_full_metric = HitRateNDCG(k)
        self.test_full_metric = HitRateNDCG(k)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.net(users, items)

    def setup(self, stage: str) -> None:
        trainer = self._trainer
        if trainer is not None:
            use_atomic_checkpoints(trainer)
        self._resumed = False
        if stage == "fit":
            self.run_id = new_run_id()  # a resumed run takes its own back from the checkpoint
        # Pretrained weights for a fit; a resumed run then restores its own weights over them.
        if stage == "fit" and self.hparams.pretrained_gmf and not self.resuming:
            self.load_pretrained(self.hparams.pretrained_gmf, self.hparams.pretrained_mlp)
        if stage == "fit":
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
        trainer = self._trainer
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        batch = getattr(getattr(dm, "hparams", None), "batch_size", None)
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
        # Under DDP, a sparse gradient is all-reduced per table (three round trips each with gloo); one
        # all-gather carries all of a step's gradients instead (ncf.distributed).
        from torch.nn.parallel import DistributedDataParallel

        ddp = self.trainer.strategy.model
        sparse = any(m.sparse for m in self.net.modules() if isinstance(m, nn.Embedding))
        if sparse and isinstance(ddp, DistributedDataParallel) and not getattr(ddp, "_comm_hooks", None):
            ddp.register_comm_hook(SparseExchange(self.trainer.datamodule.hparams.batch_size), exchange_gradients)

    def on_before_optimizer_step(self, optimizer) -> None:
        # Sparse embedding gradients under DDP arrive here all-reduced; Adam's moments need every row, so
        # its gradients become dense (SGD takes them as they are).
        if self.hparams.optimizer != "sgd":
            for p in self.net.parameters():
                if p.grad is not None and p.grad.is_sparse:
                    p.grad = p.grad.to_dense()

    def on_fit_start(self) -> None:
        # After any restore: a run that did not resume a checkpoint is a new run, with a new identity, and
        # it never mixes with another run's checkpoints in its fixed folders: those are moved aside.
        trainer = self.trainer
        folders = list(dict.fromkeys(cb.dirpath for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)))
        if self._resumed:
            if trainer.is_global_zero:
                remove_partial(folders)  # writes a kill interrupted
            return
        self.run_id = trainer.strategy.broadcast(self.run_id, src=0)  # one id for every process of the run
        if trainer.is_global_zero and folders:
            partial = interrupted_start(folders, fingerprint(self.run_defines()))
            for f in partial:  # this same run, killed in its first epoch: its files are written again
                f.unlink()
            if partial:
                log.info("Removed %d checkpoint(s) of an interrupted start of this same run (no last.ckpt to "
                         "resume from).", len(partial))
            moved = move_aside(folders)
            if moved is not None:
                log.warning("%s held checkpoints of an earlier run; moved them to %s so that this run (%s) starts "
                            "clean.", ", ".join(map(str, folders)), moved, self.run_id)
        trainer.strategy.barrier("ncf_run_start")

    def run_defines(self) -> dict:
        """What defines this run's result (see :mod:`ncf.run`)."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        data_hp = dict(dm.hparams) if dm is not None and hasattr(dm, "hparams") else None
        digest = dm.data_fingerprint() if dm is not None and hasattr(dm, "data_fingerprint") else None
        return defining(dict(self.hparams), data_hp, digest, os.environ.get("PL_GLOBAL_SEED"),
                        trainer_settings(self._trainer))

    def load_pretrained(self, gmf_path: str, mlp_path: str) -> None:
        for key, path, config in (("pretrained_gmf", gmf_path, "gmf"), ("pretrained_mlp", mlp_path, "mlp")):
            if not os.path.isfile(str(path)):
                raise ConfigError(f"model.{key}: {path} not found. Train it first on the same data (python train.py "
                                  f"fit --config configs/{config}.yaml with the same --data.dataset; runs are kept "
                                  f"per dataset under runs/<dataset>/), or pass --model.{key} PATH.")
        gmf, gmf_ckpt = load_network(gmf_path, expect=GMF)
        mlp, mlp_ckpt = load_network(mlp_path, expect=MLP)
        for option, path, ckpt in (("pretrained_gmf", gmf_path, gmf_ckpt), ("pretrained_mlp", mlp_path, mlp_ckpt)):
            self._check_pretrained_data(f"{path} (--model.{option})", ckpt)
        net: NeuMF = self.net
        for name, got, want in (("GMF", gmf.factor, net.factor), ("MLP", mlp.factor, net.factor),
                                ("MLP", mlp.num_layers, net.num_layers), ("GMF", gmf.n_users, net.n_users),
                                ("MLP", mlp.embedding, net.mlp.embedding),
                                ("GMF", gmf.n_items, net.n_items)):
            if got != want:
                raise ConfigError(f"The pretrained {name} checkpoint does not match this NeuMF ({got} vs {want}); "
                                 f"train it with the same data, factor, num_layers and mlp_embedding.")
        net.load_pretrained(gmf, mlp, self.hparams.alpha)
        # Which runs, at which epoch, with which weights: history influence follows the embeddings back into
        # those runs' epoch checkpoints and checks they are the ones (explain.history.load_pretraining).
        self.pretrained_record = {stage: _checkpoint_record(path, ckpt) for stage, path, ckpt in
                                  (("gmf", gmf_path, gmf_ckpt), ("mlp", mlp_path, mlp_ckpt))}

    def _check_pretrained_data(self, label: str, ckpt: dict) -> None:
        """Raise unless a pretrained checkpoint was trained on the data this run trains on: the same id
        mapping (index k is the same user or item) and the same split (its content hash)."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "data_fingerprint"):
            return  # no data module: no id mapping or split to compare with
        fix = "pretrain it on this run's data with the same data settings."
        ids, run = ckpt.get("NCFDataModule"), ckpt.get(RUN_KEY)
        if not isinstance(ids, dict) or not isinstance(run, dict) or not isinstance(run.get("defines"), dict):
            raise ConfigError(f"{label} carries no id mapping or run identity, so nothing shows it was trained on this "
                              f"run's data; {fix}")
        inter = dm.interactions
        for side, there, now in (("user", ids.get("user_ids"), inter.user_ids), ("item", ids.get("item_ids"), inter.item_ids)):
            there, now = list(there or []), list(now)
            if there != now:
                if len(there) != len(now):
                    what = f"{len(there)} {side}s there, {len(now)} now"
                else:
                    k = next(k for k, (a, b) in enumerate(zip(there, now)) if a != b)
                    what = f"{side} index {k} is id {there[k]!r} there, {now[k]!r} now"
                raise ConfigError(f"{label} was trained with another id mapping than this run's data ({what}); {fix}")
        saved = run["defines"]
        if saved.get("data_sha256") != dm.data_fingerprint():
            data_now = self.run_defines()["data"]
            sampling = ("batch_size", "num_negatives", "negatives_seed")  # training draws, not the split
            diff = [f"data.{k} {saved.get('data', {}).get(k)!r} there, {data_now.get(k)!r} now"
                    for k in sorted(set(saved.get("data") or {}) | set(data_now))
                    if k not in sampling and (saved.get("data") or {}).get(k) != data_now.get(k)]
            raise ConfigError(f"{label} was trained on another split than this run's "
                              f"({'; '.join(diff[:3]) if diff else 'other training rows or candidate lists'}); {fix}")

    # -- resume: the global RNG (dropout) continues where it was, so a resumed run equals an uninterrupted one
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[DIGEST_KEY] = weights_digest(checkpoint["state_dict"])  # checked whenever it is loaded
        defines = self.run_defines()
        checkpoint[RUN_KEY] = {"id": self.run_id, "fingerprint": fingerprint(defines), "defines": defines}
        checkpoint["ncf_rng"] = {"torch": torch.get_rng_state()}
        if self.pretrained_record is not None:
            checkpoint[PRETRAINED_KEY] = self.pretrained_record
        if torch.cuda.is_available():
            checkpoint["ncf_rng"]["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint[STATE_KEY] = state_digest(checkpoint)  # last: over everything above; checked on resume

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_digest(checkpoint, "the checkpoint")
        run = checkpoint.get(RUN_KEY)
        if isinstance(run, dict) and isinstance(run.get("id"), str):
            self.run_id = run["id"]
        self._resumed = True
        if isinstance(checkpoint.get(PRETRAINED_KEY), dict):  # a resumed run did not read the pretrained files
            self.pretrained_record = checkpoint[PRETRAINED_KEY]
        rng = checkpoint.get("ncf_rng")
        fitting = self._trainer is not None and getattr(self._trainer, "state", None) is not None \
            and self._trainer.state.fn == "fit"
        if fitting:
            path = str(getattr(self._trainer, "ckpt_path", None) or "the checkpoint")
            check_identity(run, path)  # first: a checkpoint from before identities has no state checksum either
            check_state_digest(checkpoint, path)
            check_resume(run, self.run_defines(), path)
        if rng and fitting:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(rng["cuda"])

    # -- steps --------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        users, items, labels = batch
        wd = self.hparams.weight_decay
        l2 = batch_l2(self.net, users, items) if wd > 0 else None  # per table row, for the folded path
        if wd > 0 and l2 is None:  # L2 on the embedding rows of the batch, per sample
            embs = self.net.embed(users, items)  # gathered once, for the logit and the penalty
            loss = F.binary_cross_entropy_with_logits(self.net.score(*embs), labels)
            loss = loss + wd * sum(e.pow(2).sum() for e in embs) / len(users)
        else:
            loss = F.binary_cross_entropy_with_logits(self.net(users, items), labels)
            if l2 is not None:
                loss = loss + wd * l2 / len(users)
        self._loss_sum += loss.detach()
        self._steps += 1
        return loss

    def on_train_epoch_start(self) -> None:
        end_scoring(self.net)  # none is open unless an evaluation ended in an exception: training moves the weights
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
        return self.net(users.repeat_interleave(c), cands.reshape(-1)).view(b, c)

    def all_scores(self, users: torch.Tensor) -> torch.Tensor:
        """Logits of every item for each user: ``[B, n_items]`` (:func:`ncf.candidates.score_items`)."""
        return score_items(self.net, users)

    def _evaluate(self, batch, metric: HitRateNDCG, full_metric: HitRateNDCG) -> None:
        metric.update(self._scores(batch))
        if len(batch) > 2 and batch[2] is not None:  # full ranking: every item not excluded is a candidate
            full_metric.update(rank=rank_among(self.all_scores(batch[0]), batch[1][:, 0], batch[2]))

    # An evaluation or prediction epoch does not change the weights: a scoring pass folds the MLP's first
    # layer into the tables once for all its batches (ncf.fused.scoring_pass).
    def on_validation_epoch_start(self) -> None:
        begin_scoring(self.net)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_metric, self.val_full_metric)

    def on_validation_epoch_end(self) -> None:
        end_scoring(self.net)
        self._log_metric(self.val_metric, "val", prog_bar=True)
        self._log_metric(self.val_full_metric, "val_full")

    def on_test_epoch_start(self) -> None:
        begin_scoring(self.net)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_metric, self.test_full_metric)

    def on_test_epoch_end(self) -> None:
        end_scoring(self.net)
        self._log_metric(self.test_metric, "test")
        self._log_metric(self.test_full_metric, "test_full")

    def on_predict_epoch_start(self) -> None:
        begin_scoring(self.net)

    def on_predict_epoch_end(self) -> None:
        end_scoring(self.net)

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
