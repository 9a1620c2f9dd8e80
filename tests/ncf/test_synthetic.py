import numpy as np
import pytest

from ncf import NCFDataModule
from ncf.errors import DataError
from ncf.synthetic import generate, main, parse_spec
from tests.helpers import module as make_module


def test_seeded_sizes_and_distinct_pairs():
    a, b, c = generate(30_000, seed=3), generate(30_000, seed=3), generate(30_000, seed=4)
    assert np.array_equal(a.users, b.users) and np.array_equal(a.items, b.items)
    assert np.array_equal(a.timestamps, b.timestamps)
    assert not np.array_equal(a.items, c.items)
    assert len(a) == 30_000 and (a.n_users, a.n_items) == (207, 1046)
    keys = a.users * a.n_items + a.items
    assert len(np.unique(keys)) == len(keys)  # each user's items are distinct
    per_user = np.bincount(a.users, minlength=a.n_users)
    assert per_user.min() >= 5 and per_user.max() <= a.n_items // 2
    same_user = np.diff(a.users) == 0
    assert np.all(np.diff(a.timestamps)[same_user] > 0)  # each user's times increase
    d = generate(5_000, n_users=50, n_items=300, seed=0)
    assert (len(d), d.n_users, d.n_items) == (5_000, 50, 300)


def test_movielens_like_skew():
    data = generate(200_000, seed=0)
    pop = np.sort(np.bincount(data.items, minlength=data.n_items))[::-1]
    assert pop[: data.n_items // 10].sum() > 0.4 * len(data)  # the top 10% of items hold > 40% of interactions
    assert pop[-data.n_items // 2:].sum() < 0.2 * len(data)  # the long tail: half the items, < 20%
    act = np.bincount(data.users)
    assert act.max() > 8 * np.median(act)  # heavy-tailed activity
    assert np.corrcoef(np.arange(data.n_items), np.bincount(data.items, minlength=data.n_items))[0, 1] ** 2 < 0.05


def test_spec_in_the_data_module_and_the_cli(tmp_path):
    assert parse_spec("synthetic:1M") == (1_000_000, 0) and parse_spec("synthetic:500k:7") == (500_000, 7)
    for bad in ("synthetic:", "synthetic:abc", "synthetic:0", "synthetic:10:1:2"):
        with pytest.raises(DataError, match="synthetic:N"):
            parse_spec(bad)
    dm = NCFDataModule("synthetic:20000:2", num_eval_negatives=50)
    dm.setup("fit")
    assert dm.num_users == 138 and len(dm.split.test_users) == 138 and dm.split.holdout == "latest"
    out = tmp_path / "s.csv"
    assert main(["--interactions", "2e4", "--seed", "2", "--out", str(out)]) == 0
    from_file = NCFDataModule(str(out), num_eval_negatives=50)
    from_file.setup("fit")
    assert from_file.data_fingerprint() == dm.data_fingerprint()  # the file holds the same data
    assert main(["--interactions", "100", "--users", "50", "--out", str(out)]) == 2


def _with_genres(monkeypatch, **kw):
    """Data with genres, and the genre of each item (kept by the generator's taste object)."""
    import ncf.synthetic as synthetic

    made = []

    class Kept(synthetic._Taste):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(synthetic, "_Taste", Kept)
    data = generate(60_000, seed=5, **kw)
    return data, made[-1].genre


def test_genres_give_users_a_taste_and_an_order(monkeypatch, tmp_path):
    """--genres: each user's items come mostly from a few genres (fewer, the smaller the concentration), and
    consecutive items share a genre far more often with order_noise 0 than with a large one; pairs stay
    distinct, times increase, popularity keeps a long tail, and the default (no genres) is not changed."""
    data, genre = _with_genres(monkeypatch, genres=20)
    again, _ = _with_genres(monkeypatch, genres=20)
    assert np.array_equal(data.items, again.items) and np.array_equal(data.timestamps, again.timestamps)
    keys = data.users * data.n_items + data.items
    assert len(np.unique(keys)) == len(keys) and len(data) == 60_000
    same_user = np.diff(data.users) == 0
    assert np.all(np.diff(data.timestamps)[same_user] > 0)

    def top3_share(d, g):
        counts = np.zeros((d.n_users, 20))
        np.add.at(counts, (d.users, g[d.items]), 1)
        return float(np.mean(np.sort(counts, axis=1)[:, -3:].sum(1) / counts.sum(1)))

    def same_genre_next(d, g):
        nxt = np.diff(d.users) == 0
        return float(np.mean(g[d.items[:-1]][nxt] == g[d.items[1:]][nxt]))

    broad, broad_genre = _with_genres(monkeypatch, genres=20, concentration=100.0)
    assert top3_share(data, genre) > 0.45 > 0.35 > top3_share(broad, broad_genre)  # 0.54 and 0.26 here
    blocks, g0 = _with_genres(monkeypatch, genres=20, order_noise=0.0)
    mixed, g1 = _with_genres(monkeypatch, genres=20, order_noise=50.0)
    # 0.91 (genre after genre), 0.25 (the default, 0.5) and 0.11 (nearly random order) here
    assert same_genre_next(blocks, g0) > 0.8 > same_genre_next(data, genre) > same_genre_next(mixed, g1) + 0.08
    pop = np.sort(np.bincount(data.items, minlength=data.n_items))[::-1]
    assert pop[: data.n_items // 10].sum() > 0.3 * len(data)  # still a long tail
    plain = generate(60_000, seed=5)  # genres off: the popularity-only data, which draws no genres
    assert not np.array_equal(plain.items, data.items)
    for bad, message in ((dict(genres=5, concentration=0.0), "concentration must be a positive number"),
                         (dict(genres=5, concentration=float("inf")), "concentration must be a positive number"),
                         (dict(genres=5, concentration=float("nan")), "concentration must be a positive number"),
                         (dict(genres=5, order_noise=float("inf")), "order_noise must be a number >= 0"),
                         (dict(genres=-1), "genres must be 0"),
                         (dict(genres=1_000), "1000 genres for 331 items"),
                         (dict(n_items=0), "users and items must be at least 1")):
        with pytest.raises(DataError, match=message):
            generate(3_000, **bad)
    out = tmp_path / "g.csv"
    assert main(["--interactions", "2e4", "--genres", "8", "--order-noise", "0", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 20_001
    for args in (["--interactions", "nan"], ["--interactions", "-5"], ["--interactions", "2e4", "--order-noise", "0"],
                 ["--interactions", "2e4", "--users", "0"]):
        assert main([*args, "--out", str(out)]) == 2  # one line, no traceback


def test_explain_regenerates_synthetic_data(tmp_path, capsys):
    """A checkpoint trained on synthetic:N:SEED names a generator spec, not a path: explain.py generates the
    same data again (names, unseen items) without --data."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from explain.cli import main as explain_main
    from ncf import NCFModule

    pl.seed_everything(0)
    dm = NCFDataModule("synthetic:20000:2", num_eval_negatives=50, batch_size=4096)
    module = make_module("gmf", dm.num_users, dm.num_items, factor=4)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path), filename="m")
    pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
               callbacks=[ckpt]).fit(module, dm)
    assert explain_main([str(tmp_path / "m.ckpt"), "--user", "3", "--top-n", "2", "--methods", "deeplift",
                         "--no-faithfulness"]) == 0
    out = capsys.readouterr()
    assert "candidate items" in out.out and "--data FILE" not in out.err
