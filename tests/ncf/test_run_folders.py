"""Run folders: runs of different data never share a folder, a run can be named, and the pretrained NeuMF
finds the GMF and MLP trained on its own data."""
from pathlib import Path

import pytest
import torch

from ncf.cli import main as cli_main
from ncf.run_folders import dataset_label, fill_placeholders, run_folder
from tests.conftest import write_tiny

pytestmark = pytest.mark.slow  # trains through the CLI or several processes: pytest -m "not slow" skips it

REPO = Path(__file__).resolve().parents[2]
QUICK = ["--model.network.factor", "4", "--data.num_eval_negatives", "20", "--trainer.max_epochs", "1",
         "--trainer.enable_progress_bar", "false"]


def _fit(config: str, data: Path, *extra: str) -> None:
    cli_main(["fit", "--config", str(REPO / "configs" / f"{config}.yaml"), "--data.dataset", str(data), *QUICK, *extra])


def test_dataset_labels_and_placeholders():
    assert dataset_label("ml-100k") == "ml-100k"
    assert dataset_label("/some/where/plays.tsv") == "plays"
    assert dataset_label("synthetic:2000000") == "synthetic-2000000"
    assert dataset_label("weird name!.csv") == "weird_name_"
    assert dataset_label("plays.csv.gz") == dataset_label("plays.tsv.bz2") == "plays"
    assert run_folder("my.csv", "gmf") == "runs/my/gmf"
    cfg = {"callbacks": [{"init_args": {"dirpath": "{runs}/{name}/checkpoints/epochs", "filename": "{epoch}"}}],
           "model": {"pretrained_gmf": "{runs}/gmf/checkpoints/best.ckpt", "lr": 0.1}}
    fill_placeholders(cfg, "data/a.csv", "neumf")
    assert cfg["callbacks"][0]["init_args"] == {"dirpath": "runs/a/neumf/checkpoints/epochs", "filename": "{epoch}"}
    assert cfg["model"] == {"pretrained_gmf": "runs/a/gmf/checkpoints/best.ckpt", "lr": 0.1}


def test_runs_of_two_datasets_stay_apart_and_pretraining_finds_its_own(tmp_path, monkeypatch, caplog):
    a = write_tiny(tmp_path / "a.csv", n_users=20, n_items=40, per_user=10, seed=0)
    b = write_tiny(tmp_path / "b.csv", n_users=24, n_items=40, per_user=10, seed=1)
    monkeypatch.chdir(tmp_path)
    for data in (a, b):
        _fit("gmf", data)
        _fit("mlp", data)
    # nothing was moved aside: each dataset has its own folders
    assert not list(Path("runs").rglob("superseded"))
    for label, users in (("a", 20), ("b", 24)):
        ck = torch.load(f"runs/{label}/gmf/checkpoints/best.ckpt", weights_only=True)
        assert ck["hyper_parameters"]["n_users"] == users
    # the pretrained NeuMF on a.csv starts from a's GMF and MLP (b's were trained last)
    _fit("neumf_pretrained", a)
    neumf = torch.load("runs/a/neumf_pretrained/checkpoints/epochs/epoch=0.ckpt", weights_only=True)
    assert neumf["hyper_parameters"]["pretrained_gmf"] == "runs/a/gmf/checkpoints/best.ckpt"
    assert neumf["hyper_parameters"]["n_users"] == 20


def test_run_name_and_missing_pretraining(tmp_path, monkeypatch, capsys):
    a = write_tiny(tmp_path / "a.csv", n_users=20, n_items=40, per_user=10)
    monkeypatch.chdir(tmp_path)
    _fit("gmf", a, "--run_name", "gmf_small")
    assert Path("runs/a/gmf_small/checkpoints/best.ckpt").is_file()
    assert list(Path("runs/a/gmf_small").glob("version_*/metrics.csv"))
    with pytest.raises(SystemExit) as exit_:
        _fit("gmf", a, "--run_name", "../elsewhere")
    assert exit_.value.code == 2
    assert "--run_name '../elsewhere' is not a folder name" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # no GMF under the default name for this data
        _fit("neumf_pretrained", a)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2
    assert err[-1].startswith("error: model.pretrained_gmf: runs/a/gmf/checkpoints/best.ckpt not found")
    assert "--data.dataset" in err[-1]


