"""Inputs that used to give wrong results with exit code 0: now a clear error."""
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from ncf import NCFDataModule, NCFModule
from ncf.checkpoint import load_network, weights_digest
from ncf.cli import main as cli_main
from ncf.datasets import DataError
from ncf.presplit import load_ncf_presplit
from ncf.errors import CheckpointError
from ncf.module import DivergedError
from ncf.splits import leave_one_out
from tests.conftest import write_tiny
from tests.helpers import module as make_module

REPO = Path(__file__).resolve().parents[2]


def _split_files(tmp_path, negative_lines):
    (tmp_path / "p.train.rating").write_text("0\t0\t5\t1\n0\t1\t5\t2\n1\t2\t5\t1\n1\t3\t4\t3\n")
    (tmp_path / "p.test.rating").write_text("0\t2\t5\t9\n1\t0\t5\t9\n")
    (tmp_path / "p.test.negative").write_text(negative_lines)
    return tmp_path / "p"


def test_paper_split_is_validated(tmp_path):
    prefix = _split_files(tmp_path, "(0,2)\t3\t4\n(1,0)\t1\t4\n")
    data = load_ncf_presplit(prefix)
    with pytest.raises(DataError, match="lists 2 negatives per user, but num_eval_negatives is 99.*"
                                        "--data.num_eval_negatives 2"):
        leave_one_out(data, validation=False)
    assert leave_one_out(data, validation=False, num_eval_negatives=2).test_candidates.shape == (2, 3)
    _split_files(tmp_path, "(0,2)\t1\t4\n(1,0)\t1\t4\n")  # item 1 is a training positive of user 0
    with pytest.raises(DataError, match="item 1 is listed as a negative of user 0"):
        load_ncf_presplit(prefix)
    _split_files(tmp_path, "(0,3)\t5\t4\n(1,0)\t1\t4\n")  # the head disagrees with .test.rating
    with pytest.raises(DataError, match="names item 3, but .* tests item 2"):
        load_ncf_presplit(prefix)
    _split_files(tmp_path, "(0,2)\t-1\t4\n(1,0)\t1\t4\n")
    with pytest.raises(DataError, match="negative id is negative"):
        load_ncf_presplit(prefix)


def _tiny_fit(tmp_path, epochs=2, callbacks=()):
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    pl.seed_everything(0)
    dm = NCFDataModule(str(data), batch_size=64, num_eval_negatives=20)
    module = make_module("gmf", dm.num_users, dm.num_items, factor=4, lr=0.01)
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "c"), filename="{epoch}", save_top_k=-1)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[ckpt, *callbacks])
    trainer.fit(module, dm)
    return module, tmp_path / "c"


