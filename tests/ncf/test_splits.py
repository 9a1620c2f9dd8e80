import pytest
import torch

from ncf.datasets import DataError, load_interactions_file
from ncf.presplit import load_ncf_presplit
from ncf.movielens import load_movielens
from ncf.sampling import is_member as _is_member, key_lookup, pair_keys, sample_negatives
from ncf.splits import leave_one_out


def _keys(u, i, n):
    return set(pair_keys(torch.as_tensor(u), torch.as_tensor(i), n).tolist())


@pytest.fixture(scope="module")
def ml(ml_root):
    return load_movielens("ml-100k", ml_root, download=False)


def test_leave_one_out_on_movielens(ml):
    sp = leave_one_out(ml)
    n = ml.n_items
    train = _keys(sp.train_users, sp.train_items, n)
    val = _keys(sp.val_users, sp.val_candidates[:, 0], n)
    test = _keys(sp.test_users, sp.test_candidates[:, 0], n)
    assert len(train) == 100_000 - 2 * 943 and len(val) == len(test) == 943
    assert not (train & val) and not (train & test) and not (val & test)
    assert sp.test_candidates.shape == (943, 100) and sp.val_candidates.shape == (943, 100)
    # The test item is each user's latest interaction, the validation item one of the others.
    ts = {(u, i): t for u, i, t in zip(ml.users.tolist(), ml.items.tolist(), ml.timestamps.tolist())}
    for u, i, j in zip(sp.test_users.tolist()[:50], sp.test_candidates[:50, 0].tolist(), sp.val_candidates[:50, 0].tolist()):
        user_ts = [t for (uu, _), t in ts.items() if uu == u]
        assert ts[(u, i)] == max(user_ts) and ts[(u, j)] <= ts[(u, i)]
    # Evaluation negatives: never any interaction of the user, distinct within a row.
    everything = _keys(ml.users, ml.items, n)
    for cands, users in ((sp.val_candidates, sp.val_users), (sp.test_candidates, sp.test_users)):
        negs = cands[:, 1:]
        assert not (_keys(users[:, None].expand_as(negs).reshape(-1), negs.reshape(-1), n) & everything)
        assert all(len(set(row)) == 99 for row in negs.tolist())


def test_eval_negatives_fixed_by_seed(ml):
    a, b, c = leave_one_out(ml, seed=0), leave_one_out(ml, seed=0), leave_one_out(ml, seed=1)
    assert torch.equal(a.test_candidates, b.test_candidates) and torch.equal(a.val_candidates, b.val_candidates)
    assert not torch.equal(a.test_candidates, c.test_candidates)
    assert torch.equal(a.test_candidates[:, 0], c.test_candidates[:, 0])


