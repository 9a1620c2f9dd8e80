"""How the cost grows with the data: the default NeuMF network on synthetic interactions of growing size.

For each size (default 100k, 1M, 5M and 20M interactions, :mod:`ncf.synthetic`'s ML-like shape) the parent
writes a CSV with ``python -m ncf.synthetic`` (``gen_s``: not part of the data path) and a fresh process
per size then measures what a user's run pays:

* ``load_s``: reading the CSV (``NCFDataModule``: ids indexed, duplicates checked);
* ``split_s``: leave-one-out, validation and test items, 99 evaluation negatives per user each;
* ``epoch_s``: one training epoch of the default NeuMF network (``configs/neumf_pretrained.yaml``'s
  architecture, optimiser and batch, from scratch), as the Trainer runs it: ``sample_s`` (the epoch's
  fresh negatives and shuffle, before the first step) plus the steps. Sizes above ``--full-epoch-max``
  run ``fraction`` of the epoch's steps and scale the steps' time to a whole epoch (``scaled: true``);
  ``samples_per_s`` is samples over the steps' time, the sampling included pro rata;
* ``eval_s``: validation of every user (1 + 99 candidates each);
* ``peak_rss_mb``: the process's peak resident memory over all of it;
* ``bytes_per_interaction``: what the data path keeps per interaction while training (the loaded ids,
  the split's training rows, the negatives' lookup table, an epoch's negatives and permutation);
* ``ids_save_s`` / ``ids_mb``: the checkpoint's id mapping (``NCFDataModule.state_dict``), saved once.

One torch thread (``--threads``) by default, like ``train_speed.py``. One JSON line per size. On a GPU
machine ``--accelerator gpu`` trains there (the data path moves to the device once, at setup) and adds
``peak_gpu_mb``.

    python benchmarks/scale.py                               # 100k, 1M, 5M, 20M
    python benchmarks/scale.py --sizes 100k 1M --out /tmp/scale
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, emit, timing_setup


def _child(csv: str, n: int, config: str, threads: int, full_epoch_max: int, fraction: float, precision: str,
           batch_size: int | None, accelerator: str) -> dict:
    import io

    import pytorch_lightning as pl
    import torch

    from ncf import NCFDataModule, NCFModule

    cfg = timing_setup(config, threads)
    data_cfg = {k: v for k, v in cfg["data"].items() if k != "dataset"}
    if batch_size:
        data_cfg["batch_size"] = batch_size
    dm = NCFDataModule(csv, **data_cfg)
    t = time.perf_counter()
    inter = dm._load()
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    dm.setup("fit")
    split_s = time.perf_counter() - t
    model = NCFModule(n_users=dm.num_users, n_items=dm.num_items, **cfg["model"])
    loader = dm.train_dataloader()
    n_batches = len(loader)
    run_batches = n_batches if len(inter) <= full_epoch_max else min(n_batches, max(1, int(n_batches * fraction)))
    times = {}

    class Clock(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            times["epoch_start"] = time.perf_counter()

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 0:
                times["first_batch"] = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            times["epoch_end"] = time.perf_counter()

        def on_validation_epoch_start(self, trainer, module):
            times["val_start"] = time.perf_counter()

        def on_validation_epoch_end(self, trainer, module):
            times["val_end"] = time.perf_counter()

    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=run_batches, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator=accelerator, devices=1, callbacks=[Clock()], precision=precision)
    trainer.fit(model, dm)
    sample_s = times["first_batch"] - times["epoch_start"]
    # validation runs inside the training epoch's end hooks in Lightning 2.x: take it out of the steps
    val_s = times["val_end"] - times["val_start"]
    train_end = times["epoch_end"] - (val_s if times["val_start"] < times["epoch_end"] else 0.0)
    steps_s = train_end - times["first_batch"]
    epoch_s = sample_s + steps_s * n_batches / run_batches
    samples = loader.samples_per_epoch
    kept = (inter.users.nbytes + inter.items.nbytes + inter.timestamps.nbytes
            + dm.split.train_users.nbytes + dm.split.train_items.nbytes + loader.keys.nbytes
            + 8 * len(loader.users) * loader.num_negatives + 8 * samples)  # the epoch's negatives and permutation
    buf = io.BytesIO()
    t = time.perf_counter()
    torch.save(dm.state_dict(), buf)
    ids_save_s = time.perf_counter() - t
    device = str(trainer.strategy.root_device)
    gpu = {"peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2 ** 20),
           "gpu": torch.cuda.get_device_name()} if device.startswith("cuda") else {}
    return {
        **gpu,
        "interactions": len(inter), "users": inter.n_users, "items": inter.n_items,
        "load_s": round(load_s, 2), "split_s": round(split_s, 2), "sample_s": round(sample_s, 2),
        "epoch_s": round(epoch_s, 2), "samples_per_s": round(samples / epoch_s), "eval_s": round(val_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "bytes_per_interaction": round(kept / len(inter)), "ids_save_s": round(ids_save_s, 3),
        "ids_mb": round(len(buf.getvalue()) / 2 ** 20, 2), "batches": n_batches, "run_batches": run_batches,
        "fraction": round(run_batches / n_batches, 3), "scaled": run_batches < n_batches,
        "samples_per_epoch": samples, "batch_size": dm.hparams.batch_size, "threads": threads,
        "precision": precision, "config": config, "device": device,
        "sparse_embedding_grads": any(getattr(m, "sparse", False) for m in model.modules()),
    }


def _size(text: str) -> int:
    from ncf.synthetic import parse_spec

    return parse_spec("synthetic:" + text)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["100k", "1M", "5M", "20M"])
    p.add_argument("--config", default="configs/neumf_pretrained.yaml")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--full-epoch-max", type=_size, default=5_000_000,
                   help="largest size that runs a whole epoch (larger ones run --fraction of it, scaled)")
    p.add_argument("--fraction", type=float, default=0.25)
    p.add_argument("--precision", default="32-true")
    p.add_argument("--batch-size", type=int, help="instead of the config's")
    p.add_argument("--accelerator", default="cpu", help="cpu, or gpu for the GPU figures (peak_gpu_mb)")
    p.add_argument("--out", help="folder for the CSVs (default: a temporary folder, removed)")
    p.add_argument("--child", nargs=2, metavar=("CSV", "N"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if not 0 < a.fraction <= 1:
        p.error(f"--fraction is a share of an epoch, in (0, 1], not {a.fraction}")
    if a.threads < 1 or (a.batch_size is not None and a.batch_size < 1):
        p.error("--threads and --batch-size must be at least 1")
    if a.child:
        print(json.dumps(_child(a.child[0], int(a.child[1]), a.config, a.threads, a.full_epoch_max, a.fraction,
                                a.precision, a.batch_size, a.accelerator)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(a.out or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for text in a.sizes:
            n = _size(text)
            csv = folder / f"synthetic-{n}.csv"
            t = time.perf_counter()
            if not csv.exists():
                subprocess.run([sys.executable, "-m", "ncf.synthetic", "--interactions", str(n), "--out", str(csv)],
                               check=True, cwd=REPO)
            gen_s = time.perf_counter() - t
            args = [sys.executable, __file__, "--child", str(csv), str(n), "--config", a.config, "--threads",
                    str(a.threads), "--full-epoch-max", str(a.full_epoch_max), "--fraction", str(a.fraction),
                    "--precision", a.precision, "--accelerator", a.accelerator]
            args += ["--batch-size", str(a.batch_size)] if a.batch_size else []
            out = subprocess.run(args, check=True, capture_output=True, text=True, cwd=REPO,
                                 env={**os.environ, "PYTHONWARNINGS": "ignore"})
            result = json.loads(out.stdout.strip().splitlines()[-1])
            emit({**result, "gen_s": round(gen_s, 2)})
            sys.stdout.flush()


if __name__ == "__main__":
    main()
