"""``AttributionCallback``: watch attributions evolve while a model trains.

It only schedules, logs and records; the attribution itself is :func:`explain.core.attribute`.

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

import logging
import os
import time
import warnings
from typing import Any, Optional, Sequence, Union

import pandas as pd
import pytorch_lightning as pl
import torch

from ncf.errors import ConfigError
from ncf.run import run_identity, unfinished

from . import record
from . import methods as registry
from .core import BACKENDS, Attribution, Target, attribute, explaining, learned_nothing
from .faithfulness import COLUMNS as FAITH_COLUMNS, faithfulness as faithfulness_fn
from .tables import agreement, dims_frame, pairs_frame, stability

__all__ = ["AttributionCallback"]

log = logging.getLogger("ncf")


class AttributionCallback(pl.Callback):
    """Attribute a fixed probe set of (user, item) pairs at the end of every epoch.

    Args:
        methods: attribution methods (see :data:`explain.core.METHODS`). The defaults, DeepLift per
            dimension and exact Shapley per embedding group, are cheap and complete (they sum to the score change); add
            ``ig``, ``lime`` or ``kernel_shap`` when their time per epoch is worth it (BENCHMARKS.md
            has the cost per pair).
        every_n_epochs: record every n-th epoch (the last epoch is always recorded).
        before_training: also record epoch -1, the model before its first training step.
        num_probe_users: validation users in the probe set; each contributes its validation item and
            one of its sampled validation negatives.
        pairs: extra ``[user_id, item_id]`` pairs in the dataset's original ids.
        baseline: ``mean`` or ``zero`` (see :mod:`explain.core`).
        seed: seeds the probe selection and the methods' own generators.
        n_samples: sample count for LIME/KernelSHAP (default: the core's).
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
                 pairs: Optional[list[list[Union[int, str]]]] = None, baseline: str = "mean", seed: int = 0,
                 n_samples: Optional[int] = None, faithfulness: bool = True, out_dir: Optional[str] = None,
                 plots: bool = False, history: bool = False, backend: str = "ours", report: bool = True,
                 faithfulness_every_n_epochs: int = 5):
        super().__init__()
        unknown = [m for m in methods if m not in registry.names()]
        if unknown:
            raise ConfigError(f"Unknown attribution methods {unknown}; choose from {list(registry.names())}.")
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, not {backend!r}.")
        if every_n_epochs < 1 or faithfulness_every_n_epochs < 1:
            raise ConfigError("every_n_epochs and faithfulness_every_n_epochs must be >= 1.")
        if baseline not in ("mean", "zero"):
            raise ConfigError(f"baseline must be 'mean' or 'zero', not {baseline!r}.")
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
        self._prev: dict[str, torch.Tensor] = {}
        self._prev_epoch: Optional[int] = None
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
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "split"):
            raise TypeError("AttributionCallback needs an NCFDataModule (it draws the probe set from validation users).")
        dm.setup("fit")
        if self.probe is None:
            self.probe = self._make_probe(dm)
        if self.out_dir is None:
            # Beside the run's fixed checkpoint folder (so a resumed run continues the same record), else in
            # the logger's folder. Never a path read from a checkpoint.
            ckpt_dir = getattr(trainer.checkpoint_callback, "dirpath", None)
            base = os.path.dirname(os.path.normpath(str(ckpt_dir))) if ckpt_dir else \
                (trainer.log_dir or trainer.default_root_dir)
            self.out_dir = os.path.join(str(base), "attributions")

    def _make_probe(self, dm) -> dict[str, list]:
        split, inter = dm.split, dm.interactions
        users, cands = (split.val_users, split.val_candidates) if split.val_users is not None else (None, None)
        u_idx: list[int] = []
        i_idx: list[int] = []
        kind: list[str] = []
        if users is not None and self.num_probe_users > 0:
            gen = torch.Generator().manual_seed(self.seed)
            rows = torch.randperm(len(users), generator=gen)[: self.num_probe_users].sort().values
            for r in rows.tolist():
                u = int(users[r])
                u_idx += [u, u]
                i_idx += [int(cands[r, 0]), int(cands[r, 1])]
                kind += ["validation_positive", "sampled_negative"]
        user_pos = {uid: k for k, uid in enumerate(inter.user_ids)}
        item_pos = {iid: k for k, iid in enumerate(inter.item_ids)}
        for p in self.extra_pairs:
            if len(p) != 2:
                raise ConfigError(f"Probe pair {p} must be [user_id, item_id].")
            u, i = _lookup(user_pos, p[0], "user"), _lookup(item_pos, p[1], "item")
            u_idx.append(u)
            i_idx.append(i)
            kind.append("listed")
        if not u_idx:
            raise ConfigError("The probe set is empty: set num_probe_users > 0 (with validation on) or list pairs.")
        probe = {
            "user_index": u_idx, "item_index": i_idx, "kind": kind,
            "user_id": [inter.user_ids[u] for u in u_idx], "item_id": [inter.item_ids[i] for i in i_idx],
        }
        # Names as explain.py shows them: MovieLens titles, or the names files given to the data module.
        if inter.item_titles:
            probe["item_name"] = [inter.item_titles[i] for i in i_idx]
        if inter.user_names:
            probe["user_name"] = [inter.user_names[u] for u in u_idx]
        return probe

    def _meta(self) -> pd.DataFrame:
        p = self.probe
        meta = {"pair": range(len(p["user_index"])), "user_id": p["user_id"], "item_id": p["item_id"],
                "user_index": p["user_index"], "item_index": p["item_index"], "kind": p["kind"]}
        meta.update({k: p[k] for k in ("item_name", "user_name") if k in p})
        return pd.DataFrame(meta)

    # ------------------------------------------------------------------------------------------------
    # scheduling
    # ------------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.is_global_zero:
            os.makedirs(self.out_dir, exist_ok=True)
            mine = run_identity(pl_module)
            theirs = {"id": record.run_id_of(self.out_dir), "fingerprint": record.fingerprint_of(self.out_dir)}
            if self._resume_epoch is not None and theirs["id"] in (None, mine["id"]):
                record.drop_epochs_after(self.out_dir, self._resume_epoch)  # continue this run's record
            elif theirs["id"] is not None and unfinished(trainer, theirs, mine["fingerprint"]):
                record.remove(self.out_dir)  # a partial record nothing can continue (killed before a resume point)
            else:  # a new run, or a record of another run: never mix, never delete
                moved = record.move_aside(self.out_dir)
                if moved is not None:
                    warnings.warn(f"{self.out_dir} held the record of an earlier run; moved it to {moved}.")
            self._write_manifest(trainer, pl_module, mine)
            done = record.recorded_epochs(self.out_dir)
            if self.before_training and self._resume_epoch is None and -1 not in done:
                self._run(trainer, pl_module, -1)
        trainer.strategy.barrier("attribution_fit_start")

    def _scheduled(self, trainer: "pl.Trainer", epoch: int) -> bool:
        return (epoch + 1) % self.every_n_epochs == 0 or _last_epoch(trainer, epoch)

    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._epoch_lr = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else 0.0

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        epoch = trainer.current_epoch
        if self._scheduled(trainer, epoch) and not trainer.sanity_checking:
            if trainer.is_global_zero:
                self._run(trainer, pl_module, epoch)
            trainer.strategy.barrier("attribution_epoch_end")

    def on_fit_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not trainer.is_global_zero or not record.recorded_epochs(self.out_dir):
            return
        t0 = time.perf_counter()
        from . import evolution

        record.mark_finished(self.out_dir)
        loaded = evolution.load(self.out_dir)  # read once: the summary, the tables and the report share it
        summary = record.write_summary(self.out_dir, loaded.pairs)
        if self.plots:
            from .plots import plot_evolution

            shown = [next(iter(groups)) for groups in pl_module.net.groups.values()]  # e.g. user, gmf
            plot_evolution(summary, self.out_dir, shown)
        if self.report:
            from .html_report import write_report

            table = evolution.write_evolution(loaded)
            write_report([loaded], os.path.join(self.out_dir, "report.html"))
            self._log_evolution(trainer, table)
        self.last_fit_end_seconds = time.perf_counter() - t0
        self.total_seconds += self.last_fit_end_seconds

    def _log_evolution(self, trainer: "pl.Trainer", table: Optional[pd.DataFrame]) -> None:
        """TensorBoard: each epoch's median similarity to the final epoch and flip rate (known only at the end)."""
        if table is None:
            return
        for logger in trainer.loggers:
            exp = getattr(logger, "experiment", None)
            if type(logger).__name__ == "TensorBoardLogger" and hasattr(exp, "add_scalar"):
                cols = [c for c in table.columns if c.endswith(("_median", "_rate"))]
                for row in table.itertuples(index=False):
                    for c in cols:
                        v = getattr(row, c)
                        if pd.notna(v):
                            exp.add_scalar(f"attr_evolution/{c}", float(v), global_step=max(int(row.epoch), 0))

    # ------------------------------------------------------------------------------------------------
    # the work (global rank 0 only)
    # ------------------------------------------------------------------------------------------------
    def attribute_probe(self, net: torch.nn.Module) -> dict[str, Attribution]:
        """Attribute the probe set with every method (pure: no logging, no files)."""
        dev = next(net.parameters()).device
        users = torch.tensor(self.probe["user_index"], device=dev)
        items = torch.tensor(self.probe["item_index"], device=dev)
        target = Target.build(net, users, items, self.baseline)
        settings = self._settings()
        return {m: attribute(net, users, items, m, self.baseline, self.seed, target=target, backend=self.backend,
                             **settings[m]).cpu() for m in self.methods}

    def _run(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", epoch: int) -> None:
        t0 = time.perf_counter()
        net = pl_module.net
        attrs = self.attribute_probe(net)
        if epoch >= 0 and not self._warned_nothing_learned and learned_nothing(attrs):
            self._warned_nothing_learned = True  # once per run: every later epoch would say the same
            log.warning(f"epoch {epoch}: every probe pair's score equals the baseline's and every attribution is 0: "
                        f"the model has not learned anything to explain (check train_loss and val_ndcg10, and "
                        f"--model.lr / --model.weight_decay).")
        dev = next(net.parameters()).device
        users = torch.tensor(self.probe["user_index"], device=dev)
        items = torch.tensor(self.probe["item_index"], device=dev)
        faith = None
        if self.faithfulness and (epoch < 0 or (epoch + 1) % self.faithfulness_every_n_epochs == 0
                                  or _last_epoch(trainer, epoch)):
            faith = {m: {k: v.cpu() for k, v in faithfulness_fn(net, users, items, a, seed=self.seed).items()}
                     for m, a in attrs.items()}
        if self._prev_epoch is None or self._prev_epoch >= epoch:
            # After a resume (or a re-run of an epoch Lightning had not closed): compare with the latest
            # earlier epoch on disk, never with this epoch's own previous record.
            earlier = [e for e in record.recorded_epochs(self.out_dir) if e < epoch]
            self._prev = record.read_features(self.out_dir, earlier[-1], self.methods,
                                              len(self.probe["user_index"])) if earlier else {}
        stab = {m: stability(self._prev.get(m), a.features, a.inactive) for m, a in attrs.items()}
        agree = agreement(attrs)
        meta = self._meta()
        dims = dims_frame(attrs, meta, epoch)
        pairs = pairs_frame(attrs, meta, epoch, faith, stab, agree)
        if self.faithfulness:  # one schema for every epoch file, computed or not
            for col in FAITH_COLUMNS:
                if col not in pairs:
                    pairs[col] = float("nan")
        for name, value in self._val_metrics(trainer, epoch).items():  # accuracy beside the explanations, per epoch
            pairs[name] = value
        extra = {}
        # epoch -1 has had no training step of its own: only a pretrained NeuMF's GMF and MLP runs to attribute to
        if self.history and (epoch >= 0 or getattr(pl_module, "pretrained_record", None)):
            t1 = time.perf_counter()
            frame = self._history_frame(trainer, net, epoch)
            if frame is not None:
                extra["history"] = frame
            self.last_history_seconds = time.perf_counter() - t1
        record.write_epoch(self.out_dir, epoch, dims, pairs, extra)
        self._prev = {m: a.features for m, a in attrs.items()}
        self._prev_epoch = epoch
        self.last_seconds = time.perf_counter() - t0
        self._log(trainer, epoch, attrs, pairs)
        self.total_seconds += time.perf_counter() - t0

    def _val_metrics(self, trainer: "pl.Trainer", epoch: int) -> dict[str, float]:
        """The validation metrics logged this epoch (NaN before training, or without validation). An epoch that
        Lightning closes again after a resume, without validating again, keeps the values its first record holds."""
        out = {}
        for name in ("val_ndcg10", "val_hr10"):
            v = trainer.callback_metrics.get(name) if epoch >= 0 else None
            out[name] = float(v) if v is not None else float("nan")
        path = os.path.join(self.out_dir, f"pairs_epoch={epoch}.parquet")
        if epoch >= 0 and all(v != v for v in out.values()) and os.path.exists(path):
            before = pd.read_parquet(path)
            out = {k: float(before[k].iloc[0]) if k in before and len(before) else v for k, v in out.items()}
        return out

    def _history_frame(self, trainer: "pl.Trainer", net: torch.nn.Module, epoch: int) -> Optional[pd.DataFrame]:
        """This epoch's TracIn term of each probe pair's user interactions, and the running total. At epoch -1
        of a pretrained NeuMF: the sum over its GMF and MLP runs' epochs (``contribution_gmf`` and
        ``contribution_mlp`` apart), where its embeddings were learned; the running total starts there."""
        from ncf.errors import CheckpointError

        from .history import EpochModel, pretraining_of, tracin

        split = trainer.datamodule.split
        dev = next(net.parameters()).device
        train_u, train_i = split.train_users.to(dev), split.train_items.to(dev)
        pair_of_row, rows_i = [], []
        for p, u in enumerate(self.probe["user_index"]):
            mine = train_i[train_u == u]
            pair_of_row.append(torch.full_like(mine, p))
            rows_i.append(mine)
        pair_of_row, rows_i = torch.cat(pair_of_row), torch.cat(rows_i)
        users = torch.tensor(self.probe["user_index"], device=dev)
        items = torch.tensor(self.probe["item_index"], device=dev)
        lr = self._epoch_lr  # the rate this epoch trained at (epoch schedulers have stepped by now)
        stages = {}
        if epoch < 0:
            try:
                models = pretraining_of(trainer.lightning_module)
            except CheckpointError as err:
                warnings.warn(f"history: the pretraining is not part of the running totals ({err})")
                return None
            pair_of_row, rows_i, users, items = pair_of_row.cpu(), rows_i.cpu(), users.cpu(), items.cpu()
            term = tracin(models, users[pair_of_row], rows_i, users, items)[:, pair_of_row, torch.arange(len(rows_i))]
            for stage in dict.fromkeys(m.stage for m in models):
                stages[f"contribution_{stage}"] = term[torch.tensor([m.stage == stage for m in models])].sum(0)
            contribution, lr = term.sum(0), float("nan")
        else:
            with explaining(net):  # eval mode (no dropout), gradients on
                term = tracin([EpochModel(epoch, net, lr)], users[pair_of_row], rows_i, users, items)[0]
            contribution = term[pair_of_row, torch.arange(len(rows_i), device=dev)].cpu()
        pair_of_row, rows_i = pair_of_row.cpu(), rows_i.cpu()
        inter = trainer.datamodule.interactions
        frame = pd.DataFrame({"epoch": epoch, "pair": pair_of_row.numpy(),
                              "user_id": [self.probe["user_id"][p] for p in pair_of_row.tolist()],
                              "item_id": [self.probe["item_id"][p] for p in pair_of_row.tolist()],
                              "history_item_id": [inter.item_ids[i] for i in rows_i.tolist()]})
        if inter.item_titles:
            frame["history_item_name"] = [inter.item_titles[i] for i in rows_i.tolist()]
        frame["lr"] = lr
        frame["contribution"] = contribution.numpy()
        for col, values in stages.items():
            frame[col] = values.numpy()
        earlier = [e for e in record.recorded_epochs(self.out_dir) if e < epoch]
        prev = os.path.join(self.out_dir, f"history_epoch={earlier[-1]}.parquet") if earlier else None
        running = frame["contribution"].to_numpy().copy()
        if prev and os.path.exists(prev):
            before = pd.read_parquet(prev)[["pair", "history_item_id", "running_total"]]
            merged = frame[["pair", "history_item_id"]].merge(before, how="left", on=["pair", "history_item_id"])
            running += merged["running_total"].fillna(0.0).to_numpy()
        frame["running_total"] = running
        return frame

    def _log(self, trainer: "pl.Trainer", epoch: int, attrs: dict[str, Attribution], pairs: pd.DataFrame) -> None:
        metrics: dict[str, float] = {}
        for m, g in pairs.groupby("method"):
            for col in g.columns:
                if col.startswith("share_"):
                    metrics[f"attr/{m}/{col}"] = float(g[col].mean())
            metrics[f"attr/{m}/completeness_gap_max"] = float(g["completeness_gap"].max())
            for col in ("stability", "deletion_gain", "insertion_gain", "infidelity"):
                if col in g and g[col].notna().any():
                    metrics[f"attr/{m}/{col}"] = float(g[col].median() if col == "stability" else g[col].mean())
            for col in g.columns:
                if col.startswith("agreement_"):
                    metrics[f"attr/{m}/{col}"] = float(g[col].median())
        metrics["attr/epoch"] = float(epoch)
        metrics["attr/seconds"] = float(self.last_seconds)
        step = trainer.global_step
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            exp = getattr(logger, "experiment", None)
            if type(logger).__name__ == "TensorBoardLogger" and hasattr(exp, "add_histogram"):
                for m, a in attrs.items():
                    if a.dims is not None:
                        for name, t in zip(a.embedding_names, a.dims):
                            exp.add_histogram(f"attr/{m}/{name}", t, global_step=max(epoch, 0))
                from .plots import shares_figure

                exp.add_figure("attr/group_shares", shares_figure(pairs), global_step=max(epoch, 0))

    def _write_manifest(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", run: dict) -> None:
        hp = {k: v for k, v in dict(pl_module.hparams).items() if isinstance(v, (int, float, str, bool, type(None)))}
        if isinstance(pl_module.hparams.get("network"), dict):  # the network's class path and arguments
            hp["network"] = pl_module.hparams["network"]
        record.write_manifest(self.out_dir, {
            "format": "ncf-explain attribution record, version 1",
            "run": run,
            "model": hp,
            "dataset": getattr(trainer.datamodule, "dataset", None),
            "methods": self.methods,
            "backend": self.backend,
            "settings": self._settings(),
            "baseline": self.baseline,
            "seed": self.seed,
            "every_n_epochs": self.every_n_epochs,
            "faithfulness_every_n_epochs": self.faithfulness_every_n_epochs if self.faithfulness else None,
            "max_epochs": trainer.max_epochs,
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
                "methods": list(self.methods), "seed": int(self.seed)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # The output folder comes from the config only (the default is fixed beside the checkpoints, so a
        # resumed run continues its record); the folder saved in a checkpoint is never followed.
        if state_dict.get("probe"):
            self.probe = state_dict["probe"]

    def on_load_checkpoint(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", checkpoint: dict) -> None:
        self._resume_epoch = int(checkpoint.get("epoch", -1))


def _last_epoch(trainer: "pl.Trainer", epoch: int) -> bool:
    return trainer.max_epochs is not None and epoch == trainer.max_epochs - 1


def _lookup(index: dict, key, what: str) -> int:
    if key in index:
        return index[key]
    for cast in (str, int):  # YAML may give 196 where the ids are "196", or the reverse
        try:
            if cast(key) in index:
                return index[cast(key)]
        except (TypeError, ValueError):
            pass
    raise ConfigError(f"Unknown {what} id {key!r} in the probe pairs; it is not in the training data.")
