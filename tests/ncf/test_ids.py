"""Ids as a user wrote them, and only the users and items a model trained on: dropped short users leave the
id mapping, zero-padded ids keep their names, a paper split's negatives are distinct, and explain.py says
when two options conflict."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from explain.cli import main as explain_main
from ncf import NCFDataModule
from ncf.cli import main as cli_main
from ncf.datasets import DataError, load_interactions_file
from ncf.presplit import load_ncf_presplit
from tests.conftest import write_tiny

REPO = Path(__file__).resolve().parents[2]


def _with_short_users(path):
    """The tiny CSV plus two users of one and two interactions; one of them alone had item m99."""
    write_tiny(path, n_users=12, n_items=30, per_user=8)
    with open(path, "a") as f:
        f.write("short1,m99,4,2000\nshort2,m1,3,2000\nshort2,m2,3,2001\n")
    return path


def test_dropped_users_leave_the_mapping_and_predict_never_sees_them(tmp_path, capsys):
    data = _with_short_users(tmp_path / "short.csv")
    everyone = load_interactions_file(data)
    assert everyone.n_users == 14 and "m99" in everyone.item_ids
    dm = NCFDataModule(str(data), num_eval_negatives=5, drop_short_users=True)
    assert dm.num_users == 12 and dm.num_items == everyone.n_items - 1  # sized without them, before the split
    dm.setup("fit")
    assert "short1" not in dm.interactions.user_ids and "short2" not in dm.interactions.user_ids
    assert "m99" not in dm.interactions.item_ids  # only a dropped user had it: no row the model never trains
    assert set(dm.split.train_users.tolist()) == set(range(12)) == set(dm.split.test_users.tolist())
    common = ["--data.dataset", str(data), "--data.num_eval_negatives", "5", "--data.drop_short_users", "true",
              "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
              "--trainer.default_root_dir", str(tmp_path / "run")]
    cli_main(["fit", *common, "--model.network", "ncf.models.GMF", "--model.network.factor", "4", "--trainer.max_epochs", "1"])
    ckpt = next((tmp_path / "run").rglob("*.ckpt"))
    out = tmp_path / "recs.csv"
    cli_main(["predict", *common, "--ckpt_path", str(ckpt), "--recommend.output", str(out), "--recommend.top_n", "3"])
    recs = pd.read_csv(out, dtype=str)
    assert set(recs["user_id"]) == {f"u{k}" for k in range(12)} and "m99" not in set(recs["item_id"])
    capsys.readouterr()
    assert explain_main([str(ckpt), "--data", str(data), "--user", "short1", "--top-n", "2"]) == 2
    assert "Unknown user id 'short1'" in capsys.readouterr().err


def test_zero_padded_ids_keep_their_names_and_never_merge(tmp_path, caplog):
    # "0012" and "12" are two users; "007" and "7" two items
    rows = ["user,item,timestamp"] + [f"{u},{i},{t}" for t, (u, i) in enumerate(
        [("0012", "007"), ("0012", "8"), ("0012", "9"), ("12", "7"), ("12", "8"), ("12", "9"), ("3", "007"), ("3", "8")])]
    path = tmp_path / "padded.csv"
    path.write_text("\n".join(rows) + "\n")
    with caplog.at_level("WARNING", logger="ncf"):
        data = load_interactions_file(path)
    assert "duplicate" not in caplog.text  # nothing is reported as a duplicate row
    assert data.user_ids == ["0012", "12", "3"] and data.item_ids == ["007", "7", "8", "9"]
    assert len(data) == 8
    names = tmp_path / "items.csv"
    names.write_text("item,title\n007,Bond\n7,Seven\n")
    dm = NCFDataModule(str(path), num_eval_negatives=1, validation=False, item_names=str(names))
    dm.setup("fit")
    assert dm.interactions.item_titles == ["Bond", "Seven", "8", "9"]


def test_plain_integer_ids_stay_numbers(tmp_path):
    path = tmp_path / "ints.csv"
    path.write_text("user,item\n1,10\n1,0\n2,10\n-3,5\n")
    data = load_interactions_file(path)
    assert data.user_ids == [-3, 1, 2] and data.item_ids == [0, 5, 10]


def _presplit(tmp_path, negatives: str):
    (tmp_path / "p.train.rating").write_text("0\t0\t5\t1\n0\t1\t5\t2\n1\t1\t5\t1\n1\t2\t5\t2\n")
    (tmp_path / "p.test.rating").write_text("0\t2\t5\t3\n1\t0\t5\t3\n")
    (tmp_path / "p.test.negative").write_text(negatives)
    return str(tmp_path / "p")


def test_paper_split_negatives_must_be_distinct(tmp_path):
    good = _presplit(tmp_path, "(0,2)\t3\t4\n(1,0)\t3\t4\n")
    assert load_ncf_presplit(good).presplit["test_negatives"].tolist() == [[3, 4], [3, 4]]
    bad = _presplit(tmp_path, "(0,2)\t3\t4\n(1,0)\t4\t4\n")
    with pytest.raises(DataError, match=r"p\.test\.negative, line 2: item 4 is listed twice as a negative of user 1"):
        load_ncf_presplit(bad)
    twice = _presplit(tmp_path, "(0,2)\t3\t4\n(0,2)\t3\t4\n(1,0)\t3\t4\n")
    with pytest.raises(DataError, match=r"p\.test\.negative, line 2: a second line for user 0"):
        load_ncf_presplit(twice)


@pytest.mark.parametrize("args, message", [
    (["--user", "u1", "--item", "m3", "--top-n", "2"], "--item and --top-n choose the items in two ways"),
    (["--pairs", "pairs.csv", "--user", "u1"], "--pairs FILE names its own (user, item) pairs"),
])
def test_conflicting_choices_of_pairs_are_refused(tmp_path, capsys, args, message):
    # refused before any checkpoint is read
    assert explain_main([str(tmp_path / "none.ckpt"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_dropping_every_user_says_so(tmp_path, capsys):
    data = tmp_path / "ones.csv"
    data.write_text("user,item,rating,timestamp\n" + "".join(f"u{k},m{k},4,{1000 + k}\n" for k in range(6)))
    with pytest.raises(DataError, match=r"ones.csv: no user has 3 or more interactions, so --data.drop_short_users "
                                        r"drops every user; leave-one-out needs 3 per user"):
        NCFDataModule(str(data), num_eval_negatives=2, drop_short_users=True).num_users


def test_callback_probe_pairs_keep_their_ids_as_typed(tmp_path, monkeypatch):
    """YAML reads 010 as 8, and an int-or-string id 0099 as 99: the callback's listed pairs are matched as
    typed, on the command line and in a config file, where the data has 010 and 8, 0099 and 99 apart."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    items = ["0099", "99", "010", "8"] + [f"{k}" for k in range(100, 116)]
    rows = [(f"u{u}", items[(u * 7 + k * 3) % len(items)], 1000 + k) for u in range(12) for k in range(6)]
    rows += [("u1", "0099", 1), ("u1", "010", 2), ("u2", "99", 1), ("u2", "8", 2)]
    pd.DataFrame(rows, columns=["user", "item", "timestamp"]).drop_duplicates(["user", "item"]).sample(
        frac=1, random_state=int(rng.integers(100))).to_csv(tmp_path / "ids.csv", index=False)
    base = ["fit", "--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(tmp_path / "ids.csv"),
            "--data.num_eval_negatives", "3", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    cb = ["--trainer.callbacks+=explain.AttributionCallback", "--trainer.callbacks.num_probe_users", "1",
          "--trainer.callbacks.methods", "[deeplift]", "--trainer.callbacks.faithfulness", "false"]
    cli_main([*base, *cb, "--run_name", "line", "--trainer.callbacks.pairs", "[[u1, 0099], [u1, 010], [u2, 99], [u2, 8]]"])
    listed = tmp_path / "cb.yaml"
    listed.write_text("trainer:\n  callbacks+:\n    - class_path: explain.AttributionCallback\n      init_args:\n"
                      "        methods: [deeplift]\n        num_probe_users: 1\n        faithfulness: false\n"
                      "        pairs: [[u1, 0099], [u1, 010], [u2, 99], [u2, 8]]\n")
    cli_main([*base, "--config", str(listed), "--run_name", "file"])
    for run in ("line", "file"):
        pairs = pd.read_parquet(next(Path("runs").glob(f"*/{run}/attributions/pairs_epoch=0.parquet")))
        listed_pairs = pairs[pairs["kind"] == "listed"]
        assert listed_pairs["item_id"].tolist() == ["0099", "010", "99", "8"], run
