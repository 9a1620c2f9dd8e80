"""``python train.py fit|validate|test|predict --config configs/neumf.yaml``: a LightningCLI over NCFModule
and NCFDataModule.

Errors a user can fix (data, configuration, checkpoints) print one line and exit with code 2; ``--debug``
(or ``NCF_DEBUG=1``) shows the traceback instead.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import torch
from pytorch_lightning.cli import LightningCLI

from .data import NCFDataModule
from .errors import UserError
from .module import NCFModule
from .predict import RecommendationWriter
from .run import fill_placeholders

__all__ = ["NCFCLI", "main"]

# Notices Lightning prints on every run that a user of this tool cannot act on, matched narrowly.
_KNOWN_NOISE = (
    r".*isinstance\(treespec, LeafSpec\).*",  # torch's pytree deprecation, raised inside Lightning
    r".*does not have many workers.*",  # our loaders are pre-batched device tensors, workers would not help
    r".*smaller than the logging interval.*",  # the module logs once per epoch, not per step
    r".*Couldn't infer the batch indices fetched from your dataloader.*",  # the writer does not need them
    r".*Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided.*",
    r".*LightningCLI's args parameter is intended to run from within Python.*",  # tune.py runs trials in-process
    # a new run moves an earlier run's checkpoints aside before it writes any (ncf.run), and says so
    r"Checkpoint directory .* exists and is not empty\.",
)


class NCFCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # Catalogue sizes come from the data, never from the user.
        parser.link_arguments("data.num_users", "model.n_users", apply_on="instantiate")
        parser.link_arguments("data.num_items", "model.n_items", apply_on="instantiate")
        # These models are too small for intra-op parallelism to pay: on 2-core machines two threads were
        # no faster than one, and far slower when the other core is busy (BENCHMARKS.md). None: torch's default.
        parser.add_argument("--torch_threads", type=Optional[int], default=1,
                            help="torch.set_num_threads for CPU work (None leaves torch's default)")
        # L2 drives unused embedding columns towards zero, into float32's denormal range, where x86 CPUs
        # compute far slower; flushing them to zero keeps a trained model's steps fast.
        parser.add_argument("--flush_denormal", type=bool, default=True,
                            help="torch.set_flush_denormal on CPU: treat denormal floats as zero (much faster)")
        # Configs write to "{runs}/{name}/...": runs/<dataset>/<run name>, so runs of other data never mix.
        parser.add_argument("--run_name", type=Optional[str], default=None,
                            help="the run's folder name under runs/<dataset>/ (default: the config file's name)")

    def instantiate_trainer(self, **kwargs):
        """Progress and TensorBoard reporting (:mod:`ncf.progress`): with stderr not a terminal (a log file, a
        pipe) and ``--trainer.enable_progress_bar`` not given, one line per epoch replaces Lightning's bar, whose
        redraws would fill a log; the bar is still there with ``--trainer.enable_progress_bar true``. A
        TensorBoard logger gets the best validation NDCG@10 as its ``hp_metric``."""
        from .progress import BestMetricToTensorBoard, EpochLines

        trainer = self._get(self.config_init, "trainer", default={})
        callbacks = trainer.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        callbacks.append(BestMetricToTensorBoard("val_ndcg10"))
        if trainer.get("enable_progress_bar") is None and not _is_terminal(sys.stderr):
            callbacks.append(EpochLines())
        return super().instantiate_trainer(**{"callbacks": callbacks, **kwargs})

    def _prepare_subcommand_parser(self, klass, subcommand: str, **kwargs):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":  # the recommendations file: --recommend.output, --recommend.top_n, ...
            parser.add_lightning_class_args(RecommendationWriter, "recommend")
        return parser

    def _parse_ckpt_path(self) -> None:
        """A checkpoint file given with ``--ckpt_path`` is checked before anything is read from it (ours,
        whole, no objects unpickled, weights matching their hash). For test/validate/predict its architecture
        fills the model settings, as Lightning does; paths in it are never taken. A resumed fit is defined
        by its config and command line; :mod:`ncf.run` refuses a checkpoint of other settings."""
        from .checkpoint import read_checkpoint

        sub = self.config.get("subcommand")
        path = self.config[sub].get("ckpt_path") if sub else None
        if not path or not os.path.isfile(str(path)):
            return  # "last" and "best" are resolved, and checked, when the run starts
        ckpt = read_checkpoint(path)
        if sub == "fit":
            return
        hparams = {k: v for k, v in ckpt["hyper_parameters"].items()
                   if k not in ("pretrained_gmf", "pretrained_mlp", "_instantiator", "_class_path")}
        self.config = self.parser.parse_object({sub: {"model": hparams}}, self.config)

    # -- the checkpoints _parse_ckpt_path could not check: "last" (resolved here, as Lightning will) and a
    # missing file (a one-line error naming it instead of Lightning's traceback)
    def _check_ckpt_path(self) -> None:
        from .checkpoint import read_checkpoint

        path = (self.config_init[self.subcommand] or {}).get("ckpt_path") if self.subcommand else None
        if path is None or path in ("best", "hpc", "registry") or "://" in str(path):
            return
        if path == "last":
            found = [os.path.join(cb.dirpath, f) for cb in self.trainer.checkpoint_callbacks
                     if getattr(cb, "dirpath", None) and os.path.isdir(cb.dirpath)
                     for f in os.listdir(cb.dirpath) if f.startswith("last") and f.endswith(".ckpt")]
            if not found:
                return  # Lightning says there is nothing to resume and starts the run
            read_checkpoint(max(found, key=os.path.getmtime))
        elif not os.path.isfile(str(path)):
            read_checkpoint(path)  # raises: no such checkpoint file

    def before_fit(self) -> None:
        self._check_ckpt_path()
        if (self.config_init[self.subcommand] or {}).get("ckpt_path") is not None:
            self.model.resuming = True  # its weights come from the checkpoint: pretrained files are not read

    def before_validate(self) -> None:
        self._check_ckpt_path()

    def before_test(self) -> None:
        self._check_ckpt_path()

    def before_predict(self) -> None:
        self._check_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        fill_placeholders(config, config["data"]["dataset"], run_name(config))
        threads = config.get("torch_threads")
        if threads:
            torch.set_num_threads(threads)
        torch.set_flush_denormal(bool(config.get("flush_denormal", True)))


def run_name(config) -> str:
    """``--run_name``, else the name of the (last) config file, else the model's name."""
    if config.get("run_name"):
        return config["run_name"]
    files = [f for f in (config.get("config") or []) if f is not None]
    if files:
        return Path(str(getattr(files[-1], "relative", files[-1]))).stem
    return str(config["model"].get("model") or "run")


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


