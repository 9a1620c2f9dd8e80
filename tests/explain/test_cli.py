import json
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from explain.cli import main
from ncf import NCFDataModule, NCFModule, load_network
from tests.conftest import write_tiny
from tests.helpers import module as make_module


def _train(root: Path, dataset: str, epochs: int = 2, **dm_kw) -> Path:
    pl.seed_everything(0)
    dm = NCFDataModule(dataset, **dm_kw)
    module = make_module("neumf", dm.num_users, dm.num_items, factor=4, num_layers=2, lr=0.01)
    ckpt = ModelCheckpoint(dirpath=str(root / "ckpt"), filename="epoch{epoch}", save_top_k=-1, save_last=False,
                           auto_insert_metric_name=False)
    pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
               enable_model_summary=False, callbacks=[ckpt]).fit(module, dm)
    return root / "ckpt"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = write_tiny(root / "tiny.csv", n_users=20, n_items=40, per_user=10)
    folder = _train(root, str(data), batch_size=64, num_eval_negatives=20)
    return folder, data


def _ckpt(tiny_run):
    return str(sorted(tiny_run[0].glob("*.ckpt"))[-1])


def test_pair_end_to_end(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([_ckpt(tiny_run), "--user", "u1", "--item", "m3", "m5", "--out", str(out), "--n-samples", "300",
                 "--data", str(tiny_run[1])]) == 0
    text = capsys.readouterr().out
    assert "user u1 x item m3" in text and "user u1 x item m5" in text
    assert "deeplift" in text and "lime" in text and "rank" in text
    doc = json.loads((out / "explanations.json").read_text())
    pairs = doc["checkpoints"][0]["pairs"]
    assert [(p["user_id"], p["item_id"]) for p in pairs] == [("u1", "m3"), ("u1", "m5")]
    dl = pairs[0]["methods"]["deeplift"]
    assert dl["completeness_gap"] < 1e-4 and set(dl["shares"]) == {"user", "item", "gmf", "mlp"}
    assert doc["settings"]["method_settings"]["lime"]["n_samples"] == 300 and "torch" in doc["versions"]
    csv = pd.read_csv(out / "attributions.csv")
    width = 4 + 4 + 8 + 8
    assert len(csv) == 2 * 2 * width  # methods x pairs x dimensions
    assert set(csv["user_id"]) == {"u1"} and set(csv["item_id"]) == {"m3", "m5"}
    assert set(csv["embedding"]) == {"gmf_user", "gmf_item", "mlp_user", "mlp_item"}
    for png in ("heatmap_lime_mlp_item.png", "heatmap_deeplift_gmf_user.png", "group_shares.png"):
        assert (out / png).stat().st_size > 1000
    assert set(doc["files"]) == {p.name for p in out.iterdir()}
    # the same folder again with fewer methods: the earlier explanation's LIME heatmaps do not stay beside it
    (out / "notes.txt").write_text("mine")
    assert main([_ckpt(tiny_run), "--user", "u2", "--item", "m3", "--out", str(out), "--methods", "deeplift",
                 "--no-faithfulness", "--quiet"]) == 0
    doc = json.loads((out / "explanations.json").read_text())
    assert not list(out.glob("heatmap_lime_*")) and set(doc["files"]) | {"notes.txt"} == {p.name for p in out.iterdir()}
    # another tool's explanations.json is not trusted to name what to delete; a folder it lists is not touched
    other = tmp_path / "other"
    other.mkdir()
    (other / "explanations.json").write_text(json.dumps({"files": ["data.csv"], "note": "another tool"}))
    (other / "data.csv").write_text("mine")
    assert main([_ckpt(tiny_run), "--user", "u2", "--item", "m3", "--out", str(other), "--methods", "deeplift",
                 "--no-faithfulness", "--quiet"]) == 0
    assert (other / "data.csv").read_text() == "mine"
    (out / "sub").mkdir()
    doc["files"].append("sub")
    (out / "explanations.json").write_text(json.dumps(doc))
    assert main([_ckpt(tiny_run), "--user", "u2", "--item", "m3", "--out", str(out), "--methods", "deeplift",
                 "--no-faithfulness", "--quiet"]) == 0
    assert (out / "sub").is_dir()


def test_top_n_is_the_models_ranking(tiny_run, tmp_path, capsys):
    folder, data = tiny_run
    out = tmp_path / "top"
    assert main([_ckpt(tiny_run), "--data", str(data), "--user", "u2", "--top-n", "4", "--out", str(out), "--quiet",
                 "--no-faithfulness",
                 "--methods", "deeplift"]) == 0
    got = [p["item_id"] for p in json.loads((out / "explanations.json").read_text())["checkpoints"][0]["pairs"]]
    net, raw = load_network(_ckpt(tiny_run))
    ids = raw["NCFDataModule"]
    dm = NCFDataModule(str(data), batch_size=64, num_eval_negatives=20)
    dm.setup("fit")
    u = ids["user_ids"].index("u2")
    sp = dm.split
    # every item the user interacted with is out: training rows, and the validation and test items
    seen = set(sp.train_items[sp.train_users == u].tolist()) | {int(sp.test_candidates[sp.test_users == u, 0]),
                                                                 int(sp.val_candidates[sp.val_users == u, 0])}
    with torch.no_grad():
        scores = net(torch.full((net.n_items,), u), torch.arange(net.n_items))
    ranked = [i for i in scores.argsort(descending=True).tolist() if i not in seen][:4]
    assert got == [ids["item_ids"][i] for i in ranked]
    # without the data the user's own items cannot be left out: refused, not listed among the recommendations
    assert main([_ckpt(tiny_run), "--user", "u2", "--top-n", "4", "--quiet", "--methods", "deeplift"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --top-n recommends among the items the user has not interacted with, and the "
                              "training data is not loaded: pass --data FILE"), err
    assert main([_ckpt(tiny_run), "--data", str(data), "--user", "u2", "--top-n", "0", "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: --top-n must be at least 1, not 0."
    # a folder of checkpoints: the last one's top N, said
    assert main([str(folder), "--data", str(data), "--user", "u2", "--top-n", "2", "--methods", "deeplift",
                 "--no-faithfulness"]) == 0
    assert "note: the top 2 are those of" in capsys.readouterr().err


def test_tied_scores_show_the_span_of_ranks_they_share():
    """Items that score exactly alike: each one's rank counts the others against it (as HR@10 does), and the
    pair line shows the span it shares with them, which holds the place ``predict`` lists it at."""
    from explain.explaining import pair_ranks
    from explain.report import _rank
    from ncf.candidates import recommend
    from tests.ncf.test_contract_check import Dot  # a plain dot product: the scores are the ones set here

    net = Dot(1, 6, factor=2)
    with torch.no_grad():
        net.item_embedding.weight.copy_(torch.tensor([[1.0, 0], [2, 0], [2, 0], [2, 0], [0.5, 0], [3, 0]]))
        net.user_embedding.weight.copy_(torch.tensor([[1.0, 0]]))
    listed = recommend(net, torch.tensor([0]), 6)[0]
    assert listed == [5, 1, 2, 3, 0, 4]
    ranks = pair_ranks(net, [0] * 6, listed, None)
    assert [(r, t) for r, _, t in ranks] == [(1, 0), (4, 2), (4, 2), (4, 2), (5, 0), (6, 0)]
    spans = [_rank(pd.Series({"rank": r, "tied_with": t})) for r, _, t in ranks]
    assert spans[:3] == ["1", "2-4 (tied with 2 at this score)", "2-4 (tied with 2 at this score)"]


def test_a_rank_says_what_it_is_among(tiny_run, tmp_path, capsys):
    """Without the training data the user's own items cannot be left out of a pair's rank: the printed line,
    the JSON and the CSV say it is among all items, and the JSON keeps the note."""
    folder, data = tiny_run
    for given, among in ((["--data", str(data)], "unseen items"), ([], "all items")):
        out = tmp_path / among.replace(" ", "_")
        assert main([_ckpt(tiny_run), *given, "--user", "u2", "--item", "m3", "--out", str(out), "--methods",
                     "deeplift", "--no-faithfulness"]) == 0
        printed = capsys.readouterr().out
        doc = json.loads((out / "explanations.json").read_text())["checkpoints"][0]
        assert doc["pairs"][0]["ranked_among"] == among
        assert set(pd.read_csv(out / "pairs.csv")["ranked_among"]) == {among}
        assert pd.read_csv(out / "pairs.csv")["checkpoint_path"].tolist() == [_ckpt(tiny_run)]
        if among == "all items":
            assert "items (all: the data was not given)" in printed and "candidate items" not in printed
            assert doc["warnings"] and "ranking among all items" in doc["warnings"][0]
            assert doc["pairs"][0]["user_has_item"] is None
        else:
            assert "candidate items" in printed and doc["warnings"] == []
            has = any(line == f"u2,m3" or line.startswith("u2,m3,") for line in data.read_text().splitlines())
            assert doc["pairs"][0]["user_has_item"] is has
    # an item the user has is ranked among their candidates plus itself, and the line says so
    owned = next(line.split(",")[1] for line in data.read_text().splitlines() if line.startswith("u2,"))
    assert main([_ckpt(tiny_run), "--data", str(data), "--user", "u2", "--item", owned, "--out", str(tmp_path / "own"),
                 "--methods", "deeplift", "--no-faithfulness"]) == 0
    assert "items: the user's candidates and this one, which the user already has" in capsys.readouterr().out
    assert json.loads((tmp_path / "own" / "explanations.json").read_text())["checkpoints"][0]["pairs"][0][
        "user_has_item"] is True


def test_same_seed_same_outputs(tiny_run, tmp_path):
    for name in ("a", "b"):
        assert main([_ckpt(tiny_run), "--user", "u1", "--item", "m3", "--out", str(tmp_path / name), "--quiet",
                     "--methods", "lime", "kernel_shap", "deeplift", "--n-samples", "200", "--seed", "5"]) == 0
    for f in ("explanations.json", "attributions.csv", "pairs.csv"):
        assert (tmp_path / "a" / f).read_text() == (tmp_path / "b" / f).read_text()


def test_several_checkpoints_side_by_side(tiny_run, tmp_path):
    folder, _ = tiny_run
    out = tmp_path / "evo"
    assert main([str(folder), "--pairs", str(_pairs_file(tmp_path)), "--out", str(out), "--quiet",
                 "--methods", "deeplift", "shapley"]) == 0
    doc = json.loads((out / "explanations.json").read_text())
    assert [c["epoch"] for c in doc["checkpoints"]] == [0, 1]
    assert (out / "evolution.png").exists()
    pairs = pd.read_csv(out / "pairs.csv")
    assert sorted(pairs["epoch"].unique()) == [0, 1] and len(pairs) == 2 * 2 * 2


def test_checkpoints_of_several_runs_keep_their_order_and_are_told_apart(tiny_run, tmp_path):
    """Two runs' checkpoints are compared as given (not sorted into one run's epochs), and the evolution
    figure places them side by side, each named by run, file and epoch."""
    from explain.report import _evolution_figure

    folder, data = tiny_run
    other = _train(tmp_path, str(data), epochs=1, batch_size=64, num_eval_negatives=20)
    given = [str(folder / "epoch1.ckpt"), str(other / "epoch0.ckpt")]
    out = tmp_path / "two"
    assert main([*given, "--pairs", str(_pairs_file(tmp_path)), "--out", str(out), "--quiet", "--methods",
                 "deeplift"]) == 0
    doc = json.loads((out / "explanations.json").read_text())
    assert [c["checkpoint"] for c in doc["checkpoints"]] == given and doc["checkpoints"][0]["run_id"] != \
        doc["checkpoints"][1]["run_id"]
    pairs = pd.read_csv(out / "pairs.csv")
    fig = _evolution_figure(pairs, [["user", "item"], ["gmf", "mlp"]])
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == [f"{doc['checkpoints'][0]['run_id'][:6]}/epoch1.ckpt\nepoch 1",
                     f"{doc['checkpoints'][1]['run_id'][:6]}/epoch0.ckpt\nepoch 0"]
    drawn = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) == 2]
    assert drawn and all(ln.get_linestyle() == "None" and ln.get_marker() not in ("None", "") for ln in drawn)


def test_a_folder_explains_each_set_of_weights_once(tiny_run, tmp_path, capsys):
    """best.ckpt and last.ckpt of the same epoch hold the same weights: a folder explains them once."""
    import shutil

    folder, data = tiny_run
    both = tmp_path / "ckpts"
    both.mkdir()
    shutil.copy(folder / "epoch1.ckpt", both / "best.ckpt")
    shutil.copy(folder / "epoch1.ckpt", both / "last.ckpt")
    shutil.copy(folder / "epoch0.ckpt", both / "epoch0.ckpt")
    assert main([str(both), "--user", "u1", "--item", "m3", "--out", str(tmp_path / "o"), "--methods", "deeplift",
                 "--no-faithfulness"]) == 0
    assert "note: last.ckpt holds the weights of best.ckpt" in capsys.readouterr().err
    doc = json.loads((tmp_path / "o" / "explanations.json").read_text())
    assert [Path(c["checkpoint"]).name for c in doc["checkpoints"]] == ["epoch0.ckpt", "best.ckpt"]


def test_a_pair_given_twice_is_explained_once(tiny_run, tmp_path, capsys):
    assert main([_ckpt(tiny_run), "--user", "u1", "--item", "m3", "m5", "m3", "--out", str(tmp_path / "o"),
                 "--methods", "deeplift", "--no-faithfulness"]) == 0
    assert "note: 1 pair(s) given more than once (u1 x m3); each is explained once." in capsys.readouterr().err
    assert pd.read_csv(tmp_path / "o" / "pairs.csv")["item_id"].tolist() == ["m3", "m5"]


def _pairs_file(tmp_path):
    p = tmp_path / "pairs.csv"
    p.write_text("user,item\nu1,m3\nu4,m7\n")
    return p


def test_notebook_preset_shows_stability(tiny_run, capsys):
    assert main([_ckpt(tiny_run), "--user", "u1", "--item", "m3", "--methods", "lime", "--lime-preset", "notebook",
                 "--no-faithfulness"]) == 0
    assert "'notebook' preset: median seed-to-seed Spearman" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--user", "nobody", "--item", "m3"], "Unknown user id 'nobody'"),
    (["--user", "u1", "--item", "m999"], "Unknown item id 'm999'"),
    (["--user", "u1"], "give --item"),
    ([], "Say what to explain"),
])
def test_bad_ids_exit_2(tiny_run, capsys, args, message):
    assert main([_ckpt(tiny_run), *args]) == 2
    assert message in capsys.readouterr().err


