"""Interaction data: generic interaction files, and what every reader shares.

Names files are read by :mod:`ncf.names`, the NCF paper's pre-split files by :mod:`ncf.presplit`.

Every reader returns an :class:`Interactions` whose users and items are contiguous ``int64`` indices;
the original ids travel beside them (``user_ids[k]`` is the original id of user index ``k``) so that
checkpoints, predictions and explanations can speak the dataset's own ids.

MovieLens is read by :mod:`ncf.movielens`, with :func:`read_table` and :func:`build_interactions` from here.
"""
from __future__ import annotations

import csv
import itertools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from .errors import DataError

__all__ = [
    "DataError",
    "Interactions",
    "build_interactions",
    "dedupe",
    "first_undecodable_line",
    "load_interactions_file",
    "not_text_error",
    "read_table",
    "unique_sorted",
]




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


def read_table(path: Path, sep: str, names: Sequence[str], numeric: Sequence[str], header: bool = False,
                encoding: str = "utf-8", required: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Read a delimited file as strings and convert ``numeric`` columns, naming the first bad line.
    ``required``: the columns no row may leave empty (default: all; columns that are read but not used,
    such as a rating, may be blank)."""
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
    except UnicodeDecodeError:
        raise not_text_error(path, encoding) from None
    for col in (names if required is None else required):
        missing = (df[col] == "") | df[col].isna()
        if missing.any():
            row = int(np.flatnonzero(missing.to_numpy())[0])
            empty = _fields_on_line(path, row + 1 + skip, sep, encoding) == len(names)  # there, but empty
            raise DataError(
                f"{path}, line {row + 1 + skip}: field {col!r} is empty; give every row its {col}."
                if empty else
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


# An integer written as Python writes it back: no leading zero, no plus sign, at most 18 digits. Only then
# can an id become a number without changing its name ("0012" is not "12", and must not merge with it).
_INT_RE = r"^(?:0|-?[1-9]\d{0,17})$"


def _as_ids(column: pd.Series) -> np.ndarray:
    """Ids as written: stripped of surrounding blanks; ``int64`` when every id is an integer written as
    it prints (``12``, not ``0012`` or ``+12``), else strings.

    >>> _as_ids(pd.Series(["12", " 7"])).tolist(), _as_ids(pd.Series(["0012", "12"])).tolist()
    ([12, 7], ['0012', '12'])
    """
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
    if values.dtype == object:
        uniq, inv = np.unique(values, return_inverse=True)
    else:
        uniq = unique_sorted(values)
        inv = np.searchsorted(uniq, values)
    ids = [v.item() if hasattr(v, "item") else v for v in uniq]
    return inv.astype(np.int64).reshape(-1), ids


def unique_sorted(values: np.ndarray) -> np.ndarray:
    """``np.unique`` of a numeric array by sorting (numpy's hashing ``unique`` is far slower on large int64 arrays).

    >>> unique_sorted(np.array([3, 1, 3, 2]))
    array([1, 2, 3])
    """
    s = np.sort(values)
    if len(s) > 1:
        s = s[np.concatenate([[True], s[1:] != s[:-1]])]
    return s


def dedupe(users: np.ndarray, items: np.ndarray, ts: np.ndarray, source: str):
    """Keep one row per (user, item): the latest. Implicit feedback counts an item once."""
    if len(users) == 0:
        return users, items, ts
    keys = np.sort(users * (np.int64(items.max()) + 1) + items)
    if not (keys[1:] == keys[:-1]).any():  # the usual case: nothing to collapse, no costlier sort
        return users, items, ts
    order = np.lexsort((np.arange(len(users)), ts, items, users))
    u, i = users[order], items[order]
    last = np.ones(len(u), dtype=bool)
    last[:-1] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    n_dup = int(len(u) - last.sum())
    if n_dup:
        logging.getLogger("ncf").warning(f"{source}: {n_dup} duplicate (user, item) rows; kept the latest of each.")
        keep = np.sort(order[last])
        return users[keep], items[keep], ts[keep]
    return users, items, ts


def build_interactions(df: pd.DataFrame, source: str, has_ts: bool, titles: Optional[dict] = None,
                       first_line: int = 1) -> Interactions:
    """Index the ids, check timestamps and collapse duplicates; ``first_line``: the file line of row 0."""
    u_idx, user_ids = _index(_as_ids(df["user"]))
    i_idx, item_ids = _index(_as_ids(df["item"]))
    ts = _timestamps(df["timestamp"], source, first_line) if has_ts else np.arange(len(df), dtype=np.int64)
    u_idx, i_idx, ts = dedupe(u_idx, i_idx, ts, source)
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


_TIME_NAMES = ("timestamp", "ts", "time", "date", "datetime", "unix_time", "unixtime", "time_stamp", "created_at",
               "event_time")


def _no_time_column(path: Path, header: list[str], timestamp_col: str) -> None:
    """A ``timestamp_col`` the header lacks: an error when one was named (a typo would silently train without
    time, holding out random items), a warning when the default is missing but a column looks like a time."""
    looks = [h for h in header if h.lower() in _TIME_NAMES]
    if timestamp_col != "timestamp":
        raise DataError(f"{path}: no column {timestamp_col!r} in header {header} for --data.timestamp_col; "
                        + (f"use --data.timestamp_col {looks[0]}" if looks else "name the time column")
                        + " (or --data.timestamp_col null for data without time).")
    if looks:
        logging.getLogger("ncf").warning(
            f"{path}: no column 'timestamp', so the data is read without time (random hold-out); if its "
            f"{looks[0]!r} column is the time, pass --data.timestamp_col {looks[0]}.")


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
    given = sep is not None
    sep = {"\\t": "\t"}.get(sep, sep) or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")  # '\t' as typed
    try:
        header = [str(c).strip() for c in pd.read_csv(path, sep=sep, nrows=0).columns]
        if not given and len(header) == 1:  # one column: the file may use another separator
            other = next((s for s in ("\t", ";", "|", ",") if s != sep and s in header[0]), None)
            if other is not None:
                sep, header = other, [str(c).strip() for c in pd.read_csv(path, sep=other, nrows=0).columns]
    except UnicodeDecodeError:
        raise not_text_error(path, "utf-8") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: cannot read a header row ({str(err).splitlines()[0]}).") from None
    for col, flag in ((user_col, "user_col"), (item_col, "item_col")):
        if col not in header:
            if header and all(h.strip().lstrip("-").replace(".", "", 1).isdigit() for h in header):
                shown = "\\t" if sep == "\t" else sep
                raise DataError(f"{path}: its first line ({', '.join(header)}) is data, not a header; add a header "
                                f"line naming the columns in the order the rows hold them (e.g. "
                                f"'{shown.join((user_col, item_col, 'rating', 'timestamp'))}').")
            alike = [h for h in header if h.lower() == col.lower()]
            hint = f"--data.{flag} {alike[0]}" if alike else "--data.user_col / --data.item_col"
            raise DataError(f"{path}: no column {col!r} in header {header}; name the columns with {hint} (and "
                            f"--data.sep if the separator is not {sep!r}).")
    has_ts = timestamp_col is not None and timestamp_col in header
    if timestamp_col is not None and not has_ts:
        _no_time_column(path, header, timestamp_col)
    # the fast path reads integer ids and times; anything else is read and checked line by line
    df = _read_integer_columns(path, sep, [user_col, item_col] + ([timestamp_col] if has_ts else []),
                               [user_col, item_col])
    if df is None:  # only the columns used must be filled in (a blank rating or note is no error)
        df = read_table(path, sep, header, [], header=True,
                        required=[user_col, item_col] + ([timestamp_col] if has_ts else []))
    if df.empty:
        raise DataError(f"{path} has a header but no rows; it needs one line per interaction.")
    df = df.rename(columns={user_col: "user", item_col: "item", **({timestamp_col: "timestamp"} if has_ts else {})})
    for col in ("user", "item"):  # a NUL or other control character in an id: a damaged file, not an id
        if df[col].dtype.kind not in "iuf":
            bad = df[col].astype(str).str.contains(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", regex=True).to_numpy()
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise DataError(f"{path}, line {k + 2}: the {col} id {df[col].iloc[k]!r} holds a control character "
                                f"(e.g. a NUL byte): the file is damaged; repair or remove that line.")
    if has_ts:
        df["timestamp"] = _parse_times(df["timestamp"], path)
    return build_interactions(df, str(path), has_ts, first_line=2)


def _read_integer_columns(path: Path, sep: str, columns: list, ids: Sequence[str] = ()) -> Optional[pd.DataFrame]:
    """``columns`` read with pyarrow's CSV reader (fast on large files) when every value in
    them is an integer of at most 18 digits, and every value of the ``ids`` columns is written as the
    integer prints (no leading zero or plus sign: ``0012`` is a name, not 12); ``None`` for anything else
    (string ids, blanks, dates, missing or malformed fields), which :func:`read_table` then reads and
    reports line by line."""
    if len(sep) != 1 or len(set(columns)) != len(columns):
        return None
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    try:
        table = pacsv.read_csv(
            path, parse_options=pacsv.ParseOptions(delimiter=sep),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns, column_types={c: pa.string() if c in ids else pa.int64() for c in columns},
                strings_can_be_null=False, quoted_strings_can_be_null=False))
        for name in ids:  # ids are read as text first: only an integer written as it prints becomes a number
            text = pc.utf8_trim_whitespace(table.column(name))
            if pc.any(pc.or_(pc.and_(pc.starts_with(text, "0"), pc.greater(pc.utf8_length(text), 1)),
                             pc.or_(pc.starts_with(text, "+"), pc.starts_with(text, "-0")))).as_py():
                return None
            table = table.set_column(table.schema.get_field_index(name), name, pc.cast(text, pa.int64()))
    except (pa.ArrowException, KeyError, ValueError, UnicodeDecodeError):
        return None
    out = {}
    for name in columns:
        col = table.column(name)
        if col.null_count:
            return None
        values = col.to_numpy()
        if len(values) and (values.min() <= -10 ** 18 or values.max() >= 10 ** 18):  # ids of 19 digits stay strings
            return None
        out[name] = values
    return pd.DataFrame(out) if len(table) else None


def _fields_on_line(path: Path, line: int, sep: str, encoding: str) -> int:
    """How many fields line ``line`` (1-based, blank lines not counted, as pandas skips them) of the file has."""
    with open(path, encoding=encoding, errors="replace", newline="") as f:
        text = next(itertools.islice((ln for ln in f if ln.strip()), line - 1, None), "")
    text = text.rstrip("\r\n")
    return len(next(csv.reader([text], delimiter=sep))) if len(sep) == 1 else text.count(sep) + 1


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
        _warn_mixed_units(values.to_numpy(dtype=np.float64), path)
        return values
    row = int(np.flatnonzero(bad)[0])
    if not bad.all() and not pd.isna(pd.to_datetime(col.iloc[row], errors="coerce", format="ISO8601", utc=True)):
        first = int(np.flatnonzero(~bad)[0])  # a date among numbers: one column, one kind of time
        raise DataError(f"{path}, line {row + 2}: field 'timestamp' is a date ({col.iloc[row]!r}) where line "
                        f"{first + 2} has a number ({col.iloc[first]!r}); write every timestamp the same way (all "
                        f"numbers or all ISO dates), or train without time (--data.timestamp_col null).")
    raise DataError(f"{path}, line {row + 2}: field 'timestamp' is not a number or an ISO date: {col.iloc[row]!r}. "
                    f"Fix it, or train without time (--data.timestamp_col null).")


# Unix times of 1973 to 5138 in each unit: numbers in two of these ranges are one clock in two units
_UNITS = (("seconds", 1e8, 1e11), ("milliseconds", 1e11, 1e14), ("microseconds", 1e14, 1e17),
          ("nanoseconds", 1e17, 1e20))


def _warn_mixed_units(v: np.ndarray, path: Path) -> None:
    """Timestamps of which some read as Unix seconds and others as milliseconds (or micro-, nanoseconds): rows
    appended in another unit would sort as each user's oldest or newest, and the hold-out with them."""
    found = []
    for unit, lo, hi in _UNITS:  # counts and a first row each: no index array of millions of rows
        inside = (v >= lo) & (v < hi)
        n = int(np.count_nonzero(inside))
        if n:
            found.append((unit, n, int(np.argmax(inside))))
    if len(found) > 1:
        said = " and ".join(f"{n} like Unix {unit} (e.g. line {first + 2})" for unit, n, first in found)
        logging.getLogger("ncf").warning(
            f"{path}: its timestamps look like two units, {said}: each user's latest interaction (held out for "
            f"the test) is read from them as they are; write every timestamp in one unit.")


def first_undecodable_line(path: Path, encoding: str) -> int:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError:
                return lineno
    return 1


# Separators of names files in the wild: comma, tab (.tsv, many .dat files), ML-1M's "::", ML-100k's "|".
def not_text_error(path: Path, encoding: str) -> DataError:
    """An interactions file that is not ``encoding`` text: the first bad line and how to convert it."""
    return DataError(f"{path}, line {first_undecodable_line(path, encoding)}: not valid {encoding} text; save it as "
                     f"UTF-8 (e.g. iconv -f latin1 -t utf-8 {path} > {path.stem}.utf8{path.suffix}).")