class _Poison(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            with torch.no_grad():
                pl_module.net.user_embedding.weight[0, 0] = float("nan")


def test_a_diverged_run_stops_and_keeps_earlier_checkpoints(tmp_path):
    with pytest.raises(DivergedError, match="NaN or infinite in epoch 1"):
        _tiny_fit(tmp_path, 3, [_Poison()])
    assert (tmp_path / "c" / "epoch=0.ckpt").exists() and not (tmp_path / "c" / "epoch=1.ckpt").exists()
    load_network(tmp_path / "c" / "epoch=0.ckpt")  # the last good one loads


def test_non_finite_weights_are_refused(tmp_path, capsys):
    from explain.cli import main as explain_main

    _, folder = _tiny_fit(tmp_path, 1)
    path = folder / "epoch=0.ckpt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["net.item_embedding.weight"][3, 1] = float("inf")
    ckpt["ncf_weights_sha256"] = weights_digest(ckpt["state_dict"])  # as a diverged run would save it
    torch.save(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_network(tmp_path / "bad.ckpt")
    assert explain_main([str(tmp_path / "bad.ckpt"), "--user", "u1", "--item", "m3"]) == 2
    assert "NaN or infinite" in capsys.readouterr().err
    for n in ("0", "-5", str(1 << 30)):
        assert explain_main([str(path), "--user", "u1", "--item", "m3", "--n-samples", n]) == 2
        assert "--n-samples must be between 1 and" in capsys.readouterr().err
    ckpt = torch.load(path, weights_only=True)  # finite weights, odd hyperparameters
    ckpt["hyper_parameters"]["n_users"] = "abc"
    torch.save(ckpt, tmp_path / "odd.ckpt")
    with pytest.raises(CheckpointError, match="hyperparameters do not describe a model"):
        load_network(tmp_path / "odd.ckpt")


def test_best_checkpoint_is_always_this_runs(tmp_path, monkeypatch):
    """A second fit in the same folder replaces best.ckpt instead of writing best-v1.ckpt beside it."""
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(data), "--model.network.factor", "4",
            "--data.num_eval_negatives", "20", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    cli_main(args)
    cli_main(args + ["--model.lr", "0.01"])
    files = sorted(p.relative_to(tmp_path / "runs/tiny/gmf/checkpoints").as_posix()
                   for p in (tmp_path / "runs/tiny/gmf/checkpoints").rglob("*.ckpt"))
    assert files == ["best.ckpt", "epochs/epoch=0.ckpt", "last.ckpt"]
    assert torch.load(tmp_path / "runs/tiny/gmf/checkpoints/best.ckpt", weights_only=True)["hyper_parameters"]["lr"] == 0.01


def test_resume_only_continues_the_same_run(tmp_path, monkeypatch, capsys):
    """--ckpt_path of a run with other settings is a one-line error naming what differs; a new run moved the
    finished run's checkpoints aside, so resuming it after a kill before its first checkpoint cannot pick up
    the old run's last.ckpt (it starts, as the new run it is)."""
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(data), "--model.network.factor", "4", "--model.lr", "0.002",
            "--data.num_eval_negatives", "20", "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"]
    cli_main(args)
    last = tmp_path / "runs/tiny/gmf/checkpoints/last.ckpt"
    first_id = torch.load(last, weights_only=True)["ncf_run"]["id"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli_main(args + ["--model.lr", "0.01", "--ckpt_path", "last"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "belongs to another run" in err.splitlines()[-1] and "model.lr 0.002 there, 0.01 now" in err
    assert torch.load(last, weights_only=True)["ncf_run"]["id"] == first_id  # untouched
    # the same settings (and more epochs: not part of the identity) resume it
    cli_main(args[:-4] + ["--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false", "--ckpt_path", "last"])
    ck = torch.load(last, weights_only=True)
    assert ck["ncf_run"]["id"] == first_id and ck["epoch"] == 2

    class Kill(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            raise KeyboardInterrupt

    from ncf.cli import main as run_cli

    cli = run_cli(args[1:] + ["--model.lr", "0.01"], run=False)  # a new run, killed before its first checkpoint
    cli.trainer.callbacks.append(Kill())
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        cli.trainer.fit(cli.model, cli.datamodule)
    assert not last.exists()  # the finished run is aside, whole
    moved = tmp_path / "runs/tiny/gmf/superseded" / first_id / "checkpoints"
    assert torch.load(moved / "last.ckpt", weights_only=True)["epoch"] == 2
    assert sorted(p.name for p in (moved / "epochs").iterdir()) == ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"]
    cli_main(args + ["--model.lr", "0.01", "--ckpt_path", "last"])  # nothing of its own to resume: it starts
    ck = torch.load(last, weights_only=True)
    assert ck["hyper_parameters"]["lr"] == 0.01 and ck["ncf_run"]["id"] != first_id and ck["epoch"] == 1


def test_checkpoint_writes_are_atomic_and_leave_no_temp_files(tmp_path, monkeypatch):
    """A kill inside a checkpoint write leaves the previous file whole and nothing in the system temp folder;
    the next start removes the partial file beside it."""
    import tempfile

    from ncf.files import _atomic_io, atomic_write_bytes

    sys_tmp = tmp_path / "systemp"
    sys_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(sys_tmp))
    target = tmp_path / "ck" / "last.ckpt"
    _atomic_io()().save_checkpoint({"a": torch.ones(3)}, target)
    real_fsync = __import__("os").fsync

    def die(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.fsync", die)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(b"x" * 1000, target)
    monkeypatch.setattr("os.fsync", real_fsync)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(3))
    assert list(sys_tmp.iterdir()) == [] and list(target.parent.glob(".*.tmp")) == []
    # a hard kill (no cleanup in the process) leaves the partial file beside it: the next start removes it
    from ncf.run import remove_partial

    (target.parent / ".last.ckpt.k2j3.tmp").write_bytes(b"partial")
    (target.parent / ".notes.tmp").write_bytes(b"not ours")
    remove_partial([target.parent])
    assert sorted(p.name for p in target.parent.iterdir()) == [".notes.tmp", "last.ckpt"]


def test_explain_never_follows_a_path_stored_in_a_checkpoint(tmp_path, capsys):
    from explain.cli import main as explain_main

    _, folder = _tiny_fit(tmp_path, 1)
    secret = tmp_path / "secret.txt"
    secret.write_text("user,item\nTOP-SECRET-LINE,1\n")
    ckpt = torch.load(folder / "epoch=0.ckpt", weights_only=True)
    ckpt["datamodule_hyper_parameters"].update(dataset=str(secret), root=str(tmp_path), item_names=str(secret))
    torch.save(ckpt, tmp_path / "steered.ckpt")
    capsys.readouterr()
    assert explain_main([str(tmp_path / "steered.ckpt"), "--user", "u1", "--item", "m3", "--methods", "deeplift",
                         "--no-faithfulness"]) == 0
    out = capsys.readouterr()
    assert "TOP-SECRET" not in out.out + out.err and "pass --data FILE" in out.err
    # given on the command line, the data is read (and must be the data the checkpoint was trained on)
    assert explain_main([str(tmp_path / "steered.ckpt"), "--data", str(tmp_path / "tiny.csv"), "--user", "u1",
                         "--item", "m3", "--methods", "deeplift", "--no-faithfulness", "--quiet"]) == 0
    assert explain_main([str(tmp_path / "steered.ckpt"), "--data", str(secret), "--user", "u1", "--item", "m3",
                         "--quiet"]) == 2
    assert "could not be read" in capsys.readouterr().err  # the user named this file: its errors may quote it


def test_explain_on_a_folder_keeps_to_one_run(tmp_path, capsys):
    import json
    import os

    from explain.cli import main as explain_main

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, folder = _tiny_fit(tmp_path / "a", 2)
    second, other = _tiny_fit(tmp_path / "b", 1)
    assert first.run_id != second.run_id
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in folder.glob("*.ckpt"):
        (mixed / f"a-{f.name}").write_bytes(f.read_bytes())
        os.utime(mixed / f"a-{f.name}", (1e9, 1e9))
    (mixed / "b-epoch=0.ckpt").write_bytes((other / "epoch=0.ckpt").read_bytes())
    capsys.readouterr()
    assert explain_main([str(mixed), "--user", "u1", "--item", "m3", "--methods", "deeplift", "--no-faithfulness",
                         "--out", str(tmp_path / "ex")]) == 0
    err = capsys.readouterr().err
    assert f"explaining run {second.run_id} (1 checkpoint," in err and f"{first.run_id} (2)" in err
    doc = json.loads((tmp_path / "ex" / "explanations.json").read_text())
    assert [c["run_id"] for c in doc["checkpoints"]] == [second.run_id]


def test_an_edited_movielens_copy_is_caught(ml_root, tmp_path):
    from ncf.movielens import load_movielens

    folder = tmp_path / "ml-100k"
    folder.mkdir()
    for f in ("u.data", "u.item"):
        (folder / f).write_bytes((ml_root / "ml-100k" / f).read_bytes())
    rows = (folder / "u.data").read_text().splitlines()
    u, i, r, t = rows[0].split("\t")
    rows[0] = "\t".join([u, i, r, str(int(t) + 1)])  # one timestamp changed: the counts still match
    (folder / "u.data").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="differs from the published ml-100k ratings.*--data.verify false"):
        load_movielens("ml-100k", tmp_path, download=False)
    assert len(load_movielens("ml-100k", tmp_path, download=False, verify=False)) == 100_000


def test_a_flipped_bit_in_the_weights_is_caught(tmp_path, capsys):
    from explain.cli import main as explain_main

    _, folder = _tiny_fit(tmp_path, 1)
    path = folder / "epoch=0.ckpt"
    load_network(path)  # intact: loads
    ckpt = torch.load(path, weights_only=True)
    w = ckpt["state_dict"]["net.user_embedding.weight"]
    w.view(torch.int32)[2, 1] ^= 1 << 20  # one bit of one float
    torch.save(ckpt, tmp_path / "flipped.ckpt")
    with pytest.raises(CheckpointError, match="do not match the hash"):
        load_network(tmp_path / "flipped.ckpt")
    assert explain_main([str(tmp_path / "flipped.ckpt"), "--user", "u1", "--item", "m3"]) == 2
    assert "do not match the hash" in capsys.readouterr().err
    # and resuming a run from it stops before training
    data = tmp_path / "tiny.csv"
    dm = NCFDataModule(str(data), batch_size=64, num_eval_negatives=20)
    module = make_module("gmf", dm.num_users, dm.num_items, factor=4, lr=0.01)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    with pytest.raises(CheckpointError, match="do not match the hash"):
        trainer.fit(module, dm, ckpt_path=str(tmp_path / "flipped.ckpt"))


def test_explain_bad_inputs_are_one_line_errors(tmp_path, capsys):
    from explain.cli import main as explain_main

    _, folder = _tiny_fit(tmp_path, 1)
    good = str(folder / "epoch=0.ckpt")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty.csv").write_text("user,item\n")
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 4)
    ckpt = torch.load(good, weights_only=True)
    ckpt["epoch"] = "abc"
    torch.save(ckpt, tmp_path / "epoch.ckpt")
    ckpt["epoch"] = 0
    ckpt["hyper_parameters"]["n_users"] = -5
    torch.save(ckpt, tmp_path / "users.ckpt")
    (tmp_path / "four.ckpt").write_bytes(b"PK\x03\x04")
    (tmp_path / "text.ckpt").write_text("hello")
    cases = [
        [good, "--user", "u1", "--item", "m3", "--out", str(tmp_path / "afile")],
        [good, "--pairs", str(tmp_path / "empty.csv")],
        [good, "--pairs", str(tmp_path / "binary.csv")],
        [good, "--pairs", str(tmp_path)],
        [str(tmp_path / "epoch.ckpt"), "--user", "u1", "--item", "m3"],
        [str(tmp_path / "users.ckpt"), "--user", "u1", "--item", "m3"],
        [str(tmp_path / "four.ckpt"), "--user", "u1", "--item", "m3"],
        [str(tmp_path / "text.ckpt"), "--user", "u1", "--item", "m3"],
        [good, "--user", "u1", "--item", "m3", "--methods", "kernel_shap", "--n-samples", "0"],
    ]
    capsys.readouterr()
    for args in cases:
        assert explain_main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), (args, err)
