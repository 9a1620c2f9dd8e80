"""Names files with other separators (sniffed or given), and the k-core filter: what it drops, that it is
part of the split's identity, and that explain.py rebuilds the same split."""
import json
import logging

import numpy as np
import pytest
import torch

from explain.cli import main as explain_main
from ncf import NCFDataModule
from ncf.cli import main as cli_main
from ncf.datasets import DataError, Interactions
from ncf.names import read_names, sniff_separator
from ncf.run import defining
from ncf.splits import k_core
from tests.conftest import write_tiny


def test_names_files_with_other_separators(tmp_path, ml_root, caplog):
    dat = tmp_path / "movies.dat"  # ML-1M's movies.dat: '::', no header, '|' and ',' inside fields
    dat.write_text("1::Toy Story (1995)::Animation|Children's|Comedy\n2::American President, The (1995)::Drama\n")
    assert sniff_separator(dat) == "::"
    assert read_names(dat, [1, 2, 3]) == ["Toy Story (1995)", "American President, The (1995)", "3"]
    artists = tmp_path / "artists.dat"  # a listening dataset's names: tab-separated with a header, quotes in names
    artists.write_text('id\tname\turl\n1\tMALICE MIZER\thttp://a\n2\t"Weird Al" Yankovic\thttp://b, c\n')
    assert read_names(artists, [2, 1]) == ['"Weird Al" Yankovic', "MALICE MIZER"]
    assert read_names(artists, [1], id_col="id", name_col="url", sep="\t") == ["http://a"]
    # ML-100k's own u.item: '|', no header, latin-1
    titles = read_names(ml_root / "ml-100k" / "u.item", [1, 1682], encoding="latin-1")
    assert titles == ["Toy Story (1995)", "Scream of Stone (Schrei aus Stein) (1991)"]
    quoted = tmp_path / "n.csv"
    quoted.write_text('item,title\n1,"Heat, The"\n2,Up\n')
    assert read_names(quoted, [1, 2]) == ["Heat, The", "Up"]
    # ids the file does not name are said once, with the file's ids the data lacks as the hint
    padded = tmp_path / "padded.csv"
    padded.write_text("item,title\n1,Heat\n0002,Up\n0003,Ran\n")
    logging.getLogger("ncf").addHandler(caplog.handler)
    try:
        assert read_names(padded, [1, 2, 3]) == ["Heat", "2", "3"]
        first = len(caplog.records)
        read_names(padded, [1, 2, 3])
        assert len(caplog.records) == first  # once per file
    finally:
        logging.getLogger("ncf").removeHandler(caplog.handler)
    said = {r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{padded}:")}
    assert said == {f"{padded}: 2 of the data's 3 ids have no name there and are shown by their id ('2', '3'); 2 of "
                    f"its ids are not in the data ('0002', '0003'; ids are matched as written)."}
    # a names file of other data (no id in common) and a file of ids alone are refused, saying why
    (tmp_path / "other.csv").write_text("item,title\nfilm_1,Heat\nfilm_2,Up\n")
    with pytest.raises(DataError, match=r"names none of the data's 2 ids \(its ids: 'film_1', 'film_2'; the data's: "
                                        r"'1', '2'\)"):
        read_names(tmp_path / "other.csv", [1, 2])
    (tmp_path / "ids.csv").write_text("item\n1\n2\n")
    with pytest.raises(DataError, match="has one column \\(item\\); a names file needs two"):
        read_names(tmp_path / "ids.csv", [1, 2])


def test_k_core_iterates_until_stable():
    # user 2's only other item (3) is rare; dropping item 3 leaves user 2 with one row, then item 0 with 2
    users = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    items = np.array([0, 1, 2, 0, 1, 2, 0, 3])
    inter = Interactions(users, items, np.arange(8), ["a", "b", "c"], [10, 11, 12, 13])
    kept = k_core(inter, 2, 2)
    assert kept.user_ids == ["a", "b"] and kept.item_ids == [10, 11, 12] and len(kept) == 6
    assert kept.users.max() == 1 and kept.items.max() == 2  # indices stay contiguous
    once = k_core(inter, 0, 2)
    assert once.item_ids == [10, 11, 12] and once.user_ids == ["a", "b", "c"]  # items only: user c keeps item 10


def _long_tail(path, n_users=60, seed=0):
    """No timestamps; each user: 10 of 200 shared items and 2 items nobody else has."""
    rng = np.random.default_rng(seed)
    rows = ["user,item"]
    for u in range(n_users):
        rows += [f"{u},{i}" for i in rng.choice(200, 10, replace=False)] + [f"{u},{1000 + 2 * u}", f"{u},{1001 + 2 * u}"]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_long_tail_warning_offers_k_core_and_the_filter_is_logged(tmp_path, caplog):
    data = _long_tail(tmp_path / "tail.csv")
    with caplog.at_level(logging.INFO, logger="ncf"):
        NCFDataModule(str(data), num_eval_negatives=20).setup("fit")
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "--data.holdout random" not in warning and "--data.min_item_interactions 5" in warning
    assert "of the held-out items occur once in the whole file" in warning
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ncf"):
        dm = NCFDataModule(str(data), num_eval_negatives=20, min_item_interactions=2)
        dm.setup("fit")
    messages = [r.getMessage() for r in caplog.records]
    counts = np.unique([ln.split(",")[1] for ln in data.read_text().split()[1:]], return_counts=True)[1]
    once = int((counts == 1).sum())  # the 120 own items, and shared items drawn by one user only
    assert messages[0] == (f"k-core filter (items >= 2 interactions): dropped 0 users and {once} items "
                           f"({once} interactions); 60 users and {len(counts) - once} items remain.")
    assert dm.num_items == len(set(dm.interactions.item_ids)) < 200 and not any(
        r.levelno == logging.WARNING for r in caplog.records)
    with pytest.raises(DataError, match=r"k-core filter \(users >= 1000 interactions\) leaves no interactions"):
        NCFDataModule(str(data), num_eval_negatives=20, min_user_interactions=1000).setup("fit")
    with pytest.raises(DataError, match="at least 0"):
        NCFDataModule(str(data), min_item_interactions=-1)
    # off by default: not part of a run's identity, so earlier runs keep their fingerprints
    off = NCFDataModule(str(data))
    assert "min_item_interactions" not in defining({}, dict(off.hparams), None, None)["data"]
    assert defining({}, dict(dm.hparams), None, None)["data"]["min_item_interactions"] == 2


def test_k_core_and_names_separator_reach_the_checkpoint_and_explain(tmp_path, capsys):
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    names = tmp_path / "items.dat"
    names.write_text("".join(f"m{i}::Film {i}::x|y\n" for i in range(40)))
    args = ["fit", "--data.dataset", str(data), "--data.item_names", str(names), "--data.min_item_interactions", "5",
            "--data.num_eval_negatives", "5", "--model.network", "ncf.models.GMF", "--model.network.factor", "4", "--trainer.max_epochs", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path / "r")]
    cli_main(args)
    ckpt = next((tmp_path / "r").rglob("*.ckpt"))
    raw = torch.load(ckpt, weights_only=True)
    assert raw["ncf_run"]["defines"]["data"]["min_item_interactions"] == 5
    assert len(raw["NCFDataModule"]["item_ids"]) < 40  # the filtered mapping
    item = raw["NCFDataModule"]["item_ids"][0]
    out = tmp_path / "ex"
    assert explain_main([str(ckpt), "--data", str(data), "--item-names", str(names), "--names-sep", "::", "--user", "u1",
                         "--item", item, "--methods", "deeplift", "--no-faithfulness", "--quiet", "--out", str(out)]) == 0
    pair = json.loads((out / "explanations.json").read_text())["checkpoints"][0]["pairs"][0]
    assert pair["item_name"] == f"Film {item[1:]}"
    # an item of the file that the filter dropped: the error says which setting left it out
    dropped = sorted({ln.split(",")[1] for ln in data.read_text().split()[1:]} - set(raw["NCFDataModule"]["item_ids"]))[0]
    assert explain_main([str(ckpt), "--data", str(data), "--user", "u1", "--item", dropped, "--quiet",
                         "--methods", "deeplift"]) == 2
    err = capsys.readouterr().err
    assert f"Unknown item id {dropped!r}" in err and "after --data.min_item_interactions 5 dropped" in err
    # another filter is another split: explain refuses to rank against it
    raw["datamodule_hyper_parameters"]["min_item_interactions"] = 6
    torch.save(raw, tmp_path / "other.ckpt")
    assert explain_main([str(tmp_path / "other.ckpt"), "--data", str(data), "--user", "u1", "--item", item,
                         "--quiet", "--methods", "deeplift"]) == 2
    assert "error:" in capsys.readouterr().err


def test_predict_for_a_user_the_filter_dropped_names_the_filter(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    data.write_text(data.read_text() + "short,m1,5,1000\nshort,m2,5,1010\nshort,m3,5,1020\n")  # 3 interactions
    common = ["--data.dataset", str(data), "--data.min_user_interactions", "5", "--data.num_eval_negatives", "5",
              "--model.network", "ncf.models.GMF", "--model.network.factor", "4", "--trainer.enable_progress_bar",
              "false", "--trainer.logger", "false"]
    cli_main(["fit", *common, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "r")])
    ckpt = next((tmp_path / "r").rglob("*.ckpt"))
    with pytest.raises(SystemExit) as exit_:
        cli_main(["predict", *common, "--ckpt_path", str(ckpt), "--recommend.users", "short",
                  "--recommend.output", str(tmp_path / "recs.csv")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Unknown user id(s) ['short']" in err and "--data.min_user_interactions 5 dropped users" in err
