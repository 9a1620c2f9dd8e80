"""The data path at scale: sampling without dense per-user work, the fast CSV reader, memory, sparse
embedding gradients and bf16-mixed training."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

import ncf.module
from ncf import NCFDataModule, NCFModule
from ncf.datasets import _read_integer_columns, load_interactions_file
from ncf.errors import DataError
from ncf.sampling import distinct_draws, key_lookup, pair_keys, sample_eval_negatives
from ncf.splits import _latest_order
from ncf.synthetic import generate, write_csv
from tests.helpers import module as make_module


def _known(n_users, n_items, seed=0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), rng.integers(1, n_items // 2, n_users))
    items = rng.integers(0, n_items, len(users))
    keys = torch.unique(pair_keys(torch.from_numpy(users), torch.from_numpy(items), n_items))
    return keys


def test_distinct_draws_are_distinct_unknown_uniform_and_complete():
    n_users, n_items, k = 300, 60, 20
    known = _known(n_users, n_items)
    need = np.full(n_users, k)
    for rounds in (8, 0):  # 0: every user completed by the dense fallback
        users, items = distinct_draws(need, lambda who, r: r.integers(0, n_items, len(who)), n_items,
                                      np.random.default_rng(1), key_lookup(known, n_users * n_items), rounds=rounds)
        assert np.array_equal(np.bincount(users, minlength=n_users), need)
        keys = users * n_items + items
        assert len(np.unique(keys)) == len(keys)  # no item twice for a user
        assert not np.isin(keys, known.numpy()).any()  # never a known item
    # uniform over what each user may get: a user who knows nothing gets every item equally often
    users, items = distinct_draws(np.full(2000, 10), lambda who, r: r.integers(0, 50, len(who)), 50,
                                  np.random.default_rng(2))
    freq = np.bincount(items, minlength=50) / 20_000
    assert np.abs(freq - 1 / 50).max() < 0.005
    # a user asking for every item they lack gets exactly those
    need = np.zeros(n_users, dtype=np.int64)
    lack = n_items - int((known // n_items == 0).sum())
    need[0] = lack
    _, items = distinct_draws(need, lambda who, r: r.integers(0, n_items, len(who)), n_items, np.random.default_rng(3),
                              known)
    assert sorted(items.tolist()) == sorted(set(range(n_items)) - set((known[known // n_items == 0] % n_items).tolist()))


def test_eval_negatives_large_catalogue_path():
    n_users, n_items, k = 400, 500, 99
    known = _known(n_users, n_items)
    users = torch.arange(0, n_users, 2)  # a subset, as when users are dropped
    table = key_lookup(known, n_users * n_items)
    sparse = sample_eval_negatives(users, table, n_items, k, torch.Generator().manual_seed(0), dense_pairs=0)
    again = sample_eval_negatives(users, table, n_items, k, torch.Generator().manual_seed(0), dense_pairs=0)
    assert sparse.shape == (len(users), k) and torch.equal(sparse, again)  # seeded
    assert all(len(set(row.tolist())) == k for row in sparse)
    assert not torch.isin(pair_keys(users[:, None], sparse, n_items), known).any()
    # small catalogues keep the dense draw (the candidate lists every figure was measured on)
    dense = sample_eval_negatives(users, known, n_items, k, torch.Generator().manual_seed(0))
    dense2 = sample_eval_negatives(users, table, n_items, k, torch.Generator().manual_seed(0),
                                   dense_pairs=len(users) * n_items)
    assert torch.equal(dense, dense2) and not torch.equal(dense, sparse)


def test_one_key_latest_order_equals_the_lexsort():
    rng = np.random.default_rng(0)
    for ts_range in (5, 10 ** 9):  # many ties, and few
        data = generate(3000, seed=1)
        data.timestamps = rng.integers(-ts_range, ts_range, len(data))
        order = _latest_order(data)
        assert np.array_equal(order, np.lexsort((np.arange(len(data)), data.timestamps, data.users)))


def _load(path, fast: bool):
    """What load_interactions_file gives (arrays and ids, or the error), with or without the fast reader."""
    import ncf.datasets as ds

    saved = ds._read_integer_columns
    if not fast:
        ds._read_integer_columns = lambda *a: None
    try:
        d = load_interactions_file(path)
        return [d.users.tolist(), d.items.tolist(), d.timestamps.tolist(), d.user_ids, d.item_ids, d.has_timestamps]
    except DataError as err:
        return str(err)
    finally:
        ds._read_integer_columns = saved


def test_fast_reader_equals_the_careful_reader(tmp_path):
    data = generate(5000, seed=2)
    path = tmp_path / "x.csv"
    write_csv(data, str(path))
    assert _read_integer_columns(path, ",", ["user", "item", "timestamp"], ["user", "item"]) is not None  # fast
    assert _load(path, True) == _load(path, False)
    # odd files: the fast reader reads them the same or leaves them to the careful one (blanks, signs,
    # 19-digit ids, dates, floats, missing or extra fields, a header that needs stripping)
    for text in ("user,item,timestamp\n1, 2,3\n", "user,item,timestamp\n+1,2,3\n",
                 "user,item,timestamp\n1234567890123456789,2,3\n", "user,item,timestamp\n1,2,2024-01-01\n",
                 "user,item,timestamp\n1,2,3.6\n", "user,item,timestamp\n1,,3\n", "user,item,timestamp\n1,2\n",
                 "user,item,timestamp\n1,2,3,4\n", " user,item ,timestamp\n1,2,3\n", "user,item\n007,2\n1,2\n",
                 "user,item\n0012,5\n12,5\n12,6\n", "user,item\n-05,1\n5,1\n", "user,item,timestamp\n"):
        p = tmp_path / "odd.csv"
        p.write_text(text)
        assert _load(p, True) == _load(p, False), text
    assert "no rows" in _load(p, True)  # the last: a header alone


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import torch
    from ncf import NCFDataModule
    from ncf.synthetic import generate, write_csv
    write_csv(generate(1_000_000, seed=0), sys.argv[1])
    import gc; gc.collect()
    def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    base = peak()
    dm = NCFDataModule(sys.argv[1], batch_size=8192)
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.set_epoch(0)
    batch = next(iter(loader))
    print(json.dumps({"peak_growth": peak() - base, "base": base, "n": len(dm.interactions)}))
""")


