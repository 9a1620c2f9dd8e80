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

from .errors import DataError

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
    "read_names",
]


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


PRESPLIT_SUFFIXES = (".train.rating", ".test.rating", ".test.negative")


@dataclass
class Interactions:
    """Implicit-feedback interactions with contiguous indices.

    Attributes:
        users, items: ``int64`` arrays of shape ``[N]`` with indices in ``[0, n_users)`` / ``[0, n_items)``.
        timestamps: ``int64`` array ``[N]``; rows without a timestamp get their file order.
        user_ids, item_ids: original ids, ``user_ids[u]`` belongs to index ``u``: Python ints when every
            id in the file is an integer (numeric order), else strings.
        item_titles: optional human-readable names, ``item_titles[i]`` for index ``i`` (MovieLens titles,
            or the names file given for your own data).
        user_names: optional human-readable user names, likewise.
        source: where the data came from (for error messages and manifests).
        has_timestamps: whether ``timestamps`` are real times (``False``: file order stands in).
    """

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    user_ids: list
    item_ids: list
    item_titles: Optional[list] = None
    source: str = ""
    presplit: Optional[dict] = field(default=None, repr=False)
    has_timestamps: bool = True
    user_names: Optional[list] = None

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


_INT_RE = r"^[+-]?\d{1,18}$"


def _as_ids(column: pd.Series) -> np.ndarray:
    """Ids as written: stripped of surrounding blanks; ``int64`` when every id is an integer, else strings."""
    if column.dtype.kind in "iu":
        return column.to_numpy(dtype=np.int64)
    col = column.astype(str).str.strip()
    if len(col) and bool(col.str.fullmatch(_INT_RE).all()):
        return col.astype(np.int64).to_numpy()
    return col.to_numpy(dtype=object)


def _index(values: np.ndarray) -> tuple[np.ndarray, list]:
    """Map ids to contiguous indices in sorted id order (numeric for integer ids): returns (indices, ids).

    >>> _index(np.array([10, 2, 10]))
    (array([1, 0, 1]), [2, 10])
    """
    uniq, inv = np.unique(values, return_inverse=True)
    ids = [v.item() if hasattr(v, "item") else v for v in uniq]
    return inv.astype(np.int64).reshape(-1), ids


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


def _build(df: pd.DataFrame, source: str, has_ts: bool, titles: Optional[dict] = None,
           first_line: int = 1) -> Interactions:
    """Index the ids, check timestamps and collapse duplicates; ``first_line``: the file line of row 0."""
    u_idx, user_ids = _index(_as_ids(df["user"]))
    i_idx, item_ids = _index(_as_ids(df["item"]))
    ts = _timestamps(df["timestamp"], source, first_line) if has_ts else np.arange(len(df), dtype=np.int64)
    u_idx, i_idx, ts = _dedupe(u_idx, i_idx, ts, source)
    item_titles = [titles.get(i, str(i)) for i in item_ids] if titles else None
    return Interactions(u_idx, i_idx, ts, user_ids, item_ids, item_titles, source, has_timestamps=has_ts)


