"""``python train.py fit|validate|test|predict --config configs/neumf.yaml``: a LightningCLI over NCFModule
and NCFDataModule.

Errors a user can fix (data, configuration, checkpoints) print one line and exit with code 2; ``--debug``
(or ``NCF_DEBUG=1``) shows the traceback instead.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from argparse import ArgumentError
from pathlib import Path
from typing import Optional

import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.cli import LightningCLI

from .cli_errors import argument_error_line, closest, config_files, parser_keys
from .console import debug_requested, quiet_known_noise, show_info
from .data import NCFDataModule
from .errors import ConfigError, DataError, UserError, report
from .module import NCFModule
from .predict import RecommendationWriter
from .run import RUN_KEY, checkpoint_folders, data_differences, id_differences, same_data
from .run_folders import RUNS_ROOT, check_run_name, dataset_label, fill_placeholders

__all__ = ["NCFCLI", "main"]

class NCFCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # Catalogue sizes come from the data, never from the user.
        parser.link_arguments("data.num_users", "model.n_users", apply_on="instantiate")
        parser.link_arguments("data.num_items", "model.n_items", apply_on="instantiate")
        # These models are small: at MovieLens sizes a step is too short for intra-op threads to pay, and
        # threads slow down badly when other work holds the cores (BENCHMARKS.md, Threads). None: torch's default.
        parser.add_argument("--torch_threads", type=Optional[int], default=1,
                            help="torch.set_num_threads for CPU work (None leaves torch's default)")
        # L2 drives unused embedding columns towards zero, into float32's denormal range, where x86 CPUs
        # compute far slower; flushing them to zero keeps a trained model's steps fast.
        parser.add_argument("--flush_denormal", type=bool, default=True,
                            help="torch.set_flush_denormal on CPU: treat denormal floats as zero (much faster)")
        # Configs write to "{runs}/{name}/...": runs/<dataset>/<run name>, so runs of other data never mix.
        parser.add_argument("--run_name", type=Optional[str], default=None,
                            help="the run's folder name under runs/<dataset>/ (default: the name of the config file "
                                 "that sets model)")
        # best.yaml of a tuned pretrained NeuMF: the GMF and MLP checkpoints its trials started from
        parser.add_argument("--pretrained_sha256", type=Optional[dict], default=None,
                            help="{pretrained_gmf: SHA-256, pretrained_mlp: SHA-256} the checkpoints must have")

    def _set_seed(self) -> None:
        """``--seed_everything true`` draws a seed (Lightning's own ``seed_everything()`` without one gives 0,
        the same seed every time) and records it in the run's config.yaml; DDP's other ranks, started by
        Lightning with ``PL_GLOBAL_SEED`` set to rank 0's seed, take that."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("seed_everything") is True and "LOCAL_RANK" in os.environ:
            if "PL_GLOBAL_SEED" not in os.environ:  # every rank started by a launcher (torchrun, a cluster)
                raise ConfigError("--seed_everything true: every process would draw a seed of its own; give the "
                                  "same number to all of them (e.g. --seed_everything 1234)")
        elif config.get("seed_everything") is True:
            import random

            from lightning_fabric.utilities.seed import max_seed_value

            config["seed_everything"] = random.SystemRandom().randint(0, max_seed_value)
            self._drew_seed = True  # a resumed run takes its own seed back (before_fit)
            said = (f"--seed_everything true: drew the seed {config['seed_everything']} (written to the run's "
                    f"config.yaml: pass it to repeat this run)")
            if self.subcommand == "fit" and config.get("ckpt_path"):
                self._drew_said = said  # said by before_fit unless the run resumes with its own seed
            else:
                logging.getLogger("ncf").info(said)
        super()._set_seed()

    def _run_subcommand(self, subcommand: str) -> None:
        """A command refused or failed before it logged anything leaves no ``version_N/`` folder with only its
        config behind (the next run would be numbered after it)."""
        fresh = [_new_part(d) for d in _log_dirs(self.trainer) if not os.path.exists(d)]
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            for d, top in fresh:
                _remove_if_unused(d, top)
            raise

    def instantiate_trainer(self, **kwargs):
        """Progress and TensorBoard reporting (:mod:`ncf.progress`): with stderr not a terminal (a log file, a
        pipe) and ``--trainer.enable_progress_bar`` not given, one line per epoch replaces Lightning's bar, whose
        redraws would fill a log; the bar is still there with ``--trainer.enable_progress_bar true``. A
        TensorBoard logger gets the best validation NDCG@10 as its ``hp_metric``."""
        from .progress import BestMetricToTensorBoard, EpochLines

        config = self.config_init.get(str(self.subcommand), self.config_init) if self.subcommand else self.config_init
        trainer = config.get("trainer") or {}
        callbacks = trainer.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        callbacks.append(BestMetricToTensorBoard())
        if trainer.get("enable_progress_bar") is None and not _is_terminal(sys.stderr):
            callbacks.append(EpochLines())
        try:
            return super().instantiate_trainer(**{"callbacks": callbacks, **kwargs})
        except RuntimeError as err:
            kind = re.match(r"Found more than one stateful callback of type `(\w+)`", str(err))
            if not kind:
                raise
            raise ConfigError(f"{kind[1]} is given more than once (trainer.callbacks lists it twice, e.g. from the config "
                              f"and --trainer.callbacks+=); give it once: one {kind[1]} takes all its settings "
                              f"(an AttributionCallback records every method in its methods list).") from err
        except (ValueError, TypeError, ImportError, MisconfigurationException) as err:
            # the Trainer refusing one of its settings (a strategy, devices, an accelerator this machine lacks)
            raise ConfigError(f"{str(err).rstrip('. !')}{_trainer_hint(trainer)}") from err

    def init_parser(self, for_subcommand: Optional[str] = None, **kwargs):
        """The parser of a subcommand (named in :func:`main`'s ``parser_kwargs``); ``predict``'s also takes
        the recommendations file: ``--recommend.output``, ``--recommend.top_n``, ..."""
        parser = super().init_parser(**kwargs)
        if for_subcommand == "predict":
            parser.add_lightning_class_args(RecommendationWriter, "recommend")
            # in the run's folder, so predictions of two datasets or runs never overwrite each other
            parser.set_defaults({"recommend.output": DEFAULT_RECOMMENDATIONS})
        if for_subcommand is not None:
            self.__dict__.setdefault("_ncf_parsers", {})[for_subcommand] = parser  # its keys, for "did you mean"
        return parser

    def parse_arguments(self, parser, args) -> None:
        """Parse as LightningCLI does (its parsers raise instead of printing usage: ``exit_on_error``
        False, set by :func:`main`); a key that does not exist, a bad value or an unknown subcommand
        becomes one :class:`ConfigError` line naming the closest valid key and, for a key in a YAML config,
        its file and line."""
        self._config_files = config_files([str(a) for a in (sys.argv[1:] if args is None else args)])
        argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
        self._typed_users = _typed_option(argv, "--recommend.users")
        self._typed_pairs = _typed_option(argv, "--trainer.callbacks.pairs", "--trainer.callbacks.init_args.pairs")
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
            subs = list(self.subcommands())
            sub = next((a for a in argv if a in subs), None)
            keys = parser_keys(self.__dict__.get("_ncf_parsers", {}).get(sub, parser))
            raise ConfigError(argument_error_line(str(err), argv, keys, subs, sub)) from err

    def _parse_ckpt_path(self) -> None:
        """A checkpoint file given with ``--ckpt_path`` is checked before anything is read from it (ours,
        whole, no objects unpickled, weights matching their hash). For test/validate/predict its architecture
        fills the model settings, as Lightning does; paths in it are never taken. A resumed fit is defined
        by its config and command line; :mod:`ncf.run` refuses a checkpoint of other settings."""
        from .checkpoint import CheckpointError, read_checkpoint, warn_if_source_changed
        from .contract import network_class

        sub = self.config.get("subcommand")
        path = self.config[sub].get("ckpt_path") if sub else None
        if not path or not os.path.isfile(str(path)):
            return  # "last" and "best" are resolved, and checked, when the run starts
        ckpt = read_checkpoint(path)
        with contextlib.suppress(ConfigError, KeyError, TypeError, AttributeError):  # a class it cannot name: said later
            warn_if_source_changed(path, ckpt, network_class(ckpt["hyper_parameters"]["network"]["class_path"]))
        if sub == "fit":
            return
        self._ckpt_read = (str(path), ckpt["hyper_parameters"], ckpt.get("NCFDataModule") or {}, ckpt.get(RUN_KEY))
        self._ckpt_shapes = {k: torch.empty(v.shape, device="meta") for k, v in ckpt["state_dict"].items()
                             if isinstance(v, torch.Tensor)}
        hparams = {k: v for k, v in ckpt["hyper_parameters"].items()
                   if k not in ("pretrained_gmf", "pretrained_mlp", "_instantiator", "_class_path")}
        given = getattr((self.config[sub].get("model") or {}).get("network"), "class_path", None)
        theirs = (hparams.get("network") or {}).get("class_path")
        other = _other_class(str(given), str(theirs)) if given and theirs else None
        if other:  # the checkpoint names its network; say so
            logging.getLogger("ncf").info(f"{path} holds a {theirs.rpartition('.')[2]} ({theirs}): {sub} uses it, "
                                          f"not the config's {other}.")
            # the config's pretrained GMF and MLP files belong to its network; the checkpoint's weights are whole
            hparams.update(pretrained_gmf=None, pretrained_mlp=None)
        elif given and theirs:  # the same network with other settings (e.g. a scoring weight): the checkpoint's
            differ = _other_settings((self.config[sub].get("model") or {}).get("network"), hparams.get("network"))
            if differ:
                logging.getLogger("ncf").info(f"{path} holds a {theirs.rpartition('.')[2]} with {differ[0]}: {sub} "
                                              f"uses the checkpoint's settings, not the config's {differ[1]}.")
        try:
            self.config = self.parser.parse_object({sub: {"model": hparams}}, self.config)
        except (ArgumentError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: its hyperparameters do not describe a model "
                                  f"({' '.join(str(err).split())[:200]}); use a checkpoint written by "
                                  f"`python train.py fit`.") from None

    # -- the checkpoints _parse_ckpt_path could not check: "last" (resolved here, as Lightning will) and a
    # missing file (a one-line error naming it instead of Lightning's traceback)
    def _check_ckpt_path(self) -> Optional[str]:
        """The ``--ckpt_path`` the run will restore (``last`` resolved), or None when it restores nothing."""
        from .checkpoint import read_checkpoint

        path = (self.config_init[self.subcommand] or {}).get("ckpt_path") if self.subcommand else None
        if path == "best" and self.subcommand in EVALUATING:  # Lightning's "best" is a fit's own: the run's best.ckpt
            found = [os.path.join(f, "best.ckpt") for f in checkpoint_folders(self.trainer)
                     if os.path.isfile(os.path.join(f, "best.ckpt"))]
            if not found:
                folders = ", ".join(checkpoint_folders(self.trainer)) or "this run's checkpoint folder"
                raise ConfigError(f"--ckpt_path best: no best.ckpt in {folders}; train the run first, or pass the "
                                  f"checkpoint's path.")
            self.config_init[self.subcommand]["ckpt_path"] = found[0]
            read_checkpoint(found[0])
            return found[0]
        if path is None or path in ("best", "hpc", "registry") or "://" in str(path):
            return path
        if path == "last":
            found = [os.path.join(folder, f) for folder in checkpoint_folders(self.trainer) if os.path.isdir(folder)
                     for f in os.listdir(folder) if f.startswith("last") and f.endswith(".ckpt")]
            if not found:  # a run killed before its first epoch ended, or never started: a fit starts afresh
                if self.trainer.is_global_zero and self.subcommand == "fit":
                    folders = ", ".join(sorted({str(f) for f in checkpoint_folders(self.trainer)})) or "this run"
                    logging.getLogger("ncf").info(f"--ckpt_path last: no checkpoint of this run yet in {folders}; "
                                                  f"training starts from the beginning.")
                return None
            path = max(found, key=os.path.getmtime)
            read_checkpoint(path)
        elif not os.path.isfile(str(path)):
            read_checkpoint(path)  # raises: no such checkpoint file
        return str(path)

    @staticmethod
    def _refuse_weights_only(path: str) -> None:
        """A checkpoint with weights alone (the configs' per-epoch ``epochs/epoch=E.ckpt``) has no optimiser or
        loop state for ``fit`` to continue from: refused before anything moves, with what to do instead."""
        from .checkpoint import read_checkpoint

        if not os.path.isfile(path):
            return
        ckpt = read_checkpoint(path)
        if isinstance(ckpt, dict) and "state_dict" in ckpt and "optimizer_states" not in ckpt:
            raise ConfigError(f"{path} holds weights only (a per-epoch checkpoint), not the optimiser and loop state "
                              f"fit resumes from; resume with --ckpt_path last (or the run's best.ckpt), or explain "
                              f"and test it as it is (explain.py, train.py test --ckpt_path).")

    def _check_ckpt_fits_data(self) -> None:
        """test/validate/predict of a checkpoint on other data than it was trained on: one line naming both,
        before Lightning fails on the weights' shapes."""
        read = getattr(self, "_ckpt_read", None)
        if read is None:
            return
        path, hp, ids, run = read
        dm = self.datamodule
        inter = dm._load()
        if (hp.get("n_users"), hp.get("n_items")) == (inter.n_users, inter.n_items) and (
                not ids.get("user_ids") or list(ids["user_ids"]) == list(inter.user_ids)) and (
                not ids.get("item_ids") or list(ids["item_ids"]) == list(inter.item_ids)):
            saved = (run.get("defines") or {}).get("data_sha256") if isinstance(run, dict) else None
            if self.subcommand == "predict" and isinstance(saved, str):
                dm.setup("fit")
                if saved != dm.data_fingerprint():  # newer interactions are a use: said, not refused
                    diffs = data_differences(run.get("defines") or {}, dict(dm.hparams))
                    logging.getLogger("ncf").warning(
                        f"{path} was trained on other rows of these users and items than --data.dataset {dm.dataset} "
                        f"holds now{' (' + '; '.join(diffs[:4]) + ')' if diffs else ''}: the recommendations leave "
                        f"out the items each user has in this data, not those of the data it was trained on.")
            if self.subcommand in ("test", "validate") and isinstance(saved, str):
                dm.setup("fit")
                if saved != dm.data_fingerprint():
                    # the same ids split otherwise: its held-out items may be training rows of the model
                    diffs = data_differences(run.get("defines") or {}, dict(dm.hparams))
                    why = "; ".join(diffs[:4]) or ("other rows or timestamps, or the same rows in another order: "
                                                   "the split fingerprint covers the order of the training rows")
                    raise DataError(f"{path} was trained on another split of these users and items ({why}"
                                    f") than --data.dataset {dm.dataset} gives now, so its "
                                    f"{self.subcommand} items may be ones it trained on; {self.subcommand} it with "
                                    f"the data and data settings it was trained on.")
            self._check_weights_fit(path)
            return
        trained = ids.get("dataset")
        hint = f" (--data.dataset {trained})" if isinstance(trained, str) and trained else ""
        diffs = data_differences(run.get("defines") or {}, dict(dm.hparams)) if isinstance(run, dict) else []
        settings_differ = bool(diffs)
        for what in ("user", "item"):  # the same counts, other ids: say which
            there, now = list(ids.get(f"{what}_ids") or []), list(getattr(inter, f"{what}_ids"))
            k = next((k for k, (a, b) in enumerate(zip(there, now)) if str(a) != str(b)), None)
            other_ids = id_differences(what, there, now) if there else []
            if other_ids and not diffs:  # no setting differs: the data itself has other ids
                diffs.insert(0, "; ".join(other_ids))
            elif there and len(there) == len(now) and k is not None:
                diffs.insert(0, f"{what} ids ({what} index {k} is id {there[k]!r} there, {now[k]!r} now)")
        fix = f"{self.subcommand} it with the data it was trained on{hint} and the same data settings"
        if isinstance(trained, str) and same_data(trained, str(dm.dataset)) and not settings_differ:  # the file grew (or shrank) since: the path alone is no fix
            fix = (f"{dm.dataset} changed since the model was trained on it; train again on it (train.py fit), or "
                   f"{self.subcommand} with a copy of the rows it was trained on")
        if diffs:  # e.g. the same file, other users or items kept: the settings are what to change
            fix += f"; these differ: {'; '.join(diffs[:4])}"
        raise DataError(f"{path} was trained on other data ({hp.get('n_users')} users, {hp.get('n_items')} items"
                        f"{', ' + repr(trained) if trained else ''}) than --data.dataset {dm.dataset} gives now "
                        f"({inter.n_users} users, {inter.n_items} items); {fix}.")

    def _check_weights_fit(self, path: str) -> None:
        """The checkpoint's weights fit the network its class builds now: one line where the model's code changed
        since (a layer added or resized), before Lightning fails on the state dict."""
        from .checkpoint import state_mismatch

        found = getattr(self, "_ckpt_shapes", None)
        if not found:
            return
        params = dict(self.model.named_parameters())
        # an empty buffer is filled from the data or the file as the weights load (TransitionMF's counts)
        expected = {k: v for k, v in self.model.state_dict().items() if k in params or v.numel() > 0}
        found = {k: v for k, v in found.items() if k in expected or k not in self.model.state_dict()}
        if set(found) != set(expected) or any(found[k].shape != v.shape for k, v in expected.items()):
            raise ConfigError(f"{path}'s weights do not fit the {type(self.model.net).__name__} its code builds now "
                              f"({state_mismatch(expected, found)}): the model's code changed since the checkpoint "
                              f"was written; {self.subcommand} it with the code it was trained with, or train it again.")

    def before_fit(self) -> None:
        resumed = self._check_ckpt_path()
        if resumed is not None:
            self._refuse_weights_only(resumed)
            if getattr(self, "_drew_seed", False):
                self._seed_of(resumed)
            self.model.resuming = True  # its weights come from the checkpoint: pretrained files are not read
        else:
            if getattr(self, "_drew_said", None):  # --ckpt_path last before any checkpoint: the drawn seed stands
                logging.getLogger("ncf").info(self._drew_said)
            check_pretrained_digests(self.model.hparams, self.config[self.subcommand].get("pretrained_sha256"))
        check_monitors(self.trainer, self.model, self.datamodule)
        if _names_checkpoints(getattr(self, "_config_files", [])) and \
                not any(getattr(cb, "dirpath", None) for cb in self.trainer.checkpoint_callbacks):
            logging.getLogger("ncf").warning(
                "No ModelCheckpoint with a fixed dirpath: this run keeps no best.ckpt or last.ckpt in its run folder, "
                "and --ckpt_path last cannot resume it. A `trainer.callbacks:` list in a later --config replaces the "
                "config's checkpoints; write `trainer.callbacks+:` to add to them.")

    def _seed_of(self, path: str) -> None:
        """``--seed_everything true`` with ``--ckpt_path``: the run goes on with the seed it was started with."""
        from lightning_fabric.utilities.seed import seed_everything

        from .checkpoint import read_checkpoint

        saved = ((read_checkpoint(path).get(RUN_KEY) or {}).get("defines") or {}).get("seed")
        if isinstance(saved, str) and saved.isdigit():
            seed_everything(int(saved), workers=True, verbose=False)
            self.config[self.subcommand]["seed_everything"] = int(saved)
            logging.getLogger("ncf").info(f"--seed_everything true: resuming {path} with the seed it started with, {saved}")

    def before_validate(self) -> None:
        self._needs_trained_model(self._check_ckpt_path())
        self._check_ckpt_fits_data()

    def before_test(self) -> None:
        self._needs_trained_model(self._check_ckpt_path())
        self._check_ckpt_fits_data()

    def _needs_trained_model(self, path: Optional[str]) -> None:
        """``validate`` and ``test`` score a checkpoint: without one they would score an untrained network."""
        if path is not None:
            return
        given = (self.config_init[self.subcommand] or {}).get("ckpt_path")
        folders = sorted({str(f) for f in checkpoint_folders(self.trainer)})
        where = f"no checkpoint of this run yet in {folders[0]}" if given == "last" and folders else "no --ckpt_path"
        example = f"{folders[0]}/best.ckpt" if folders else "runs/ml-100k/gmf/checkpoints/best.ckpt"
        raise ConfigError(f"{self.subcommand} scores a trained model and there is {where}: pass --ckpt_path with a "
                          f"checkpoint (e.g. {example}) or train it first with `python train.py fit`.")

    def before_predict(self) -> None:
        self._check_ckpt_path()
        self._check_ckpt_fits_data()

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        typed = getattr(self, "_typed_users", None)
        if typed is None:  # a config file's list, its ids as written there
            typed = _typed_in_files(getattr(self, "_config_files", []), ("recommend", "users"))
        if self.subcommand == "predict" and typed is not None and (config.get("recommend") or {}).get("users") is not None:
            config["recommend"]["users"] = typed  # ids as typed: YAML reads [010] as 8 and [007] as 7
        self._pairs_as_typed(config)
        owner = checkpoint_run(config.get("ckpt_path")) if self.subcommand in EVALUATING and \
            config.get("run_name") is None else None  # its logs (and predict's list) join the checkpoint's run
        self._list_beside_checkpoint(config, owner)
        fill_placeholders(config, config["data"]["dataset"], run_name(config, self.subcommand),
                          label=owner[0] if owner else None)
        threads = config.get("torch_threads")
        if threads is not None and (isinstance(threads, bool) or threads < 1):
            raise ConfigError(f"--torch_threads must be at least 1 (or null for torch's default), not {threads}.")
        epochs = (config.get("trainer") or {}).get("max_epochs")
        if epochs is not None and epochs < -1:
            raise ConfigError(f"--trainer.max_epochs must be at least 0 (or -1: no limit), not {epochs}.")
        if epochs == 0 and self.subcommand == "fit":  # a new run would move the run's checkpoints aside for none
            raise ConfigError("--trainer.max_epochs 0 trains nothing and would leave the run folder without "
                              "checkpoints; give 1 or more (or -1: no limit).")
        if threads:
            torch.set_num_threads(threads)
        torch.set_flush_denormal(bool(config.get("flush_denormal", True)))

    def _list_beside_checkpoint(self, config, owner) -> None:
        """predict of a checkpoint that lies in no run folder (a tuning trial's, a copied file) with the default
        output: the list goes beside the checkpoint, never into the config's run folder, where it would replace
        that run's own list (and move aside with that run's checkpoints as if that run had written it)."""
        ckpt = config.get("ckpt_path")
        rec = config.get("recommend") or {}
        if self.subcommand != "predict" or owner or config.get("run_name") is not None or not ckpt or \
                str(ckpt) in ("best", "last", "hpc", "registry") or rec.get("output") != DEFAULT_RECOMMENDATIONS:
            return
        path = Path(str(ckpt))
        folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        rec["output"] = str(folder / ("recommendations.csv" if path.parent.name == "checkpoints"
                                      else f"{path.stem}_recommendations.csv"))

    def _pairs_as_typed(self, config) -> None:
        """The attribution callback's listed probe pairs with their ids as typed (``[[1, 010]]`` is item ``010``,
        not YAML's 8; ``0099`` is not 99): from the command line, else from the last config file listing them."""
        import yaml

        for cb in (config.get("trainer") or {}).get("callbacks") or []:
            init = cb.get("init_args") if hasattr(cb, "get") else None
            if not str(cb.get("class_path", "")).endswith("AttributionCallback") or not init or not init.get("pairs"):
                continue
            typed = self._typed_pairs
            if typed is not None:
                with contextlib.suppress(yaml.YAMLError):
                    typed = yaml.load(typed, Loader=yaml.BaseLoader)
            else:
                typed = _callback_pairs_in_files(getattr(self, "_config_files", []))
            if isinstance(typed, list) and len(typed) == len(init["pairs"]) and \
                    all(isinstance(p, list) and len(p) == 2 for p in typed):
                init["pairs"] = [[_typed_id(u), _typed_id(i)] for u, i in typed]


