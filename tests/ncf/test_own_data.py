"""Own data as a new user brings it: no timestamps, names in a second file, integer ids, one-line errors,
full-ranking evaluation and recommendations out."""
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from ncf import NCFDataModule, NCFModule
from ncf.cli import main as cli_main
from ncf.datasets import DataError, load_interactions_file
from ncf.names import read_names
from ncf.candidates import candidate_rank, interacted_keys, recommend
from ncf.metrics import hit_ndcg, positive_rank, rank_among
from ncf.splits import leave_one_out
from explain.cli import main as explain_main
from tests.conftest import write_tiny
from tests.helpers import module as make_module

REPO = Path(__file__).resolve().parents[2]


def write_sorted_counts(path: Path, timestamps: bool = False, n_users: int = 60, seed: int = 0) -> Path:
    """Like a public count file: sorted by user then item id, CRLF, ids following first appearance, so each
    user's highest ids are niche items nobody else has (two per user)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        popular = rng.choice(np.arange(1, 41), size=12, replace=False)
        niche = [1000 + 2 * u, 1001 + 2 * u]
        for k, i in enumerate(sorted(popular.tolist()) + niche):
            # with timestamps, the latest two are popular items: time and file order disagree
            t = 100 + k if k >= 2 else 500 + k
            rows.append((u, i, int(rng.integers(1, 9)), t))
    head = "user\titem\tcount\tseq" + ("\ttimestamp" if timestamps else "")  # seq: the file's row number
    lines = [head] + ["\t".join(map(str, r[:3] + (k,) + (r[3:] if timestamps else ())))
                      for k, r in enumerate(rows)]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


def test_no_timestamps_holds_out_random_items_and_says_so(tmp_path, caplog):
    path = write_sorted_counts(tmp_path / "counts.tsv")
    dm = NCFDataModule(str(path), num_eval_negatives=20)
    with caplog.at_level(logging.INFO, logger="ncf"):
        dm.setup("fit")
    assert dm.holdout == "random"
    assert any("hold-out: random" in r.message and "no timestamps" in r.message for r in caplog.records)
    test_items = [dm.interactions.item_ids[i] for i in dm.split.test_candidates[:, 0].tolist()]
    assert sum(i >= 1000 for i in test_items) < len(test_items) / 2  # not the highest ids
    d = dm.split.diagnostic
    assert abs(d["held_out_cold"] - d["negatives_cold"]) < 0.1
    assert not any(r.levelno == logging.WARNING for r in caplog.records)
    # The same rows split by file order: the held-out items are the cold niche ones, and a warning says so.
    caplog.clear()
    bad = NCFDataModule(str(path), num_eval_negatives=20, timestamp_col="seq")
    with caplog.at_level(logging.INFO, logger="ncf"):
        bad.setup("fit")
    warn = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert bad.holdout == "latest" and bad.split.diagnostic["held_out_cold"] > 0.3
    assert warn and "cold start, not preference" in warn[0]
    # Asking for 'latest' without any time column is refused, not done by file order.
    with pytest.raises(DataError, match="--data.holdout random"):
        NCFDataModule(str(path), holdout="latest").setup("fit")


def test_random_holdout_is_seeded_and_shared(tmp_path):
    data = load_interactions_file(write_sorted_counts(tmp_path / "c.tsv"))
    a, b = leave_one_out(data, seed=3, holdout="random"), leave_one_out(data, seed=3, holdout="random")
    c = leave_one_out(data, seed=4, holdout="random")
    assert torch.equal(a.test_candidates, b.test_candidates) and torch.equal(a.val_candidates, b.val_candidates)
    assert not torch.equal(a.test_candidates[:, 0], c.test_candidates[:, 0])


def test_timestamps_hold_out_the_latest(tmp_path, caplog):
    path = write_sorted_counts(tmp_path / "timed.tsv", timestamps=True)
    dm = NCFDataModule(str(path), num_eval_negatives=20)
    with caplog.at_level(logging.INFO, logger="ncf"):
        dm.setup("fit")
    assert dm.holdout == "latest" and any("hold-out: latest" in r.message for r in caplog.records)
    raw = pd.read_csv(path, sep="\t")
    latest = raw.sort_values(["user", "timestamp"]).groupby("user").tail(1).set_index("user")["item"]
    for u, i in zip(dm.split.test_users.tolist(), dm.split.test_candidates[:, 0].tolist()):
        assert dm.interactions.item_ids[i] == latest[dm.interactions.user_ids[u]]
    assert dm.state_dict()["holdout"] == "latest" and set(dm.state_dict()["split_diagnostic"]) == {
        "held_out_cold", "negatives_cold"}


def test_iso_dates_and_bad_timestamps(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("user,item,timestamp\na,x,2024-01-02\na,y,2024-01-01T10:00\n")
    data = load_interactions_file(p)
    assert data.has_timestamps and data.timestamps[0] > data.timestamps[1]
    p.write_text("user,item,timestamp\na,x,5\na,y,inf\n")
    with pytest.raises(DataError, match="line 3: timestamp inf is not a finite time"):
        load_interactions_file(p)


def test_integer_ids_stay_integers_in_numeric_order(tmp_path):
    p = tmp_path / "ids.csv"
    p.write_text("user,item\n10,2\n2,10\n 2 ,3\n10,3\n")
    data = load_interactions_file(p)
    assert data.user_ids == [2, 10] and data.item_ids == [2, 3, 10]
    assert all(type(v) is int for v in data.user_ids + data.item_ids)
    assert not data.has_timestamps
    p.write_text("user,item\n10,a\n2,b\n")
    assert load_interactions_file(p).item_ids == ["a", "b"] and load_interactions_file(p).user_ids == [2, 10]
    p.write_text("user,item\nu10,1\nu2,1\n")
    assert load_interactions_file(p).user_ids == ["u10", "u2"]  # strings sort as strings


def test_names_files(tmp_path):
    names = tmp_path / "names.tsv"
    names.write_text("item\ttitle\n2\tTwo\n 10 \tTen\n")
    assert read_names(names, [2, 3, 10]) == ["Two", "3", "Ten"]  # missing names fall back to the id
    names = tmp_path / "names.csv"
    names.write_text("id,label\nx,Ex\n")
    with pytest.raises(DataError, match="no column 'title'"):
        read_names(names, ["x"], id_col="id", name_col="title")
    names.write_text("id,label\nx,Ex\ny,Why\nx,Again\n")
    with pytest.raises(DataError, match="lines 2 and 4: id 'x' is named twice"):
        read_names(names, ["x"])
    names.write_bytes("id,label\nx,Caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="line 2: not valid utf-8.*--data.names_encoding latin-1"):
        read_names(names, ["x"])
    assert read_names(names, ["x"], encoding="latin-1") == ["Café"]


def test_a_name_two_ids_share_carries_the_id(tmp_path, ml_root):
    data = write_tiny(tmp_path / "tiny.csv", n_users=12, n_items=6, per_user=4)
    (tmp_path / "items.csv").write_text("item,title\nm0,Heat\nm1,Up\nm2,Heat\n")
    dm = NCFDataModule(str(data), item_names=str(tmp_path / "items.csv"), num_eval_negatives=2)
    dm.prepare_data()
    dm.setup("fit")
    named = dict(zip(dm.interactions.item_ids, dm.interactions.item_titles))
    assert (named["m0"], named["m1"], named["m2"], named["m3"]) == ("Heat [id m0]", "Up", "Heat [id m2]", "m3")
    ml = NCFDataModule("ml-100k", root=str(ml_root))  # MovieLens lists 18 films under two ids each
    ml.prepare_data()
    ml.setup("fit")
    titles = ml.interactions.item_titles
    assert len(set(titles)) == len(titles)
    assert titles[ml.interactions.item_ids.index(246)] == "Chasing Amy (1997) [id 246]"


def _own_run(tmp_path, epochs=2, **data_kw):
    """Train a small GMF on the count file through the CLI, with item and user names."""
    data = write_sorted_counts(tmp_path / "counts.tsv")
    (tmp_path / "items.csv").write_text("item,title\n" + "".join(f"{i},Film {i}\n" for i in range(1, 41)))
    (tmp_path / "users.csv").write_text("user,name\n1,Ada\n2,Bo\n")
    args = ["fit", "--data.dataset", str(data), "--data.item_names", str(tmp_path / "items.csv"),
            "--data.user_names", str(tmp_path / "users.csv"), "--data.num_eval_negatives", "20",
            "--model.network", "ncf.models.GMF", "--model.network.factor", "8", "--model.lr", "0.01", "--trainer.max_epochs", str(epochs),
            "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path / "run")]
    for k, v in data_kw.items():
        args += [f"--data.{k}", str(v)]
    cli_main(args)
    return data, next((tmp_path / "run").rglob("*.ckpt"))


def test_names_and_integer_ids_reach_explain_json(tmp_path, capsys):
    data, ckpt = _own_run(tmp_path)
    raw = torch.load(ckpt, weights_only=True)
    assert raw["NCFDataModule"]["user_ids"][:3] == [1, 2, 3]  # ints round-trip through the checkpoint
    assert raw["NCFDataModule"]["holdout"] == "random"
    out = tmp_path / "ex"
    # the data and names files come from the command line (a path stored in a checkpoint is never followed)
    given = ["--data", str(data), "--item-names", str(tmp_path / "items.csv"), "--user-names", str(tmp_path / "users.csv")]
    assert explain_main([str(ckpt), *given, "--user", "1", "--item", "5", "--methods", "deeplift", "--out", str(out),
                         "--no-faithfulness"]) == 0
    printed = capsys.readouterr().out
    assert "user 1 (Ada) x item 5" in printed and '"Film 5"' in printed
    pair = json.loads((out / "explanations.json").read_text())["checkpoints"][0]["pairs"][0]
    assert pair["user_id"] == 1 and pair["item_id"] == 5 and pair["item_name"] == "Film 5" and pair["user_name"] == "Ada"
    assert explain_main([str(ckpt), *given, "--user", "2", "--item", "1004", "--methods", "deeplift", "--quiet",
                         "--no-faithfulness", "--out", str(out)]) == 0
    pair = json.loads((out / "explanations.json").read_text())["checkpoints"][0]["pairs"][0]
    assert pair["item_name"] == "1004"  # no name given: the id stands in
    # names files without the data: the checkpoint's ids are enough to name them
    assert explain_main([str(ckpt), "--item-names", str(tmp_path / "items.csv"), "--user-names",
                         str(tmp_path / "users.csv"), "--user", "1", "--item", "5", "--methods", "deeplift",
                         "--no-faithfulness"]) == 0
    assert "user 1 (Ada) x item 5" in capsys.readouterr().out
    assert explain_main([str(ckpt), "--user", "1", "--item", "5", "--history"]) == 2  # the data it needs, named
    assert f"pass --data FILE, the file it was trained on ({data})" in capsys.readouterr().err


def test_ranks_and_hr10_agree_on_ties():
    scores = torch.tensor([0.5, 0.9, 0.5, 0.5, 0.1, 0.7])
    # item 0 ties with items 2 and 3: both count against it, as in HR@10
    rank, among = candidate_rank(scores[None], torch.tensor([0]), torch.tensor([[False] * 5 + [True]]))
    assert (int(rank), int(among)) == (4, 5)
    cands = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1]])
    assert int(positive_rank(cands)) + 1 == 4
    exclude = torch.tensor([[False, False, False, False, False, True]])
    assert int(rank_among(scores[None], torch.tensor([0]), exclude)) == 3
    hit, _ = hit_ndcg(cands, k=3)
    assert float(hit) == 0.0  # rank 4 is not in the top 3


def test_full_ranking_by_hand():
    #              items: 0    1    2    3    4
    scores = torch.tensor([[0.2, 0.9, 0.4, 0.4, 0.1],
                           [0.3, 0.3, 0.8, 0.1, 0.5]])
    target = torch.tensor([2, 0])
    exclude = torch.tensor([[False, True, False, False, False],   # user 0 trained on item 1
                            [False, False, True, False, False]])  # user 1 trained on item 2
    # user 0: candidates {0, 2, 3, 4}, item 3 ties with the target -> rank 1 (0-based)
    # user 1: candidates {0, 1, 3, 4}, items 1 (tie) and 4 (higher) -> rank 2
    rank = rank_among(scores, target, exclude)
    assert rank.tolist() == [1, 2]
    from ncf.metrics import rank_metrics
    hit, ndcg = rank_metrics(rank, k=2)
    assert hit.tolist() == [1.0, 0.0] and ndcg[0].item() == pytest.approx(1 / np.log2(3))


def test_full_ranking_equals_sampled_when_every_unseen_item_is_a_candidate(tmp_path):
    path = write_tiny(tmp_path / "t.csv", n_users=15, n_items=25, per_user=8)
    # every user has 8 items: all of the others are sampled as negatives
    n_items = load_interactions_file(path).n_items
    dm = NCFDataModule(str(path), batch_size=64, num_eval_negatives=n_items - 8, full_ranking=True)
    pl.seed_everything(0)
    dm.setup("fit")
    module = make_module("gmf", dm.num_users, dm.num_items, factor=4, lr=0.01)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(module, dm)
    m = trainer.callback_metrics
    assert float(m["val_full_hr10"]) == pytest.approx(float(m["val_hr10"]))
    assert float(m["val_full_ndcg10"]) == pytest.approx(float(m["val_ndcg10"]))
    assert float(m["val_full_recall10"]) == float(m["val_full_hr10"])
    res = trainer.test(module, dm, verbose=False)[0]
    assert res["test_full_ndcg10"] == pytest.approx(res["test_ndcg10"])
    # With fewer sampled negatives the sampled figure is easier than the full one.
    dm2 = NCFDataModule(str(path), batch_size=64, num_eval_negatives=5, full_ranking=True)
    res2 = trainer.test(module, dm2, verbose=False)[0]
    assert res2["test_full_hr10"] <= res2["test_hr10"]


def test_predict_writes_unseen_top_n_with_ids_and_names(tmp_path, monkeypatch):
    data, ckpt = _own_run(tmp_path, epochs=1)
    monkeypatch.chdir(tmp_path)  # predict's config.yaml goes to the working directory
    out = tmp_path / "recs.parquet"
    cli_main(["predict", "--data.dataset", str(data), "--data.item_names", str(tmp_path / "items.csv"),
              "--data.user_names", str(tmp_path / "users.csv"), "--data.num_eval_negatives", "20",
              "--model.network", "ncf.models.GMF", "--model.network.factor", "8", "--trainer.enable_progress_bar", "false",
              "--trainer.logger", "false", "--ckpt_path", str(ckpt), "--recommend.output", str(out),
              "--recommend.top_n", "5"])
    recs = pd.read_parquet(out)
    assert len(recs) == 60 * 5 and list(recs.columns) == ["user_id", "user_name", "rank", "item_id", "item_name",
                                                          "score", "logit"]
    assert recs["user_id"].dtype.kind == "i" and recs["item_id"].dtype.kind == "i"
    raw = pd.read_csv(data, sep="\t")
    seen = set(zip(raw["user"], raw["item"]))
    assert not any((u, i) in seen for u, i in zip(recs["user_id"], recs["item_id"]))
    assert recs.loc[recs.user_id == 1, "user_name"].iloc[0] == "Ada"
    assert (recs.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    # the same order explain.py's --top-n gives
    from explain.loading import load
    ld = load(ckpt)
    u1 = ld.user_ids.index(1)
    dm = NCFDataModule(str(data), num_eval_negatives=20)
    dm.setup("fit")
    top = recommend(ld.net, torch.tensor([u1]), 5, interacted_keys(dm.split))[0]
    assert [ld.item_ids[i] for i in top] == recs[recs.user_id == 1]["item_id"].tolist()
    # a subset of users, by id, to CSV
    csv = tmp_path / "two.csv"
    cli_main(["predict", "--data.dataset", str(data), "--data.num_eval_negatives", "20", "--model.network", "ncf.models.GMF",
              "--model.network.factor", "8", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
              "--ckpt_path", str(ckpt), "--recommend.output", str(csv), "--recommend.users", "[3, 1]"])
    two = pd.read_csv(csv)
    assert sorted(set(two["user_id"])) == [1, 3]
    assert "item_name" not in two.columns  # no names given: no column of ids under a name's heading
    # ids without brackets, one given twice: each user's list once
    cli_main(["predict", "--data.dataset", str(data), "--data.num_eval_negatives", "20", "--model.network", "ncf.models.GMF",
              "--model.network.factor", "8", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
              "--ckpt_path", str(ckpt), "--recommend.users", "3,1,3"])
    # by default beside the checkpoint, which lies in no run folder (else in its run's folder): never in a
    # run folder the config names, whose own list it would replace
    written = Path(ckpt).parent.parent / "recommendations.csv"
    assert written.is_file() and not list(Path("runs").rglob("recommendations.csv"))
    again = pd.read_csv(written)
    assert again["user_id"].tolist() == [3] * 10 + [1] * 10 and again.equals(two)
    # a list typed on the command line keeps each id as typed: YAML reads [010] as 8 and [03] as 3
    for typed in ("[03]", "[0x3]"):
        with pytest.raises(SystemExit) as exc:
            cli_main(["predict", "--data.dataset", str(data), "--data.num_eval_negatives", "20", "--model.network",
                      "ncf.models.GMF", "--model.network.factor", "8", "--trainer.enable_progress_bar", "false",
                      "--trainer.logger", "false", "--ckpt_path", str(ckpt), "--recommend.output", str(tmp_path / "o.csv"),
                      "--recommend.users", typed])
        assert exc.value.code == 2 and not (tmp_path / "o.csv").exists()
    listed = tmp_path / "users.yaml"  # and so does a config file's list (YAML would read 03 as 3, 1e0 as 1.0)
    for written in ("[03]", "[1e0]"):
        listed.write_text(f"recommend:\n  users: {written}\n")
        with pytest.raises(SystemExit) as exc:
            cli_main(["predict", "--data.dataset", str(data), "--data.num_eval_negatives", "20", "--model.network",
                      "ncf.models.GMF", "--model.network.factor", "8", "--trainer.enable_progress_bar", "false",
                      "--trainer.logger", "false", "--ckpt_path", str(ckpt), "--recommend.output", str(tmp_path / "o.csv"),
                      "--config", str(listed)])
        assert exc.value.code == 2 and not (tmp_path / "o.csv").exists()
    listed.write_text("recommend:\n  users: [3, '1']\n")
    cli_main(["predict", "--data.dataset", str(data), "--data.num_eval_negatives", "20", "--model.network",
              "ncf.models.GMF", "--model.network.factor", "8", "--trainer.enable_progress_bar", "false",
              "--trainer.logger", "false", "--ckpt_path", str(ckpt), "--recommend.output", str(tmp_path / "o.csv"),
              "--config", str(listed)])
    assert pd.read_csv(tmp_path / "o.csv")["user_id"].drop_duplicates().tolist() == [3, 1]
    from ncf.errors import UserError
    from ncf.predict import read_user_list
    with pytest.raises(UserError, match=r"no such user list file; --recommend.users takes a file of ids or a list of "
                                          r"ids, e.g. --recommend.users \"\[1, 2\]\""):
        read_user_list("users.txt", [1, 2, 3])
    # without a checkpoint: refused, not an untrained model's recommendations
    with pytest.raises(SystemExit) as exc:
        cli_main(["predict", "--data.dataset", str(data), "--data.num_eval_negatives", "20", "--model.network", "ncf.models.GMF",
                  "--trainer.logger", "false", "--recommend.output", str(tmp_path / "x.csv")])
    assert exc.value.code == 2 and not (tmp_path / "x.csv").exists()


def _cli_error(capsys, args):
    with pytest.raises(SystemExit) as exc:
        cli_main(args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert exc.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_data_errors_are_one_line_exit_2(tmp_path, capsys):
    base = ["fit", "--model.network", "ncf.models.GMF", "--trainer.max_epochs", "1", "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path / "r")]
    csv = tmp_path / "a.csv"
    csv.write_text("customer,sku\n1,2\n")
    assert "--data.user_col" in _cli_error(capsys, base + ["--data.dataset", str(csv)])
    csv.write_text("user,item\n1,2\n1,3\n1,4\n2,2\n")
    assert "--data.drop_short_users true" in _cli_error(capsys, base + ["--data.dataset", str(csv),
                                                                         "--data.num_eval_negatives", "1"])
    csv.write_text("user,item,timestamp\n1,2,5\n1,3,soon\n")
    assert "line 3" in _cli_error(capsys, base + ["--data.dataset", str(csv)])
    (tmp_path / "p.train.rating").write_text("0\t0\t5\t1\n")
    (tmp_path / "p.test.rating").write_text("0\t1\t5\t2\n")
    line = _cli_error(capsys, base + ["--data.dataset", str(tmp_path / "p")])
    assert "p.test.negative not found" in line
    assert "nothing not found" in _cli_error(capsys, base + ["--data.dataset", str(tmp_path / "nothing")])
    assert "--data.holdout" in _cli_error(capsys, base + ["--data.holdout", "newest"])
    assert "--data.batch_size" in _cli_error(capsys, base + ["--data.batch_size", "0"])
    assert "--model.network.factor" in _cli_error(capsys, base + ["--data.dataset", str(write_sorted_counts(tmp_path / "c.tsv")),
                                                          "--model.network.factor", "0"])
    names = tmp_path / "n.csv"
    names.write_text("item,title\n1,A\n1,B\n")
    assert "named twice" in _cli_error(capsys, base + ["--data.dataset", str(tmp_path / "c.tsv"),
                                                       "--data.item_names", str(names)])


def test_error_as_a_process_and_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "a.csv"
    bad.write_text("customer,sku\n1,2\n")
    cmd = [sys.executable, str(REPO / "train.py"), "fit", "--data.dataset", str(bad), "--trainer.logger", "false"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert [ln for ln in run.stderr.splitlines() if ln.startswith("error:")] == [
        f"error: {bad}: no column 'user' in header ['customer', 'sku']; name the columns with --data.user_col / "
        f"--data.item_col (and --data.sep if the separator is not ',')."]
    run = subprocess.run(cmd + ["--debug"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode != 0 and "Traceback" in run.stderr and "DataError" in run.stderr


def test_user_ids_that_a_list_reads_as_numbers_are_not_taken_for_other_users():
    """``[007]`` is the number 7 to a YAML list (a config file's; the command line's text is read as typed):
    with ids '007' and '7' in the data it is refused, naming how to quote; a quoted id stays as written."""
    from jsonargparse import ArgumentParser

    from ncf.errors import UserError
    from ncf.predict import RecommendationWriter, read_user_list

    parser = ArgumentParser()
    parser.add_class_arguments(RecommendationWriter, "recommend")
    given = lambda text: parser.parse_args(["--recommend.users", text]).recommend.users  # noqa: E731
    assert given('["007"]') == ["007"] and given("[7]") == [7] and given("007,7") == "007,7"
    known = ["7", "007", "u1"]
    assert read_user_list(given('["007"]'), known).tolist() == [1]
    assert read_user_list(given("007,7"), known).tolist() == [1, 0]
    with pytest.raises(UserError, match=r"7 was read as a number, and the data has ids that are that number written "
                                        r"otherwise \('007'\); quote ids in the list"):
        read_user_list(given("[007]"), known)
