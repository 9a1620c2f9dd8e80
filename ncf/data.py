"""The LightningDataModule; its pre-batched loaders are :mod:`ncf.loaders`.

Tiny models are step-bound, so batches are slices of tensors that already sit on the training device
rather than per-sample ``Dataset`` items collated by a ``DataLoader``. :class:`TrainLoader` draws fresh
negatives at the start of every epoch from a generator seeded by ``(seed, epoch)``: a resumed run sees
exactly the negatives an uninterrupted run would. Lightning calls ``loader.sampler.set_epoch(epoch)``
before each epoch (as it does for a ``DistributedSampler``). Under DDP each rank owns a share of the
users (all of their training rows; :func:`user_shares` balances the rows) and draws, shuffles and holds
only its share's negatives, from a generator seeded by ``(seed, epoch, rank)``: per-rank work and memory
fall with more ranks, and a resumed run still sees what an uninterrupted one would. Ranks whose share
ends first wrap around, so every rank runs the same number of steps.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from .candidates import interacted_keys
from .datasets import DataError, Interactions, load_interactions_file
from .names import distinct_names, read_names
from .presplit import PRESPLIT_SUFFIXES, load_ncf_presplit
from .movielens import MOVIELENS, download_movielens, load_movielens
from .loaders import EvalLoader, TrainLoader
from .splits import (HOLDOUTS, VALIDATION_ITEMS, Split, k_core, leave_one_out, train_draws, weighted_positives,
                     without_short_users)

__all__ = ["NCFDataModule", "load_dataset", "dropping_filters"]

log = logging.getLogger("ncf")

# The held-out items are "clearly colder" than their negatives when the cold shares differ by COLD_GAP
# and either the cold share is COLD_RATIO times theirs or the warm share under 1 / COLD_RATIO of theirs.
COLD_GAP, COLD_RATIO = 0.05, 2.0


def clearly_colder(held_out_cold: float, negatives_cold: float) -> bool:
    """Whether held-out items are far more often unseen in training than the sampled negatives.

    >>> clearly_colder(0.63, 0.13), clearly_colder(1.0, 0.8), clearly_colder(0.002, 0.0025)
    (True, True, False)
    """
    h, n = held_out_cold, negatives_cold
    return h - n > COLD_GAP and (h > COLD_RATIO * n or (1 - h) * COLD_RATIO < (1 - n))


def load_dataset(dataset: str = "ml-100k", root: Optional[str] = None, download: bool = True, sep: Optional[str] = None,
                 user_col: str = "user", item_col: str = "item", timestamp_col: Optional[str] = "timestamp",
                 verify: bool = True) -> Interactions:
    """``ml-100k`` / ``ml-1m`` by name, ``PREFIX`` of an NCF split (``PREFIX.train.rating`` exists), a CSV/TSV path,
    or ``synthetic:N[:SEED]`` (generated in memory by :mod:`ncf.synthetic`)."""
    if dataset in MOVIELENS:
        return load_movielens(dataset, root, download, verify)
    if dataset.startswith("synthetic:"):  # generated in memory (ncf.synthetic)
        from .synthetic import generate, parse_spec

        n, seed = parse_spec(dataset)
        return generate(n, seed=seed)
    if any(os.path.exists(dataset + suffix) for suffix in PRESPLIT_SUFFIXES):
        return load_ncf_presplit(dataset)  # names the split's files that are missing
    if os.path.exists(dataset):
        return load_interactions_file(dataset, sep, user_col, item_col, timestamp_col)
    import difflib

    near = difflib.get_close_matches(dataset, sorted(MOVIELENS), n=1, cutoff=0.75)
    raise DataError(
        f"{dataset} not found: no such file" + (f" (did you mean {near[0]}?)" if near else "")
        + f"; --data.dataset takes the path of a CSV/TSV interactions file, the prefix of an NCF split "
        f"(PREFIX.train.rating, PREFIX.test.rating, PREFIX.test.negative), {' or '.join(sorted(MOVIELENS))}, "
        f"or synthetic:N[:SEED]."
    )


def dropping_filters(hparams: Optional[dict]) -> list[str]:
    """The data settings (as options) under which a data module leaves ids of its file out: the k-core filter
    and ``drop_short_users``. An id of the file that is unknown to a model trained so may be one of them.

    >>> dropping_filters({"min_item_interactions": 5, "drop_short_users": True})
    ['--data.min_item_interactions 5', '--data.drop_short_users true']
    """
    h = hparams or {}
    out = [f"--data.{k} {h[k]}" for k in ("min_user_interactions", "min_item_interactions") if h.get(k)]
    return out + (["--data.drop_short_users true"] if h.get("drop_short_users") else [])


class NCFDataModule(pl.LightningDataModule):
    """MovieLens (or your interactions) under the NCF leave-one-out protocol.

    Args:
        dataset: ``ml-100k``, ``ml-1m``, a CSV/TSV path, or an NCF split prefix.
        root: folder holding ``ml-100k/`` etc.; default ``$NCF_DATA_DIR`` or ``./data``.
        download: fetch MovieLens when it is not under ``root``.
        batch_size: training batch size: (user, item) pairs for a pointwise objective, positives (each with
            its ``num_negatives`` negatives) for a grouped one (:mod:`ncf.objectives`); evaluation uses
            ``eval_batch_size`` users per batch.
        num_negatives: training negatives per positive, fresh every epoch (``k`` of BPR and sampled softmax).
        num_eval_negatives: negatives per validation/test user (99 in the paper).
        validation: hold out a second item per user for model selection.
        validation_item: which one: ``random`` (one of the user's other interactions, drawn with
            ``split_seed``: the paper's rule) or ``previous`` (the one just before the test item, as RecBole
            splits). ``random`` leaves the interaction nearest the test item in training, where it says
            most about what the user does next.
        split_seed: seeds the evaluation negatives (and random hold-outs), so every model and run sees the
            same lists.
        negatives_seed: seeds training negatives (per epoch) and their shuffle.
        sep, user_col, item_col, timestamp_col: for CSV/TSV files.
        drop_short_users: drop users with too few interactions instead of failing: they leave the id
            mapping (with any item only they had), so the model, ``predict`` and ``explain.py`` never see them.
        holdout: which items are held out: ``latest`` (by timestamp, the paper's rule), ``random`` (one
            random item per user, seeded by ``split_seed``), or ``auto``: ``latest`` when the data has
            timestamps, ``random`` when it has none (file order is not time).
        item_names, user_names: CSV/TSV files naming your ids (an id column and a name column), shown by
            ``explain.py`` and the attribution record as MovieLens titles are.
        names_id_col, names_col: the id and name columns of those files (default: their first two).
        names_encoding: text encoding of the names files.
        names_sep: their separator; default sniffed from the file (comma, tab, ``::``, ``|``, ``;``).
        min_user_interactions, min_item_interactions: k-core filter (as RecBole's): drop users and items
            with fewer interactions, repeated until every user and item left has enough (dropping a user
            can leave an item short, and back). 0: off. Part of the split's identity.
        full_ranking: also rank each held-out item against every item the user has not interacted with,
            logged as ``val_full_hr10``, ``val_full_ndcg10``, ``val_full_recall10`` (and ``test_full_*``).
        verify: check MovieLens' extracted ratings file against its published md5 (``False`` for a copy
            you changed on purpose).
        recent_positives, recent_weight: each user's ``recent_positives`` latest training interactions are
            drawn ``recent_weight`` times an epoch instead of once (each with its own negatives): training
            weighs what users did lately more, as the next interaction depends most on it (the held-out item is
            each user's latest). Needs interactions with times (``holdout`` latest). 0 and 1: off.

    Example:
        >>> dm = NCFDataModule("ml-100k")  # doctest: +SKIP
        >>> dm.setup("fit"); dm.num_users  # doctest: +SKIP
        943
    """

    def __init__(self, dataset: str = "ml-100k", root: Optional[str] = None, download: bool = True,
                 batch_size: int = 1024, num_negatives: int = 4, num_eval_negatives: int = 99,
                 validation: bool = True, split_seed: int = 0, negatives_seed: int = 0,
                 eval_batch_size: int = 1024, sep: Optional[str] = None, user_col: str = "user",
                 item_col: str = "item", timestamp_col: Optional[str] = "timestamp", drop_short_users: bool = False,
                 holdout: str = "auto", item_names: Optional[str] = None, user_names: Optional[str] = None,
                 names_id_col: Optional[str] = None, names_col: Optional[str] = None, names_encoding: str = "utf-8",
                 full_ranking: bool = False, verify: bool = True, validation_item: str = "random",
                 names_sep: Optional[str] = None, min_user_interactions: int = 0, min_item_interactions: int = 0,
                 recent_positives: int = 0, recent_weight: int = 1):
        super().__init__()
        if holdout not in ("auto",) + HOLDOUTS:
            raise DataError(f"Unknown hold-out rule {holdout!r}; use --data.holdout auto, latest or random.")
        if validation_item not in VALIDATION_ITEMS:
            raise DataError(f"Unknown validation item rule {validation_item!r}; use --data.validation_item random or "
                            f"previous.")
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise DataError(f"{name} must be at least 1, not {value} (--data.{name}).")
        for name, value in (("min_user_interactions", min_user_interactions),
                            ("min_item_interactions", min_item_interactions)):
            if value < 0:
                raise DataError(f"{name} must be at least 0 (0: no filter), not {value} (--data.{name}).")
        for name, value in (("split_seed", split_seed), ("negatives_seed", negatives_seed)):
            if not 0 <= value < 2 ** 63:  # numpy's seeds are non-negative
                raise DataError(f"{name} must be between 0 and 2**63 - 1, not {value} (--data.{name}).")
        if recent_positives < 0 or recent_weight < 1:
            raise DataError(f"recent_positives must be at least 0 and recent_weight at least 1, not "
                            f"{recent_positives} and {recent_weight} (--data.recent_positives, --data.recent_weight).")
        for name, value in (("num_negatives", num_negatives), ("num_eval_negatives", num_eval_negatives)):
            if value < 1:  # 0 would train without negatives, or rank the held-out item alone (HR@10 = 1)
                raise DataError(f"{name} must be at least 1, not {value} (--data.{name}).")
        self.save_hyperparameters()
        self.dataset = dataset
        self.root = root
        self.interactions: Optional[Interactions] = None
        self.split: Optional[Split] = None
        self.predict_users: Optional[torch.Tensor] = None  # indices; None: every user

    # -- data ---------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.dataset in MOVIELENS:
            download_movielens(self.dataset, self.root, self.hparams.download)

    def _load(self) -> Interactions:
        if self.interactions is None:
            h = self.hparams
            inter = load_dataset(self.dataset, self.root, h.download, h.sep, h.user_col, h.item_col, h.timestamp_col,
                                 h.verify)
            inter = self._k_core(inter)
            if h.drop_short_users and inter.presplit is None:
                inter = self._drop_short_users(inter)
            names = dict(id_col=h.names_id_col, name_col=h.names_col, encoding=h.names_encoding, sep=h.names_sep)
            if h.item_names:
                inter.item_titles = read_names(h.item_names, inter.item_ids, **names)
            if h.user_names:
                inter.user_names = read_names(h.user_names, inter.user_ids, **names)
            inter.item_titles = distinct_names(inter.item_titles, inter.item_ids)
            inter.user_names = distinct_names(inter.user_names, inter.user_ids)
            self.interactions = inter
        return self.interactions

    def _drop_short_users(self, inter: Interactions) -> Interactions:
        """Users too short for the split leave the id mapping before anything is sized by it, with the
        items only they had (:func:`~ncf.splits.without_short_users`)."""
        need = 3 if self.hparams.validation else 2
        kept = without_short_users(inter, need)
        if kept.n_users == 0:
            roles = "a test, a validation and a training one" if need == 3 else "a test and a training one"
            raise DataError(f"{inter.source}: no user has {need} or more interactions, so --data.drop_short_users "
                            f"drops every user; leave-one-out needs {need} per user ({roles}).")
        if kept is not inter and rank_zero_only.rank == 0:
            log.info(f"{inter.source}: dropped {inter.n_users - kept.n_users} users with fewer than {need} "
                     f"interactions and {inter.n_items - kept.n_items} items only they had (--data.drop_short_users).")
        return kept

    def _k_core(self, inter: Interactions) -> Interactions:
        """The k-core filter of ``min_user_interactions`` / ``min_item_interactions``, logged in one line."""
        h = self.hparams
        min_u, min_i = h.get("min_user_interactions", 0), h.get("min_item_interactions", 0)
        if not (min_u or min_i):
            return inter
        if inter.presplit is not None:
            raise DataError(f"{inter.source} is a published split: its test lists stay as they are, so it cannot be "
                            f"k-core filtered; drop --data.min_user_interactions / --data.min_item_interactions.")
        kept = k_core(inter, min_u, min_i)
        rule = ", ".join(f"{who} >= {n}" for who, n in (("users", min_u), ("items", min_i)) if n) + " interactions"
        dropped_u, dropped_i = inter.n_users - kept.n_users, inter.n_items - kept.n_items
        if rank_zero_only.rank == 0:
            log.info(f"k-core filter ({rule}): dropped {dropped_u:,} users "
                     f"and {dropped_i:,} items ({len(inter) - len(kept):,} interactions); {kept.n_users:,} users and "
                     f"{kept.n_items:,} items remain.")
        if len(kept) == 0:
            raise DataError(f"{inter.source}: the k-core filter ({rule}) "
                            f"leaves no interactions; lower --data.min_user_interactions / --data.min_item_interactions.")
        return kept

    @property
    def holdout(self) -> str:
        """The hold-out rule in force: ``auto`` resolved by whether the data has timestamps."""
        h = self.hparams.holdout
        if h != "auto":
            return h
        return "latest" if self._load().has_timestamps else "random"

    def setup(self, stage: Optional[str] = None) -> None:
        if self.split is None:
            h = self.hparams
            inter = self._load()
            if h.holdout == "latest" and not inter.has_timestamps:
                raise DataError(f"{inter.source} has no timestamp column {h.timestamp_col!r}, so 'latest' would "
                                f"hold out rows by file order; use --data.holdout random (or auto), or name the "
                                f"time column with --data.timestamp_col.")
            split = leave_one_out(inter, h.validation, h.num_eval_negatives, h.split_seed, h.drop_short_users,
                                  self.holdout, h.validation_item)
            # settings the split cannot serve are refused here, before a fit moves an earlier run's checkpoints
            train_draws(split, h.get("recent_positives", 0), h.get("recent_weight", 1))
            self.split = split
            self._report_split(inter)

    def _report_split(self, inter: Interactions) -> None:
        why = {"latest": "by timestamp", "random": f"seeded by split_seed={self.hparams.split_seed}"}[self.holdout]
        if self.hparams.holdout == "auto":
            why += ("; the data has timestamps" if inter.has_timestamps else
                    "; the data has no timestamps, so file order says nothing of time")
        d = self.split.diagnostic
        if self.split.val_users is not None:
            why += (f"; validation: {self.hparams.validation_item} "
                    + ("(one of each user's other items)" if self.hparams.validation_item == "random"
                       else "(the item before the test item)"))
        msg = (f"hold-out: {self.holdout} ({why}). Held-out items never seen in training: "
               f"{100 * d['held_out_cold']:.1f}%, sampled negatives never seen: {100 * d['negatives_cold']:.1f}%.")
        if rank_zero_only.rank == 0:
            log.info(msg)
        if clearly_colder(d["held_out_cold"], d["negatives_cold"]) and rank_zero_only.rank == 0:
            k_core_fix = "--data.min_item_interactions 5 --data.min_user_interactions 5 (a k-core filter)"
            if self.holdout == "random":  # nothing to gain from the hold-out rule: the items themselves are rare
                once = self._held_out_once(inter)
                fix = (f"{100 * once:.0f}% of the held-out items occur once in the whole file, so no hold-out rule "
                       f"keeps them in training: drop rare items and users with {k_core_fix}.")
            else:
                fix = (f"If the file's order is not time, use --data.holdout random; if it is, expect low HR@10, or "
                       f"drop rare items and users with {k_core_fix}.")
            log.warning(f"{inter.source}: the held-out items are far colder than their sampled negatives "
                        f"({100 * d['held_out_cold']:.0f}% vs {100 * d['negatives_cold']:.0f}% never seen in "
                        f"training): the evaluation measures cold start, not preference. {fix}")

    def _held_out_once(self, inter: Interactions) -> float:
        """Share of the held-out items (validation and test) that occur once in the whole data."""
        counts = torch.from_numpy(np.bincount(inter.items, minlength=inter.n_items))
        held = [c[:, 0] for c in (self.split.val_candidates, self.split.test_candidates) if c is not None]
        held = torch.cat(held)
        return float((counts[held] == 1).float().mean()) if len(held) else 0.0

    @property
    def num_users(self) -> int:
        return self._load().n_users

    @property
    def num_items(self) -> int:
        return self._load().n_items

    def data_fingerprint(self) -> str:
        """SHA-256 of the split a run trains and evaluates on (rows, held-out items, candidates, sizes):
        part of the run identity (:mod:`ncf.run`). Computed once."""
        if getattr(self, "_fingerprint", None) is None:
            import hashlib

            sp = self.split
            h = hashlib.sha256(f"{sp.n_users},{sp.n_items}".encode())
            core = (self.hparams.get("min_user_interactions", 0), self.hparams.get("min_item_interactions", 0))
            if any(core):
                h.update(f"k-core {core[0]},{core[1]}|".encode())
            for t in (sp.train_users, sp.train_items, sp.val_users, sp.val_candidates, sp.test_users,
                      sp.test_candidates):
                if t is not None:
                    h.update(t.detach().cpu().contiguous().numpy().tobytes())
                h.update(b"|")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def known_keys(self) -> torch.Tensor:
        """Every known positive, training rows and held-out items (:func:`ncf.candidates.interacted_keys`)."""
        return interacted_keys(self.split)

    # -- loaders ------------------------------------------------------------------------------------
    def _placement(self) -> dict:
        t = self.trainer
        if t is None:
            return {"device": "cpu", "rank": 0, "world_size": 1}
        return {"device": t.strategy.root_device, "rank": t.global_rank, "world_size": t.world_size}

    def train_dataloader(self) -> TrainLoader:
        """The training batches in the layout the module's objective asks for (pointwise without one)."""
        h = self.hparams
        module = self.trainer.lightning_module if self.trainer is not None else None
        layout = getattr(getattr(module, "objective", None), "layout", "pointwise")
        users, items = self._weighted_positives()
        return TrainLoader(users, items, self.split.n_items, h.num_negatives,
                           h.batch_size, h.negatives_seed, **self._placement(), layout=layout,
                           position=self._train_position if self.trainer is not None else None)

    def _train_position(self) -> tuple[int, int]:
        """The epoch the trainer trains and the batches of it already trained (non-zero only when a run resumes
        within an epoch), as an epoch's batches start."""
        t = self.trainer
        return t.current_epoch, int(t.fit_loop.epoch_loop.batch_progress.current.ready)

    def _weighted_positives(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training positives, each user's ``recent_positives`` latest repeated to ``recent_weight`` copies."""
        h = self.hparams
        return weighted_positives(self.split, h.get("recent_positives", 0), h.get("recent_weight", 1))

    def _eval_loader(self, users, candidates) -> EvalLoader:
        full = dict(known_keys=self.known_keys(), n_items=self.split.n_items) if self.hparams.full_ranking else {}
        return EvalLoader(users, candidates, self.hparams.eval_batch_size, **self._placement(), **full)

    def val_dataloader(self) -> EvalLoader:
        if self.split.val_users is None:
            return []
        return self._eval_loader(self.split.val_users, self.split.val_candidates)

    def test_dataloader(self) -> EvalLoader:
        return self._eval_loader(self.split.test_users, self.split.test_candidates)

    def predict_dataloader(self) -> EvalLoader:
        """Users to recommend for (all, or ``predict_users``), each with every known positive excluded."""
        users = self.predict_users if self.predict_users is not None else torch.arange(self.split.n_users)
        place = self._placement()
        if place["world_size"] > 1:
            raise DataError("Recommendations are written by one process: run predict with --trainer.devices 1.")
        return EvalLoader(users, None, self.hparams.eval_batch_size, **place, known_keys=self.known_keys(),
                          n_items=self.split.n_items)

    # -- checkpoint ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Saved in every checkpoint: the id mapping, so predictions speak the dataset's original ids, and
        how the split was made (hold-out rule and its cold-start diagnostic)."""
        inter = self._load()
        state = {"dataset": str(self.dataset), "user_ids": list(inter.user_ids), "item_ids": list(inter.item_ids)}
        if self.split is not None:
            state["holdout"] = self.split.holdout
            state["split_diagnostic"] = dict(self.split.diagnostic or {})
        return state

    def load_state_dict(self, state: dict) -> None:
        inter = self._load()
        if list(inter.user_ids) != list(state.get("user_ids", [])) or list(inter.item_ids) != list(state.get("item_ids", [])):
            raise DataError(
                f"The checkpoint was trained on {state.get('dataset')!r} with a different user/item id mapping than "
                f"{self.dataset!r} gives now; resume with the data it was trained on."
            )
