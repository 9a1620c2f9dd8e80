"""``AttributionCallback``: watch attributions evolve while a model trains.

It only schedules, logs and records: the probe set is :mod:`explain.probe`, what an epoch records is
:mod:`explain.epoch_record` (pure functions over the model), the files are :mod:`explain.record`.

* Runs once before training (epoch ``-1``: the model as initialised or pretrained) and at the end of every
  ``every_n_epochs``-th epoch (and the last), on a probe set fixed for the whole run.
* Observes without perturbing: the network is put in ``eval()`` and restored, gradients are enabled
  even under inference mode, randomness comes from its own generators, parameters' ``.grad`` and the
  global RNG are untouched (tested: weights are bit-identical with and without the callback).
* Records to ``out_dir`` (see :mod:`explain.record`), with the epoch's validation metrics beside the
  attributions, logs scalars to every logger, histograms and a figure to TensorBoard, and at the end of fit
  writes the evolution tables (:mod:`explain.evolution`) and the run's HTML report (:mod:`explain.html_report`).
* Resume-safe: the probe set travels in the checkpoint; ``out_dir`` comes from the config only (default:
  ``attributions/`` beside the run's fixed checkpoint folder), and the record carries the run's id. A new
  run moves another run's record aside (``superseded/<run id>/``) instead of mixing. On resume, epochs recorded after
  the checkpoint's epoch are dropped (a kill between the record and the checkpoint) and recorded again
  by the resumed run; an epoch that Lightning closes again after a resume is re-recorded in place, with
  stability measured against the epoch before it. Every epoch appears exactly once (tested for each
  kill point).
* DDP-safe: the work runs on global rank 0 (weights are identical on every rank); all ranks meet at a
  barrier afterwards.

YAML::

    trainer:
      callbacks:
        - class_path: explain.AttributionCallback
          init_args: {methods: [deeplift, shapley, lime], num_probe_users: 64}
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from ncf.errors import ConfigError
from ncf.run import run_identity, unfinished

from . import record
from . import methods as registry
from .core import BACKENDS, Attribution, learned_nothing
from .epoch_record import (VAL_METRICS, attribute_probe, epoch_frames, history_frame, logged_metrics, probe_faithfulness,
                           val_metrics)
from .probe import make_probe, probe_frame

__all__ = ["AttributionCallback"]

log = logging.getLogger("ncf")


def _data_settings(dm) -> Optional[dict]:
    """The data module's plain settings and the fingerprint of its split (rows, held-out items, candidates):
    runs with other fingerprints were evaluated on other pairs."""
    if dm is None:
        return None
    out = {k: v for k, v in dict(getattr(dm, "hparams", {})).items()
           if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))}
    if hasattr(dm, "data_fingerprint"):
        out["split_fingerprint"] = dm.data_fingerprint()
    return out


def _training_seed() -> Optional[int]:
    """The run's ``seed_everything`` (Lightning keeps it in ``PL_GLOBAL_SEED``), None when it set none."""
    try:
        return int(os.environ["PL_GLOBAL_SEED"])
    except (KeyError, ValueError):
        return None


def _plain_record(rec) -> Optional[dict]:
    """``{stage: {key: str | int | None}}``, or None: what JSON keeps of a pretrained record."""
    if not isinstance(rec, dict):
        return None
    return {str(stage): {k: v for k, v in info.items() if isinstance(v, (str, int, type(None)))}
            for stage, info in rec.items() if isinstance(info, dict)}


