"""``python train.py fit|validate|test --config configs/neumf.yaml``: a LightningCLI over NCFModule and NCFDataModule."""
from __future__ import annotations

from pytorch_lightning.cli import LightningCLI

from .data import NCFDataModule
from .module import NCFModule

__all__ = ["NCFCLI", "main"]


class NCFCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # Catalogue sizes come from the data, never from the user.
        parser.link_arguments("data.num_users", "model.n_users", apply_on="instantiate")
        parser.link_arguments("data.num_items", "model.n_items", apply_on="instantiate")


def main(args=None, run: bool = True) -> NCFCLI:
    return NCFCLI(NCFModule, NCFDataModule, seed_everything_default=42, args=args, run=run,
                  save_config_kwargs={"overwrite": True})