def test_bad_checkpoints_exit_2(tiny_run, tmp_path, capsys):
    good = Path(_ckpt(tiny_run))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x80\x04not a zip")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {"lr": 0.1}}, foreign)
    evil = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": {"model": "gmf"}, "state_dict": {}, "x": pl.Trainer}, evil)  # needs unpickling
    text = tmp_path / "metrics.ckpt"
    text.write_text("epoch,loss\n1,0.5\n")  # a text file given by mistake: torch says "pop from empty list"
    word = tmp_path / "word.ckpt"
    word.write_text("garbage\n")  # torch's own message would advise weights_only=False: never passed on
    for path, message in ((truncated, "not a readable checkpoint"), (garbage, "not a readable checkpoint"),
                          (word, "torch's weights-only reader refused it"),
                          (text, "not a readable checkpoint (its bytes are not a saved PyTorch object:"),
                          (foreign, "not a checkpoint of an ncf-explain model"), (evil, "holds a pickled object (pytorch_lightning"),
                          (tmp_path / "missing.ckpt", "no such checkpoint")):
        assert main([str(path), "--user", "u1", "--item", "m3"]) == 2
        err = capsys.readouterr().err
        assert message in err and "weights_only" not in err


def test_movielens_titles(ml_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NCF_DATA_DIR", str(ml_root))
    folder = _train(tmp_path, "ml-100k", epochs=1, batch_size=4096)
    assert main([str(next(folder.glob("*.ckpt"))), "--user", "196", "--item", "242", "--methods", "deeplift",
                 "--no-faithfulness"]) == 0
    out = capsys.readouterr().out
    assert '"Kolya (1996)"' in out and "which the user already has" in out  # 196 rated Kolya (u.data's first row)


def _without_validation_item(src: str, dst: Path) -> str:
    """The checkpoint as a version without ``data.validation_item`` would have written it."""
    ckpt = torch.load(src, weights_only=True)
    del ckpt["datamodule_hyper_parameters"]["validation_item"]
    torch.save(ckpt, dst)
    return str(dst)


def test_checkpoint_without_its_data_settings_is_refused_with_data(tiny_run, tmp_path, capsys):
    # Its split cannot be rebuilt: explaining against --data would rank among another split's candidates.
    ckpt = torch.load(_ckpt(tiny_run), weights_only=True)
    del ckpt["datamodule_hyper_parameters"]
    torch.save(ckpt, tmp_path / "bare.ckpt")
    assert main([str(tmp_path / "bare.ckpt"), "--data", str(tiny_run[1]), "--user", "u1", "--item", "m3", "--quiet",
                 "--methods", "deeplift", "--no-faithfulness", "--out", str(tmp_path / "o")]) == 2
    assert "carries no data settings" in capsys.readouterr().err


def test_split_rebuilt_for_explaining_is_the_one_trained_on(tiny_run, tmp_path, capsys):
    folder, data = tiny_run
    # A checkpoint naming no validation item is taken as one from before the setting ("previous"): this
    # run trained on "random", so that split differs. Ranks leave out every item the user has, whatever the
    # split: explained with a warning (as train.py predict does); history influence reads the training rows
    # themselves, and is refused.
    old = _without_validation_item(_ckpt(tiny_run), tmp_path / "old.ckpt")
    assert main([old, "--data", str(data), "--user", "u1", "--top-n", "2", "--quiet", "--methods", "deeplift",
                 "--no-faithfulness", "--out", str(tmp_path / "o1")]) == 0
    assert "warning: " in capsys.readouterr().err
    assert main([old, "--data", str(data), "--user", "u1", "--top-n", "2", "--quiet", "--methods", "deeplift",
                 "--no-faithfulness", "--history", "--out", str(tmp_path / "o1")]) == 2
    assert "other training rows" in capsys.readouterr().err
    # One that did train on "previous" is explained as before.
    prev = _train(tmp_path / "prev", str(data), epochs=1, batch_size=64, num_eval_negatives=20,
                  validation_item="previous")
    old = _without_validation_item(str(sorted(prev.glob("*.ckpt"))[-1]), tmp_path / "prev.ckpt")
    assert main([old, "--data", str(data), "--user", "u1", "--top-n", "2", "--quiet", "--methods", "deeplift",
                 "--no-faithfulness", "--out", str(tmp_path / "o2")]) == 0


def test_a_heatmap_of_many_pairs_shows_the_first_and_says_so(tiny_run, tmp_path, monkeypatch):
    """A heatmap has a row per pair: a top-N of thousands made a picture no viewer opens. It shows the first
    pairs and its title says where the rest are."""
    import explain.plots
    import explain.report

    drawn = []
    real = explain.plots.heatmap_figure
    monkeypatch.setattr(explain.report, "HEATMAP_PAIRS", 3)
    monkeypatch.setattr(explain.plots, "heatmap_figure", lambda v, rows, title: drawn.append((v.shape, title)) or
                        real(v, rows, title))
    folder, data = tiny_run
    assert main([_ckpt(tiny_run), "--data", str(data), "--user", "u2", "--top-n", "5", "--out", str(tmp_path / "o"),
                 "--methods", "deeplift", "--no-faithfulness", "--quiet"]) == 0
    assert drawn and all(shape[0] == 3 and "the first 3 of 5 pairs, all in attributions.csv" in title
                         for shape, title in drawn)
    assert len(pd.read_csv(tmp_path / "o" / "pairs.csv")) == 5


def test_a_run_folder_given_for_checkpoints_names_where_they_are(tmp_path):
    from explain.loading import ExplainError, find_checkpoints

    run = tmp_path / "runs" / "mine" / "gmf"
    (run / "checkpoints" / "epochs").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"")
    (run / "checkpoints" / "epochs" / "epoch=0.ckpt").write_bytes(b"")
    with pytest.raises(ExplainError, match=rf"{run}: no .ckpt files in this folder; a run folder keeps them in "
                                           rf"{run / 'checkpoints'} \(or {run / 'checkpoints' / 'epochs'}: one per epoch\)"):
        find_checkpoints([str(run)])
    with pytest.raises(ExplainError, match=r"no .ckpt files in this folder\.$"):
        find_checkpoints([str(tmp_path)])