def test_ties_broken_by_file_order(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("user,item,timestamp\na,x,5\na,y,5\na,z,5\na,w,1\n" + "".join(f"b,{c},1\n" for c in "xyzw"))
    sp = leave_one_out(load_interactions_file(p), num_eval_negatives=0, validation_item="previous")
    data = load_interactions_file(p)
    a = data.user_ids.index("a")
    row = sp.test_users.tolist().index(a)
    assert data.item_ids[sp.test_candidates[row, 0]] == "z" and data.item_ids[sp.val_candidates[row, 0]] == "y"


def test_too_few_interactions(tmp_path):
    p = tmp_path / "short.csv"
    p.write_text("user,item,timestamp\na,x,1\na,y,2\nb,x,1\nb,y,2\nb,z,3\n" + "".join(f"c,i{k},{k}\n" for k in range(5)))
    with pytest.raises(DataError, match=r"1 users have fewer than 3 interactions \(e.g. 'a' \(2\)\).*drop_short_users"):
        leave_one_out(load_interactions_file(p), num_eval_negatives=1)
    sp = leave_one_out(load_interactions_file(p), num_eval_negatives=1, drop_short_users=True)
    assert len(sp.test_users) == 2
    with pytest.raises(DataError, match="fewer than 4 items they never interacted with"):
        leave_one_out(load_interactions_file(p), num_eval_negatives=4, drop_short_users=True)


def test_training_negatives_never_positives_and_seeded(ml):
    sp = leave_one_out(ml)
    keys = pair_keys(sp.train_users, sp.train_items, ml.n_items).sort().values
    u1, i1 = sample_negatives(sp.train_users, keys, ml.n_items, 4, torch.Generator().manual_seed(3))
    u2, i2 = sample_negatives(sp.train_users, keys, ml.n_items, 4, torch.Generator().manual_seed(3))
    _, i3 = sample_negatives(sp.train_users, keys, ml.n_items, 4, torch.Generator().manual_seed(4))
    assert len(i1) == 4 * len(sp.train_users) and torch.equal(i1, i2) and not torch.equal(i1, i3)
    assert torch.equal(u1, sp.train_users.repeat_interleave(4))
    assert not (_keys(u1, i1, ml.n_items) & _keys(sp.train_users, sp.train_items, ml.n_items))


def test_presplit_uses_published_test_lists(tmp_path):
    (tmp_path / "toy.train.rating").write_text("".join(f"{u}\t{i}\t5\t{i}\n" for u in range(3) for i in range(u, u + 4)))
    (tmp_path / "toy.test.rating").write_text("".join(f"{u}\t{u + 5}\t5\t99\n" for u in range(3)))
    (tmp_path / "toy.test.negative").write_text("".join(f"({u},{u + 5})\t9\t10\n" for u in range(3)))
    sp = leave_one_out(load_ncf_presplit(tmp_path / "toy"), num_eval_negatives=2, validation_item="previous")
    assert sp.test_candidates.tolist() == [[5, 9, 10], [6, 9, 10], [7, 9, 10]]
    assert sp.val_candidates[:, 0].tolist() == [3, 4, 5]  # latest training row held out for validation
    assert len(sp.train_users) == 9
    rnd = leave_one_out(load_ncf_presplit(tmp_path / "toy"), num_eval_negatives=2)  # one of each user's rows
    assert all(u <= i < u + 4 for u, i in enumerate(rnd.val_candidates[:, 0].tolist()))
    assert torch.equal(rnd.test_candidates, sp.test_candidates) and len(rnd.train_users) == 9


def test_validation_item_random_or_previous(tmp_path):
    """``random`` (default) draws each user's validation item uniformly from the items other than the test
    item, seeded by the split seed; ``previous`` is the item just before the test item."""
    p = tmp_path / "t.csv"
    rows = [(u, i) for u in range(400) for i in range(6)] + [(400, i) for i in range(6, 9)]  # items 6-8: negatives
    p.write_text("user,item,timestamp\n" + "".join(f"{u},{i},{i}\n" for u, i in rows))
    data = load_interactions_file(p)
    prev = leave_one_out(data, num_eval_negatives=1, validation_item="previous")

    def item(sp):  # validation item of users 0-399
        return [int(data.item_ids[i]) for u, i in zip(sp.val_users.tolist(), sp.val_candidates[:, 0].tolist())
                if int(data.user_ids[u]) < 400]

    assert set(item(prev)) == {4}
    a, b = leave_one_out(data, num_eval_negatives=1), leave_one_out(data, num_eval_negatives=1)
    c = leave_one_out(data, num_eval_negatives=1, seed=1)
    assert item(a) == item(b) and item(a) != item(c)
    counts = torch.bincount(torch.tensor(item(a)), minlength=6).tolist()
    assert counts[5] == 0 and min(counts[:5]) > 50  # never the test item; each of the other five ~80 times
    assert torch.equal(a.test_candidates[:, 0], prev.test_candidates[:, 0])
    train = _keys(a.train_users, a.train_items, data.n_items)
    assert len(train) == 400 * 4 + 1 and not train & _keys(a.val_users, a.val_candidates[:, 0], data.n_items)
    with pytest.raises(DataError, match="validation_item"):
        leave_one_out(data, num_eval_negatives=1, validation_item="latest")


def test_negatives_same_with_lookup_table_or_sorted_keys():
    torch.manual_seed(0)
    users = torch.randint(30, (400,))
    items = torch.randint(50, (400,))
    keys = pair_keys(users, items, 50).unique()  # sorted
    table = key_lookup(keys, 30 * 50)
    assert table.dtype == torch.bool and int(table.sum()) == len(keys)
    bits = key_lookup(keys, 30 * 50, max_bytes=100)  # too large for a table of bools: a table of bits
    assert bits.dtype == torch.uint8 and len(bits) == (30 * 50 + 7) // 8
    assert key_lookup(keys, 30 * 50, max_bytes=100, max_bit_bytes=100) is keys  # too large for either
    every = torch.arange(30 * 50)
    assert torch.equal(_is_member(bits, every), table) and torch.equal(_is_member(keys, every), table)
    a = sample_negatives(users, keys, 50, 4, torch.Generator().manual_seed(1))
    for known in (table, bits):
        b = sample_negatives(users, known, 50, 4, torch.Generator().manual_seed(1))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.isin(pair_keys(*a, 50), keys).any()