def test_data_path_memory_on_a_1m_synthetic_set(tmp_path):
    # generating the set takes more memory than loading it, so the load starts below the generator's peak:
    # write it first in the same process, then measure the load, split and first epoch against that peak
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "s.csv")], capture_output=True,
                         text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["n"] == 1_000_000
    # ids, the split, the lookup table, an epoch's negatives and permutation: ~150 bytes per interaction kept
    # (benchmarks/scale.py); transients of sampling on top. A dense users x items pass would add gigabytes.
    assert res["peak_growth"] < 400 * res["n"], res


def _fit_weights(tmp_path, name, batch_size, **kw):
    pl.seed_everything(0)
    dm = NCFDataModule("synthetic:20000:1", batch_size=batch_size, num_eval_negatives=20)
    dm.setup("fit")
    module = make_module("neumf", dm.num_users, dm.num_items, factor=8, num_layers=2, optimizer="sgd", lr=0.05, **kw)
    _fit_weights.start = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = pl.Trainer(max_steps=20, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(tmp_path / name),
                         limit_val_batches=0)
    trainer.fit(module, dm)
    sparse = [m.sparse for m in module.modules() if isinstance(m, torch.nn.Embedding)]
    return {k: v.clone() for k, v in module.state_dict().items()}, sparse


def test_sparse_embedding_gradients_give_the_dense_update(tmp_path, monkeypatch):
    # 992 users and items against batches of 64: sparse gradients, SGD updating only the touched rows
    sparse_w, sparse = _fit_weights(tmp_path, "sparse", 64)
    assert sparse and all(sparse)
    monkeypatch.setattr(ncf.module, "SPARSE_ROWS_PER_SAMPLE", 10 ** 9)
    dense_w, dense = _fit_weights(tmp_path, "dense", 64)
    assert not any(dense)
    for k in dense_w:  # the same update up to float rounding (long runs then drift apart, as any rounding)
        assert torch.allclose(sparse_w[k], dense_w[k], atol=1e-6), k
        assert not torch.equal(dense_w[k], _fit_weights.start[k]), k  # and every tensor trained
    monkeypatch.undo()
    # Adam needs every row's moments: dense whatever the sizes
    pl.seed_everything(0)
    dm = NCFDataModule("synthetic:20000:1", batch_size=64, num_eval_negatives=20)
    dm.setup("fit")
    module = make_module("neumf", dm.num_users, dm.num_items, factor=8, num_layers=2, optimizer="adam")
    pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
               default_root_dir=str(tmp_path / "adam")).fit(module, dm)
    assert not any(m.sparse for m in module.modules() if isinstance(m, torch.nn.Embedding))
    # gradient clipping needs dense gradients too
    module = make_module("neumf", dm.num_users, dm.num_items, factor=8, num_layers=2, optimizer="sgd")
    pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, gradient_clip_val=1.0,
               enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
               default_root_dir=str(tmp_path / "clip")).fit(module, dm)
    assert not any(m.sparse for m in module.modules() if isinstance(m, torch.nn.Embedding))


@pytest.mark.parametrize("precision", ["bf16-mixed"])
def test_bf16_mixed_trains_as_well_as_float32(ml_root, tmp_path, precision):
    res = {}
    for prec in ("32-true", precision):
        pl.seed_everything(0)
        dm = NCFDataModule("ml-100k", root=str(ml_root), batch_size=8192)
        module = make_module("neumf", 943, 1682, factor=16, num_layers=2, optimizer="adam", lr=0.01)
        trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, precision=prec,
                             default_root_dir=str(tmp_path / prec))
        trainer.fit(module, dm)  # batch 8192: the folded fast path, under autocast for bf16
        res[prec] = trainer.test(module, dm, verbose=False)[0]["test_hr10"]
    assert res["32-true"] > 0.4 and res[precision] > 0.4, res  # random ranking gives 0.10
    assert abs(res[precision] - res["32-true"]) < 0.05, res
