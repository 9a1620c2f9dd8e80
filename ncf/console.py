"""What ``train.py``, ``tune.py`` and ``explain.py`` print beside their results: this project's INFO lines,
Lightning's notices a user cannot act on filtered out, and ``--debug``."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

__all__ = ["quiet_known_noise", "show_info", "debug_requested"]

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
    # --ckpt_path last before any checkpoint: ncf.cli says so with the folders it looked in (Lightning's hint
    # to set save_last does not apply: the configs keep their own "last" checkpoint)
    r'.*ckpt_path="last"\) is set, but there is no last checkpoint available.*',
    # under DDP: evaluation metrics are metric states summed over the ranks before they are computed (tested
    # against one process), so the logged value is already every rank's
    r".*It is recommended to use `self\.log\('(val|test)_[a-z0-9_]+', \.\.\., sync_dist=True\)`.*",
    # a run stopped within an epoch (max_steps, max_time): the training batches start where the trainer's batch
    # count says (ncf.loaders.TrainLoader's position), so the resumed epoch trains the batches it had not
    r".*resuming from a checkpoint that ended before the epoch ended and your dataloader is not resumable.*",
)


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


def show_info() -> None:
    """Our own INFO lines (the hold-out rule, the split diagnostic) appear beside Lightning's."""
    tips = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in tips.filters):
        tips.addFilter(_DropTips())
    logger = logging.getLogger("ncf")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(_LevelFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


class _LevelFormatter(logging.Formatter):
    """INFO lines as they are; a warning or an error says so first, as explain.py's own warnings do."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"{record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING else text


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
