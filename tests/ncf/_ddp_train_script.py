"""Run by test_ddp.py: a tiny NeuMF (20 users, 40 items) trained by 1 or 2 CPU processes.

    python _ddp_train_script.py OUT DEVICES BATCH OPTIMIZER MODE

``MODE``: ``ml-100k`` (NeuMF on MovieLens-100k, 2 epochs, then tested: OUT/ml100k_DEVICES.json), ``steps`` (3 steps), ``straight`` (3 epochs), ``kill`` (3 epochs, killed at the end of epoch 1,
before its checkpoint), ``resume`` (the killed run continued from its last.ckpt to 3 epochs). Dropout is 0,
so each step's update is a function of its batches alone.

Writes, under OUT, with ``TAG = DEVICES_BATCH_OPTIMIZER``: ``TAG_init.pt`` (the weights before training),
``TAG_batches_RANK.pt`` (each rank's first 3 batches), ``TAG_after3.pt`` (the weights after 3 steps),
``TAG_MODE.pt`` (the final weights) and ``TAG_sparse.json`` (whether the tables took sparse gradients).
"""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.callbacks import ModelCheckpoint  # noqa: E402

from ncf import NCFDataModule  # noqa: E402
from tests.helpers import module as make_module  # noqa: E402
from tests.conftest import write_tiny  # noqa: E402

STEPS = 3
EPOCHS_100K = 2


def weights(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class Record(pl.Callback):
    """Each rank's first batches, and the weights before training and after them."""

    def __init__(self, out: Path, tag: str):
        self.out, self.tag, self.batches = out, tag, []

    def on_train_start(self, trainer, module):
        if trainer.global_step == 0 and trainer.is_global_zero:
            torch.save(weights(module), self.out / f"{self.tag}_init.pt")
            sparse = [m.sparse for m in module.modules() if isinstance(m, torch.nn.Embedding)]
            (self.out / f"{self.tag}_sparse.json").write_text(json.dumps(sparse))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if len(self.batches) < STEPS and trainer.global_step <= STEPS:
            self.batches.append([t.clone() for t in batch])
            if len(self.batches) == STEPS:
                torch.save(self.batches, self.out / f"{self.tag}_batches_{trainer.global_rank}.pt")
                if trainer.is_global_zero:
                    torch.save(weights(module), self.out / f"{self.tag}_after{STEPS}.pt")


class Kill(pl.Callback):
    """Ends every rank at the end of epoch 1, before its checkpoint, as a kill would: no teardown. (Raising
    instead runs Lightning's teardown, which can destroy the process group before DDP's reducer is freed; the
    process then aborts at exit now and then, instead of exiting with its code.)"""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            trainer.strategy.barrier()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(3)


def ml100k(out: Path, devices: int, batch_size: int, optimizer: str) -> None:
    """A short NeuMF run on MovieLens-100k, then its test HR@10 and NDCG@10 (users split across the ranks)."""
    pl.seed_everything(0)
    dm = NCFDataModule("ml-100k", batch_size=batch_size)
    module = make_module("neumf", dm.num_users, dm.num_items, factor=8, num_layers=2, lr=0.005, optimizer=optimizer)
    trainer = pl.Trainer(max_epochs=EPOCHS_100K, accelerator="cpu", devices=devices, logger=False,
                         strategy="ddp" if devices > 1 else "auto", enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0)
    trainer.fit(module, dm)
    res = trainer.test(module, dm, verbose=False)[0]
    if trainer.is_global_zero:
        sparse = any(m.sparse for m in module.modules() if isinstance(m, torch.nn.Embedding))
        (out / f"ml100k_{devices}.json").write_text(json.dumps({**res, "sparse": sparse}))


def main(out: str, devices: int, batch_size: int, optimizer: str, mode: str) -> None:
    torch.set_num_threads(1)
    out = Path(out)
    if mode == "ml-100k":
        out.mkdir(parents=True, exist_ok=True)
        return ml100k(out, devices, batch_size, optimizer)
    data = out / "tiny.csv"
    if not data.exists():
        out.mkdir(parents=True, exist_ok=True)
        write_tiny(data, n_users=20, n_items=40, per_user=10)
    tag = f"{devices}_{batch_size}_{optimizer}"
    pl.seed_everything(0)
    dm = NCFDataModule(str(data), batch_size=batch_size, num_eval_negatives=20)
    module = make_module("neumf", dm.num_users, dm.num_items, factor=4, num_layers=2, lr=0.01, optimizer=optimizer)
    folder = out / f"ckpt_{tag}_{'killed' if mode in ('kill', 'resume') else mode}"
    ckpt = ModelCheckpoint(dirpath=str(folder), filename="last", monitor="epoch", mode="max",
                           enable_version_counter=False)
    callbacks = [Record(out, tag), ckpt] + ([Kill()] if mode == "kill" else [])
    trainer = pl.Trainer(max_epochs=3, max_steps=STEPS if mode == "steps" else -1, accelerator="cpu",
                         devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
    trainer.fit(module, dm, ckpt_path=str(folder / "last.ckpt") if mode == "resume" else None)
    if trainer.is_global_zero:
        torch.save(weights(module), out / f"{tag}_{mode}.pt")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
