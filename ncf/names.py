"""Names of items and users (titles, artists): a names file read against a dataset's ids, its separator
sniffed when not given."""
from __future__ import annotations

import codecs
import csv
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from .datasets import first_undecodable_line
from .errors import DataError

__all__ = ["NAME_SEPARATORS", "sniff_separator", "read_names", "distinct_names"]

NAME_SEPARATORS = (",", "\t", "::", "|", ";")


def _head_lines(path: Path, encoding: str, n: int) -> list[str]:
    """The first ``n`` non-blank lines, decoded leniently (sniffing only; the real read checks the text)."""
    out = []
    with open(path, encoding=encoding, errors="replace", newline="") as f:
        for line in f:
            if line.strip():
                out.append(line.rstrip("\r\n"))
                if len(out) == n:
                    break
    return out


def sniff_separator(path: str | os.PathLike, encoding: str = "utf-8", candidates: Sequence[str] = NAME_SEPARATORS) -> str:
    r"""The separator of a small delimited file: the first of ``candidates`` (the suffix's own first: tab for
    ``.tsv``/``.tab``, comma for ``.csv``) that splits each of its first 50 lines into the same number (at
    least 2) of fields, quotes respected for a comma; the suffix's default when none does.

    >>> import tempfile, pathlib; p = pathlib.Path(tempfile.mkdtemp()) / "movies.dat"
    >>> _ = p.write_text("1::Toy Story (1995)::Animation|Comedy\n2::Heat, The (1995)::Action\n")
    >>> sniff_separator(p)
    '::'
    """
    path = Path(path)
    default = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    lines = _head_lines(path, encoding, 50)
    for sep in sorted(candidates, key=lambda c: c != default):
        if sep == ",":
            counts = {len(row) for row in csv.reader(lines)}
        else:
            counts = {line.count(sep) + 1 for line in lines}
        if lines and len(counts) == 1 and counts.pop() >= 2:
            return sep
    return default


def _warn_if_utf8(path: Path, encoding: str) -> None:
    """A file read as a single-byte encoding (latin-1, cp1252) whose bytes are UTF-8 text beyond ASCII would give
    names like "MisÃ©rables": said once, with the option that reads it right."""
    try:
        if codecs.lookup(encoding).name not in ("iso8859-1", "cp1252", "latin-1"):
            return
    except LookupError:
        return
    raw = path.read_bytes()[: 1 << 20]
    if max(raw, default=0) < 0x80:
        return
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(raw) - 3:  # not only a character cut at the end of the sample
            return
    logging.getLogger("ncf").warning(
        f"{path} is read as {encoding}, but its text is UTF-8: its non-ASCII names would come out garbled (e.g. "
        f"'MisÃ©rables' for 'Misérables'); pass --data.names_encoding utf-8 (explain.py: --names-encoding utf-8).")


