"""Hyperparameter search on the real Trainer with Optuna: ``python tune.py --config configs/neumf.yaml``.

Each trial trains one config through the same LightningCLI as ``train.py`` with the trial's values on
top (``--model.lr``, ``--data.batch_size`` ...), in its own folder, and scores it by its **best validation
NDCG@10** (never a test metric). Hopeless trials are pruned after each validation (Optuna's median
pruner by default). The study lives in Optuna's storage, a SQLite file by default, so a killed study
resumes where it stopped and several processes or machines can share one study through a database URL.
At the end the best trial is written out as a ready config (``best.yaml``) with a short report
(``report.md``: the best trials and the parameters' importances).

The search space is a YAML file of dotted CLI keys (``configs/search/*.yaml``)::

    model.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    data.batch_size: {type: categorical, choices: [256, 512, 1024]}

A config that starts from pretrained GMF and MLP checkpoints (``pretrained_gmf`` / ``pretrained_mlp``)
reuses those checkpoints in every trial and tunes the NeuMF stage alone; tune GMF and MLP with their own
studies first to tune the whole pipeline.

Pruning uses a small callback of this project rather than ``optuna-integration``'s, which is written for
the ``lightning`` package (a different copy of Lightning from ``pytorch_lightning``, whose callbacks this
Trainer does not accept).
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import pytorch_lightning as pl
import yaml

from .errors import ConfigError, UserError, report

if TYPE_CHECKING:
    import optuna

__all__ = ["load_space", "suggest", "PruneOnValidation", "run_study", "main"]

log = logging.getLogger("ncf")
KINDS = ("float", "int", "categorical")
# What the objective is measured on: searching them would compare scores of different validation sets.
SPLIT_KEYS = ("data.dataset", "data.validation", "data.validation_item", "data.holdout", "data.split_seed",
              "data.num_eval_negatives", "data.drop_short_users")


def load_space(path: str | os.PathLike) -> dict[str, dict]:
    """Read and check a search space: ``{dotted.key: {type, low, high[, log, step] | choices}}``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such search space file (see configs/search/).")
    space = yaml.safe_load(path.read_text()) or {}
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{path}: a search space is a mapping of keys like model.lr to their ranges.")
    for key, spec in space.items():
        if not isinstance(spec, dict) or spec.get("type") not in KINDS or "." not in str(key):
            raise ConfigError(f"{path}: {key!r} needs a dotted key (model.lr) and a type among {KINDS}.")
        if key in SPLIT_KEYS:
            raise ConfigError(f"{path}: {key!r} changes the validation set itself, so the trials' scores would not "
                              f"be comparable; set it in the config and search the model and training keys.")
        if spec["type"] == "categorical" and not spec.get("choices"):
            raise ConfigError(f"{path}: {key!r} is categorical and needs choices.")
        if spec["type"] != "categorical" and not ("low" in spec and "high" in spec and spec["low"] <= spec["high"]):
            raise ConfigError(f"{path}: {key!r} needs low <= high.")
    return space


def suggest(trial, space: dict[str, dict]) -> dict[str, Any]:
    """The trial's value for every key of the space."""
    out = {}
    for key, spec in space.items():
        if spec["type"] == "float":
            out[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))
        elif spec["type"] == "int":
            out[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)))
        else:
            out[key] = trial.suggest_categorical(key, list(spec["choices"]))
    return out