EVALUATING = ("validate", "test", "predict")  # subcommands whose --ckpt_path names the run they report on
DEFAULT_RECOMMENDATIONS = "{runs}/{name}/recommendations.csv"  # predict's list, in the run's folder


def check_pretrained_digests(hparams, expected: Optional[dict]) -> None:
    """Refuse pretrained checkpoints whose content is not what ``expected`` records (``pretrained_sha256`` of a
    tuner's best.yaml): a GMF or MLP retrained since would give another model than the trial's. Names a copy
    that has the recorded content when the run folder keeps one (``superseded/<run id>/``)."""
    import hashlib

    for key, want in (expected or {}).items():
        path = hparams.get(key)
        if not path or not Path(str(path)).is_file():
            continue  # missing files are refused where they are read, with their own message
        path = Path(str(path))
        if hashlib.sha256(path.read_bytes()).hexdigest() == want:
            continue
        run = path.parent.parent  # runs/<dataset>/gmf/checkpoints/best.ckpt -> runs/<dataset>/gmf
        kept = [c for c in sorted(run.glob(f"superseded/*/checkpoints/{path.name}"))
                if hashlib.sha256(c.read_bytes()).hexdigest() == want]
        fix = (f"the one it recorded is {kept[0]}: train with --model.{key} {kept[0]}" if kept else
               f"no copy with the recorded content is left under {run / 'superseded'}; tune again on the current "
               f"checkpoints")
        raise ConfigError(f"--model.{key} {path} is not the checkpoint the config's trials started from (its content "
                          f"differs from pretrained_sha256's: retrained since?); {fix}, or drop pretrained_sha256 to "
                          f"start from the current one.")


