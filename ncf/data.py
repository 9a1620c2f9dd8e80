"""The LightningDataModule and its pre-batched loaders.

Tiny models are step-bound, so batches are slices of tensors that already sit on the training device
rather than per-sample ``Dataset`` items collated by a ``DataLoader``. :class:`TrainLoader` draws fresh
negatives at the start of every epoch from a generator seeded by ``(seed, epoch)``: a resumed run sees
exactly the negatives an uninterrupted run would. Lightning calls ``loader.sampler.set_epoch(epoch)``
before each epoch (as it does for a ``DistributedSampler``); under DDP each rank takes every
``world_size``-th batch of the same shuffled order, padded so all ranks run the same number of steps.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import pytorch_lightning as pl
import torch

from .datasets import (MOVIELENS, DataError, Interactions, download_movielens, load_interactions_file, load_movielens,
                       load_ncf_presplit)
from .splits import Split, key_lookup, leave_one_out, pair_keys, sample_negatives

__all__ = ["TrainLoader", "EvalLoader", "NCFDataModule", "load_dataset"]


def load_dataset(dataset: str = "ml-100k", root: Optional[str] = None, download: bool = True, sep: Optional[str] = None,
                 user_col: str = "user", item_col: str = "item", timestamp_col: Optional[str] = "timestamp") -> Interactions:
    """``ml-100k`` / ``ml-1m`` by name, ``PREFIX`` of an NCF split (``PREFIX.train.rating`` exists), or a CSV/TSV path."""
    if dataset in MOVIELENS:
        return load_movielens(dataset, root, download)
    if os.path.exists(dataset + ".train.rating"):
        return load_ncf_presplit(dataset)
    if os.path.exists(dataset):
        return load_interactions_file(dataset, sep, user_col, item_col, timestamp_col)
    raise DataError(
        f"Unknown dataset {dataset!r}: use one of {sorted(MOVIELENS)}, the path of a CSV/TSV interactions file, "
        f"or the prefix of an NCF split (PREFIX.train.rating, PREFIX.test.rating, PREFIX.test.negative)."
    )


class TrainLoader:
    """Shuffled batches of (users, items, labels) with fresh negatives every epoch.

    Example:
        >>> loader = TrainLoader(torch.tensor([0, 1]), torch.tensor([2, 3]), n_items=10, num_negatives=4, batch_size=4)
        >>> loader.sampler.set_epoch(0)
        >>> sum(len(b[0]) for b in loader)
        10
    """

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_items: int, num_negatives: int = 4,
                 batch_size: int = 1024, seed: int = 0, device: torch.device | str = "cpu", rank: int = 0,
                 world_size: int = 1):
        self.device = torch.device(device)
        self.users = users.to(self.device)
        self.items = items.to(self.device)
        keys = pair_keys(self.users, self.items, n_items).sort().values
        # every negative's user is a training user, so its key is below (max user + 1) * n_items
        self.keys = key_lookup(keys, (int(self.users.max()) + 1) * n_items if len(keys) else 0)
        self.n_items, self.num_negatives, self.batch_size = n_items, num_negatives, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.sampler = self  # Lightning calls ``dataloader.sampler.set_epoch(epoch)`` each epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _generator(self) -> torch.Generator:
        # Same stream on every rank, distinct per epoch, independent of the global RNG.
        return torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + self.epoch)

    def __len__(self) -> int:
        n = len(self.users) * (1 + self.num_negatives)
        return math.ceil(math.ceil(n / self.batch_size) / self.world_size)

    def epoch_tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All of this epoch's samples, shuffled: users, items, labels (1 positive, 0 negative)."""
        gen = self._generator()
        neg_u, neg_i = sample_negatives(self.users, self.keys, self.n_items, self.num_negatives, gen)
        users = torch.cat([self.users, neg_u])
        items = torch.cat([self.items, neg_i])
        labels = torch.cat([torch.ones(len(self.users), device=self.device), torch.zeros(len(neg_u), device=self.device)])
        perm = torch.randperm(len(users), generator=gen, device=self.device)
        return users[perm], items[perm], labels[perm]

    def __iter__(self):
        users, items, labels = self.epoch_tensors()
        n_batches = math.ceil(len(users) / self.batch_size)
        per_rank = len(self)
        for k in range(per_rank):
            b = (k * self.world_size + self.rank) % n_batches  # pad by wrapping, as DistributedSampler does
            s = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield users[s], items[s], labels[s]


