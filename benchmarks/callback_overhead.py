"""Epoch time of a default NeuMF run on ML-100k with and without the AttributionCallback (default methods
and probe set), in the same process, plus a per-pair cost table for every method.

An epoch is measured from one ``on_train_epoch_start`` to the next (training, validation, the callback,
checkpoint-free); the first epoch of each run is dropped as warm-up. Runs without and with the callback
alternate (``--repeats`` of each, so that a machine whose speed drifts affects both alike) and the median
epoch of each condition over all its runs is reported (``overhead``). ``overhead_within_runs`` is the
median over the epochs with the callback of its epoch-end hook's time over the rest of that epoch: the
same quantity, immune to drift between runs. ``callback_s_per_epoch`` is the median hook time. The
default config is the default NeuMF (``configs/neumf_pretrained.yaml``), from the usual initialisation
(its GMF/MLP checkpoints do not change the cost); like ``train.py``, float32 denormals are flushed.

    python benchmarks/callback_overhead.py
    python benchmarks/callback_overhead.py --history     # with the history influence record as well

With ``--history`` the callback also records TracIn history terms (``history=True``);
``history_s_per_epoch`` is the median time of that step alone.
"""
from __future__ import annotations

import argparse
import statistics
import shutil
import tempfile
import time

from _common import data_root, emit, probe_pairs, timing_setup

import pytorch_lightning as pl

from explain import AttributionCallback
from explain import methods as registry
from explain.core import attribute
from ncf import NCFDataModule, NCFModule


class EpochClock(pl.Callback):
    def __init__(self, attr: "AttributionCallback | None" = None):
        self.starts: list[float] = []
        self.hook_ends: list[float] = []
        self.attr = attr
        self.history_s: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.starts.append(time.perf_counter())

    def on_train_epoch_end(self, trainer, pl_module):
        self.hook_ends.append(time.perf_counter())
        if self.attr is not None and self.attr.history:
            self.history_s.append(self.attr.last_history_seconds)

    def on_train_end(self, trainer, pl_module):
        self.starts.append(time.perf_counter())

    def epoch_seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.starts[:-1], self.starts[1:])]


class HookStart(pl.Callback):
    """Placed before the attribution callback: with ``EpochClock`` after it, times its epoch-end hook."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.times.append(time.perf_counter())


def run(cfg: dict, epochs: int, with_callback: bool, history: bool = False) -> tuple[list[float], list[float], list[float]]:
    """Epoch times (the first dropped) and, with the callback, the time of its epoch-end hook in each (and of
    its history step)."""
    dm = NCFDataModule(**{**cfg["data"], "root": data_root()})
    pl.seed_everything(0)
    module = NCFModule(**cfg["model"], n_users=dm.num_users, n_items=dm.num_items)
    attr = AttributionCallback(out_dir=tempfile.mkdtemp(prefix="attr-"), plots=False, history=history)
    clock, hook = EpochClock(attr), HookStart()
    callbacks: list = [hook]
    if with_callback:
        callbacks.append(attr)
    callbacks.append(clock)  # after the attribution callback: its work falls inside the epoch
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
    trainer.fit(module, dm)
    shutil.rmtree(attr.out_dir, ignore_errors=True)  # the record itself is not what is measured
    hook_s = [b - a for a, b in zip(hook.times, clock.hook_ends)]
    return clock.epoch_seconds()[1:], hook_s[1:], clock.history_s[1:]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/neumf_pretrained.yaml")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2, help="runs of each condition, alternating")
    p.add_argument("--history", action="store_true", help="the callback also records history influence")
    a = p.parse_args()
    cfg = timing_setup(a.config, a.threads)
    epochs_without: list[float] = []
    epochs_with: list[float] = []
    hook_s: list[float] = []
    history_s: list[float] = []
    for _ in range(a.repeats):
        epochs_without += run(cfg, a.epochs, False)[0]
        times, hooks, hist = run(cfg, a.epochs, True, a.history)
        epochs_with += times
        hook_s += hooks
        history_s += hist
    without, with_cb = statistics.median(epochs_without), statistics.median(epochs_with)
    # The same ratio within the runs with the callback: its hook against the rest of each epoch (robust
    # to the machine's speed drifting between runs).
    within = statistics.median(h / (e - h) for e, h in zip(epochs_with, hook_s))
    # Per-pair cost of each method on the default probe set, with the trained-shape network (not with
    # --history, which measures the history step alone).
    dm = NCFDataModule(**{**cfg["data"], "root": data_root()})
    net = NCFModule(**cfg["model"], n_users=dm.num_users, n_items=dm.num_items).net
    users, items = probe_pairs()
    per_pair = {}
    for m in () if a.history else registry.names():
        attribute(net, users[:8], items[:8], m)  # warm-up
        t = time.perf_counter()
        attribute(net, users, items, m)
        per_pair[m] = round(1000 * (time.perf_counter() - t) / len(users), 3)
    emit({"benchmark": "callback_overhead", "config": a.config, "threads": a.threads, "epochs": a.epochs,
          "repeats": a.repeats,
          "methods": list(AttributionCallback().methods), "probe_pairs": len(users),
          "epoch_s_without": round(without, 3), "epoch_s_with": round(with_cb, 3),
          "overhead": round(with_cb / without - 1, 3), "callback_s_per_epoch": round(statistics.median(hook_s), 3),
          "overhead_within_runs": round(within, 3),
          "per_pair_ms": per_pair, "history": a.history,
          **({"history_s_per_epoch": round(statistics.median(history_s), 3)} if history_s else {})})


if __name__ == "__main__":
    main()