class PruneOnValidation(pl.Callback):
    """Report the monitored validation metric to the trial after every validation; stop hopeless trials."""

    def __init__(self, trial, monitor: str = "val_ndcg10"):
        self.trial, self.monitor = trial, monitor

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import optuna

        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        self.trial.report(float(trainer.callback_metrics[self.monitor]), step=trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {trainer.current_epoch}")


def _set(cfg: dict, dotted: str, value) -> None:
    node = cfg
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def _trial_config(base: dict, folder: Path) -> dict:
    """The config with its best-checkpoint folder and logs moved into the trial's folder (trials never
    share files) and without per-epoch checkpoints (a study needs none)."""
    cfg = copy.deepcopy(base)
    trainer = cfg.setdefault("trainer", {})
    kept = []
    for cb in trainer.get("callbacks") or []:
        args = cb.get("init_args") or {}
        if cb.get("class_path", "").endswith("ModelCheckpoint"):
            if args.get("save_top_k") == -1:
                continue
            args["dirpath"] = str(folder / "checkpoints")
        kept.append(cb)
    trainer["callbacks"] = kept
    logger = trainer.get("logger")
    if isinstance(logger, dict) and "save_dir" in (logger.get("init_args") or {}):
        logger["init_args"]["save_dir"] = str(folder / "logs")
    return cfg


def _absolute_paths(cfg: dict) -> None:
    """Checkpoints a config starts from, made absolute so that every trial finds them."""
    model = cfg.get("model") or {}
    for key in ("pretrained_gmf", "pretrained_mlp"):
        if model.get(key):
            path = Path(model[key])
            if not path.is_file():
                raise ConfigError(f"{path}: the pretrained checkpoint this config starts from is missing; train "
                                  f"it first (the pretrained NeuMF reuses its GMF and MLP in every trial).")
            model[key] = str(path.resolve())


def run_study(config: str, space_path: str, n_trials: int, out: str, storage: Optional[str] = None,
              study_name: Optional[str] = None, timeout: Optional[float] = None, seed: int = 0,
              extra: Sequence[str] = (), pruner="median") -> "optuna.Study":
    """Run (or resume) a study until it holds ``n_trials`` finished trials (complete or pruned).
    ``pruner``: ``median``, ``none`` or an Optuna pruner."""
    import optuna
    import warnings

    from optuna.storages import RDBStorage

    from .cli import main as cli_main

    space = load_space(space_path)
    given = yaml.safe_load(Path(config).read_text())
    base = copy.deepcopy(given)
    _absolute_paths(base)  # for the trials; best.yaml keeps the paths as the config gives them
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"
    name = study_name or Path(config).stem
    # A trial whose process was killed stops beating and is marked failed (and retried once) on resume.
    with warnings.catch_warnings():  # Optuna >= 4.9 names the callback RetryHeartbeatStaleTrialCallback
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
            retry = {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
        else:
            retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)}
        rdb = RDBStorage(url, heartbeat_interval=30, grace_period=90, **retry)
    pruners = {"median": optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
               "none": optuna.pruners.NopPruner()}
    study = optuna.create_study(study_name=name, storage=rdb, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=pruners[pruner] if isinstance(pruner, str) else pruner)
    if (model := base.get("model") or {}).get("pretrained_gmf"):
        log.info(f"tuning the NeuMF stage on the pretrained {model['pretrained_gmf']} and {model['pretrained_mlp']} "
                 f"(reused by every trial; tune GMF and MLP with their own studies first)")

    def objective(trial) -> float:
        params = suggest(trial, space)
        folder = out_dir / f"trial_{trial.number}"
        cfg = _trial_config(base, folder)
        for key, value in params.items():
            _set(cfg, key, value)
        folder.mkdir(parents=True, exist_ok=True)
        cfg_path = folder / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        cli = cli_main(["--config", str(cfg_path), "--trainer.enable_progress_bar", "false",
                        "--trainer.enable_model_summary", "false", *extra], run=False)
        cli.trainer.callbacks.append(PruneOnValidation(trial))
        cli.trainer.fit(cli.model, cli.datamodule)
        best = cli.trainer.checkpoint_callback.best_model_score
        if best is None:
            raise ConfigError("The config's first ModelCheckpoint must monitor a validation metric (val_ndcg10).")
        return float(best)

    done = optuna.study.MaxTrialsCallback(n_trials, states=(optuna.trial.TrialState.COMPLETE,
                                                            optuna.trial.TrialState.PRUNED))
    finished = [t for t in study.trials if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL]
    if len(finished) < n_trials:
        study.optimize(objective, n_trials=None, timeout=timeout, callbacks=[done], catch=())
    write_best(study, given, out_dir)
    return study


def write_best(study, base: dict, out_dir: Path) -> None:
    """``best.yaml`` (the base config with the best trial's values) and ``report.md``."""
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ConfigError("No trial of the study completed; see the log above for why.")
    best = study.best_trial
    cfg = copy.deepcopy(base)
    for key, value in best.params.items():
        _set(cfg, key, value)
    (out_dir / "best.yaml").write_text(
        f"# Best trial {best.number} of study {study.study_name!r}: best validation NDCG@10 {best.value:.4f}\n"
        + yaml.safe_dump(cfg, sort_keys=False))
    lines = [f"# Study {study.study_name}", "",
             f"{len(complete)} complete, {sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)} "
             f"pruned, {sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials)} failed trials.", "",
             "## Best trials (validation NDCG@10)", "", "| trial | val NDCG@10 | " + " | ".join(best.params) + " |",
             "|---|---|" + "---|" * len(best.params)]
    for t in sorted(complete, key=lambda t: -t.value)[:5]:
        lines.append(f"| {t.number} | {t.value:.4f} | " + " | ".join(f"{t.params.get(k)}" for k in best.params) + " |")
    if len(complete) >= 2 and len(best.params) >= 1:
        try:
            imp = optuna.importance.get_param_importances(study)
            lines += ["", "## Parameter importances (fANOVA)", ""] + [f"- {k}: {v:.3f}" for k, v in imp.items()]
        except (RuntimeError, ValueError) as err:  # e.g. every trial the same
            lines += ["", f"(importances not available: {err})"]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .cli import debug_requested, quiet_known_noise, _show_info

    debug, argv = debug_requested(list(sys.argv[1:] if argv is None else argv))
    p = argparse.ArgumentParser(prog="tune.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the config to tune (configs/*.yaml)")
    p.add_argument("--space", help="search space YAML (default: configs/search/<config name>.yaml)")
    p.add_argument("--n-trials", type=int, default=30, help="finished trials the study should hold")
    p.add_argument("--out", help="folder for trials, the SQLite study, best.yaml and report.md "
                                 "(default: runs/tune/<config name>)")
    p.add_argument("--storage", help="an Optuna storage URL to share a study (default: SQLite in --out)")
    p.add_argument("--study-name", help="default: the config's name")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampler")
    p.add_argument("--pruner", default="median", choices=["median", "none"])
    args, extra = p.parse_known_args(argv)
    name = Path(args.config).stem
    space = args.space or str(Path(args.config).parent / "search" / f"{name}.yaml")
    _show_info()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        if args.n_trials < 1:
            raise ConfigError(f"--n-trials must be at least 1, not {args.n_trials}.")
        with quiet_known_noise():
            study = run_study(args.config, space, args.n_trials, args.out or f"runs/tune/{name}", args.storage,
                              args.study_name, args.timeout, args.seed, extra, args.pruner)
    except UserError as err:
        return report(err, debug)
    best = study.best_trial
    print(f"best trial {best.number}: validation NDCG@10 {best.value:.4f} with {best.params}; "
          f"config in {Path(args.out or f'runs/tune/{name}') / 'best.yaml'}")
    return 0