class EvalLoader:
    """Batches of ``(users [B], candidates [B, C])``; under DDP each rank gets a disjoint slice of users."""

    def __init__(self, users: torch.Tensor, candidates: torch.Tensor, batch_size: int = 1024,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1):
        idx = torch.arange(rank, len(users), world_size)
        self.users = users[idx].to(device)
        self.candidates = candidates[idx].to(device)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.users) / self.batch_size)

    def __iter__(self):
        for s in range(0, len(self.users), self.batch_size):
            yield self.users[s:s + self.batch_size], self.candidates[s:s + self.batch_size]


class NCFDataModule(pl.LightningDataModule):
    """MovieLens (or your interactions) under the NCF leave-one-out protocol.

    Args:
        dataset: ``ml-100k``, ``ml-1m``, a CSV/TSV path, or an NCF split prefix.
        root: folder holding ``ml-100k/`` etc.; default ``$NCF_DATA_DIR`` or ``./data``.
        download: fetch MovieLens when it is not under ``root``.
        batch_size: training batch size (evaluation uses ``eval_batch_size`` users per batch).
        num_negatives: training negatives per positive, fresh every epoch.
        num_eval_negatives: negatives per validation/test user (99 in the paper).
        validation: hold out each user's second-latest item for model selection.
        split_seed: seeds the evaluation negatives only, so every model and run sees the same lists.
        negatives_seed: seeds training negatives (per epoch) and their shuffle.
        sep, user_col, item_col, timestamp_col: for CSV/TSV files.
        drop_short_users: drop users with too few interactions instead of failing.

    Example:
        >>> dm = NCFDataModule("ml-100k")  # doctest: +SKIP
        >>> dm.setup("fit"); dm.num_users  # doctest: +SKIP
        943
    """

    def __init__(self, dataset: str = "ml-100k", root: Optional[str] = None, download: bool = True,
                 batch_size: int = 1024, num_negatives: int = 4, num_eval_negatives: int = 99,
                 validation: bool = True, split_seed: int = 0, negatives_seed: int = 0,
                 eval_batch_size: int = 1024, sep: Optional[str] = None, user_col: str = "user",
                 item_col: str = "item", timestamp_col: Optional[str] = "timestamp", drop_short_users: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.dataset = dataset
        self.root = root
        self.interactions: Optional[Interactions] = None
        self.split: Optional[Split] = None

    # -- data ---------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.dataset in MOVIELENS:
            download_movielens(self.dataset, self.root, self.hparams.download)

    def _load(self) -> Interactions:
        if self.interactions is None:
            h = self.hparams
            self.interactions = load_dataset(self.dataset, self.root, h.download, h.sep, h.user_col, h.item_col, h.timestamp_col)
        return self.interactions

    def setup(self, stage: Optional[str] = None) -> None:
        if self.split is None:
            h = self.hparams
            self.split = leave_one_out(self._load(), h.validation, h.num_eval_negatives, h.split_seed, h.drop_short_users)

    @property
    def num_users(self) -> int:
        return self._load().n_users

    @property
    def num_items(self) -> int:
        return self._load().n_items

    # -- loaders ------------------------------------------------------------------------------------
    def _placement(self) -> dict:
        t = self.trainer
        if t is None:
            return {"device": "cpu", "rank": 0, "world_size": 1}
        return {"device": t.strategy.root_device, "rank": t.global_rank, "world_size": t.world_size}

    def train_dataloader(self) -> TrainLoader:
        h = self.hparams
        return TrainLoader(self.split.train_users, self.split.train_items, self.split.n_items, h.num_negatives,
                           h.batch_size, h.negatives_seed, **self._placement())

    def val_dataloader(self) -> EvalLoader:
        if self.split.val_users is None:
            return []
        return EvalLoader(self.split.val_users, self.split.val_candidates, self.hparams.eval_batch_size, **self._placement())

    def test_dataloader(self) -> EvalLoader:
        return EvalLoader(self.split.test_users, self.split.test_candidates, self.hparams.eval_batch_size, **self._placement())

    # -- checkpoint ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Saved in every checkpoint: the id mapping, so predictions speak the dataset's original ids."""
        inter = self._load()
        return {"dataset": str(self.dataset), "user_ids": list(inter.user_ids), "item_ids": list(inter.item_ids)}

    def load_state_dict(self, state: dict) -> None:
        inter = self._load()
        if list(inter.user_ids) != list(state.get("user_ids", [])) or list(inter.item_ids) != list(state.get("item_ids", [])):
            raise DataError(
                f"The checkpoint was trained on {state.get('dataset')!r} with a different user/item id mapping than "
                f"{self.dataset!r} gives now; resume with the data it was trained on."
            )
