"""Seconds per NeuMF epoch on ML-100k: the Lightning path, the same batches in a bare loop, and a textbook
reference (DataLoader over a TensorDataset, batch 256, negatives sampled per positive in a Python loop).

The reference is slow, so a fixed fraction of its epoch is timed (sampling and training alike) and scaled
to a full epoch; ``reference_fraction`` in the output says how much. Like the other loops (best epoch
after the first), the reference reports its best of ``--reference-repeats`` timings. All loops run with
the same torch thread count (``--threads``, default 1, which measured faster than 2 on the 2-core CI machines).
Peak memory is that of a separate training run of the same config through ``train.py``.

The default config is the default NeuMF, ``configs/neumf_pretrained.yaml`` (SGD). Its GMF/MLP checkpoints
are not needed to time an epoch (the cost does not depend on the weights' values), so the network starts
from the usual initialisation here. Like ``train.py``, the process flushes float32 denormals to zero.

    python benchmarks/train_speed.py                                   # one JSON line
    python benchmarks/train_speed.py --config configs/neumf.yaml       # NeuMF from scratch (Adam)
"""
from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import time

from _common import REPO, data_root, emit, timing_setup

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ncf import NCFDataModule, NCFModule
from ncf.contract import build_network
from ncf.loaders import TrainLoader


class EpochTimer(pl.Callback):
    def __init__(self):
        self.times = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._t = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.times.append(time.perf_counter() - self._t)


def lightning_epochs(cfg: dict, epochs: int) -> float:
    dm = NCFDataModule(**{**cfg["data"], "root": data_root()})
    pl.seed_everything(0)
    module = NCFModule(**cfg["model"], n_users=dm.num_users, n_items=dm.num_items)
    timer = EpochTimer()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[timer])
    trainer.fit(module, dm)
    return min(timer.times[1:])  # the first epoch includes warm-up


def bare_epochs(cfg: dict, dm: NCFDataModule, epochs: int) -> float:
    """The same module, optimizer and batches, stepped by hand: the floor for any training loop."""
    pl.seed_everything(0)
    module = NCFModule(**cfg["model"], n_users=dm.num_users, n_items=dm.num_items)
    conf = module.configure_optimizers()
    opt = conf["optimizer"] if isinstance(conf, dict) else conf
    loader = TrainLoader(dm.split.train_users, dm.split.train_items, dm.split.n_items,
                         cfg["data"].get("num_negatives", 4), cfg["data"]["batch_size"])
    times = []
    for ep in range(epochs):
        t = time.perf_counter()
        loader.set_epoch(ep)
        module.on_train_epoch_start()
        for k, batch in enumerate(loader):
            loss = module.training_step(batch, k)
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t)
    return min(times[1:])


def reference_epoch(cfg: dict, dm: NCFDataModule, fraction: float) -> tuple[float, int]:
    """A textbook NCF loop: per-positive Python negative sampling, then a DataLoader at batch 256."""
    users, items = dm.split.train_users.tolist(), dm.split.train_items.tolist()
    n_items, k = dm.split.n_items, cfg["data"].get("num_negatives", 4)
    positives = set(zip(users, items))
    n = int(len(users) * fraction)
    t0 = time.perf_counter()
    us, its, ys = [], [], []
    for u, i in zip(users[:n], items[:n]):
        us.append(u); its.append(i); ys.append(1.0)
        for _ in range(k):
            j = random.randrange(n_items)
            while (u, j) in positives:
                j = random.randrange(n_items)
            us.append(u); its.append(j); ys.append(0.0)
    ds = TensorDataset(torch.tensor(us), torch.tensor(its), torch.tensor(ys))
    loader = DataLoader(ds, batch_size=256, shuffle=True)
    net = build_network(cfg["model"]["network"], dm.num_users, dm.num_items)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for u, i, y in loader:
        loss = F.binary_cross_entropy_with_logits(net(u, i), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / fraction, len(users) * (1 + k)


def peak_rss_of_default_run(config: str, epochs: int, extra: list[str]) -> float:
    cmd = [sys.executable, "train.py", "fit", "--config", config, "--trainer.max_epochs", str(epochs),
           "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
           "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false",
           "--model.pretrained_gmf", "null", "--model.pretrained_mlp", "null", *extra]  # same network, usual init
    with tempfile.TemporaryDirectory() as tmp:  # the CLI saves its config.yaml there, not in the repo
        cmd += ["--trainer.default_root_dir", tmp]
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True,
                       env={**__import__("os").environ, "NCF_DATA_DIR": data_root()})
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/neumf_pretrained.yaml")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reference-fraction", type=float, default=0.1)
    p.add_argument("--reference-repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=None, help="override the config's batch size")
    p.add_argument("--lr", type=float, default=None, help="override the config's learning rate")
    p.add_argument("--num-layers", type=int, default=None, help="override the config's MLP depth (its network's num_layers)")
    a = p.parse_args()
    cfg = timing_setup(a.config, a.threads)
    if a.batch_size:
        cfg["data"]["batch_size"] = a.batch_size
    if a.lr:
        cfg["model"]["lr"] = a.lr
    network = cfg["model"]["network"]
    if a.num_layers:
        network["init_args"] = {**(network.get("init_args") or {}), "num_layers": a.num_layers}
    dm = NCFDataModule(**{**cfg["data"], "root": data_root()})
    dm.setup("fit")
    samples = len(dm.split.train_users) * (1 + cfg["data"].get("num_negatives", 4))
    epoch_s = lightning_epochs(cfg, a.epochs)
    bare_s = bare_epochs(cfg, dm, a.epochs)
    ref_s = min(reference_epoch(cfg, dm, a.reference_fraction)[0] for _ in range(a.reference_repeats))
    extra = (["--data.batch_size", str(a.batch_size)] if a.batch_size else []) + (["--model.lr", str(a.lr)] if a.lr else []) \
        + (["--model.network.init_args.num_layers", str(a.num_layers)] if a.num_layers else [])
    rss = peak_rss_of_default_run(a.config, 2, extra)
    emit({
        "benchmark": "train_speed", "config": a.config, "threads": a.threads, "batch_size": cfg["data"]["batch_size"],
        "num_layers": (network.get("init_args") or {}).get("num_layers"),
        "epoch_s": round(epoch_s, 3), "samples_per_s": round(samples / epoch_s), "bare_loop_epoch_s": round(bare_s, 3),
        "lightning_over_bare": round(epoch_s / bare_s, 3), "reference_epoch_s": round(ref_s, 2),
        "reference_fraction": a.reference_fraction, "reference_repeats": a.reference_repeats,
        "speedup_vs_reference": round(ref_s / epoch_s, 1),
        "peak_rss_mb": round(rss, 1),
    })


if __name__ == "__main__":
    main()
