"""``python train.py fit|validate|test --config configs/neumf.yaml``: a LightningCLI over NCFModule and NCFDataModule."""
from __future__ import annotations

from typing import Optional

import torch
from pytorch_lightning.cli import LightningCLI

from .data import NCFDataModule
from .module import NCFModule

__all__ = ["NCFCLI", "main"]


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
        # compute ~100x slower: a trained NeuMF-64 stepped 2x slower until denormals were flushed to zero.
        parser.add_argument("--flush_denormal", type=bool, default=True,
                            help="torch.set_flush_denormal on CPU: treat denormal floats as zero (much faster)")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        threads = config.get("torch_threads")
        if threads:
            torch.set_num_threads(threads)
        torch.set_flush_denormal(bool(config.get("flush_denormal", True)))


def main(args=None, run: bool = True) -> NCFCLI:
    return NCFCLI(NCFModule, NCFDataModule, seed_everything_default=42, args=args, run=run,
                  save_config_kwargs={"overwrite": True})