def _typed_in_files(files: list[str], keys: tuple[str, ...]):
    """The value at ``keys`` in the last config file that sets it, every scalar as the text written there (YAML's
    base loader: ``[010, 0x1A]`` stays ``['010', '0x1A']``), else None."""
    import yaml

    for f in reversed(files):
        with contextlib.suppress(OSError, UnicodeDecodeError, yaml.YAMLError):
            value = yaml.load(Path(f).read_text(), Loader=yaml.BaseLoader)
            for k in keys:
                value = value[k] if isinstance(value, dict) and k in value else None
            if value is not None:
                return value
    return None


def _typed_option(argv: list[str], *options: str) -> Optional[str]:
    """The text given to any of ``options`` (spellings of one option) on the command line, its last occurrence,
    before any YAML reading.

    >>> _typed_option(["predict", "--recommend.users", "[010]", "--recommend.users=[7]"], "--recommend.users")
    '[7]'
    """
    found = None
    for k, a in enumerate(argv):
        for option in options:
            if a == option and k + 1 < len(argv):
                found = argv[k + 1]
            elif a.startswith(option + "="):
                found = a[len(option) + 1:]
    return found


def _typed_id(text) -> int | str:
    """An id as typed: an integer written as it prints is that integer, anything else the text (``010``, ``0099``).

    >>> [_typed_id(t) for t in ("196", "010", "0099", "0", "u1", "-3")]
    [196, '010', '0099', 0, 'u1', -3]
    """
    text = str(text)
    return int(text) if re.fullmatch(r"-?(0|[1-9][0-9]*)", text) else text


