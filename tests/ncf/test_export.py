"""The split as RecBole benchmark files (``ncf.export``): what is written is what the project trains and scores on."""
import pytest
import torch

from ncf.data import NCFDataModule
from ncf.datasets import DataError, load_interactions_file
from ncf.export import export_recbole, read_recbole
from ncf.splits import leave_one_out

FIELDS = ("train_users", "train_items", "val_users", "val_candidates", "test_users", "test_candidates")


def assert_same_split(back, split):
    assert (back.n_users, back.n_items) == (split.n_users, split.n_items)
    for name in FIELDS:
        a, b = getattr(back, name), getattr(split, name)
        assert (a is None) == (b is None), name
        if b is not None:
            assert torch.equal(a, b.to(torch.int64)), name


def test_movielens_split_round_trips(ml_root, tmp_path):
    dm = NCFDataModule("ml-100k", root=str(ml_root), download=False)
    dm.setup("fit")
    folder = export_recbole(dm.split, tmp_path / "ncf", "ncf")
    assert_same_split(read_recbole(folder, "ncf"), dm.split)
    # RecBole's benchmark files: one row per training interaction, per validation item and per test item
    lines = {s: (folder / f"ncf.{s}").read_text().splitlines() for s in ("train.inter", "valid.inter", "test.inter")}
    assert all(rows[0] == "user_id:token\titem_id:token" for rows in lines.values())
    assert [len(rows) - 1 for rows in lines.values()] == [100_000 - 2 * 943, 943, 943]
    cands = (folder / "ncf.test.candidates").read_text().splitlines()
    assert cands[0] == "user_id:token\titem_id:token\tlabel:float" and len(cands) == 1 + 943 * 100
    u, i = dm.split.test_users[0].item(), dm.split.test_candidates[0]
    assert cands[1:101] == [f"{u}\t{item}\t{int(k == 0)}" for k, item in enumerate(i.tolist())]


def test_split_without_validation_and_ids_that_are_not_numbers(tiny_csv, tmp_path):
    split = leave_one_out(load_interactions_file(str(tiny_csv)), validation=False, num_eval_negatives=5)
    folder = export_recbole(split, tmp_path / "tiny", "tiny")
    assert not (folder / "tiny.valid.inter").exists() and not (folder / "tiny.valid.candidates").exists()
    assert_same_split(read_recbole(folder, "tiny"), split)


def test_files_that_disagree_are_refused(tiny_csv, tmp_path):
    split = leave_one_out(load_interactions_file(str(tiny_csv)), num_eval_negatives=5)
    folder = export_recbole(split, tmp_path / "tiny", "tiny")
    path = folder / "tiny.test.inter"
    rows = path.read_text().splitlines()
    user, item = rows[1].split("\t")
    rows[1] = f"{user}\t{(int(item) + 1) % split.n_items}"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="disagree on the held-out items"):
        read_recbole(folder, "tiny")
    (folder / "tiny.item").unlink()
    with pytest.raises(DataError, match=r"tiny\.item is missing"):
        read_recbole(folder, "tiny")
