"""A split as RecBole atomic benchmark files, so that another library trains and is scored on exactly the
project's data: the same training rows, validation and test items, and the same candidate lists.

:func:`export_recbole` writes, in ``folder``, for ``name``:

* ``name.train.inter``, ``name.valid.inter``, ``name.test.inter``: RecBole's benchmark files
  (``benchmark_filename: [train, valid, test]``), one ``user_id:token``, ``item_id:token`` row per
  training interaction, per validation item and per test item (no ``valid`` file when the split has no
  validation items);
* ``name.user``, ``name.item``: every user and item of the split, so the catalogue is the same even where
  an item occurs in no file above;
* ``name.valid.candidates``, ``name.test.candidates``: each user's evaluation candidates in the project's
  order, the held-out item first (``label:float`` 1) then its sampled negatives (0), one row each.

Tokens are the project's user and item indices (``user_ids[k]`` of the data is the original id of index
``k``, as in checkpoints), so no id needs quoting. :func:`read_recbole` reads the files back into a
:class:`~ncf.splits.Split`.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .datasets import DataError
from .files import atomic_write_bytes
from .splits import Split

__all__ = ["export_recbole", "read_recbole"]

USER, ITEM, LABEL = "user_id:token", "item_id:token", "label:float"


def _table(header: list[str], *columns: np.ndarray) -> bytes:
    buf = io.StringIO()
    np.savetxt(buf, np.stack([np.asarray(c) for c in columns], 1), fmt="%d", delimiter="\t",
               header="\t".join(header), comments="")
    return buf.getvalue().encode()


def _candidate_rows(users: torch.Tensor, candidates: torch.Tensor) -> bytes:
    """One row per (user, candidate), the held-out item first with label 1."""
    c = candidates.shape[1]
    labels = np.zeros((len(users), c), dtype=np.int64)
    labels[:, 0] = 1
    return _table([USER, ITEM, LABEL], users.numpy().repeat(c), candidates.numpy().reshape(-1), labels.reshape(-1))


def export_recbole(split: Split, folder: str | Path, name: str = "ncf") -> Path:
    """Write ``split`` as RecBole atomic benchmark files ``folder/name.*`` (see the module); returns ``folder``.

    >>> import tempfile
    >>> sp = Split(2, 3, torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([0, 1]),
    ...            torch.tensor([[1, 2], [2, 0]]), torch.tensor([0, 1]), torch.tensor([[2, 1], [0, 2]]))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     back = read_recbole(export_recbole(sp, d))
    ...     back.test_candidates.tolist(), back.n_items
    ([[2, 1], [0, 2]], 3)
    """
    folder = Path(folder)
    cpu = {k: (v.cpu().to(torch.int64) if isinstance(v, torch.Tensor) else v) for k, v in vars(split).items()}
    files = {
        "train.inter": _table([USER, ITEM], cpu["train_users"], cpu["train_items"]),
        "test.inter": _table([USER, ITEM], cpu["test_users"], cpu["test_candidates"][:, 0]),
        "user": _table([USER], np.arange(split.n_users)),
        "item": _table([ITEM], np.arange(split.n_items)),
        "test.candidates": _candidate_rows(cpu["test_users"], cpu["test_candidates"]),
    }
    if split.val_users is not None:
        files["valid.inter"] = _table([USER, ITEM], cpu["val_users"], cpu["val_candidates"][:, 0])
        files["valid.candidates"] = _candidate_rows(cpu["val_users"], cpu["val_candidates"])
    for suffix, data in files.items():
        atomic_write_bytes(data, folder / f"{name}.{suffix}")
    return folder


def _read(path: Path, header: list[str]) -> np.ndarray:
    """The integer columns of one exported file, ``[rows, len(header)]``."""
    if not path.exists():
        raise DataError(f"{path} is missing; write the export again (benchmarks/peers.py --export DIR).")
    with open(path) as fh:
        first = fh.readline().rstrip("\n").split("\t")
        if first != header:
            raise DataError(f"{path}: header {first} is not {header}; it was not written by ncf.export.")
        rows = np.loadtxt(fh, dtype=np.int64, delimiter="\t", ndmin=2)
    return rows.reshape(-1, len(header))


def _read_candidates(path: Path, held_out: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Users and their ``[U, C]`` candidates, checked against the held-out items of the ``.inter`` file."""
    rows = _read(path, [USER, ITEM, LABEL])
    starts = np.flatnonzero(rows[:, 2] == 1)
    if len(starts) == 0 or len(rows) % len(starts) or (starts != np.arange(len(starts)) * (len(rows) // len(starts))).any():
        raise DataError(f"{path}: each user's rows must start with its held-out item (label 1), the same number each.")
    c = len(rows) // len(starts)
    users, cands = rows[starts, 0], rows[:, 1].reshape(-1, c)
    inter = _read(held_out, [USER, ITEM])
    if not np.array_equal(inter, np.stack([users, cands[:, 0]], 1)):
        raise DataError(f"{held_out} and {path.name} disagree on the held-out items; write the export again.")
    return torch.from_numpy(users), torch.from_numpy(cands)


def read_recbole(folder: str | Path, name: str = "ncf") -> Split:
    """The :class:`~ncf.splits.Split` that :func:`export_recbole` wrote to ``folder``."""
    folder = Path(folder)
    train = _read(folder / f"{name}.train.inter", [USER, ITEM])
    n_users = len(_read(folder / f"{name}.user", [USER]))
    n_items = len(_read(folder / f"{name}.item", [ITEM]))
    test_users, test_cands = _read_candidates(folder / f"{name}.test.candidates", folder / f"{name}.test.inter")
    val_users: Optional[torch.Tensor] = None
    val_cands: Optional[torch.Tensor] = None
    if (folder / f"{name}.valid.candidates").exists():
        val_users, val_cands = _read_candidates(folder / f"{name}.valid.candidates", folder / f"{name}.valid.inter")
    return Split(n_users, n_items, torch.from_numpy(train[:, 0]), torch.from_numpy(train[:, 1]), val_users, val_cands,
                 test_users, test_cands)