def _callback_pairs_in_files(files: list[str]):
    """``pairs`` of the attribution callback in the last config file that lists them (under ``trainer.callbacks``
    or ``trainer.callbacks+``), every id as the text written there, else None."""
    import yaml

    for f in reversed(files):
        with contextlib.suppress(OSError, UnicodeDecodeError, yaml.YAMLError):
            trainer = (yaml.load(Path(f).read_text(), Loader=yaml.BaseLoader) or {}).get("trainer") or {}
            for key in ("callbacks+", "callbacks"):
                cbs = trainer.get(key) if isinstance(trainer, dict) else None
                for cb in (cbs if isinstance(cbs, list) else [cbs] if isinstance(cbs, dict) else []):
                    if isinstance(cb, dict) and str(cb.get("class_path", "")).endswith("AttributionCallback") and \
                            isinstance(cb.get("init_args"), dict) and cb["init_args"].get("pairs"):
                        return cb["init_args"]["pairs"]
    return None


def _names_checkpoints(files: list[str]) -> bool:
    """Whether a config file given names a ModelCheckpoint (whose folder a later config's list may drop)."""
    for f in files:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if "ModelCheckpoint" in Path(f).read_text():
                return True
    return False


def _model_file(files: list):
    """The last of the config files given whose top level sets ``model``, else the last file."""
    import yaml

    for f in reversed(files):
        with contextlib.suppress(OSError, UnicodeDecodeError, yaml.YAMLError):
            top = yaml.safe_load(f.get_content() if hasattr(f, "get_content") else Path(str(f)).read_text())
            if isinstance(top, dict) and "model" in top:
                return f
    return files[-1]


