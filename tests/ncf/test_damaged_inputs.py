"""Damaged inputs that were accepted with exit code 0, or ended in a traceback."""
from pathlib import Path

import pytest
import torch

from ncf.cli import main as cli_main
from ncf.datasets import DataError, load_interactions_file
from tests.conftest import write_tiny

QUICK = ["--model.network", "ncf.models.GMF", "--model.network.factor", "4", "--data.num_eval_negatives", "20", "--trainer.max_epochs", "1",
         "--trainer.enable_progress_bar", "false"]


def test_a_nul_byte_in_an_id_is_refused(tmp_path):
    good = write_tiny(tmp_path / "good.csv", n_users=20, n_items=40, per_user=10)
    lines = good.read_text().splitlines()
    lines[5] = lines[5].replace(",m", ",m\x00", 1)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"bad.csv, line 6: the item id .* holds a control character"):
        load_interactions_file(bad)


def test_test_with_a_checkpoint_whose_hyperparameters_do_not_parse(tmp_path, monkeypatch, capsys):
    data = write_tiny(tmp_path / "a.csv", n_users=20, n_items=40, per_user=10)
    monkeypatch.chdir(tmp_path)
    cli_main(["fit", "--data.dataset", str(data), *QUICK, "--trainer.default_root_dir", str(tmp_path / "r")])
    [ckpt] = [p for p in Path(tmp_path / "r").rglob("*.ckpt")]
    raw = torch.load(ckpt, weights_only=True)
    raw["hyper_parameters"]["factor"] = "x"
    torch.save(raw, tmp_path / "x.ckpt")
    with pytest.raises(SystemExit) as exit_:
        cli_main(["test", "--data.dataset", str(data), *QUICK, "--ckpt_path", str(tmp_path / "x.ckpt")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "hyperparameters do not describe a model" in err[-1]


def test_test_refuses_a_checkpoint_of_another_split_of_the_same_ids(tmp_path, monkeypatch, capsys):
    """Timestamps shuffled: the same users and items, other held-out items (training rows of the model)."""
    import random

    data = write_tiny(tmp_path / "a.csv", n_users=20, n_items=40, per_user=10)
    lines = data.read_text().splitlines()
    stamps = [ln.rsplit(",", 1)[1] for ln in lines[1:]]
    random.Random(0).shuffle(stamps)
    other = tmp_path / "b.csv"
    other.write_text("\n".join([lines[0]] + [ln.rsplit(",", 1)[0] + "," + t for ln, t in zip(lines[1:], stamps)]) + "\n")
    monkeypatch.chdir(tmp_path)
    cli_main(["fit", "--data.dataset", str(data), *QUICK, "--trainer.default_root_dir", str(tmp_path / "r")])
    [ckpt] = [p for p in Path(tmp_path / "r").rglob("*.ckpt")]
    cli_main(["test", "--data.dataset", str(data), *QUICK, "--ckpt_path", str(ckpt)])  # its own split: fine
    with pytest.raises(SystemExit) as exit_:
        cli_main(["test", "--data.dataset", str(other), *QUICK, "--ckpt_path", str(ckpt)])
    assert exit_.value.code == 2
    assert "was trained on another split of these users and items" in capsys.readouterr().err.strip().splitlines()[-1]


def test_explain_reads_names_in_another_encoding_and_says_how(tmp_path, monkeypatch, capsys):
    from explain.cli import main as explain_main

    data = write_tiny(tmp_path / "a.csv", n_users=20, n_items=40, per_user=10)
    names = tmp_path / "items.csv"
    names.write_bytes(("item,title\n" + "".join(f"m{i},Caf\xe9 {i}\n" for i in range(40))).encode("latin-1"))
    monkeypatch.chdir(tmp_path)
    cli_main(["fit", "--data.dataset", str(data), *QUICK, "--trainer.default_root_dir", str(tmp_path / "r")])
    [ckpt] = [p for p in Path(tmp_path / "r").rglob("*.ckpt")]
    args = [str(ckpt), "--data", str(data), "--item-names", str(names), "--user", "u1", "--item", "m3",
            "--methods", "deeplift", "--no-faithfulness"]
    assert explain_main(args) == 2
    assert "--names-encoding latin-1" in capsys.readouterr().err
    assert explain_main(args + ["--names-encoding", "latin-1"]) == 0
    assert '"Caf\xe9 3"' in capsys.readouterr().out


def test_the_counterfactual_checks_the_optimizer_state_it_continues(tmp_path, monkeypatch, capsys):
    from explain.cli import main as explain_main

    data = write_tiny(tmp_path / "a.csv", n_users=20, n_items=40, per_user=10)
    monkeypatch.chdir(tmp_path)
    repo = Path(__file__).resolve().parents[2]
    cli_main(["fit", "--config", str(repo / "configs" / "gmf.yaml"), "--data.dataset", str(data), *QUICK[2:]])
    best = Path("runs/a/gmf/checkpoints/best.ckpt")
    raw = torch.load(best, weights_only=True)
    state = raw["optimizer_states"][0]["state"]
    first = next(iter(state.values()))
    first["exp_avg"].view(-1)[0] += 1.0  # one value of Adam's moments changed, its checksum kept
    torch.save(raw, best)
    args = [str(best), "--data", str(data), "--user", "u1", "--item", "m3", "--methods", "deeplift",
            "--no-faithfulness", "--history", "--counterfactual", "--cf-epochs", "1"]
    assert explain_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "training state" in err[-1] and "--counterfactual" in err[-1]


def test_an_empty_field_a_short_line_and_mixed_timestamps_are_told_apart(tmp_path):
    """Each message says what is wrong with that line: an empty field, a line short of fields, a date among
    numeric timestamps; a file with too few items for the evaluation negatives is named."""
    cases = {"empty.csv": ("user,item,timestamp\n1,5,100\n1,,101\n", r"line 3: field 'item' is empty"),
             "short.csv": ("user,item,timestamp\n1,5,100\n1,6\n", r"line 3: field 'timestamp' is missing \(truncated"),
             "mixed.csv": ("user,item,timestamp\n1,5,100\n1,6,2001-01-01\n",
                           r"line 3: field 'timestamp' is a date \('2001-01-01'\) where line 2 has a number \('100'\)")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=rf"{name}, {message}"):
            load_interactions_file(tmp_path / name)
    # a column that is read but not used (a rating, a note) may be blank, with string ids as with numbers
    for ids in (("1", "5", "6"), ("u1", "007", "008")):
        blank = tmp_path / "blank.csv"
        blank.write_text(f"user,item,rating,note,timestamp\n{ids[0]},{ids[1]},,,100\n{ids[0]},{ids[2]},4,ok,101\n")
        assert len(load_interactions_file(blank)) == 2
    from ncf import NCFDataModule

    small = tmp_path / "small.csv"
    small.write_text("user,item\n1,1\n1,2\n1,3\n2,1\n2,2\n2,4\n3,3\n3,4\n3,5\n")
    with pytest.raises(DataError, match=rf"{small}: 3 users have fewer than 99 items they never interacted with "
                                        rf"\(of its 5 items\)"):
        NCFDataModule(str(small)).setup("fit")


def test_a_file_without_a_header_and_a_names_file_without_rows_say_so(tmp_path):
    from ncf.names import read_names

    bare = tmp_path / "u.tsv"
    bare.write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    with pytest.raises(DataError, match=r"its first line \(196, 242, 3, 881250949\) is data, not a header; add a "
                                        r"header line"):
        load_interactions_file(bare)
    names = tmp_path / "names.csv"
    names.write_text("item,title\n")
    with pytest.raises(DataError, match="names no ids: it holds a header and no rows"):
        read_names(names, [1, 2])


def test_a_names_file_with_unquoted_separators_says_how_to_quote_and_names_are_trimmed(tmp_path):
    from ncf.names import read_names

    names = tmp_path / "names.csv"
    names.write_text("item,title\n1,Heat (1995)\n2,Usual Suspects, The (1995)\n")
    with pytest.raises(DataError, match=r"a name that holds the separator ',' needs quotes \(\"Usual Suspects, The "
                                        r"\(1995\)\"\), or write the file tab-separated"):
        read_names(names, [1, 2])
    names.write_text('item,title\n1, Heat (1995) \n2,"Usual Suspects, The (1995)"\n')
    assert read_names(names, [1, 2]) == ["Heat (1995)", "Usual Suspects, The (1995)"]


def test_a_utf8_names_file_read_as_latin1_is_said(tmp_path, caplog):
    import logging

    from ncf.names import read_names

    names = tmp_path / "names.csv"
    names.write_text("item,title\n1,Misérables, Les (1995)\n".replace("Misérables, Les", '"Misérables, Les"'),
                     encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="ncf"):
        assert read_names(names, [1], encoding="latin-1") == ["MisÃ©rables, Les (1995)"]
        assert read_names(names, [1]) == ["Misérables, Les (1995)"]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "is read as latin-1, but its text is UTF-8" in said[0]
    caplog.clear()
    names.write_bytes("item,title\n1,Misérables\n".encode("latin-1"))  # latin-1 itself: nothing to say
    with caplog.at_level(logging.WARNING, logger="ncf"):
        assert read_names(names, [1], encoding="latin-1") == ["Misérables"]
    assert not caplog.records
