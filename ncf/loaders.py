"""The loaders the data module hands Lightning: pre-batched tensors on the training device, not per-sample
``Dataset`` items. Training batches draw fresh negatives every epoch from a generator seeded by ``(seed,
epoch)`` (and the rank under DDP, where each rank holds only its share of the users); evaluation batches
carry each user's candidate list and, for full ranking and recommending, the items to exclude."""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import torch

from .candidates import interacted
from .datasets import DataError
from .objectives import LAYOUTS
from .sampling import key_lookup, pair_keys, sample_negatives

__all__ = ["TrainLoader", "EvalBatch", "EvalLoader", "user_shares"]


def user_shares(users: torch.Tensor, world_size: int) -> torch.Tensor:
    """The rank that owns each user (``[n_users]``): users sorted by their number of rows, heaviest first,
    dealt out in a snake order (0, 1, ..., w-1, w-1, ..., 0, ...) so every rank gets about the same rows.

    >>> user_shares(torch.tensor([0, 0, 0, 1, 2, 2, 3]), 2).tolist()
    [0, 1, 1, 0]
    """
    counts = torch.bincount(users.cpu())
    order = torch.sort(counts, descending=True, stable=True).indices
    slot = torch.arange(len(order)) % (2 * world_size)
    rank = torch.where(slot < world_size, slot, 2 * world_size - 1 - slot)
    return torch.empty_like(rank).scatter_(0, order, rank)


