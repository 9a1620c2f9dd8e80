"""MovieLens-100k and -1M, fetched the torchvision way.

A ``root`` folder, an early return when the extracted folder is present, otherwise a download from
GroupLens checked against its size and md5 and extracted atomically (into a temporary folder, then
renamed), and one clear error when offline. The root defaults to ``$NCF_DATA_DIR`` (the folder that holds
``ml-100k/``) or ``./data``. Variants differ in data (:data:`MOVIELENS`), not in code.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .datasets import Interactions, build_interactions, read_table
from .errors import DataError

__all__ = ["MovieLensSpec", "MOVIELENS", "default_root", "download_movielens", "load_movielens"]


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
    ratings_md5: Optional[str] = None  # of the extracted ratings file, where known: edits are caught too


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
        ratings_md5="6e47046882bad158b0efbb84cd5cb987",
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


def default_root() -> Path:
    """``$NCF_DATA_DIR`` if set (and not empty), else ``./data``."""
    return Path(os.environ.get("NCF_DATA_DIR") or "data")


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


def load_movielens(name: str = "ml-100k", root: Optional[str | os.PathLike] = None, download: bool = True,
                   verify: bool = True) -> Interactions:
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
    if verify and spec.ratings_md5 is not None and _md5(path) != spec.ratings_md5:
        raise DataError(f"{path} differs from the published {spec.name} ratings (md5): the copy was edited or "
                        f"corrupted. Delete {folder} to download it again, or pass --data.verify false if you "
                        f"changed it on purpose.")
    df = read_table(path, spec.sep, ["user", "item", "rating", "timestamp"], ["user", "item", "rating", "timestamp"],
                     encoding="latin-1")
    n_u, n_i = df["user"].nunique(), df["item"].nunique()
    if (len(df), n_u, n_i) != (spec.n_ratings, spec.n_users, spec.n_items):
        raise DataError(
            f"{path} has {len(df)} ratings, {n_u} users and {n_i} items; {spec.name} has {spec.n_ratings}, "
            f"{spec.n_users} and {spec.n_items}. The copy is truncated or altered: delete {folder} and download again."
        )
    titles = _read_titles(folder / spec.items_file, spec)
    return build_interactions(df, str(path), True, titles)


def _read_titles(path: Path, spec: MovieLensSpec) -> Optional[dict]:
    if not path.exists():
        return None
    with open(path, encoding=spec.items_encoding) as f:
        rows = [line.rstrip("\n").split(spec.items_sep) for line in f if line.strip()]
    return {int(r[0]): r[1] for r in rows if len(r) > 1 and r[0].isdigit()}