def run_name(config, subcommand: Optional[str] = None) -> str:
    """``--run_name``; else, for ``validate``, ``test`` and ``predict`` of a checkpoint inside a run folder
    (``runs/<dataset>/<name>/checkpoints/...``), that run's name, so its logs join the run's own;
    else the name of the config file that sets ``model`` (the last such; a second file of callbacks or trainer
    settings does not rename the run), else of the last config file; else the network's class name (``gmf``)."""
    if config.get("run_name") is not None:
        return check_run_name(config["run_name"])  # an empty one is refused, not read as "no name given"
    owner = checkpoint_run(config.get("ckpt_path")) if subcommand in EVALUATING else None
    if owner:
        return owner[1]
    files = [f for f in (config.get("config") or []) if f is not None]
    if files:
        named = _model_file(files)
        return Path(str(getattr(named, "relative", named))).stem
    from .contract import network_name

    network = config["model"].get("network")
    spec = {"network": {"class_path": str(getattr(network, "class_path", ""))}} if network is not None else {}
    return network_name(spec) or "run"


def _other_class(given: str, theirs: str) -> Optional[str]:
    """``given``'s class path where it names another network class than ``theirs`` (``ncf.GMF`` and
    ``ncf.models.GMF`` name one), else None."""
    from .contract import network_class

    try:
        cls = network_class(given)
        return None if cls is network_class(theirs) else f"{cls.__module__}.{cls.__qualname__}"
    except ConfigError:
        return given if given != theirs else None