def test_data_with_ids_the_checkpoint_lacks_names_them(tiny_run, tmp_path, capsys):
    folder, data = tiny_run
    more = tmp_path / "more.csv"
    more.write_text(Path(data).read_text() + "".join(f"newcomer,m{k},5,{99990 + k}\n" for k in range(3)))
    assert main([_ckpt(tiny_run), "--data", str(more), "--user", "u1", "--item", "m3", "--quiet", "--methods",
                 "deeplift", "--no-faithfulness", "--out", str(tmp_path / "o")]) == 2
    assert "(user id 'newcomer' not in the checkpoint)" in capsys.readouterr().err


def test_every_methods_row_lines_up_under_the_header(tiny_run, tmp_path, capsys):
    """Each share sits under its group's name, for every method of a pair (NeuMF: user, item, gmf, mlp)."""
    assert main([_ckpt(tiny_run), "--user", "u1", "--item", "m3", "--methods", "lime", "deeplift", "ig",
                 "--n-samples", "300", "--out", str(tmp_path / "o"), "--data", str(tiny_run[1])]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(ln for ln in lines if ln.lstrip().startswith("method "))
    ends = [head.index(g) + len(g) for g in (" user", " item", " gmf", " mlp")]
    rows = [ln for ln in lines if ln.lstrip().split(" ")[0] in ("lime", "deeplift", "ig")]
    assert len(rows) == 3
    for row in rows:
        assert all(row[e - 1] == "%" for e in ends), (head, row)


def test_options_are_checked_and_the_outputs_never_replace_an_input(tiny_run, tmp_path, capsys):
    ckpt = _ckpt(tiny_run)
    pair = ["--user", "u1", "--item", "m3", "--methods", "deeplift", "--no-faithfulness"]
    for args, said in ((["--top-dims", "-3"], "--top-dims must be 0 or more"),
                       (["--history-k", "3"], "--history-k applies to --history: add --history."),
                       (["--cf-epochs", "2"], "--cf-epochs applies to --counterfactual")):
        assert main([ckpt, *pair, *args]) == 2 and said in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main([ckpt, *pair, "--out", str(tmp_path / "afile" / "sub")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'afile'} is a file" in err[0]
    out = tmp_path / "out"
    out.mkdir()
    (out / "pairs.csv").write_text("user,item\nu1,m3\n")  # the input where the output goes
    assert main([ckpt, "--pairs", str(out / "pairs.csv"), "--out", str(out), "--methods", "deeplift"]) == 2
    assert "would be replaced" in capsys.readouterr().err and (out / "pairs.csv").read_text() == "user,item\nu1,m3\n"
    # explain.py's own pairs.csv (a row per method and pair) and predict's columns are pairs files too
    assert main([ckpt, "--user", "u1", "--item", "m3", "m5", "--methods", "deeplift", "lime", "--n-samples", "1",
                 "--top-dims", "0", "--out", str(tmp_path / "first"), "--data", str(tiny_run[1])]) == 0
    printed = capsys.readouterr().out
    written = pd.read_csv(tmp_path / "first" / "pairs.csv")
    drawn = written.loc[written["method"] == "lime", "samples"]
    assert (drawn > 1).all() and f"({int(drawn.iloc[0])} samples)" in printed  # a whole design block, said
    assert "(--top-dims 0)" in printed and "(group-level method)" not in printed
    assert main([ckpt, "--pairs", str(tmp_path / "first" / "pairs.csv"), "--methods", "deeplift", "--out",
                 str(tmp_path / "second")]) == 0
    assert pd.read_csv(tmp_path / "second" / "pairs.csv")["item_id"].tolist() == ["m3", "m5"]


def test_an_explanation_stopped_midway_leaves_the_earlier_one_whole(tiny_run, tmp_path, monkeypatch):
    from explain import plots

    out = tmp_path / "out"
    args = [_ckpt(tiny_run), "--user", "u1", "--item", "m3", "--no-faithfulness", "--out", str(out)]
    assert main([*args, "--methods", "ig"]) == 0
    before = {f.name: f.read_bytes() for f in out.iterdir()}

    def stopped(*a, **k):
        raise KeyboardInterrupt  # as a kill would, after the tables of the new run are written

    monkeypatch.setattr(plots, "heatmap_figure", stopped)
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--methods", "deeplift"])
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before  # the ig explanation, whole
    monkeypatch.undo()
    (out / ".explain-999999999-abc").mkdir()  # the hidden folder of a run whose process is gone
    assert main([*args, "--methods", "deeplift"]) == 0
    assert not list(out.glob(".explain-*")) and "deeplift" in (out / "pairs.csv").read_text()