def _timestamps(values: pd.Series, source: str, first_line: int = 1) -> np.ndarray:
    """Numeric timestamps as ``int64``; infinite or out-of-range values are an error, not a wrap-around."""
    v = values.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(v) | (np.abs(v) >= 2.0 ** 62)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}, line {row + first_line}: timestamp {values.iloc[row]} is not a finite time in int64 "
                        f"range; fix the value or drop the timestamp column (--data.timestamp_col null).")
    return values.to_numpy(dtype=np.int64) if values.dtype.kind in "iu" else np.round(v).astype(np.int64)


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

    Needs ``user_col`` and ``item_col``: ids of any kind, kept as written (integers stay integers, in
    numeric order; anything else stays a string; surrounding blanks are stripped). An optional
    ``timestamp_col`` (numbers, or dates such as ``2024-05-01T10:00``) orders each user's history; without
    one the data has no time, which :class:`~ncf.data.NCFDataModule` takes into account when it holds
    items out. Other columns (e.g. a rating or a count) are ignored: every row is a positive. ``sep``
    defaults to tab for ``.tsv``, comma otherwise.

    Example:
        >>> data = load_interactions_file("clicks.csv", user_col="customer", item_col="sku")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found{' (it is a folder)' if path.is_dir() else ''}.")
    sep = sep or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
    try:
        header = [str(c).strip() for c in pd.read_csv(path, sep=sep, nrows=0).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read a header row ({str(err).splitlines()[0]}).") from None
    for col, flag in ((user_col, "user_col"), (item_col, "item_col")):
        if col not in header:
            raise DataError(f"{path}: no column {col!r} in header {header}; name the columns with "
                            f"--data.user_col / --data.item_col (and --data.sep if the separator is not {sep!r}).")
    has_ts = timestamp_col is not None and timestamp_col in header
    df = _read_table(path, sep, header, [], header=True)
    df = df.rename(columns={user_col: "user", item_col: "item", **({timestamp_col: "timestamp"} if has_ts else {})})
    if has_ts:
        df["timestamp"] = _parse_times(df["timestamp"], path)
    return _build(df, str(path), has_ts, first_line=2)


def _parse_times(col: pd.Series, path: Path) -> pd.Series:
    """Numbers as they are; a column of dates and times (ISO 8601) as nanoseconds since 1970."""
    values = pd.to_numeric(col, errors="coerce")
    bad = values.isna().to_numpy()
    if bad.all():
        dates = pd.to_datetime(col, errors="coerce", format="ISO8601", utc=True)
        bad = dates.isna().to_numpy()
        if not bad.any():
            return pd.Series(dates.dt.tz_localize(None).to_numpy().astype("datetime64[ns]").astype(np.int64),
                             index=col.index)
    if not bad.any():
        return values
    row = int(np.flatnonzero(bad)[0])
    raise DataError(f"{path}, line {row + 2}: field 'timestamp' is not a number or an ISO date: {col.iloc[row]!r}. "
                    f"Fix it, or train without time (--data.timestamp_col null).")


def _first_undecodable_line(path: Path, encoding: str) -> int:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError:
                return lineno
    return 1


def read_names(path: str | os.PathLike, ids: Sequence, id_col: Optional[str] = None, name_col: Optional[str] = None,
               sep: Optional[str] = None, encoding: str = "utf-8") -> list[str]:
    """Human-readable names for ``ids`` from a CSV/TSV with a header: one id column and one name column.

    ``id_col`` / ``name_col`` default to the file's first and second columns. Ids are matched as written
    (``" 7"`` and ``7`` are the same id); an id the file does not name keeps its id as its name; an id named
    twice is an error (which name would be right?).

    Raises:
        DataError: missing file, columns not found, an id named twice, or text not in ``encoding``.

    Example:
        >>> read_names("items.tsv", [1, 2], id_col="item", name_col="title")  # doctest: +SKIP
        ['Toy Story', '2']
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: names file not found.")
    sep = sep or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding=encoding)
    except UnicodeDecodeError:
        line = _first_undecodable_line(path, encoding)
        raise DataError(f"{path}, line {line}: not valid {encoding} text; pass its encoding "
                        f"(e.g. --data.names_encoding latin-1).") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: cannot parse as a table with a header ({str(err).splitlines()[0]}).") from None
    df.columns = [str(c).strip() for c in df.columns]
    cols = list(df.columns)
    id_col = id_col or (cols[0] if cols else None)
    name_col = name_col or (cols[1] if len(cols) > 1 else None)
    for col, flag in ((id_col, "names_id_col"), (name_col, "names_col")):
        if col is None or col not in cols:
            raise DataError(f"{path}: no column {col!r} in header {cols}; name the id and name columns with "
                            f"--data.names_id_col / --data.names_col.")
    keys = df[id_col].str.strip()
    dup = keys.duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)[:2]
        raise DataError(f"{path}, lines {rows[0] + 2} and {rows[1] + 2}: id {keys.iloc[rows[0]]!r} is named twice; "
                        f"keep one name per id.")
    names = dict(zip(keys, df[name_col]))
    return [names.get(str(i), str(i)) or str(i) for i in ids]


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
    train = _read_table(Path(prefix + ".train.rating"), "\t", names, names)
    test = _read_table(Path(prefix + ".test.rating"), "\t", names, names)
    neg_path = Path(prefix + ".test.negative")
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