class TrainLoader:
    """Shuffled training batches with fresh negatives every epoch, in one of two layouts (the objective's,
    :mod:`ncf.objectives`):

    * ``pointwise``: ``(users [N], items [N], labels [N])``, positives and negatives shuffled together,
      ``batch_size`` pairs a batch;
    * ``grouped``: ``(users [B], items [B, 1 + k])``, each positive (column 0) with its own ``k =
      num_negatives`` negatives, ``batch_size`` positives a batch, shuffled by positive.

    ``skip``: ``(users, items)`` of training rows to leave out, as if the user never had them
    (``explain.counterfactual``): they are not yielded as positives and may be drawn as that user's
    negatives. They are still shuffled in: a batch that would hold one is that much smaller, and an epoch
    has as many batches as without them.

    Example:
        >>> loader = TrainLoader(torch.tensor([0, 1]), torch.tensor([2, 3]), n_items=10, num_negatives=4, batch_size=4)
        >>> loader.sampler.set_epoch(0)
        >>> sum(len(b[0]) for b in loader)
        10
        >>> grouped = TrainLoader(torch.tensor([0, 1]), torch.tensor([2, 3]), 10, 4, batch_size=4, layout="grouped")
        >>> [tuple(t.shape) for t in next(iter(grouped))]
        [(2,), (2, 5)]
    """

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_items: int, num_negatives: int = 4,
                 batch_size: int = 1024, seed: int = 0, device: torch.device | str = "cpu", rank: int = 0,
                 world_size: int = 1, skip: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                 layout: str = "pointwise", position: Optional[Callable[[], tuple[int, int]]] = None):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}.")
        self.layout = layout
        self.device = torch.device(device)
        self.total = len(users)  # training positives of the whole run, every rank
        self.share_max = len(users)  # positives of the largest share (every rank runs as many steps)
        if world_size > 1:  # this rank's users, with all of their rows: negatives need only their positives
            if len(torch.unique(users)) < world_size:
                raise DataError(f"{world_size} processes need at least as many training users; use fewer devices.")
            owner = user_shares(users, world_size)
            sizes = torch.bincount(owner[users.cpu()], minlength=world_size)
            self.share_max = int(sizes.max())
            mine = owner[users.cpu()] == rank
            users, items = users[mine.to(users.device)], items[mine.to(items.device)]
        self.users = users.to(self.device)
        self.items = items.to(self.device)
        keys = pair_keys(self.users, self.items, n_items).sort().values
        self.skipped = None  # [positives]: rows left out (``skip``)
        if skip is not None and len(skip[0]):
            left_out = pair_keys(skip[0].to(self.device), skip[1].to(self.device), n_items)
            self.skipped = torch.isin(pair_keys(self.users, self.items, n_items), left_out)
            keys = keys[~torch.isin(keys, left_out)]
        # every negative's user is a training user, so its key is below (max user + 1) * n_items
        self.keys = key_lookup(keys, (int(self.users.max()) + 1) * n_items if len(keys) else 0)
        self.n_items, self.num_negatives, self.batch_size = n_items, num_negatives, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.sampler = self  # Lightning calls ``dataloader.sampler.set_epoch(epoch)`` each epoch
        # ``() -> (epoch, batches already trained)`` of the trainer, read as an epoch's batches start: a run
        # resumed within an epoch (stopped by max_steps or max_time) trains the batches it had not, and the
        # epoch is the trainer's own (Lightning's set_epoch is one ahead on some resumes of max_steps runs)
        self.position = position

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _generator(self) -> torch.Generator:
        # Distinct per epoch and rank, independent of the global RNG; one process seeds from (seed, epoch) alone.
        seed = self.seed * 1_000_003 + self.epoch + (self.rank * 7_919_000_011 if self.world_size > 1 else 0)
        return torch.Generator(device=self.device).manual_seed(seed)

    @property
    def samples_per_epoch(self) -> int:
        """Samples this rank draws and holds each epoch (its positives and their negatives)."""
        return len(self.users) * (1 + self.num_negatives)

    def __len__(self) -> int:
        rows = self.share_max * (1 if self.layout == "grouped" else 1 + self.num_negatives)
        return math.ceil(rows / self.batch_size)

    def _first_batch(self) -> int:
        """The batch this epoch starts at (0 unless resumed within it), with ``epoch`` set from ``position``."""
        if self.position is None:
            return 0
        self.epoch, done = self.position()
        return done if 0 < done < len(self) else 0

    def __iter__(self):
        if self.layout == "grouped":
            yield from self._grouped()
            return
        first = self._first_batch()
        # This epoch's negatives and one permutation of positives and negatives; each batch gathers its
        # rows from them (sample k of the epoch: a positive when k < P, else negative k - P, whose user is
        # that of positive (k - P) // num_negatives), so the epoch's users, items and labels are never
        # materialised: on large data those would be the largest arrays an epoch holds.
        gen = self._generator()
        _, neg_items = sample_negatives(self.users, self.keys, self.n_items, self.num_negatives, gen)
        n_pos = len(self.users)
        perm = torch.randperm(n_pos + len(neg_items), generator=gen, device=self.device)
        n_batches = max(1, math.ceil(len(perm) / self.batch_size))
        for k in range(first, len(self)):
            b = k % n_batches  # a smaller share wraps around, as DistributedSampler pads
            idx = perm[b * self.batch_size:(b + 1) * self.batch_size]
            positive = idx < n_pos
            neg = (idx - n_pos).clamp_(min=0)
            users = self.users[torch.where(positive, idx, neg // self.num_negatives)]
            items = torch.where(positive, self.items[idx.clamp(max=n_pos - 1)],
                                neg_items[neg.clamp_(max=len(neg_items) - 1)])
            if self.skipped is not None:  # rows left out: drawn into the shuffle, not into the batch
                keep = ~(positive & self.skipped[idx.clamp(max=n_pos - 1)])
                users, items, positive = users[keep], items[keep], positive[keep]
            yield users, items, positive.float()

    def _grouped(self):
        # The same draw of negatives as the pointwise layout (row p's negatives are negatives
        # p * k ... p * k + k - 1, all of user p), then one permutation of the positives.
        first = self._first_batch()
        gen = self._generator()
        _, neg_items = sample_negatives(self.users, self.keys, self.n_items, self.num_negatives, gen)
        n_pos = len(self.users)
        negatives = neg_items.view(n_pos, self.num_negatives)
        perm = torch.randperm(n_pos, generator=gen, device=self.device)
        n_batches = max(1, math.ceil(n_pos / self.batch_size))
        for k in range(first, len(self)):
            b = k % n_batches  # a smaller share wraps around, as DistributedSampler pads
            idx = perm[b * self.batch_size:(b + 1) * self.batch_size]
            if self.skipped is not None:  # rows left out: drawn into the shuffle, not into the batch
                idx = idx[~self.skipped[idx]]
            yield self.users[idx], torch.cat([self.items[idx].unsqueeze(1), negatives[idx]], dim=1)


class EvalBatch(NamedTuple):
    """One evaluation batch: ``users [B]``, ``candidates [B, C]`` (held-out item first, then sampled
    negatives; ``None`` when recommending) and, for full ranking and recommending, ``exclude [B, n_items]``:
    the items that are not candidates (every known positive of the user except the held-out item)."""

    users: torch.Tensor
    candidates: torch.Tensor
    exclude: Optional[torch.Tensor] = None


class EvalLoader:
    """Batches of :class:`EvalBatch`; under DDP each rank gets a disjoint slice of users.

    With ``known_keys`` (:func:`ncf.candidates.interacted_keys`) each batch also carries the mask of the
    items that are not candidates (:func:`ncf.candidates.interacted`), and batches
    shrink so that one holds at most ``max_pairs`` (user, item) scores.
    """

    def __init__(self, users: torch.Tensor, candidates: Optional[torch.Tensor], batch_size: int = 1024,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
                 known_keys: Optional[torch.Tensor] = None, n_items: int = 0, max_pairs: int = 1 << 21):
        if world_size > len(users) > 0:  # a rank without users would stop every rank with a collective error
            raise DataError(f"{world_size} processes need at least as many users to evaluate; this data has "
                            f"{len(users)}: use --trainer.devices {len(users)} or fewer.")
        idx = torch.arange(rank, len(users), world_size)
        self.users = users[idx].to(device)
        self.candidates = candidates[idx].to(device) if candidates is not None else None
        self.known = known_keys.to(device) if known_keys is not None else None
        self.n_items = n_items
        if self.known is not None:
            batch_size = max(1, min(batch_size, max_pairs // max(n_items, 1)))
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.users) / self.batch_size)

    def __iter__(self):
        for s in range(0, len(self.users), self.batch_size):
            users = self.users[s:s + self.batch_size]
            cands = self.candidates[s:s + self.batch_size] if self.candidates is not None else None
            exclude = None
            if self.known is not None:
                exclude = interacted(self.known, users, self.n_items)
                if cands is not None:
                    exclude[torch.arange(len(users), device=users.device), cands[:, 0]] = False
            yield EvalBatch(users, cands, exclude)