def read_names(path: str | os.PathLike, ids: Sequence, id_col: Optional[str] = None, name_col: Optional[str] = None,
               sep: Optional[str] = None, encoding: str = "utf-8") -> list[str]:
    """Human-readable names for ``ids`` from a delimited file: one id column and one name column.

    ``sep`` defaults to the file's own (:func:`sniff_separator`: comma, tab, ``::`` as in ML-1M's
    ``movies.dat``, ``|`` as in ML-100k's ``u.item``). A header row is optional: a first line that starts
    with one of ``ids`` is data (then columns are named ``"0"``, ``"1"``, ...). ``id_col`` / ``name_col``
    default to the file's first and second columns. Ids are matched as written
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
    _warn_if_utf8(path, encoding)
    sep = sep or sniff_separator(path, encoding)
    header = "infer"
    if id_col is None and name_col is None:  # a first line that starts with a known id is data, not a header
        first = _head_lines(path, encoding, 1)
        if first and first[0].split(sep)[0].strip() in {str(i) for i in ids}:
            header = None
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding=encoding, header=header,
                         engine="python" if len(sep) > 1 else "c", quoting=csv.QUOTE_NONE if sep != "," else 0)
        if header is None:
            df.columns = [str(c) for c in range(len(df.columns))]
    except UnicodeDecodeError:
        line = first_undecodable_line(path, encoding)
        raise DataError(f"{path}, line {line}: not valid {encoding} text; pass its encoding "
                        f"(e.g. --data.names_encoding latin-1).") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        shown = "\\t" if sep == "\t" else sep
        raise DataError(f"{path}: cannot parse as a table with a header ({str(err).splitlines()[0]}); a name that "
                        f"holds the separator {shown!r} needs quotes (\"Usual Suspects, The (1995)\"), or write the "
                        f"file tab-separated (.tsv), or name the separator (--data.names_sep; explain.py: --names-sep).") from None
    df.columns = [str(c).strip() for c in df.columns]
    cols = list(df.columns)
    id_col = id_col or (cols[0] if cols else None)
    name_col = name_col or (cols[1] if len(cols) > 1 else None)
    if len(cols) < 2 and name_col is None:
        raise DataError(f"{path} has one column ({cols[0] if cols else 'none'}); a names file needs two: the id, "
                        f"then its name (e.g. 'item,title' and '1,Toy Story (1995)').")
    for col, flag in ((id_col, "names_id_col"), (name_col, "names_col")):
        if col is None or col not in cols:
            raise DataError(f"{path}: no column {col!r} in header {cols}; name the id and name columns with "
                            f"--data.names_id_col / --data.names_col.")
    keys = df[id_col].str.strip()
    dup = keys.duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)[:2]
        first = 1 if header is None else 2  # the file line of row 0
        raise DataError(f"{path}, lines {rows[0] + first} and {rows[1] + first}: id {keys.iloc[rows[0]]!r} is named "
                        f"twice; keep one name per id.")
    names = dict(zip(keys, df[name_col].str.strip()))  # " Heat (1995) " after a separator's space: "Heat (1995)"
    if len(ids) and not names:
        raise DataError(f"{path} names no ids: it holds a header and no rows.")
    if len(ids) and not any(str(i) in names for i in ids):
        raise DataError(f"{path} names none of the data's {len(ids)} ids (its ids: "
                        f"{', '.join(repr(k) for k in list(names)[:3])}; the data's: "
                        f"{', '.join(repr(str(i)) for i in list(ids)[:3])}); ids are matched as written. Is it this "
                        f"data's names file, and is the id its first column (else --data.names_id_col)?")
    _warn_unmatched(path, names, ids)
    return [names.get(str(i), str(i)) or str(i) for i in ids]


_WARNED: set = set()


def _warn_unmatched(path: Path, names: dict, ids: Sequence) -> None:
    """Ids of the data the file does not name (shown by their id), with the file's ids the data lacks as a hint
    (ids written otherwise: ``0050`` against ``50``), said once per file. A file naming more than the data (a
    filter dropped some ids) says nothing."""
    have = {str(i) for i in ids}
    unnamed = [str(i) for i in ids if str(i) not in names]
    unused = [k for k in names if k not in have]
    key = (str(path), len(unnamed), len(unused))
    if not unnamed or key in _WARNED:
        return
    _WARNED.add(key)
    parts = [f"{len(unnamed)} of the data's {len(have)} ids have no name there and are shown by their id "
             f"({', '.join(map(repr, unnamed[:3]))}{', ...' if len(unnamed) > 3 else ''})"]
    if unused:
        parts.append(f"{len(unused)} of its ids are not in the data ({', '.join(map(repr, unused[:3]))}"
                     f"{', ...' if len(unused) > 3 else ''}; ids are matched as written)")
    logging.getLogger("ncf").warning(f"{path}: {'; '.join(parts)}.")


def distinct_names(names: Optional[list], ids: Sequence) -> Optional[list]:
    """``names`` with the id added to each name that more than one id has (ML-100k lists 18 films twice,
    e.g. ``Chasing Amy (1997) [id 246]`` and ``Chasing Amy (1997) [id 268]``), so that a list of
    recommendations or a history never shows one name for two items.

    >>> distinct_names(["Heat", "Up", "Heat"], [1, 2, 3])
    ['Heat [id 1]', 'Up', 'Heat [id 3]']
    """
    if not names:
        return names
    seen = Counter(names)
    if len(seen) == len(names):
        return names
    return [f"{n} [id {i}]" if seen[n] > 1 else n for n, i in zip(names, ids)]
