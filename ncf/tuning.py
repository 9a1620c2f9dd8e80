"""Hyperparameter search on the real Trainer with Optuna: ``python tune.py --config configs/neumf.yaml``.

Each trial trains one config through the same LightningCLI as ``train.py`` with the trial's values on
top (``--model.lr``, ``--data.batch_size`` ...), in its own folder, and scores it by its **best validation
NDCG@10** (never a test metric). Hopeless trials are pruned after each validation (Optuna's median
pruner by default). The study lives in Optuna's storage, a SQLite file by default, so a killed study
resumes where it stopped and several processes or machines can share one study through a database URL.
At the end the best trial is written out as a ready config (``best.yaml``) with a short report
(``report.md``: the best trials and the parameters' importances).

The search space is a YAML file of dotted CLI keys (``configs/search/*.yaml``, read by :mod:`ncf.search_space`).

A config that starts from pretrained GMF and MLP checkpoints (``pretrained_gmf`` / ``pretrained_mlp``)
reuses those checkpoints in every trial and tunes the NeuMF stage alone; tune GMF and MLP with their own
studies first to tune the whole pipeline.

Pruning uses a small callback of this project rather than ``optuna-integration``'s, which is written for
the ``lightning`` package (a different copy of Lightning from ``pytorch_lightning``, whose callbacks this
Trainer does not accept).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import hashlib
import logging
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import pytorch_lightning as pl
import yaml

from .errors import ConfigError, UserError, report
from .files import atomic_write_text
from .search_space import flatten, get_dotted, load_space, markers, set_dotted, suggest, tokens
from .run import NOT_DEFINING as RUN_NOT_DEFINING, plain as as_stored
from .run_folders import fill_placeholders, run_folder

if TYPE_CHECKING:
    import optuna

__all__ = ["PruneOnValidation", "Plan", "train_trial", "run_study", "TrialFailed", "main"]

log = logging.getLogger("ncf")
# Networks that read the user's latest items: validating on a random past item hides what they add.
READS_ORDER = ("ncf.recent.RecentMF", "ncf.transitions.TransitionMF")
PRETRAINED = ("pretrained_gmf", "pretrained_mlp")
STUDY_KEY = "ncf_tune"  # the study's user attribute recording what defines it
_MISSING = object()


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
    for key in PRETRAINED:
        if model.get(key):
            path = Path(model[key])
            if not path.is_file():
                raise ConfigError(f"{path}: the pretrained checkpoint this config starts from is missing; train "
                                  f"it first (the pretrained NeuMF reuses its GMF and MLP in every trial).")
            model[key] = str(path.resolve())


def _cli(args: Sequence[str], parse_only: bool = False):
    """train.py's LightningCLI without a subcommand; ``parse_only``: the parsed config alone (nothing is
    instantiated, no data read). Errors a user can fix are raised, not printed."""
    from .cli import NCFCLI
    from .console import quiet_known_noise
    from .data import NCFDataModule
    from .module import NCFModule

    class _ParseOnly(NCFCLI):
        def before_instantiate_classes(self) -> None: ...
        def instantiate_classes(self) -> None: ...
        def after_instantiate_classes(self) -> None: ...

    with quiet_known_noise():
        return (_ParseOnly if parse_only else NCFCLI)(NCFModule, NCFDataModule, seed_everything_default=42,
                                                      args=list(args), run=False, save_config_kwargs={"overwrite": True})


def train_trial(cfg: dict, folder: Path, callbacks: Sequence[pl.Callback] = ()) -> float:
    """Train ``cfg`` (a train.py config) as a trial does, in ``folder`` (its checkpoints and logs moved
    there, see :func:`_trial_config`); its best validation score (the first ModelCheckpoint's)."""
    cfg = _trial_config(cfg, folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))
    cli = _cli(["--config", str(path), "--trainer.enable_progress_bar", "false",
                "--trainer.enable_model_summary", "false"])
    cli.trainer.callbacks.extend(callbacks)
    cli.trainer.fit(cli.model, cli.datamodule)
    best = cli.trainer.checkpoint_callback.best_model_score
    if best is None:
        raise ConfigError("The config's first ModelCheckpoint must monitor a validation metric (val_ndcg10).")
    return float(best)


