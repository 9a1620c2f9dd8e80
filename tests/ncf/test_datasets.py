import hashlib
import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ncf import movielens
from ncf.datasets import DataError, load_interactions_file
from ncf.presplit import load_ncf_presplit
from ncf.movielens import load_movielens


def test_ml100k_counts_and_titles(ml_root):
    data = load_movielens("ml-100k", ml_root, download=False)
    assert (len(data), data.n_users, data.n_items) == (100_000, 943, 1682)
    assert data.user_ids[:3] == [1, 2, 3] and data.item_ids[0] == 1
    assert data.item_titles[0] == "Toy Story (1995)"
    assert data.users.max() == 942 and data.items.max() == 1681


def test_ml100k_env_root(ml_root, monkeypatch):
    monkeypatch.setenv("NCF_DATA_DIR", str(ml_root))
    assert load_movielens("ml-100k", download=False).n_users == 943
    monkeypatch.setenv("NCF_DATA_DIR", "")  # set but empty (NCF_DATA_DIR= in a shell): as if unset
    assert movielens.default_root() == Path("data")


def _fake_movielens(tmp_path: Path, monkeypatch, rows: list[str]) -> movielens.MovieLensSpec:
    """A zip laid out like ml-100k.zip, served from a file:// URL, with the spec's size and md5 set to it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-100k/u.data", "\n".join(rows) + "\n")
        zf.writestr("ml-100k/u.item", "1|Movie One|x\n2|Movie Two|x\n3|Movie Three|x\n")
    src = tmp_path / "server" / "ml-100k.zip"
    src.parent.mkdir()
    src.write_bytes(buf.getvalue())
    users = {r.split("\t")[0] for r in rows}
    items = {r.split("\t")[1] for r in rows}
    spec = movielens.MovieLensSpec("ml-100k", src.as_uri(), len(buf.getvalue()), hashlib.md5(buf.getvalue()).hexdigest(),
                                  "u.data", "\t", len(rows), len(users), len(items), "u.item", "|")
    monkeypatch.setitem(movielens.MOVIELENS, "ml-100k", spec)
    return spec


ROWS = [f"{u}\t{i}\t3\t{100 + u * 10 + i}" for u in (1, 2) for i in (1, 2, 3)]


def test_download_verifies_and_extracts(tmp_path, monkeypatch):
    _fake_movielens(tmp_path, monkeypatch, ROWS)
    root = tmp_path / "data"
    data = load_movielens("ml-100k", root)
    assert len(data) == 6 and data.item_titles == ["Movie One", "Movie Two", "Movie Three"]
    assert sorted(p.name for p in root.iterdir()) == ["ml-100k"]  # no temporary leftovers
    # Present files: early return, no download (the URL may now be gone).
    monkeypatch.setitem(movielens.MOVIELENS, "ml-100k", movielens.MOVIELENS["ml-100k"].__class__(
        **{**movielens.MOVIELENS["ml-100k"].__dict__, "url": (tmp_path / "gone.zip").as_uri()}))
    assert len(load_movielens("ml-100k", root)) == 6


def test_download_checksum_mismatch(tmp_path, monkeypatch):
    spec = _fake_movielens(tmp_path, monkeypatch, ROWS)
    monkeypatch.setitem(movielens.MOVIELENS, "ml-100k", spec.__class__(**{**spec.__dict__, "md5": "0" * 32}))
    with pytest.raises(DataError, match="checksum"):
        load_movielens("ml-100k", tmp_path / "data")
    assert not (tmp_path / "data" / "ml-100k").exists()


def test_offline_error_names_url_and_place(tmp_path, monkeypatch):
    spec = _fake_movielens(tmp_path, monkeypatch, ROWS)
    url = (tmp_path / "nowhere.zip").as_uri()
    monkeypatch.setitem(movielens.MOVIELENS, "ml-100k", spec.__class__(**{**spec.__dict__, "url": url}))
    with pytest.raises(DataError) as err:
        load_movielens("ml-100k", tmp_path / "data")
    assert url in str(err.value) and "NCF_DATA_DIR" in str(err.value)
    with pytest.raises(DataError, match="not found"):
        load_movielens("ml-100k", tmp_path / "data", download=False)


def test_truncated_movielens_detected(tmp_path, monkeypatch):
    _fake_movielens(tmp_path, monkeypatch, ROWS)
    root = tmp_path / "data"
    load_movielens("ml-100k", root)
    path = root / "ml-100k" / "u.data"
    path.write_text("\n".join(ROWS[:-1]) + "\n")
    with pytest.raises(DataError, match="truncated or altered"):
        load_movielens("ml-100k", root)
    path.write_text("\n".join(ROWS[:-1]) + "\n2\t3\n")
    with pytest.raises(DataError, match=r"line 6: field 'rating' is missing"):
        load_movielens("ml-100k", root)
    path.write_text("\n".join(ROWS[:-1]) + "\n2\tthree\t3\t4\n")
    with pytest.raises(DataError, match=r"line 6: field 'item' is not a number: 'three'"):
        load_movielens("ml-100k", root)


def test_generic_csv_maps_any_ids(tiny_csv):
    data = load_interactions_file(tiny_csv)
    assert data.n_users == 12 and all(isinstance(u, str) for u in data.user_ids)
    # Original ids survive the round trip through indices.
    raw = [line.split(",") for line in tiny_csv.read_text().splitlines()[1:]]
    got = {(data.user_ids[u], data.item_ids[i]) for u, i in zip(data.users, data.items)}
    assert got == {(r[0], r[1]) for r in raw}


def test_generic_csv_errors(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("customer,sku\n1,2\n")
    with pytest.raises(DataError, match="no column 'user'"):
        load_interactions_file(p)
    p.write_text("user,item,timestamp\na,b,5\na,c,later\n")
    with pytest.raises(DataError, match=r"line 3: field 'timestamp' is not a number"):
        load_interactions_file(p)
    with pytest.raises(DataError, match="not found"):
        load_interactions_file(tmp_path / "missing.csv")


def test_duplicates_keep_latest(tmp_path, caplog):
    p = tmp_path / "d.tsv"
    p.write_text("user\titem\ttimestamp\na\tx\t1\na\tx\t9\na\ty\t2\n")
    with caplog.at_level(logging.WARNING, logger="ncf"):
        data = load_interactions_file(p)
    assert f"{p}: 1 duplicate (user, item) rows; kept the latest of each." in caplog.messages
    assert len(data) == 2
    assert sorted(data.timestamps.tolist()) == [2, 9]


def test_ncf_presplit(tmp_path):
    pre = tmp_path / "toy"
    (tmp_path / "toy.train.rating").write_text("0\t0\t5\t1\n0\t1\t5\t2\n1\t2\t5\t1\n1\t3\t4\t3\n")
    (tmp_path / "toy.test.rating").write_text("0\t2\t5\t9\n1\t0\t5\t9\n")
    (tmp_path / "toy.test.negative").write_text("(0,2)\t3\t4\n(1,0)\t1\t4\n")
    data = load_ncf_presplit(pre)
    assert len(data) == 4 and data.n_users == 2 and data.n_items == 5
    np.testing.assert_array_equal(data.presplit["test_negatives"], [[3, 4], [1, 4]])
    (tmp_path / "toy.test.negative").write_text("(0,2)\t3\t4\n1,0 oops\n")
    with pytest.raises(DataError, match="line 2"):
        load_ncf_presplit(pre)


def test_movielens_1m_format(tmp_path, monkeypatch):
    """ratings.dat is '::'-separated, movies.dat holds titles; same download mechanism as ML-100k."""
    rows = [f"{u}::{i}::4::{900 + 10 * u + i}" for u in (1, 2, 3) for i in (10, 20, 30)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", "\n".join(rows) + "\n")
        zf.writestr("ml-1m/movies.dat", "10::Ten (1990)::Drama\n20::Twenty (1991)::Comedy\n30::Thirty (1992)::Action\n")
    src = tmp_path / "ml-1m.zip"
    src.write_bytes(buf.getvalue())
    spec = movielens.MOVIELENS["ml-1m"]
    monkeypatch.setitem(movielens.MOVIELENS, "ml-1m", spec.__class__(**{
        **spec.__dict__, "url": src.as_uri(), "size": None, "md5": hashlib.md5(buf.getvalue()).hexdigest(),
        "n_ratings": 9, "n_users": 3, "n_items": 3}))
    data = load_movielens("ml-1m", tmp_path / "data")
    assert (len(data), data.n_users, data.n_items) == (9, 3, 3)
    assert data.item_ids == [10, 20, 30] and data.item_titles == ["Ten (1990)", "Twenty (1991)", "Thirty (1992)"]


def test_header_separator_case_and_time_column_are_named_or_found(tmp_path, caplog):
    rows = "1,10,5\n1,11,6\n2,10,7\n"
    for name, sep in (("semi.csv", ";"), ("tabs.txt", "\t"), ("pipes.csv", "|")):  # one column by the default
        p = tmp_path / name
        p.write_text(sep.join(("user", "item", "timestamp")) + "\n" + rows.replace(",", sep))
        data = load_interactions_file(p)
        assert data.user_ids == [1, 2] and data.item_ids == [10, 11] and data.has_timestamps, name
    p = tmp_path / "tabs.csv"  # --data.sep '\t' as a shell passes it (backslash, t): a tab
    p.write_text("user\titem\n1\t10\n")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_interactions_file(p, sep="\\t").item_ids == [10]
    p = tmp_path / "cased.csv"
    p.write_text("User,Item\n1,10\n")
    with pytest.raises(DataError, match="no column 'user' .*--data.user_col User"):
        load_interactions_file(p)
    p = tmp_path / "ts.csv"
    p.write_text("user,item,ts\n" + rows)
    with pytest.raises(DataError, match=r"no column 'time' .* for --data.timestamp_col; use --data.timestamp_col ts"):
        load_interactions_file(p, timestamp_col="time")  # a typo would train without time, silently
    with caplog.at_level(logging.WARNING, logger="ncf"):
        assert not load_interactions_file(p).has_timestamps
    assert any("if its 'ts' column is the time, pass --data.timestamp_col ts" in m for m in caplog.messages)
    assert load_interactions_file(p, timestamp_col="ts").has_timestamps


def test_timestamps_in_two_units_are_named(tmp_path, caplog):
    p = tmp_path / "units.csv"
    p.write_text("user,item,timestamp\n1,10,1700000000000\n1,11,1700000100000\n1,12,1700000200\n2,10,5\n")
    with caplog.at_level(logging.WARNING, logger="ncf"):
        load_interactions_file(p)
    assert any("1 like Unix seconds (e.g. line 4) and 2 like Unix milliseconds (e.g. line 2)" in m
               for m in caplog.messages), caplog.messages
    caplog.clear()
    p.write_text("user,item,timestamp\n1,10,1700000000\n1,11,1700000100\n2,10,5\n")  # one unit (and a small number)
    with caplog.at_level(logging.WARNING, logger="ncf"):
        load_interactions_file(p)
    assert not [m for m in caplog.messages if "two units" in m]