def _other_settings(given, theirs) -> Optional[tuple[str, str]]:
    """``("a 1, b 2", "a 3, b 4")``: the constructor arguments a checkpoint's network (``theirs``, a spec) and
    the config's (``given``, parsed) both name with other values; None where none differ."""
    args = getattr(given, "init_args", None) or {}
    mine = args if isinstance(args, dict) else vars(args)  # a parsed Namespace, or a plain dict
    stored = (theirs or {}).get("init_args") or {}
    keys = [k for k in stored if k in mine and mine[k] is not None and mine[k] != stored[k]]
    if not keys:
        return None
    return ", ".join(f"{k} {stored[k]}" for k in keys), ", ".join(f"{k} {mine[k]}" for k in keys)


def checkpoint_run(ckpt_path, root: str = RUNS_ROOT) -> Optional[tuple[str, str]]:
    """The run folder a checkpoint file belongs to, ``(dataset folder, name)``, when ``ckpt_path`` lies in
    ``<root>/<dataset>/<name>/checkpoints/`` (or a folder below it, such as ``epochs/``), else None. The dataset
    folder is the checkpoint's, whatever file the data is read from now (the same rows under another name).
    Only the path given on the command line is read, never one stored in a checkpoint.

    >>> checkpoint_run("runs/ml-100k/exp1/checkpoints/best.ckpt"), checkpoint_run("best.ckpt")
    (('ml-100k', 'exp1'), None)
    >>> checkpoint_run("runs/my/gmf/superseded/bfee11fd11da/checkpoints/best.ckpt")  # a run moved aside
    ('my/gmf/superseded', 'bfee11fd11da')
    """
    if not ckpt_path or str(ckpt_path) in ("best", "last", "hpc", "registry"):
        return None
    path, runs = Path(str(ckpt_path)).absolute(), Path(root).absolute()
    for folder in path.parents:
        try:
            if folder.name == "checkpoints" and folder.parent.parent.parent == runs:
                return check_run_name(folder.parent.parent.name), check_run_name(folder.parent.name)
            # a run moved aside: runs/<dataset>/<name>/superseded/<id>/checkpoints, its outputs stay with it
            if folder.name == "checkpoints" and folder.parents[1].name == "superseded" and folder.parents[4] == runs:
                data, name = check_run_name(folder.parents[3].name), check_run_name(folder.parents[2].name)
                return f"{data}/{name}/superseded", check_run_name(folder.parents[0].name)
        except (ConfigError, IndexError):  # not a name a run could have: no run's folder
            return None
    return None


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