@contextlib.contextmanager
def quiet_known_noise():
    with warnings.catch_warnings():
        for pattern in _KNOWN_NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        yield


class _DropTips(logging.Filter):
    """Lightning's "💡 Tip:" lines advertise cloud products (litlogger, litmodels)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def _show_info() -> None:
    """Our own INFO lines (the hold-out rule, the split diagnostic) appear beside Lightning's."""
    tips = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in tips.filters):
        tips.addFilter(_DropTips())
    logger = logging.getLogger("ncf")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced after the handler is made)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """``--debug`` anywhere in ``argv`` (removed from it) or ``NCF_DEBUG`` set to a non-empty, non-0 value."""
    flag = "--debug" in argv
    env = os.environ.get("NCF_DEBUG", "") not in ("", "0")
    return flag or env, [a for a in argv if a != "--debug"]


def main(args: Optional[list[str]] = None, run: bool = True) -> NCFCLI:
    debug, argv = debug_requested(list(sys.argv[1:] if args is None else args))
    if args is None:
        sys.argv[1:] = argv  # LightningCLI reads the command line itself
        argv = None
    _show_info()
    try:
        with quiet_known_noise():
            return NCFCLI(NCFModule, NCFDataModule, seed_everything_default=42, args=argv, run=run,
                          save_config_kwargs={"overwrite": True})
    except UserError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
