"""Run by test_callback.py: tiny NeuMF with the AttributionCallback, single process or DDP on 2 CPU processes.

    python _ddp_script.py OUT DEVICES BATCH [full|straight|kill|resume]

``full``: 2 epochs; ``straight``: 3 epochs; ``kill``: 3 epochs, killed at the end of epoch 1 (before its
checkpoint); ``resume``: continues the killed run from its last.ckpt to 3 epochs.

Writes the record to OUT/record_<DEVICES>[_<mode>], checkpoints to OUT/ckpt_<DEVICES>_<mode or run>, and each
rank's share of the training epoch (its users and samples per epoch) to OUT/share_<DEVICES>_<rank>.json.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.callbacks import ModelCheckpoint  # noqa: E402

from explain import AttributionCallback  # noqa: E402
from ncf import NCFDataModule, NCFModule  # noqa: E402
from tests.conftest import write_tiny  # noqa: E402
from tests.helpers import module as make_module


class Share(pl.Callback):
    def __init__(self, out):
        self.out = out

    def on_train_epoch_start(self, trainer, pl_module):
        loader = trainer.train_dataloader
        Path(self.out, f"share_{trainer.world_size}_{trainer.global_rank}.json").write_text(json.dumps(
            {"users": sorted(set(loader.users.tolist())), "rows": len(loader.users),
             "samples": loader.samples_per_epoch, "steps": len(loader), "total": loader.total}))


class Kill(pl.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise SystemExit(3)


def main(out: str, devices: int, batch_size: int, mode: str = "full") -> None:
    torch.set_num_threads(1)
    data = Path(out) / "tiny.csv"
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        write_tiny(data, n_users=21, n_items=40, per_user=10)  # 21: uneven shares, so the ranks draw unequal random streams
    pl.seed_everything(0)
    dm = NCFDataModule(str(data), batch_size=batch_size, num_eval_negatives=20)
    module = make_module("neumf", dm.num_users, dm.num_items, factor=4, num_layers=2, lr=0.01, dropout=0.1)
    tag = {"full": "", "straight": "_straight"}.get(mode, "_resumed")
    cb = AttributionCallback(methods=["deeplift", "lime"], num_probe_users=8, n_samples=200,
                             out_dir=str(Path(out) / f"record_{devices}{tag}"))
    ckpt = ModelCheckpoint(dirpath=str(Path(out) / f"ckpt_{devices}{tag}"), filename="last", monitor="epoch", mode="max",
                           enable_version_counter=False)
    callbacks = [cb, Share(out), ckpt] + ([Kill()] if mode == "kill" else [])
    epochs = 3 if mode != "full" else 2
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=devices,
                         strategy="ddp" if devices > 1 else "auto", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=callbacks)
    trainer.fit(module, dm, ckpt_path=str(Path(out) / f"ckpt_{devices}{tag}" / "last.ckpt") if mode == "resume" else None)
    if trainer.is_global_zero:
        torch.save({k: v.detach().clone() for k, v in module.state_dict().items()},
                   Path(out) / f"weights_{devices}_{mode}.pt")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *(sys.argv[4:5] or []))