_METRIC_PREFIXES = ("val_", "test_", "train_")


def logged_metrics(model, datamodule) -> set[str]:
    """The metric names a fit logs with these settings (what a checkpoint or early-stopping callback may
    monitor)."""
    k = model.hparams.k
    names = {"train_loss", f"val_hr{k}", f"val_ndcg{k}"}
    if getattr(getattr(datamodule, "hparams", None), "full_ranking", False):
        names |= {f"val_full_hr{k}", f"val_full_ndcg{k}", f"val_full_recall{k}"}
    return names


def validation_never_runs(max_epochs, every, limit) -> Optional[str]:
    """Why a fit with these trainer settings never validates, in CLI spelling; None when it does."""
    if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit == 0:
        return "--trainer.limit_val_batches 0 runs no validation"
    if max_epochs == 0:
        return "--trainer.max_epochs 0 trains nothing"
    if isinstance(every, int) and isinstance(max_epochs, int) and 0 < max_epochs < every:
        return (f"--trainer.check_val_every_n_epoch {every} validates first after epoch {every}, past "
                f"--trainer.max_epochs {max_epochs}")
    return None


def check_monitors(trainer, model, datamodule) -> None:
    """Refuse, before training, a callback that monitors a metric this fit never logs (e.g. ``val_ndcg10``
    with ``--model.k 20``, which logs ``val_ndcg20``): Lightning would fail after the first epoch; and a
    checkpoint that monitors validation where the fit never validates (it would keep no best checkpoint)."""
    names = logged_metrics(model, datamodule)
    never = validation_never_runs(trainer.max_epochs, trainer.check_val_every_n_epoch, trainer.limit_val_batches)
    for cb in trainer.checkpoint_callbacks:
        monitor = getattr(cb, "monitor", None)
        if never and isinstance(monitor, str) and monitor.startswith("val_"):
            raise ConfigError(f"{never}, so the checkpoint that keeps the best {monitor} would keep none (and the run "
                              f"folder would be left without its best.ckpt); validate at least once.")
    for cb in trainer.callbacks:
        monitor = getattr(cb, "monitor", None)
        if not isinstance(monitor, str) or not monitor.startswith(_METRIC_PREFIXES) or monitor in names:
            continue
        k = model.hparams.k
        near = closest(monitor.replace("10", str(k)), names) or f"val_ndcg{k}"
        why = f" with --model.k {k}" if k != 10 else ""
        raise ConfigError(f"{type(cb).__name__} monitors {monitor}, which this fit never logs{why} (it logs "
                          f"{', '.join(sorted(names))}); set `monitor: {near}` in the config's "
                          f"{type(cb).__name__}" + (", or keep --model.k 10." if k != 10 else "."))


