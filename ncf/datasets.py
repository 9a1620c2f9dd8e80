"""Interaction data: MovieLens-100k/1M, generic interaction files, and the NCF paper's pre-split files.

Every reader returns an :class:`Interactions` whose users and items are contiguous ``int64`` indices;
the original ids travel beside them (``user_ids[k]`` is the original id of user index ``k``) so that
checkpoints, predictions and explanations can speak the dataset's own ids.

MovieLens archives are fetched the torchvision way: a ``root`` folder, an early return when the
extracted folder is present, otherwise a download from GroupLens checked against its size and md5 and
extracted atomically (into a temporary folder, then renamed), and one clear error when offline.
The root defaults to ``$NCF_DATA_DIR`` (the folder that holds ``ml-100k/``) or ``./data``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "DataError",
    "Interactions",
    "MovieLensSpec",
    "MOVIELENS",
    "default_root",
    "download_movielens",
    "load_movielens",
    "load_interactions_file",
    "load_ncf_presplit",
]


class DataError(ValueError):
    """Raised for missing, corrupt or unusable interaction data. The message names the file and the fix."""


@dataclass(frozen=True)
class MovieLensSpec:
    name: str
    url: str
    size: Optional[int]  # bytes of the archive, when published; the md5 is always checked
    md5: str
    ratings_file: str
    sep: str
    n_ratings: int
    n_users: int
    n_items: int
    items_file: str
    items_sep: str
    items_encoding: str = "latin-1"


MOVIELENS = {
    "ml-100k": MovieLensSpec(
        name="ml-100k",
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        size=4_924_029,
        md5="0e33842e24a9c977be4e0107933c0723",
        ratings_file="u.data",
        sep="\t",
        n_ratings=100_000,
        n_users=943,
        n_items=1682,
        items_file="u.item",
        items_sep="|",
    ),
    "ml-1m": MovieLensSpec(
        name="ml-1m",
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        size=None,
        md5="c4d9eecfca2ab87c1945afe126590906",
        ratings_file="ratings.dat",
        sep="::",
        n_ratings=1_000_209,
        n_users=6040,
        n_items=3706,
        items_file="movies.dat",
        items_sep="::",
    ),
}


@dataclass
class Interactions:
    """Implicit-feedback interactions with contiguous indices.

    Attributes:
        users, items: ``int64`` arrays of shape ``[N]`` with indices in ``[0, n_users)`` / ``[0, n_items)``.
        timestamps: ``int64`` array ``[N]``; rows without a timestamp get their file order.
        user_ids, item_ids: original ids, ``user_ids[u]`` belongs to index ``u`` (ints or strings).
        item_titles: optional human-readable titles, ``item_titles[i]`` for index ``i``.
        source: where the data came from (for error messages and manifests).
    """

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    user_ids: list
    item_ids: list
    item_titles: Optional[list] = None
    source: str = ""
    presplit: Optional[dict] = field(default=None, repr=False)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.users)


def default_root() -> Path:
    """``$NCF_DATA_DIR`` if set, else ``./data``."""
    return Path(os.environ.get("NCF_DATA_DIR", "data"))


def _md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download_movielens(name: str = "ml-100k", root: Optional[str | os.PathLike] = None, download: bool = True) -> Path:
    """Make sure ``root/name/`` holds the extracted MovieLens files and return that folder.

    Returns at once when the ratings file is already there. Otherwise downloads the official archive,
    checks its size and md5, and extracts it atomically (a half-extracted folder is never left behind).

    Raises:
        DataError: the files are missing and ``download=False`` or the download failed (offline), or
            the archive does not match its checksum.

    Example:
        >>> folder = download_movielens("ml-100k", root="data")  # doctest: +SKIP
        >>> (folder / "u.data").exists()  # doctest: +SKIP
        True
    """
    spec = _spec(name)
    root = Path(root) if root is not None else default_root()
    folder = root / spec.name
    if (folder / spec.ratings_file).exists():
        return folder
    where = f"{folder / spec.ratings_file}"
    if not download:
        raise DataError(
            f"{where} not found. Download {spec.url}, extract it into {root}/ (so that {where} exists), "
            f"or pass download=True / set NCF_DATA_DIR to the folder that holds {spec.name}/."
        )
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{spec.name}-") as tmp:
        archive = Path(tmp) / f"{spec.name}.zip"
        try:
            with urllib.request.urlopen(spec.url, timeout=60) as resp, open(archive, "wb") as out:
                shutil.copyfileobj(resp, out)
        except OSError as err:
            raise DataError(
                f"Could not download {spec.url} ({err}). Without internet, fetch that archive elsewhere and "
                f"extract it into {root}/ so that {where} exists, or set NCF_DATA_DIR to a folder that holds "
                f"{spec.name}/."
            ) from err
        size = archive.stat().st_size
        digest = _md5(archive)
        if (spec.size is not None and size != spec.size) or digest != spec.md5:
            raise DataError(
                f"Downloaded {spec.url} does not match its checksum (size {size}, md5 {digest}; expected "
                f"{spec.size}, {spec.md5}). The download was corrupted or the file changed upstream: try again."
            )
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        extracted = Path(tmp) / spec.name
        try:
            os.replace(extracted, folder)
        except OSError:
            # Another process extracted it first: theirs is as good as ours.
            if not (folder / spec.ratings_file).exists():
                raise
    return folder


def _spec(name: str) -> MovieLensSpec:
    try:
        return MOVIELENS[name]
    except KeyError:
        raise DataError(f"Unknown MovieLens dataset {name!r}; choose one of {sorted(MOVIELENS)}.") from None


def _read_table(path: Path, sep: str, names: Sequence[str], numeric: Sequence[str], header: bool = False,
                encoding: str = "utf-8") -> pd.DataFrame:
    """Read a delimited file as strings and convert ``numeric`` columns, naming the first bad line."""
    if not path.exists():
        raise DataError(f"{path} not found.")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty.")
    skip = 1 if header else 0
    try:
        df = pd.read_csv(
            path, sep=sep, header=None, names=list(names), dtype=str, skiprows=skip, engine="python" if len(sep) > 1 else "c",
            encoding=encoding, keep_default_na=False, skip_blank_lines=True,
        )
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: cannot parse ({err}). Every line needs {len(names)} fields separated by {sep!r}.") from err
    for col in names:
        missing = (df[col] == "") | df[col].isna()
        if missing.any():
            row = int(np.flatnonzero(missing.to_numpy())[0])
            raise DataError(
                f"{path}, line {row + 1 + skip}: field {col!r} is missing (truncated or malformed line; "
                f"expected {len(names)} fields separated by {sep!r})."
            )
    for col in numeric:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}, line {row + 1 + skip}: field {col!r} is not a number: {df[col].iloc[row]!r}.")
        df[col] = values
    return df


def _index(values: np.ndarray) -> tuple[np.ndarray, list]:
    """Map arbitrary ids to contiguous indices in sorted id order: returns (indices, ids)."""
    uniq, inv = np.unique(values, return_inverse=True)
    ids = [v.item() if hasattr(v, "item") else v for v in uniq]
    return inv.astype(np.int64), ids


def _dedupe(users: np.ndarray, items: np.ndarray, ts: np.ndarray, source: str):
    """Keep one row per (user, item): the latest. Implicit feedback counts an item once."""
    order = np.lexsort((np.arange(len(users)), ts, items, users))
    u, i = users[order], items[order]
    last = np.ones(len(u), dtype=bool)
    last[:-1] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    n_dup = int(len(u) - last.sum())
    if n_dup:
        warnings.warn(f"{source}: {n_dup} duplicate (user, item) rows; kept the latest of each.", stacklevel=3)
        keep = np.sort(order[last])
        return users[keep], items[keep], ts[keep]
    return users, items, ts


def _build(df: pd.DataFrame, source: str, has_ts: bool, titles: Optional[dict] = None) -> Interactions:
    u_idx, user_ids = _index(df["user"].to_numpy())
    i_idx, item_ids = _index(df["item"].to_numpy())
    ts = df["timestamp"].to_numpy(dtype=np.int64) if has_ts else np.arange(len(df), dtype=np.int64)
    u_idx, i_idx, ts = _dedupe(u_idx, i_idx, ts, source)
    item_titles = [titles.get(i, str(i)) for i in item_ids] if titles else None
    return Interactions(u_idx, i_idx, ts, user_ids, item_ids, item_titles, source)


def load_movielens(name: str = "ml-100k", root: Optional[str | os.PathLike] = None, download: bool = True) -> Interactions:
    """Load MovieLens ratings as implicit feedback (every rating is a positive), with movie titles.

    Checks that the file holds the published number of ratings, users and items, so a truncated or
    altered copy is caught instead of silently training on it.

    Example:
        >>> data = load_movielens("ml-100k")  # doctest: +SKIP
        >>> data.n_users, data.n_items, len(data)  # doctest: +SKIP
        (943, 1682, 100000)
    """
    spec = _spec(name)
    folder = download_movielens(name, root, download)
    path = folder / spec.ratings_file
    df = _read_table(path, spec.sep, ["user", "item", "rating", "timestamp"], ["user", "item", "rating", "timestamp"],
                     encoding="latin-1")
    n_u, n_i = df["user"].nunique(), df["item"].nunique()
    if (len(df), n_u, n_i) != (spec.n_ratings, spec.n_users, spec.n_items):
        raise DataError(
            f"{path} has {len(df)} ratings, {n_u} users and {n_i} items; {spec.name} has {spec.n_ratings}, "
            f"{spec.n_users} and {spec.n_items}. The copy is truncated or altered: delete {folder} and download again."
        )
    titles = _read_titles(folder / spec.items_file, spec)
    return _build(df, str(path), True, titles)


def _read_titles(path: Path, spec: MovieLensSpec) -> Optional[dict]:
    if not path.exists():
        return None
    with open(path, encoding=spec.items_encoding) as f:
        rows = [line.rstrip("\n").split(spec.items_sep) for line in f if line.strip()]
    return {int(r[0]): r[1] for r in rows if len(r) > 1 and r[0].isdigit()}


def load_interactions_file(path: str | os.PathLike, sep: Optional[str] = None, user_col: str = "user",
                           item_col: str = "item", timestamp_col: Optional[str] = "timestamp") -> Interactions:
    """Load a CSV/TSV of interactions with a header row.

    Needs ``user_col`` and ``item_col`` (ids of any type: numbers, strings, UUIDs); an optional
    ``timestamp_col`` orders each user's history (without one, file order does). Other columns (e.g. a
    rating) are ignored: every row is a positive. ``sep`` defaults to tab for ``.tsv``, comma otherwise.

    Example:
        >>> data = load_interactions_file("clicks.csv", user_col="customer", item_col="sku")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} not found.")
    sep = sep or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
    header = pd.read_csv(path, sep=sep, nrows=0).columns.tolist()
    for col in (user_col, item_col):
        if col not in header:
            raise DataError(f"{path}: no column {col!r} in header {header}; name the columns with user_col/item_col.")
    has_ts = timestamp_col is not None and timestamp_col in header
    df = _read_table(path, sep, header, [timestamp_col] if has_ts else [], header=True)
    df = df.rename(columns={user_col: "user", item_col: "item", **({timestamp_col: "timestamp"} if has_ts else {})})
    return _build(df, str(path), has_ts)