def test_superseded_message_names_each_folder_once(tmp_path, monkeypatch, caplog):
    a = write_tiny(tmp_path / "a.csv", n_users=20, n_items=40, per_user=10)
    monkeypatch.chdir(tmp_path)
    _fit("gmf", a)
    import logging

    logger = logging.getLogger("ncf")
    logger.addHandler(caplog.handler)
    try:
        _fit("gmf", a, "--model.lr", "0.01")
    finally:
        logger.removeHandler(caplog.handler)
    [line] = [r.getMessage() for r in caplog.records if "held checkpoints of an earlier run" in r.getMessage()]
    folders = line.split(" held checkpoints")[0].split(", ")
    assert len(folders) == len(set(folders)) == 2  # checkpoints/ and checkpoints/epochs/, once each
    assert "trained on" not in line  # the same data
    # another file of the same name shares runs/a/: the message says so, and how to keep them apart
    (tmp_path / "elsewhere").mkdir()
    other = write_tiny(tmp_path / "elsewhere" / "a.csv", n_users=24, n_items=40, per_user=10, seed=1)
    caplog.clear()
    logger.addHandler(caplog.handler)
    try:
        _fit("gmf", other)
    finally:
        logger.removeHandler(caplog.handler)
    [line] = [r.getMessage() for r in caplog.records if "held checkpoints of an earlier run" in r.getMessage()]
    assert f"That run trained on {a}, this one on {other}" in line and "--run_name NAME" in line


def test_ckpt_path_last_with_nothing_to_resume_starts_from_the_pretraining(tmp_path, monkeypatch):
    """``--ckpt_path last`` where no last.ckpt exists starts a new run (Lightning loads nothing): a pretrained
    NeuMF then starts from its GMF and MLP, as without the flag."""
    a = write_tiny(tmp_path / "a.csv", n_users=20, n_items=40, per_user=10)
    monkeypatch.chdir(tmp_path)
    _fit("gmf", a)
    _fit("mlp", a)
    _fit("neumf_pretrained", a, "--ckpt_path", "last")
    neumf = torch.load("runs/a/neumf_pretrained/checkpoints/last.ckpt", weights_only=True)
    gmf = torch.load("runs/a/gmf/checkpoints/best.ckpt", weights_only=True)
    assert neumf["ncf_pretrained"]["gmf"]["run_id"] == gmf["ncf_run"]["id"]


def test_a_runs_checkpoints_and_record_are_moved_aside_together(tmp_path):
    """Checkpoints and record go through one mover: side by side under superseded/<run id>/, a later run with
    the same id beside them in <run id>-2; temporary files of interrupted writes are removed, others' files stay."""
    import json

    from explain.record import move_aside as move_record_aside
    from ncf.run import move_checkpoints_aside

    run = tmp_path / "runs/a/gmf"

    def leave(run_id):
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run / "attributions").mkdir(exist_ok=True)
        for name in ("best.ckpt", "last.ckpt"):
            torch.save({"ncf_run": {"id": run_id}}, run / "checkpoints" / name)
        (run / "checkpoints" / ".last.ckpt.x1.tmp").write_bytes(b"partial")
        (run / "attributions" / "manifest.json").write_text(json.dumps({"run": {"id": run_id}}))
        (run / "attributions" / "pairs_epoch=0.parquet").write_bytes(b"")

    (run / "attributions").mkdir(parents=True)
    (run / "attributions" / "notes.txt").write_text("mine")
    for where in ("abc", "abc-2"):
        leave("abc")
        assert move_record_aside(run / "attributions") == (run / "superseded" / where).resolve()
        assert move_checkpoints_aside([run / "checkpoints"]) == (run / "superseded" / where).resolve()
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()) == sorted([
        "attributions/notes.txt", *(f"superseded/{w}/{f}" for w in ("abc", "abc-2") for f in (
            "attributions/manifest.json", "attributions/pairs_epoch=0.parquet", "checkpoints/best.ckpt",
            "checkpoints/last.ckpt"))])