# -- what a study trains: the config with the command line folded in --------------------------------------
# Settings that change where data is read from or what is shown, never what a trial trains (the data itself
# is compared by the content of its split; pretrained checkpoints by their content).
_NOT_DEFINING = {f"data.{k}" for k in RUN_NOT_DEFINING} | {f"model.{k}" for k in PRETRAINED} | {"pretrained_sha256"} | {
    "trainer.enable_progress_bar", "trainer.enable_model_summary"}


def _near(key: str, options) -> list[str]:
    """The option ``key`` was most likely meant to be: same section, closest last part (``model.lrr``: ``model.lr``)."""
    last = lambda k: k.rsplit(".", 1)[-1]  # noqa: E731
    ratio = lambda a, b: difflib.SequenceMatcher(None, a, b).ratio()  # noqa: E731
    scored = [(ratio(last(key), last(k)), ratio(key, k), k) for k in options if k.split(".")[0] == key.split(".")[0]]
    return [max(scored)[2]] if scored and max(scored)[0] >= 0.75 else []


class Plan:
    """What the trials of a study train, resolved once from the config, the command line and the space.

    ``config``: the user's config with every option of the command line folded in (paths as the config
    names them); a trial sets the sampled values on top, ``best.yaml`` is it with the best trial's values.
    ``defines``: what the study's scores depend on, recorded in the study and compared when it is continued.
    """

    def __init__(self, config: str, space_path: str, extra: Sequence[str] = ()):
        self.space_path, self.space = space_path, load_space(space_path)
        given = yaml.safe_load(Path(config).read_text()) or {}
        cli = _cli(["--config", config], parse_only=True)
        dump = lambda ns: yaml.safe_load(cli.parser.dump(ns, skip_unset=False, skip_validation=True))  # noqa: E731
        plain = flatten(dump(cli.config))
        for key in self.space:
            if key not in plain:
                near = _near(key, plain)
                raise ConfigError(f"{space_path}: {key!r} is not a train.py option"
                                  f"{f' (did you mean {near[0]!r}?)' if near else ''}; python train.py fit "
                                  f"--config {config} --print_config lists them.")
        # The command line parsed twice, after each searched key is set to one of two values: a key that
        # comes out the same both times was set by the command line, which would override the sampled value.
        a, b = markers(self.space)
        got_a = dump(cli.parser.parse_args(["--config", config, *tokens(a), *extra]))
        got_b = dump(cli.parser.parse_args(["--config", config, *tokens(b), *extra])) if a != b else got_a
        flat_a, flat_b = flatten(got_a), flatten(got_b)
        for key in self.space:
            if flat_a.get(key) != a[key] or flat_b.get(key) != b[key]:
                spellings = (f"--{key}", f"--{key.replace('.init_args.', '.')}")  # model.network.init_args.x, model.network.x
                named = next((tok.split("=")[0] for tok in extra if tok.split("=")[0] in spellings), None)
                raise ConfigError(f"{named if named else f'{key} (set by {shlex.join(extra)})'} is searched by "
                                  f"{space_path}; drop it from the command line or remove the key from the search space.")
        self.overrides = {k: v for k, v in flat_a.items() if k not in self.space and plain.get(k, _MISSING) != v}
        self.config = copy.deepcopy(given)
        for key, value in self.overrides.items():
            node, parts = self.config, key.split(".")
            for i, part in enumerate(parts[:-1]):  # a part the config writes as a scalar (logger: false) is replaced whole
                if part in node and not isinstance(node[part], dict):
                    node[part] = get_dotted(got_a, ".".join(parts[: i + 1]))
                    break
                node = node.setdefault(part, {})
            else:
                node[parts[-1]] = value
        self.data_args = dict(got_a.get("data") or {})
        # What the trials train: the config's "{runs}/{name}" placeholders filled as train.py fills them (the
        # pretrained GMF and MLP of this dataset); ``config`` keeps them for best.yaml.
        self.resolved = fill_placeholders(copy.deepcopy(self.config), self.data_args.get("dataset"),
                                          got_a.get("run_name") or Path(config).stem)
        whole = flatten(_trial_config(got_a, Path("trial")))
        self.defines = as_stored({"config": {k: v for k, v in whole.items() if k not in self.space and k not in _NOT_DEFINING},
                               "space": self.space, "dataset": self.data_args.get("dataset")})

    def identify(self) -> None:
        """Complete ``defines`` with the content of what the trials read: the split (its rows, held-out items
        and candidates, as train.py's run identity) and the pretrained checkpoints. Reads the data once."""
        from .data import NCFDataModule

        dm = NCFDataModule(**self.data_args)
        dm.prepare_data()
        dm.setup("fit")
        self.defines["data_sha256"] = dm.data_fingerprint()
        for key in PRETRAINED:
            if get_dotted(self.resolved, f"model.{key}"):
                path = Path(self.resolved["model"][key])
                if not path.is_file():
                    raise ConfigError(f"model.{key}: {path} not found: the pretrained checkpoint this config starts "
                                      f"from; train it first on the same data (the pretrained NeuMF reuses its GMF "
                                      f"and MLP in every trial).")
                self.defines[key + "_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()



def _differences(saved: dict, now: dict) -> list[str]:
    def short(v) -> str:
        text = repr(v)
        return text if len(text) <= 40 else text[:37] + "..."

    out = []
    if saved.get("data_sha256") != now.get("data_sha256"):
        a, b = saved.get("dataset"), now.get("dataset")
        out.append(f"data.dataset {a!r} there, {b!r} now" if a != b else f"the content of {b!r} (or its split)")
    for part, label in (("space", "search space "), ("config", "")):
        x, y = saved.get(part) or {}, now.get(part) or {}
        out += [f"{label}{k} {short(x.get(k))} there, {short(y.get(k))} now" for k in sorted(set(x) | set(y))
                if x.get(k) != y.get(k)]
    out += [f"the checkpoint model.{k} names" for k in PRETRAINED if saved.get(k + "_sha256") != now.get(k + "_sha256")]
    return out


def _check_identity(study, plan: Plan, where: str) -> None:
    """Record what defines a new study; refuse to continue one that was defined otherwise."""
    saved = study.user_attrs.get(STUDY_KEY)
    if saved is None and study.trials:
        raise ConfigError(f"{where} holds study {study.study_name!r} without a record of what it was run with (an "
                          f"older tune.py), so it cannot be continued safely; give --out another folder.")
    if saved is None:
        study.set_user_attr(STUDY_KEY, plan.defines)
        return
    diff = _differences(saved, plan.defines)
    if diff:
        raise ConfigError(f"{where} holds study {study.study_name!r} run with other settings: {'; '.join(diff[:3])}"
                          f"{' ...' if len(diff) > 3 else ''}. Continue it with the same config, options, data and "
                          f"search space, or give --out another folder.")


class TrialFailed(Exception):
    """A trial raised: the message names the trial and its config; the cause is the trial's exception."""


class StudyInterrupted(Exception):
    """The study was stopped by Ctrl-C or SIGTERM; the message says what happens when it is run again."""


class TrialInterrupted(KeyboardInterrupt):
    """A trial stopped by Ctrl-C or SIGTERM (through Lightning's graceful shutdown): it is failed and its
    settings queued again, so that the study retries them when it resumes, as after a kill."""

    def __init__(self, number: int):
        super().__init__(number)
        self.number = number


def _interrupted(err: BaseException) -> bool:
    """Whether ``err`` is Ctrl-C or SIGTERM, as Lightning's graceful shutdown leaves them (``exit(1)`` after a
    KeyboardInterrupt, or its SIGTERMException), not a failure of the trial."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    return isinstance(err, (KeyboardInterrupt, SIGTERMException)) or (
        isinstance(err, SystemExit) and isinstance(err.__context__, KeyboardInterrupt))


@contextlib.contextmanager
def _quiet_failed_trials():
    """Optuna logs a failing trial with its traceback before the study re-raises the error; the error is
    reported once, by the caller (``tune.py``: one line, ``--debug`` the traceback)."""
    def drop(record: logging.LogRecord) -> bool:
        return not (record.exc_info or str(record.msg).endswith("failed with value None."))

    handlers = list(logging.getLogger("optuna").handlers)  # Optuna's own logger writes through these
    for handler in handlers:
        handler.addFilter(drop)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(drop)


def run_study(config: str, space_path: str, n_trials: int, out: str, storage: Optional[str] = None,
              study_name: Optional[str] = None, timeout: Optional[float] = None, seed: int = 0,
              extra: Sequence[str] = (), pruner="median") -> "optuna.Study":
    """Run (or resume) a study until it holds ``n_trials`` finished trials (complete or pruned).
    ``extra``: train.py options, folded into the config every trial trains (and into ``best.yaml``); one
    that sets a searched key is refused. A study is continued only with the settings it was started with.
    ``pruner``: ``median``, ``none`` or an Optuna pruner."""
    import optuna
    import warnings

    from optuna.storages import RDBStorage

    plan = Plan(config, space_path, extra)
    base = copy.deepcopy(plan.resolved)
    _absolute_paths(base)  # for the trials; best.yaml keeps the checkpoints' paths as the config gives them
    from .cli import validation_never_runs

    trainer = base.get("trainer") or {}
    never = validation_never_runs(trainer.get("max_epochs"), trainer.get("check_val_every_n_epoch"),
                                  trainer.get("limit_val_batches"))
    if never:  # before the study is made: each would train and end without a score
        raise ConfigError(f"{never}, so a trial would end without a validation score to compare; validate at "
                          f"least once.")
    plan.identify()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"
    name = study_name or Path(config).stem
    where = str(out_dir) if storage is None else "--storage"  # never its URL: it may hold a password
    # A trial whose process was killed stops beating and is marked failed (and retried once) on resume.
    with warnings.catch_warnings():  # Optuna >= 4.9 names the callback RetryHeartbeatStaleTrialCallback
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
            retry = {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
        else:
            retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)}
        rdb = RDBStorage(url, heartbeat_interval=30, grace_period=90, **retry)
        retry_once = next(iter(retry.values()))
    others = [n for n in optuna.study.get_all_study_names(rdb) if n != name]
    if storage is None and others:  # trial folders, best.yaml and report.md are the folder's: one study each
        raise ConfigError(f"{out_dir} holds study {others[0]!r}, not {name!r}; give --out another folder.")
    pruners = {"median": optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
               "none": optuna.pruners.NopPruner()}
    study = optuna.create_study(study_name=name, storage=rdb, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=pruners[pruner] if isinstance(pruner, str) else pruner)
    _check_identity(study, plan, where)
    # The sampler's random draws continue from the trials the study holds: seeded alike in each sitting, a
    # resumed study would draw its first trials' settings again. A fresh study is seeded with `seed` itself.
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    for number in _fail_dead_trials(study):  # killed on this machine: failed and retried at once
        log.warning(f"trial {number} was left running by a process that no longer runs on this machine (killed); "
                    f"marked failed, " + ("its settings queued again." if _retry(retry_once, study, number) else
                                          "not queued again (these settings were retried once already)."))
    if plan.overrides:
        log.info("every trial trains with " + ", ".join(f"{k}={v}" for k, v in plan.overrides.items()
                                                        if not isinstance(v, (list, dict))))
    data = base.get("data") or {}
    network = ((base.get("model") or {}).get("network") or {})
    network = network.get("class_path") if isinstance(network, dict) else None
    if (data.get("recent_positives") or network in READS_ORDER) and data.get("validation_item") != "previous":
        log.warning(f"{Path(config).name} reads the order of each user's interactions, which a random past "
                    f"validation item does not reward: add --data.validation_item previous to tune it on the item "
                    f"before the test item (README, Tuning).")
    if (model := base.get("model") or {}).get("pretrained_gmf"):
        log.info(f"tuning the NeuMF stage on the pretrained {model['pretrained_gmf']} and {model['pretrained_mlp']} "
                 f"(reused by every trial; tune GMF and MLP with their own studies first)")

    def objective(trial) -> float:
        params = suggest(trial, plan.space)
        cfg = copy.deepcopy(base)
        for key, value in params.items():
            set_dotted(cfg, key, value)
        folder = out_dir / f"trial_{trial.number}"
        trial.set_user_attr("process", _this_process())  # a resumed study tells a killed trial from a running one
        try:
            return train_trial(cfg, folder, [PruneOnValidation(trial)])
        except optuna.TrialPruned:
            raise
        except BaseException as err:
            if _interrupted(err):
                raise TrialInterrupted(trial.number) from err
            if not isinstance(err, (Exception, SystemExit)):
                raise
            what = err if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
            raise TrialFailed(f"trial {trial.number} failed ({folder / 'config.yaml'}): {what}") from err

    done = optuna.study.MaxTrialsCallback(n_trials, states=(optuna.trial.TrialState.COMPLETE,
                                                            optuna.trial.TrialState.PRUNED))
    finished = [t for t in study.trials if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL]
    if len(finished) < n_trials:
        with _quiet_failed_trials():
            try:
                study.optimize(objective, n_trials=None, timeout=timeout, callbacks=[done], catch=())
            except TrialInterrupted as stop:  # Optuna has failed it: queue its settings again, once
                again = _retry(retry_once, study, stop.number)
                raise StudyInterrupted(f"interrupted during trial {stop.number}; "
                                       f"{'its settings are queued, and ' if again else ''}the study resumes where "
                                       f"it stopped when run again with the same command.") from None
    write_best(study, plan.config, out_dir, plan.overrides,
               {k: plan.defines[k + "_sha256"] for k in PRETRAINED if plan.defines.get(k + "_sha256")})
    return study


def _this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _gone(process: object) -> bool:
    """Whether ``process`` (``host:pid``, as :func:`_this_process` wrote it) ran on this machine and runs no more."""
    host, _, pid = str(process).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process: alive
        return False
    return False


def _fail_dead_trials(study) -> list[int]:
    """Mark failed the running trials whose process on this machine is gone, at once (Optuna's heartbeat does
    so only 90 s after the last beat, and never for a trial killed before its first); returns their numbers.
    Trials of other machines (a shared ``--storage``) are left to the heartbeat."""
    import optuna

    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if "process" in t.user_attrs and _gone(t.user_attrs["process"]):
            try:
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            except (RuntimeError, ValueError):  # another process finished it meanwhile
                continue
            failed.append(t.number)
    return failed


def _retry(callback, study, number: int) -> bool:
    """Enqueue a failed trial's settings again through Optuna's retry callback (at most once per trial)."""
    before = len(study.get_trials(deepcopy=False))
    callback(study, study.trials[number])
    return len(study.get_trials(deepcopy=False)) > before


def write_best(study, base: dict, out_dir: Path, overrides: Optional[dict] = None,
               pretrained: Optional[dict] = None) -> None:
    """``best.yaml`` (the config every trial trained, ``base``, with the best trial's values: ``train.py fit
    --config best.yaml`` trains that trial again) and ``report.md``. ``pretrained``: the SHA-256 of the GMF and
    MLP checkpoints the trials started from, kept in ``best.yaml`` (``pretrained_sha256``) so that training it
    on other ones (a GMF retrained since) is refused instead of silently missing the trial's score."""
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ConfigError("No trial of the study completed; see the log above for why.")
    best = study.best_trial
    cfg = copy.deepcopy(base)
    for key, value in best.params.items():
        set_dotted(cfg, key, value)
    data = cfg.get("data") or {}
    for key in ("dataset", "item_names", "user_names"):  # a relative path would name another file elsewhere
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute() and Path(data[key]).exists():
            data[key] = str(Path(data[key]).resolve())
    if pretrained:
        cfg["pretrained_sha256"] = dict(pretrained)
    if not cfg.get("run_name"):  # trained from best.yaml, the run goes to runs/<dataset>/<study folder>_tuned
        cfg["run_name"] = "".join(c if c.isalnum() or c in "-_." else "_" for c in out_dir.name).strip(".") + "_tuned"
    atomic_write_text(out_dir / "best.yaml",
        f"# Best trial {best.number} of study {study.study_name!r}: best validation NDCG@10 {best.value:.4f}\n"
        f"# The config every trial trained, with this trial's values: python train.py fit --config best.yaml\n"
        + yaml.safe_dump(cfg, sort_keys=False))
    failed = [t.number for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    # the trial a retry repeats, as Optuna's RetryFailedTrialCallback records it (its reader warns as experimental)
    again = {t.number: t.system_attrs.get("failed_trial") for t in study.trials}
    retried = set(again.values()) & set(failed)
    lines = [f"# Study {study.study_name}", "",
             f"{len(complete)} complete, {sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)} "
             f"pruned, {len(failed)} failed trials"
             + (f" ({len(retried)} of them interrupted or killed, their settings tried again as trial"
                f"{'s' * (len(retried) > 1)} "
                + ", ".join(str(n) for n, of in again.items() if of in retried) + ")"
                if retried else "")
             + (f", {running} still running (in another process, or killed on another machine: failed and retried "
                f"once its heartbeat stops)" if (running := sum(t.state == optuna.trial.TrialState.RUNNING
                                                                for t in study.trials)) else "") + ".", ""]
    if overrides:
        lines += ["Every trial trained with these options beside the config's: "
                  + ", ".join(f"`{k}={v}`" for k, v in overrides.items()) + ".", ""]
    lines += [
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
    atomic_write_text(out_dir / "report.md", "\n".join(lines) + "\n")


def default_out(config: str, extra: Sequence[str] = ()) -> str:
    """A study's folder by default: ``runs/<dataset>/tune/<config name>``, beside the dataset's runs."""
    dataset = _cli(["--config", config, *extra], parse_only=True).config["data"]["dataset"]
    return f"{run_folder(dataset, 'tune')}/{Path(config).stem}"


def missing_space(config: str, space: str) -> str:
    """What to do when a config has no search space beside it: name one with --space, the project's own
    (one per shipped config), the one whose config trains the same network first."""
    shipped = Path(__file__).resolve().parents[1] / "configs"
    names = sorted(f.name for f in (shipped / "search").glob("*.yaml"))

    def network(path: Path):
        try:
            return ((yaml.safe_load(path.read_text()) or {}).get("model") or {}).get("network", {}).get("class_path")
        except (OSError, yaml.YAMLError, AttributeError):
            return None

    mine = network(Path(config))
    same = [n for n in names if mine is not None and network(shipped / n) == mine]
    example = shipped / "search" / (same[0] if same else names[0]) if names else None
    hint = f" (e.g. --space {example})" if example else ""
    listed = f"; the project's are in {shipped / 'search'}, one per shipped config: {', '.join(names)}" if names else ""
    return f"{config} has no search space: {space} does not exist. Name one with --space FILE{hint}{listed}."


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .console import debug_requested, quiet_known_noise, show_info

    debug, argv = debug_requested(list(sys.argv[1:] if argv is None else argv))
    p = argparse.ArgumentParser(prog="tune.py", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--config", required=True, action="append",
                   help="the config to tune (configs/*.yaml); more --config files are layered on it, as train.py does")
    p.add_argument("--space", help="search space YAML (default: configs/search/<config name>.yaml)")
    p.add_argument("--n-trials", type=int, default=30, help="finished trials the study should hold")
    p.add_argument("--out", help="folder for trials, the SQLite study, best.yaml and report.md "
                                 "(default: runs/<dataset>/tune/<config name>)")
    p.add_argument("--storage", help="an Optuna storage URL to share a study (default: SQLite in --out)")
    p.add_argument("--study-name", help="default: the config's name")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampler")
    p.add_argument("--pruner", default="median", choices=["median", "none"])
    args, extra = p.parse_known_args(argv)
    config, *more = args.config  # the study is named after the first; the others are options like the rest
    extra = [*(a for c in more for a in ("--config", c)), *extra]
    name = Path(config).stem
    # the config's own search/<name>.yaml beside it, else the project's configs/search/<name>.yaml
    found = [str(c) for c in (Path(config).parent / "search" / f"{name}.yaml",
                              Path("configs") / "search" / f"{name}.yaml") if c.is_file()]
    space = args.space or (found[0] if found else str(Path(config).parent / "search" / f"{name}.yaml"))
    show_info()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        if args.n_trials < 1:
            raise ConfigError(f"--n-trials must be at least 1, not {args.n_trials}.")
        if args.space is None and not Path(space).is_file():
            raise ConfigError(missing_space(config, space))
        with quiet_known_noise():
            out = args.out or default_out(config, extra)
            study = run_study(config, space, args.n_trials, out, args.storage,
                              args.study_name, args.timeout, args.seed, extra, args.pruner)
    except UserError as err:
        return report(err, debug)
    except StudyInterrupted as err:
        print(f"tune.py: {err}", file=sys.stderr)
        return 130  # as a shell reports Ctrl-C
    except TrialFailed as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        # bad input inside a trial (a config, option, data or search space a user can fix) is 2; any other failure 1
        return 2 if isinstance(err.__cause__, (UserError, SystemExit)) else 1
    best = study.best_trial
    print(f"best trial {best.number}: validation NDCG@10 {best.value:.4f} with {best.params}; "
          f"config in {Path(out) / 'best.yaml'}")
    return 0