def load_ncf_presplit(prefix: str | os.PathLike) -> Interactions:
    """Load the NCF paper's split: ``PREFIX.train.rating``, ``PREFIX.test.rating``, ``PREFIX.test.negative``.

    Ids in these files are already 0-based indices. The returned interactions hold the training rows;
    ``presplit`` carries the published test items and their negatives so that split is evaluated exactly.

    Example:
        >>> data = load_ncf_presplit("Data/ml-1m")  # doctest: +SKIP
    """
    prefix = str(prefix)
    names = ["user", "item", "rating", "timestamp"]
    train = _read_table(Path(prefix + ".train.rating"), "\t", names, names)
    test = _read_table(Path(prefix + ".test.rating"), "\t", names, names)
    neg_path = Path(prefix + ".test.negative")
    if not neg_path.exists():
        raise DataError(f"{neg_path} not found (the NCF split needs .train.rating, .test.rating and .test.negative).")
    negs = {}
    with open(neg_path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            head, *rest = line.rstrip("\n").split("\t")
            try:
                user, item = (int(x) for x in head.strip("()").split(","))
                negs[user] = (item, [int(x) for x in rest])
            except ValueError:
                raise DataError(f"{neg_path}, line {lineno}: expected '(user,item)' then tab-separated item ids.") from None
    n_users = int(max(train["user"].max(), test["user"].max())) + 1
    n_items = int(max(train["item"].max(), test["item"].max(), max(max(v[1]) for v in negs.values()))) + 1
    counts = {len(v[1]) for v in negs.values()}
    if len(counts) != 1:
        raise DataError(f"{neg_path}: users have different numbers of negatives {sorted(counts)}; every line needs the same.")
    test_users = test["user"].to_numpy(dtype=np.int64)
    missing = [u for u in test_users if u not in negs]
    if missing:
        raise DataError(f"{neg_path}: no negatives for user {missing[0]} of {prefix}.test.rating.")
    test_items = test["item"].to_numpy(dtype=np.int64)
    test_negs = np.array([negs[u][1] for u in test_users], dtype=np.int64)
    users = train["user"].to_numpy(dtype=np.int64)
    items = train["item"].to_numpy(dtype=np.int64)
    ts = train["timestamp"].to_numpy(dtype=np.int64)
    users, items, ts = _dedupe(users, items, ts, prefix + ".train.rating")
    return Interactions(
        users, items, ts, list(range(n_users)), list(range(n_items)), None, prefix,
        presplit={"test_users": test_users, "test_items": test_items, "test_negatives": test_negs},
    )
