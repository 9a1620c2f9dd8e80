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
from typing import Optional

import torch
from pytorch_lightning.cli import LightningCLI

from .data import NCFDataModule
from .errors import UserError
from .module import NCFModule
from .predict import RecommendationWriter

__all__ = ["NCFCLI", "main"]

# Notices Lightning prints on every run that a user of this tool cannot act on, matched narrowly.
_KNOWN_NOISE = (
    r".*isinstance\(treespec, LeafSpec\).*",  # torch's pytree deprecation, raised inside Lightning
    r".*does not have many workers.*",  # our loaders are pre-batched device tensors, workers would not help
    r".*smaller than the logging interval.*",  # the module logs once per epoch, not per step
    r".*Couldn't infer the batch indices fetched from your dataloader.*",  # the writer does not need them
    r".*Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided.*",
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

    def _prepare_subcommand_parser(self, klass, subcommand: str, **kwargs):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":  # the recommendations file: --recommend.output, --recommend.top_n, ...
            parser.add_lightning_class_args(RecommendationWriter, "recommend")
        return parser

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        threads = config.get("torch_threads")
        if threads:
            torch.set_num_threads(threads)
        torch.set_flush_denormal(bool(config.get("flush_denormal", True)))


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
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


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
