"""What a training run reports as it goes, outside the metrics files.

* :class:`EpochLines`: one line per epoch instead of a progress bar, for output that is not a terminal
  (a redirected log gets a few lines, not a bar redrawn thousands of times).
* :class:`BestMetricToTensorBoard`: TensorBoard's ``hp_metric`` (the figure its HPARAMS tab shows per run)
  set to the best validation score so far instead of Lightning's placeholder -1.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks.progress.progress_bar import ProgressBar

__all__ = ["EpochLines", "BestMetricToTensorBoard", "epoch_line"]

log = logging.getLogger(__name__)


def _value(v) -> Optional[float]:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def epoch_line(epoch: int, max_epochs: Optional[int], metrics: dict, seconds: float) -> str:
    """``epoch 3/39  train_loss 0.3120  val_hr10 0.6543  val_ndcg10 0.3810  1.2 s``: epochs counted from 0
    as in checkpoint names and Lightning's bar; the training loss first, then the validation metrics."""
    head = f"epoch {epoch}" + (f"/{max_epochs - 1}" if max_epochs and max_epochs > 0 else "")
    names = (["train_loss"] if "train_loss" in metrics else []) + [k for k in metrics if k.startswith("val_")]
    parts = [head]
    for name in names:
        v = _value(metrics[name])
        if v is not None:
            parts.append(f"{name} {v:.4f}")
    parts.append(f"{seconds:.1f} s")
    return "  ".join(parts)


class EpochLines(ProgressBar):
    """A progress "bar" that writes one line per training epoch (training loss, validation metrics, the
    epoch's time with its validation) to the ``ncf`` logger, and nothing per batch.

    The module logs its training loss in its own ``on_train_epoch_end``, which Lightning calls after the
    callbacks' hook, so an epoch's line is written when the next epoch starts, or when training ends."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._start: Optional[float] = None
        self._pending: Optional[tuple[int, float]] = None  # (epoch, seconds) of an epoch not yet reported
        self._validated: Optional[int] = None  # the epoch of the latest validation (check_val_every_n_epoch > 1)

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _flush(self, trainer: "pl.Trainer") -> None:
        if self._pending is None:
            return
        epoch, seconds = self._pending
        self._pending = None
        if self._enabled:
            # Lightning keeps the latest validation's metrics: an epoch without its own validation shows none
            metrics = {k: v for k, v in trainer.callback_metrics.items()
                       if self._validated == epoch or not k.startswith("val_")}
            log.info(epoch_line(epoch, trainer.max_epochs, metrics, seconds))

    def on_validation_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not trainer.sanity_checking:
            self._validated = trainer.current_epoch

    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._flush(trainer)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._start is not None:
            self._pending = (trainer.current_epoch, time.perf_counter() - self._start)

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._flush(trainer)

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        self._flush(trainer)


class BestMetricToTensorBoard(pl.Callback):
    """After each validation, logs the best ``monitor`` value so far as ``hp_metric`` to every TensorBoard
    logger of the run (other loggers are left alone), so the HPARAMS tab compares runs by it. ``monitor``
    None: the module's validation NDCG at its cut-off (``val_ndcg{k}``)."""

    def __init__(self, monitor: Optional[str] = None) -> None:
        self.monitor = monitor
        self.best: Optional[float] = None

    # on_validation_end: the module logs its metrics in its own on_validation_epoch_end, after the callbacks'
    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        from pytorch_lightning.callbacks import ModelCheckpoint
        from pytorch_lightning.loggers import TensorBoardLogger

        if trainer.sanity_checking:
            return
        monitor = self.monitor or f"val_ndcg{getattr(pl_module.hparams, 'k', 10)}"
        seen = [_value(trainer.callback_metrics.get(monitor)), self.best]
        # a resumed run: the best so far is the one its checkpoint callback restored
        seen += [_value(cb.best_model_score) for cb in trainer.checkpoint_callbacks
                 if isinstance(cb, ModelCheckpoint) and cb.monitor == monitor and cb.mode == "max"]
        seen = [v for v in seen if v is not None and math.isfinite(v)]
        if not seen:
            return
        self.best = max(seen)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_metrics({"hp_metric": self.best}, step=trainer.global_step)