def _trainer_hint(trainer: dict) -> str:
    """The fix for a trainer setting Lightning refused: an accelerator this machine does not have, a device
    count that is not one, or else where the options are listed."""
    accelerator = str(trainer.get("accelerator") or "auto").lower()
    devices = trainer.get("devices")
    if accelerator not in ("auto", "cpu"):
        return (f"; this machine has no {accelerator} that torch can use: --trainer.accelerator auto takes a GPU "
                f"when there is one and the CPU otherwise (or name cpu).")
    if isinstance(devices, (int, str)) and str(devices).strip().lstrip("-").isdigit() and int(devices) < 1:
        return ("; --trainer.devices takes a count of 1 or more, a list of device indices such as [0, 1], or auto.")
    return "; check the --trainer options (python train.py fit --help lists them)."


def _log_dirs(trainer) -> list[str]:
    """The folders the trainer's loggers will write into (their ``log_dir``; nothing is created)."""
    out = []
    for logger in trainer.loggers if trainer.is_global_zero else []:
        try:
            d = logger.log_dir
        except Exception:  # a logger that cannot say without starting its experiment
            continue
        if isinstance(d, str):
            out.append(d)
    return out


_UNUSED_LOG_FILES = ("config.yaml", "hparams.yaml")


def _new_part(folder: str) -> tuple[Path, Path]:
    """``folder`` and the highest of its parents that does not exist yet (``runs/<data>/<name>`` of a new run)."""
    top = Path(folder).absolute()
    while not top.parent.exists():
        top = top.parent
    return Path(folder).absolute(), top


def _remove_if_unused(folder: Path, top: Path) -> None:
    """Remove ``folder`` (made by this command) if it holds nothing but the config, the hyperparameters and
    TensorBoard event files without an event (a header of a few dozen bytes), then its parents up to ``top``
    that this left empty."""
    import shutil

    if not folder.is_dir():
        return
    files = [p for p in folder.rglob("*") if p.is_file()]
    if not all(p.name in _UNUSED_LOG_FILES or (p.name.startswith("events.out.tfevents.") and p.stat().st_size < 200)
               for p in files):
        return
    shutil.rmtree(folder, ignore_errors=True)
    for parent in [folder, *folder.parents]:
        if parent != folder:
            with contextlib.suppress(OSError):
                parent.rmdir()  # only when empty
        if parent == top:
            break


def main(args: Optional[list[str]] = None, run: bool = True) -> NCFCLI:
    debug, argv = debug_requested(list(sys.argv[1:] if args is None else args))
    if args is None:
        sys.argv[1:] = argv  # LightningCLI reads the command line itself
        argv = None
    show_info()
    # parsing errors raise (as ArgumentError, made one line by NCFCLI.parse_arguments) instead of printing usage
    # and an option is its whole name: a prefix (--trainer.max_epoch, --data.split) is an unknown option
    raising = {"exit_on_error": False, "allow_abbrev": False,
               **{sub: {"exit_on_error": False, "allow_abbrev": False, "for_subcommand": sub}
                  for sub in NCFCLI.subcommands()}}
    try:
        with quiet_known_noise():
            return NCFCLI(NCFModule, NCFDataModule, seed_everything_default=42, args=argv, run=run,
                          save_config_kwargs={"overwrite": True}, parser_kwargs=raising)
    except (UserError, MisconfigurationException) as err:  # Lightning's: a trainer setting that cannot work
        raise SystemExit(report(_in_cli_terms(err), debug)) from None
    except ValueError as err:  # jsonargparse wraps what a class named by class_path raised while it was built
        cause = user_error_within(err)
        if cause is None:
            raise
        raise SystemExit(report(cause, debug)) from None


def _in_cli_terms(err: BaseException) -> BaseException:
    """Lightning's messages a user meets most, with the option that fixes them."""
    found = re.search(r"restored a checkpoint with current_epoch=(\d+), but you have set Trainer\(max_epochs=(\d+)\)",
                      str(err))
    if found:
        done, asked = int(found.group(1)), int(found.group(2))
        return ConfigError(f"the checkpoint is at epoch {done}, past --trainer.max_epochs {asked}: give a larger "
                           f"--trainer.max_epochs to train further, or test the checkpoint as it is (train.py test "
                           f"--ckpt_path ...).")
    return err


def user_error_within(err: BaseException) -> Optional[UserError]:
    """The first :class:`UserError` among ``err``'s causes and contexts, or None."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
