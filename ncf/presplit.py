"""The NCF paper's pre-split files (``PREFIX.train.rating``, ``PREFIX.test.rating``, ``PREFIX.test.negative``):
its own training rows, test items and 99 negatives per user, read as they are."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .datasets import Interactions, dedupe, read_table, unique_sorted
from .errors import DataError

__all__ = ["PRESPLIT_SUFFIXES", "load_ncf_presplit"]

PRESPLIT_SUFFIXES = (".train.rating", ".test.rating", ".test.negative")


def _check_presplit(prefix: str, users, items, test_users, test_items, test_negs, negs: dict) -> None:
    """The published split must be what it claims: ids not negative, each negative line's head the user's
    test pair, no negative a positive of its user, no user tested twice."""
    where = f"{prefix}.test.negative"
    for name, arr in (("train", users), ("train", items), ("test", test_users), ("test", test_items),
                      ("negative", test_negs)):
        if arr.size and arr.min() < 0:
            raise DataError(f"{prefix}: a {name} id is negative ({int(arr.min())}); ids are 0-based indices.")
    if len(unique_sorted(test_users)) != len(test_users):
        raise DataError(f"{prefix}.test.rating: a user has two test rows; the split holds one test item per user.")
    untested = np.setdiff1d(unique_sorted(users), test_users)
    if len(untested):
        raise DataError(f"{prefix}.test.rating has no row for {len(untested)} training users (e.g. user "
                        f"{int(untested[0])}); the split holds one test item per user.")
    lines, tested = set(negs), set(test_users.tolist())
    if lines != tested:
        odd = sorted(lines ^ tested)[0]
        side = "a line in it but no test row" if odd in lines else "a test row but no line in it"
        raise DataError(f"{where}: user {odd} has {side}; it needs exactly one line per user of {prefix}.test.rating.")
    heads = np.array([negs[u][0] for u in test_users], dtype=np.int64)
    wrong = np.flatnonzero(heads != test_items)
    if len(wrong):
        u = int(test_users[wrong[0]])
        raise DataError(f"{where}: the line of user {u} names item {int(heads[wrong[0]])}, but {prefix}.test.rating "
                        f"tests item {int(test_items[wrong[0]])}; the files do not belong together.")
    n_items = int(max(items.max(initial=0), test_items.max(initial=0), test_negs.max(initial=0))) + 1
    positives = unique_sorted(np.concatenate([users * n_items + items, test_users * n_items + test_items]))
    neg_keys = test_users[:, None] * n_items + test_negs
    clash = np.isin(neg_keys, positives)
    if clash.any():
        r, c = np.argwhere(clash)[0]
        raise DataError(f"{where}: item {int(test_negs[r, c])} is listed as a negative of user {int(test_users[r])}, "
                        f"who interacted with it; a negative must be an item the user never touched.")


def load_ncf_presplit(prefix: str | os.PathLike) -> Interactions:
    """Load the NCF paper's split: ``PREFIX.train.rating``, ``PREFIX.test.rating``, ``PREFIX.test.negative``.

    Ids in these files are already 0-based indices. The returned interactions hold the training rows;
    ``presplit`` carries the published test items and their negatives so that split is evaluated exactly.

    Example:
        >>> data = load_ncf_presplit("Data/ml-1m")  # doctest: +SKIP
    """
    prefix = str(prefix)
    missing = [prefix + suffix for suffix in PRESPLIT_SUFFIXES if not os.path.isfile(prefix + suffix)]
    if missing:
        raise DataError(f"{', '.join(missing)} not found: the NCF split {prefix!r} needs "
                        f"{', '.join(prefix + s for s in PRESPLIT_SUFFIXES)}.")
    names = ["user", "item", "rating", "timestamp"]
    train = read_table(Path(prefix + ".train.rating"), "\t", names, names)
    test = read_table(Path(prefix + ".test.rating"), "\t", names, names)
    neg_path = Path(prefix + ".test.negative")
    negs = {}
    with open(neg_path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            head, *rest = line.rstrip("\n").split("\t")
            try:
                user, item = (int(x) for x in head.strip("()").split(","))
                listed = [int(x) for x in rest]
            except ValueError:
                raise DataError(f"{neg_path}, line {lineno}: expected '(user,item)' then tab-separated item ids.") from None
            if user in negs:
                raise DataError(f"{neg_path}, line {lineno}: a second line for user {user}; the split has one line "
                                f"of negatives per test user.")
            if len(set(listed)) != len(listed):
                repeated = next(x for k, x in enumerate(listed) if x in listed[:k])
                raise DataError(f"{neg_path}, line {lineno}: item {repeated} is listed twice as a negative of user "
                                f"{user}; each line needs distinct items (HR@10 over a repeated candidate is not the "
                                f"paper's).")
            negs[user] = (item, listed)
    counts = {len(v[1]) for v in negs.values()}
    if len(counts) != 1 or 0 in counts:
        raise DataError(f"{neg_path}: users have different numbers of negatives {sorted(counts)}; every line needs the "
                        f"same number, at least 1.")
    n_users = int(max(train["user"].max(), test["user"].max())) + 1
    n_items = int(max(train["item"].max(), test["item"].max(), max(max(v[1]) for v in negs.values()))) + 1
    test_users = test["user"].to_numpy(dtype=np.int64)
    missing = [u for u in test_users if u not in negs]
    if missing:
        raise DataError(f"{neg_path}: no negatives for user {missing[0]} of {prefix}.test.rating.")
    test_items = test["item"].to_numpy(dtype=np.int64)
    test_negs = np.array([negs[u][1] for u in test_users], dtype=np.int64)
    users = train["user"].to_numpy(dtype=np.int64)
    items = train["item"].to_numpy(dtype=np.int64)
    ts = train["timestamp"].to_numpy(dtype=np.int64)
    _check_presplit(prefix, users, items, test_users, test_items, test_negs, negs)
    users, items, ts = dedupe(users, items, ts, prefix + ".train.rating")
    return Interactions(
        users, items, ts, list(range(n_users)), list(range(n_items)), None, prefix,
        presplit={"test_users": test_users, "test_items": test_items, "test_negatives": test_negs},
    )
