"""Run by test_callback.py: tiny NeuMF with the AttributionCallback, single process or DDP on 2 CPU processes."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from explain import AttributionCallback  # noqa: E402
from ncf import NCFDataModule, NCFModule  # noqa: E402
from tests.conftest import write_tiny  # noqa: E402


def main(out: str, devices: int, batch_size: int) -> None:
    torch.set_num_threads(1)
    data = Path(out) / "tiny.csv"
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        write_tiny(data, n_users=20, n_items=40, per_user=10)
    pl.seed_everything(0)
    dm = NCFDataModule(str(data), batch_size=batch_size, num_eval_negatives=20)
    module = NCFModule("neumf", dm.num_users, dm.num_items, factor=4, num_layers=2, lr=0.01)
    cb = AttributionCallback(methods=["deeplift", "lime"], num_probe_users=8, n_samples=200,
                             out_dir=str(Path(out) / f"record_{devices}"))
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[cb])
    trainer.fit(module, dm)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