class AttributionCallback(pl.Callback):
    """Attribute a fixed probe set of (user, item) pairs at the end of every epoch.

    Args:
        methods: attribution methods (:func:`explain.methods.names`). The defaults, DeepLift per dimension
            and exact Shapley per embedding group, are cheap and complete; add ``ig``, ``lime`` or
            ``kernel_shap`` when their time per epoch is worth it (BENCHMARKS.md has the cost per pair).
        every_n_epochs: record every n-th epoch (the last epoch is always recorded).
        before_training: also record epoch -1, the model before its first training step.
        num_probe_users: validation users in the probe set; each contributes its validation item and
            one of its sampled validation negatives.
        pairs: extra ``[user_id, item_id]`` pairs in the dataset's original ids.
        baseline: ``mean`` or ``zero`` (see :mod:`explain.core`).
        seed: seeds the probe selection and the methods' own generators.
        n_samples: a fixed sample count for LIME and KernelSHAP (default: each method's own).
        faithfulness: compute deletion/insertion and infidelity (at epoch -1, every
            ``faithfulness_every_n_epochs``-th epoch, and the last; they cost more than the default methods).
        faithfulness_every_n_epochs: how often the faithfulness figures are computed (1: every recorded epoch).
        out_dir: where the record goes; default ``attributions/`` beside the checkpoint folder (e.g.
            ``runs/ml-100k/neumf/attributions``), or ``<logger dir>/attributions`` without a fixed checkpoint folder.
        plots: also draw the evolution as PNG files at the end of fit (the HTML report holds every figure).
        report: at the end of fit, write the evolution tables (``evolution.csv``, ``evolution_pairs.parquet``:
            similarity to the final epoch, flips) and the run's HTML report (``report.html``).
        history: also record, for every probe pair, each training interaction of its user's TracIn term for
            the epoch and the running total (``history_epoch=E.parquet``): which of a user's interactions
            come to drive the prediction, in a form that does not depend on the moving embedding basis.
        backend: ``ours`` or ``captum`` (captum's own implementation of each method; slower).
    """

    def __init__(self, methods: Sequence[str] = ("deeplift", "shapley"), every_n_epochs: int = 1,
                 before_training: bool = True, num_probe_users: int = 64,
                 pairs: Optional[list[list[Union[str, int]]]] = None, baseline: str = "mean", seed: int = 0,
                 n_samples: Optional[int] = None, faithfulness: bool = True, out_dir: Optional[str] = None,
                 plots: bool = False, history: bool = False, backend: str = "ours", report: bool = True,
                 faithfulness_every_n_epochs: int = 5):
        super().__init__()
        unknown = [m for m in methods if m not in registry.names()]
        if not methods:
            raise ConfigError(f"methods is empty: name at least one attribution method, e.g. [deeplift, shapley] "
                              f"(choose from {list(registry.names())}).")
        if unknown:
            raise ConfigError(f"Unknown attribution methods {unknown}; choose from {list(registry.names())}.")
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, not {backend!r}.")
        if every_n_epochs < 1 or faithfulness_every_n_epochs < 1:
            raise ConfigError("every_n_epochs and faithfulness_every_n_epochs must be >= 1.")
        if baseline not in ("mean", "zero"):
            raise ConfigError(f"baseline must be 'mean' or 'zero', not {baseline!r}.")
        if n_samples is not None and not 1 <= n_samples <= registry.MAX_SAMPLES:
            raise ConfigError(f"n_samples must be between 1 and {registry.MAX_SAMPLES}, not {n_samples} (or leave it "
                              f"unset: each method's own count).")
        if num_probe_users < 0:
            raise ConfigError(f"num_probe_users must be 0 or more, not {num_probe_users} (0: only the listed pairs).")
        self.methods = list(methods)
        self.every_n_epochs = every_n_epochs
        self.before_training = before_training
        self.num_probe_users = num_probe_users
        self.extra_pairs = [list(p) for p in (pairs or [])]
        self.baseline = baseline
        self.seed = seed
        self.n_samples = n_samples
        self.faithfulness = faithfulness
        self.faithfulness_every_n_epochs = faithfulness_every_n_epochs
        self.out_dir = out_dir
        self.plots = plots
        self.report = report
        self.history = history
        self.backend = backend
        self.probe: Optional[dict[str, list]] = None
        self._resume_epoch: Optional[int] = None
        self._resume_batches: Optional[int] = None  # batches of that epoch the checkpoint had trained
        self._state_in_checkpoint = False  # whether the checkpoint resumed from was saved with this callback
        self._first_epoch: Optional[int] = None  # the first epoch a resumed run closes
        self._validated_epoch: Optional[int] = None  # the epoch whose validation the logged val_* metrics are
        self._validation: dict[str, dict[str, float]] = {}  # every validated epoch's metrics (checkpointed)
        self._cut_short: Optional[dict] = None  # the last epoch, when training stopped within it
        self._prev: dict[str, tuple] = {}  # method: (features, inactive) of the latest recorded epoch
        self._prev_epoch: Optional[int] = None
        self._held: dict[tuple, float] = {}  # history terms of epochs trained since the last record, by (pair, item)
        self._held_epochs: list[int] = []
        self.last_seconds: float = 0.0
        self.last_history_seconds: float = 0.0
        self.last_fit_end_seconds: float = 0.0
        self.total_seconds: float = 0.0  # all of this callback's work in this process (recording, tables, report)
        self._epoch_lr: float = 0.0
        self._warned_nothing_learned = False

    # ------------------------------------------------------------------------------------------------
    # setup
    # ------------------------------------------------------------------------------------------------
    def _settings(self) -> dict[str, dict]:
        return {m: registry.settings_for(m, self.n_samples) for m in self.methods}

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage != "fit":
            return
        if not all(hasattr(pl_module, "net") and hasattr(pl_module.net, n) for n in ("embed", "score")):
            raise TypeError("AttributionCallback needs a LightningModule whose `net` has embed() and score() (ncf models).")
        if self.history:
            from .history import refuse_mixed_rows

            refuse_mixed_rows(pl_module.net)  # before training, not at the end of its first epoch
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "split"):
            raise TypeError("AttributionCallback needs an NCFDataModule (it draws the probe set from validation users).")
        dm.setup("fit")
        if self.probe is None:
            self.probe = make_probe(dm.split, dm.interactions, self.num_probe_users, self.seed, self.extra_pairs)
        if self.out_dir is None:
            # Beside the run's fixed checkpoint folder (so a resumed run continues the same record), else in
            # the logger's folder. Never a path read from a checkpoint.
            ckpt_dir = getattr(trainer.checkpoint_callback, "dirpath", None)
            base = os.path.dirname(os.path.normpath(str(ckpt_dir))) if ckpt_dir else \
                (trainer.log_dir or trainer.default_root_dir)
            self.out_dir = os.path.join(str(base), "attributions")

    def _meta(self) -> pd.DataFrame:
        return probe_frame(self.probe)

    # ------------------------------------------------------------------------------------------------
    # scheduling
    # ------------------------------------------------------------------------------------------------
    def _recording(self) -> dict[str, Any]:
        """The settings that decide what a recorded epoch holds, as the manifest keeps them."""
        return {"methods": self.methods, "backend": self.backend, "settings": self._settings(),
                "baseline": self.baseline, "seed": self.seed, "every_n_epochs": self.every_n_epochs,
                "faithfulness_every_n_epochs": self.faithfulness_every_n_epochs if self.faithfulness else None,
                "history": self.history, "num_probe_users": self.num_probe_users, "pairs": self.extra_pairs}

    def _resume_mismatch(self, pl_module: "pl.LightningModule") -> Optional[str]:
        """Why a resumed run cannot continue its record with this callback's settings, or None."""
        if self._resume_epoch is None or record.run_id_of(self.out_dir) not in (None, run_identity(pl_module)["id"]):
            return None
        done = record.recorded_epochs(self.out_dir)
        skipped = [e for e in range(max(done, default=-1) + 1, self._first_epoch) if (e + 1) % self.every_n_epochs == 0]
        if not self._state_in_checkpoint and done and skipped:
            return (f"the checkpoint this run resumes from (epoch {self._resume_epoch}) was saved by a fit without "
                    f"AttributionCallback, and the attribution record in {self.out_dir} stops at epoch {max(done)}: "
                    f"continuing it would leave epoch{'s' * (len(skipped) > 1)} {_span(skipped)} out of one record. "
                    f"Record from here on in a new folder (--trainer.callbacks.init_args.out_dir DIR), or train the "
                    f"run again with the callback throughout.")
        saved = record.read_manifest(self.out_dir)
        if not saved:
            return None
        now = json.loads(json.dumps(self._recording(), default=str))
        differ = []
        for key, value in now.items():
            if key == "settings" and isinstance(saved.get(key), dict):  # each method's both records share
                for m in (m for m in value if isinstance(saved[key].get(m), dict)):
                    differ += [f"{m}.{k} {_shown(saved[key][m].get(k))} there, {_shown(v)} now"
                               for k, v in value[m].items() if saved[key][m].get(k) != v]
            elif key in saved and saved[key] != value:
                differ.append(f"{key} {_shown(saved[key])} there, {_shown(value)} now")
        if not differ:
            return None
        return (f"the attribution record in {self.out_dir} was made with other callback settings than this resumed "
                f"run's ({'; '.join(differ)}), and one record holds one set of settings. Resume with the record's "
                f"settings, or record the new ones in a new run (another --run_name, or fit without --ckpt_path).")

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        problem = self._resume_mismatch(pl_module) if trainer.is_global_zero else None
        problem = trainer.strategy.broadcast(problem, src=0)  # every rank stops, not only the one that read it
        if problem:
            raise ConfigError(problem[0].upper() + problem[1:])
        if trainer.is_global_zero:
            os.makedirs(self.out_dir, exist_ok=True)
            mine = run_identity(pl_module)
            theirs = {"id": record.run_id_of(self.out_dir), "fingerprint": record.fingerprint_of(self.out_dir)}
            added_at = None  # the epoch of the checkpoint a run resumed from when the callback joined it
            if self._resume_epoch is not None and theirs["id"] in (None, mine["id"]):
                keep = self._resume_epoch
                cut = record.read_manifest(self.out_dir).get("last_epoch_cut_short")
                if isinstance(cut, dict) and cut.get("epoch") == keep and cut.get("batches") == self._resume_batches:
                    keep -= 1  # the epoch recorded where max_steps/max_time stopped within it: recorded at its end now
                record.drop_epochs_after(self.out_dir, keep)  # continue this run's record
                added_at = record.read_manifest(self.out_dir).get("added_on_resume_at_epoch")
            elif theirs["id"] is not None and theirs["fingerprint"] == mine["fingerprint"] \
                    and not record.read_manifest(self.out_dir).get("finished") \
                    and unfinished(trainer, theirs, mine["fingerprint"]):
                # an earlier start of this same run, killed before its resume point: this start records it again
                record.remove(self.out_dir)
            else:  # a new run, or a record of another run: never mix, never delete
                moved = record.move_aside(self.out_dir)
                if moved is not None:
                    log.warning(f"{self.out_dir} held the record of an earlier run; moved it to {moved}.")
            if added_at is None and self._resume_epoch is not None and not record.recorded_epochs(self.out_dir):
                # the callback joined a run that trained without it, or the run resumes into a folder that holds
                # none of its record (another --run_name): the record starts where the run resumes
                added_at = self._first_epoch
                why = "a run that trained without it" if not self._state_in_checkpoint else \
                    "a run whose earlier epochs are recorded elsewhere, if at all"
                log.info(f"AttributionCallback joins {why}, resuming at epoch {added_at}: its record in "
                         f"{self.out_dir} starts there (no epoch -1).")
            self._write_manifest(trainer, pl_module, mine, added_at)
            done = record.recorded_epochs(self.out_dir)
            if self.before_training and self._resume_epoch is None and -1 not in done:
                self._run(trainer, pl_module, -1)
        trainer.strategy.barrier("attribution_fit_start")

    def _scheduled(self, trainer: "pl.Trainer", epoch: int) -> bool:
        return (epoch + 1) % self.every_n_epochs == 0 or _last_epoch(trainer, epoch)

    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # the rate this epoch trains at, for its TracIn term (epoch schedulers have stepped by its end)
        self._epoch_lr = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else 0.0

    def on_validation_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not trainer.sanity_checking:
            self._validated_epoch = trainer.current_epoch

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # after the module logged the epoch's metrics (in its own on_validation_epoch_end, after this callback's)
        if not trainer.sanity_checking:
            got = {k: float(trainer.callback_metrics[k]) for k in VAL_METRICS if k in trainer.callback_metrics}
            if got:
                self._validation[str(trainer.current_epoch)] = got

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        epoch = trainer.current_epoch
        if self._scheduled(trainer, epoch) and not trainer.sanity_checking:
            if trainer.is_global_zero:
                self._run(trainer, pl_module, epoch)
            trainer.strategy.barrier("attribution_epoch_end")
        elif self.history and not trainer.sanity_checking:
            # an epoch the schedule does not record still trained: its TracIn term goes into the next record's
            if trainer.is_global_zero:
                self._hold_history(trainer, pl_module.net, epoch)
            trainer.strategy.barrier("attribution_epoch_end")

    def _hold_history(self, trainer: "pl.Trainer", net: torch.nn.Module, epoch: int) -> None:
        """This epoch's TracIn terms, kept (summed per pair and interaction) until the next recorded epoch."""
        if epoch in self._held_epochs:  # an epoch Lightning closes again after a resume
            return
        h = trainer.datamodule.hparams
        frame = history_frame(net, trainer.datamodule.split, trainer.datamodule.interactions, self.probe, epoch,
                              self._epoch_lr, recent=(int(h.get("recent_positives") or 0),
                                                      int(h.get("recent_weight") or 1)))
        for p, item, c in zip(frame["pair"].tolist(), frame["history_item_id"].tolist(), frame["contribution"].tolist()):
            key = (int(p), item)
            self._held[key] = self._held.get(key, 0.0) + float(c)
        self._held_epochs.append(int(epoch))

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # The last epoch trained is always recorded, also when training stopped before max_epochs (early
        # stopping, max_time, max_steps) on an epoch the schedule skips.
        last = trainer.current_epoch - 1  # epochs completed, counted from 0
        done_batches = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        per_epoch = trainer.num_training_batches
        # max_time or max_steps can end the last epoch early: Lightning counts it as completed all the same
        self._cut_short = {"epoch": last, "batches": int(done_batches), "of": int(per_epoch)} \
            if last >= 0 and isinstance(per_epoch, int) and 0 <= done_batches < per_epoch else None
        if trainer.is_global_zero:
            done = record.recorded_epochs(self.out_dir)
            if last >= 0 and last not in done and (not done or max(done) < last):
                self._run(trainer, pl_module, last, final=True)
        trainer.strategy.barrier("attribution_train_end")

    def on_fit_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not trainer.is_global_zero or not record.recorded_epochs(self.out_dir):
            return
        t0 = time.perf_counter()
        from . import evolution

        record.mark_finished(self.out_dir, self._validation, self._cut_short)
        loaded = record.Record.read(self.out_dir)  # read once: the summary, the tables and the report share it
        summary = record.write_summary(self.out_dir, loaded.pairs)
        if self.plots:
            from .plots import plot_evolution

            shown = [next(iter(groups)) for groups in pl_module.net.groups.values()]  # e.g. user, gmf
            plot_evolution(summary, self.out_dir, shown)
        if self.report:
            from .html_report import write_report

            table = evolution.write_evolution(loaded)
            write_report([loaded], os.path.join(self.out_dir, "report.html"))
            self._log_evolution(trainer, table, loaded.pairs)
        self.last_fit_end_seconds = time.perf_counter() - t0
        self.total_seconds += self.last_fit_end_seconds

    def _log_evolution(self, trainer: "pl.Trainer", table: Optional[pd.DataFrame], pairs: pd.DataFrame) -> None:
        """TensorBoard: each epoch's median similarity to the final epoch and flip rate (known only at the end),
        at the global step the epoch was recorded at, as the ``attr/*`` scalars."""
        if table is None:
            return
        steps = pairs.groupby("epoch")["global_step"].first().to_dict() if "global_step" in pairs else {}
        for logger in trainer.loggers:
            exp = getattr(logger, "experiment", None)
            if type(logger).__name__ == "TensorBoardLogger" and hasattr(exp, "add_scalar"):
                cols = [c for c in table.columns if c.endswith(("_median", "_rate"))]
                for row in table.itertuples(index=False):
                    for c in cols:
                        v = getattr(row, c)
                        if pd.notna(v):
                            step = steps.get(int(row.epoch))
                            if step is not None and pd.notna(step):
                                exp.add_scalar(f"attr_evolution/{c}", float(v), global_step=int(step))

    # ------------------------------------------------------------------------------------------------
    # the work (global rank 0 only)
    # ------------------------------------------------------------------------------------------------
    def attribute_probe(self, net: torch.nn.Module) -> dict[str, Attribution]:
        """Attribute the probe set with every method (pure: no logging, no files)."""
        return attribute_probe(net, self.probe, self._settings(), self.baseline, self.seed, self.backend)

    def _run(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", epoch: int, final: bool = False) -> None:
        t0 = time.perf_counter()
        net = pl_module.net
        attrs = self.attribute_probe(net)
        if epoch >= 0 and not self._warned_nothing_learned and learned_nothing(attrs):
            self._warned_nothing_learned = True  # once per run: every later epoch would say the same
            log.warning(f"epoch {epoch}: every probe pair's score equals the baseline's and every attribution is 0: "
                        f"the model has not learned anything to explain (check train_loss and val_ndcg10, and "
                        f"--model.lr / --model.weight_decay).")
        faith = None
        if self.faithfulness and (epoch < 0 or (epoch + 1) % self.faithfulness_every_n_epochs == 0
                                  or _last_epoch(trainer, epoch) or final):
            faith = probe_faithfulness(net, self.probe, attrs, self.seed)
        if self._prev_epoch is None or self._prev_epoch >= epoch:
            # After a resume (or a re-run of an epoch Lightning had not closed): compare with the latest
            # earlier epoch on disk, never with this epoch's own previous record.
            earlier = record.latest_epoch_before(self.out_dir, epoch)
            self._prev = record.read_features(self.out_dir, earlier, self.methods,
                                              len(self.probe["user_index"])) if earlier is not None else {}
        # the val_* metrics Lightning keeps are those of the latest validation, which need not be this epoch's
        logged = trainer.callback_metrics if self._validated_epoch == epoch else {}
        val = val_metrics(logged, epoch, record.read_epoch_file(self.out_dir, "pairs", epoch))
        dims, pairs = epoch_frames(attrs, self._meta(), epoch, faith, self._prev, self.faithfulness, val)
        pairs["global_step"] = trainer.global_step  # where the epoch sits on the loggers' step axis
        extra = {}
        # epoch -1 has had no training step of its own: only a pretrained NeuMF's GMF and MLP runs to attribute to
        if self.history and (epoch >= 0 or getattr(pl_module, "pretrained_record", None)):
            t1 = time.perf_counter()
            frame = self._history_frame(trainer, net, epoch)
            if frame is not None:
                extra["history"] = frame
            self.last_history_seconds = time.perf_counter() - t1
        record.write_epoch(self.out_dir, epoch, dims, pairs, extra)
        record.note_validation(self.out_dir, self._validation)  # a killed run's report keeps its whole curve
        self._prev = {m: (a.features, a.inactive) for m, a in attrs.items()}
        self._prev_epoch = epoch
        self.last_seconds = time.perf_counter() - t0
        self._log(trainer, epoch, attrs, pairs)
        self.total_seconds += time.perf_counter() - t0

    def _history_frame(self, trainer: "pl.Trainer", net: torch.nn.Module, epoch: int) -> Optional[pd.DataFrame]:
        """This epoch's history frame (:func:`explain.epoch_record.history_frame`); None at epoch -1 when the
        pretraining's checkpoints cannot be read (a warning says so)."""
        pretraining = None
        if epoch < 0:
            from ncf.errors import CheckpointError

            from .history import pretraining_of

            try:
                pretraining = pretraining_of(trainer.lightning_module)
            except CheckpointError as err:
                log.warning(f"history: the pretraining is not part of the running totals ({err})")
                return None
        previous = record.read_epoch_file(self.out_dir, "history", record.latest_epoch_before(self.out_dir, epoch))
        h = trainer.datamodule.hparams
        frame = history_frame(net, trainer.datamodule.split, trainer.datamodule.interactions, self.probe, epoch,
                              self._epoch_lr, pretraining, previous,
                              recent=(int(h.get("recent_positives") or 0), int(h.get("recent_weight") or 1)))
        # the terms of the epochs trained since the previous record that the schedule did not record
        held = np.asarray([self._held.get((int(p), item), 0.0) for p, item in zip(frame["pair"].tolist(),
                                                                                    frame["history_item_id"].tolist())])
        own = frame["contribution"].to_numpy()
        # the last epoch, recorded at the end of training off the schedule, was already held once
        summed = held if epoch in self._held_epochs else own + held
        frame["running_total"] = (frame["running_total"].to_numpy() - own + summed).astype(own.dtype)
        frame["contribution"] = summed.astype(own.dtype)
        frame["epochs_summed"] = len(set(self._held_epochs) | {epoch}) if epoch >= 0 else 1
        self._held, self._held_epochs = {}, []
        return frame

    def _log(self, trainer: "pl.Trainer", epoch: int, attrs: dict[str, Attribution], pairs: pd.DataFrame) -> None:
        metrics = logged_metrics(pairs, epoch, self.last_seconds)
        step = trainer.global_step
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            exp = getattr(logger, "experiment", None)
            if type(logger).__name__ == "TensorBoardLogger" and hasattr(exp, "add_histogram"):
                for m, a in attrs.items():
                    if a.dims is not None:
                        for name, t in zip(a.embedding_names, a.dims):
                            exp.add_histogram(f"attr/{m}/{name}", t, global_step=step)
                from .plots import shares_figure

                exp.add_figure("attr/group_shares", shares_figure(pairs), global_step=step)

    def _write_manifest(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", run: dict,
                        added_at: Optional[int] = None) -> None:
        # Plain settings only; names with a leading underscore are Lightning's bookkeeping (_instantiator)
        hp = {k: v for k, v in dict(pl_module.hparams).items()
              if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))}
        if isinstance(pl_module.hparams.get("network"), dict):  # the network's class path and arguments
            hp["network"] = pl_module.hparams["network"]
        record.write_manifest(self.out_dir, {
            "format": "ncf-explain attribution record, version 1",
            "run": run,
            "model": hp,
            # the GMF and MLP runs (id, epoch, checkpoint path, weights digest) a pretrained model started from
            "pretrained_from": _plain_record(getattr(pl_module, "pretrained_record", None)),
            "dataset": getattr(trainer.datamodule, "dataset", None),
            "data": _data_settings(trainer.datamodule),
            **self._recording(),  # what a resume is compared against
            "training_seed": _training_seed(),
            "max_epochs": trainer.max_epochs,
            # set when the record starts where a resumed run resumed (the callback joined it then, or its earlier
            # epochs are recorded in another folder)
            "added_on_resume_at_epoch": added_at,
            "finished": False,
            "epoch_minus_1": "the model before its first training step (initialised, or pretrained)",
            "probe": self._meta().to_dict(orient="records"),
            "files": {"dims_epoch=E.parquet": "method, pair, embedding, dim, attribution (long form)",
                      "pairs_epoch=E.parquet": "per method and pair: predictions, completeness, groups, faithfulness, "
                                           "stability, agreement",
                      "summary.csv": "per epoch and method"},
            "versions": record.versions(),
        })

    # ------------------------------------------------------------------------------------------------
    # checkpoint state: primitives only (checkpoints load with weights_only=True)
    # ------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir) if self.out_dir is not None else None, "probe": self.probe,
                "methods": list(self.methods), "seed": int(self.seed),
                "validation": {e: dict(m) for e, m in self._validation.items()},
                # history terms of epochs trained since the last record (plain values: weights_only loads them)
                "history_held": [[p, item, v] for (p, item), v in self._held.items()],
                "history_held_epochs": list(self._held_epochs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # The output folder comes from the config only (the default is fixed beside the checkpoints, so a
        # resumed run continues its record); the folder saved in a checkpoint is never followed.
        if state_dict.get("probe"):
            self.probe = state_dict["probe"]
        if isinstance(state_dict.get("history_held"), list):
            self._held = {(int(p), item): float(v) for p, item, v in state_dict["history_held"]}
            self._held_epochs = [int(e) for e in state_dict.get("history_held_epochs") or []]
        if isinstance(state_dict.get("validation"), dict):
            self._validation = {str(e): {str(k): float(v) for k, v in m.items()} for e, m in
                                state_dict["validation"].items() if isinstance(m, dict)}

    def on_load_checkpoint(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", checkpoint: dict) -> None:
        self._resume_epoch = int(checkpoint.get("epoch", -1))
        fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
        self._resume_batches = ((fit_loop.get("epoch_loop.batch_progress") or {}).get("current") or {}).get("completed")
        self._state_in_checkpoint = self.state_key in (checkpoint.get("callbacks") or {})
        # the epoch the resumed run closes first: Lightning closes again an epoch whose checkpoint was saved
        # before its training and validation were processed, and goes on after one they were
        done = ((((checkpoint.get("loops") or {}).get("fit_loop") or {}).get("epoch_progress") or {}).get("current")
                or {}).get("processed")
        self._first_epoch = int(done) if isinstance(done, int) else self._resume_epoch + 1


def _shown(value: Any) -> str:
    """A setting as the config spells it: ``[deeplift, lime]``, ``7``, ``null``."""
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return "null" if value is None else str(value)


def _span(epochs: list[int]) -> str:
    """``2-3`` for consecutive epochs, else ``2, 5``."""
    if epochs == list(range(epochs[0], epochs[-1] + 1)) and len(epochs) > 1:
        return f"{epochs[0]}-{epochs[-1]}"
    return ", ".join(map(str, epochs))


def _last_epoch(trainer: "pl.Trainer", epoch: int) -> bool:
    return trainer.max_epochs is not None and epoch == trainer.max_epochs - 1


