"""Errors a user can hit, each one line with exit code 2: config-key typos (command line and YAML, with the
closest valid key), a missing data file, --debug, other data's checkpoint, text that is not UTF-8, a monitor
the fit never logs, out-of-range settings, sizes that cannot be allocated, weights that do not fit."""
from pathlib import Path

import pytest
import torch

from explain.cli import main as explain_main
from ncf import NCFModule
from ncf.cli import main as cli_main
from ncf.errors import ConfigError
from tests.conftest import write_tiny
from tests.helpers import module as make_module

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--model.network", "ncf.models.GMF", "--model.network.factor", "4", "--data.num_eval_negatives", "20", "--trainer.max_epochs", "1",
         "--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--trainer.enable_model_summary", "false"]


def _error(capsys, args) -> str:
    with pytest.raises(SystemExit) as exc:
        cli_main(args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("Seed set", "hold-out"))]
    assert exc.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0][len("error: "):]


def test_config_key_typos_name_the_closest_key(tmp_path, capsys):
    gmf = str(REPO / "configs" / "gmf.yaml")
    assert _error(capsys, ["fit", "--config", gmf, "--model.lrr", "0.1"]) == \
        "unknown option --model.lrr; did you mean --model.lr?"
    assert "did you mean --model.lr?" in _error(capsys, ["fit", "--config", gmf, "--modle.lr=0.1"])
    assert "did you mean" not in _error(capsys, ["fit", "--config", gmf, "--model.nosuchthing", "1"])
    assert _error(capsys, ["fit", "--config", gmf, "--model.network.factr", "16"]) == \
        "--model.network.factr: unknown argument 'factr' of ncf.GMF; did you mean --model.network.factor?"
    assert _error(capsys, ["fit", "--config", gmf, "--model.network.factor", "abc"]) == \
        "--model.network.factor: 'abc' is not a valid value (expected int)."
    assert _error(capsys, ["fit", "--config", gmf, "--model.network", "ncf.models.Nope"]).startswith(
        "--model.network: 'ncf.models.Nope' names no class implementing ncf.contract.Recommender")
    text = (REPO / "configs" / "gmf.yaml").read_text()
    typo = tmp_path / "typo.yaml"
    typo.write_text(text.replace("{factor: 64}", "{factr: 64}"))
    line = 1 + next(k for k, ln in enumerate(typo.read_text().splitlines()) if "factr:" in ln)
    assert _error(capsys, ["fit", "--config", str(typo)]) == f"{typo}, line {line}: model.network.init_args.factr: " \
        f"unknown argument 'factr' of ncf.GMF; did you mean model.network.init_args.factor?"
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("{factor: 64}", "{factor: abc}"))
    assert _error(capsys, ["fit", "--config", str(bad)]) == \
        f"{bad}, line {line}: model.network.init_args.factor: 'abc' is not a valid value (expected int)."
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(text.replace("  lr: 0.008", "  lr: abc"))
    lr_line = 1 + next(k for k, ln in enumerate(wrong.read_text().splitlines()) if ln.startswith("  lr:"))
    assert _error(capsys, ["fit", "--config", str(wrong)]).startswith(
        f"{wrong}, line {lr_line}: model.lr: 'abc' is not a valid value (expected float)")
    assert _error(capsys, ["fit", "--config", str(tmp_path / "none.yaml")]).startswith("--config: File does not exist")
    bad_value = _error(capsys, ["fit", "--config", gmf, "--trainer.max_epochs", "abc"])
    assert bad_value.startswith("--trainer.max_epochs: 'abc' is not a valid value (expected int or null)")
    assert _error(capsys, ["fitt"]).startswith("unknown subcommand 'fitt'; did you mean fit?")


def test_missing_data_file_and_debug_exit_code(tmp_path, capsys):
    args = ["fit", "--data.dataset", str(tmp_path / "nothing.csv"), *SMALL]
    assert _error(capsys, args).startswith(f"{tmp_path / 'nothing.csv'} not found: no such file;")
    assert "(did you mean ml-1m?)" in _error(capsys, ["fit", "--data.dataset", "ml-1b", *SMALL])
    with pytest.raises(SystemExit) as exc:  # --debug: the traceback, and the same exit code
        cli_main(args + ["--debug"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" in err and "DataError" in err
    assert explain_main([str(tmp_path / "none.ckpt"), "--user", "1", "--item", "1", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_other_data_settings_are_named_and_predict_on_other_rows_says_what_it_leaves_out(tmp_path, capsys, monkeypatch,
                                                                                          caplog):
    """The same file kept other users or items (a filter): the error names the setting, not only the file.
    predict on other rows of the same users and items (newer data) runs, saying whose items it leaves out."""
    import logging

    monkeypatch.chdir(tmp_path)
    a = write_tiny(tmp_path / "a.csv", n_users=20, n_items=40, per_user=10)
    cli_main(["fit", "--data.dataset", str(a), *SMALL, "--trainer.default_root_dir", str(tmp_path / "r"),
              "--data.min_item_interactions", "4"])
    ckpt = next((tmp_path / "r").rglob("*.ckpt"))
    with pytest.raises(SystemExit):
        cli_main(["test", "--data.dataset", str(a), *SMALL, "--ckpt_path", str(ckpt)])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.endswith("and the same data settings; these differ: data.min_item_interactions 4 there, 0 now."), line
    shifted = tmp_path / "shifted.csv"  # the same shape, other user ids
    shifted.write_text(a.read_text().replace("\nu", "\nv"))
    cli_main(["fit", "--data.dataset", str(a), *SMALL, "--trainer.default_root_dir", str(tmp_path / "r1"),
              "--run_name", "one"])
    with pytest.raises(SystemExit):
        cli_main(["predict", "--data.dataset", str(shifted), *SMALL, "--ckpt_path",
                  str(next((tmp_path / "r1").rglob("*.ckpt"))), "--recommend.output", str(tmp_path / "x.csv")])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "these differ: user ids 'v0', 'v1', 'v10' and more not in the checkpoint; user ids 'u0', 'u1', 'u10' and " \
           "more no longer in the data" in line, line
    cli_main(["fit", "--data.dataset", str(a), *SMALL, "--trainer.default_root_dir", str(tmp_path / "r2"),
              "--run_name", "plain"])
    ckpt = next((tmp_path / "r2").rglob("*.ckpt"))
    header, *rows = a.read_text().splitlines()
    items = [r.split(",")[1] for r in rows]
    drop = [k for k, r in enumerate(rows) if items.count(items[k]) > 2][:2]  # two rows; every user and item stays
    fewer = tmp_path / "fewer.csv"
    fewer.write_text("\n".join([header] + [r for k, r in enumerate(rows) if k not in drop]) + "\n")
    logging.getLogger("ncf").addHandler(caplog.handler)
    try:
        cli_main(["predict", "--data.dataset", str(fewer), *SMALL, "--ckpt_path", str(ckpt),
                  "--recommend.output", str(tmp_path / "rec.csv")])
    finally:
        logging.getLogger("ncf").removeHandler(caplog.handler)
    assert (tmp_path / "rec.csv").is_file()
    assert any("was trained on other rows of these users and items" in r.getMessage() and
               "not those of the data it was trained on" in r.getMessage() for r in caplog.records)


def test_tracebacks_a_user_could_hit_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = write_tiny(tmp_path / "a.csv", n_users=20, n_items=40, per_user=10)
    b = write_tiny(tmp_path / "b.csv", n_users=25, n_items=50, per_user=10, seed=1)
    cli_main(["fit", "--data.dataset", str(a), *SMALL, "--trainer.default_root_dir", str(tmp_path / "r")])
    ckpt = next((tmp_path / "r").rglob("*.ckpt"))
    line = _error(capsys, ["test", "--data.dataset", str(b), *SMALL, "--ckpt_path", str(ckpt)])
    assert line.startswith(f"{ckpt} was trained on other data (20 users, 40 items") and "(--data.dataset" in line
    newer = tmp_path / "newer.csv"  # one interaction of a new item: the error names it
    newer.write_text(a.read_text() + "u0,brand-new,5,9999\n")
    line = _error(capsys, ["predict", "--data.dataset", str(newer), *SMALL, "--ckpt_path", str(ckpt)])
    assert "these differ: item id 'brand-new' not in the checkpoint" in line
    grown = tmp_path / "grown.csv"  # the file it was trained on, grown since: the same path is no fix
    grown.write_text(a.read_text())
    cli_main(["fit", "--data.dataset", str(grown), *SMALL, "--trainer.default_root_dir", str(tmp_path / "g")])
    grown.write_text(a.read_text() + "u0,brand-new,5,9999\n")
    line = _error(capsys, ["predict", "--data.dataset", str(grown), *SMALL, "--ckpt_path",
                           str(next((tmp_path / "g").rglob("*.ckpt")))])
    assert f"{grown} changed since the model was trained on it; train again on it (train.py fit), or predict with " \
           f"a copy of the rows it was trained on; these differ: item id 'brand-new' not in the checkpoint" in line
    assert explain_main([str(next((tmp_path / "g").rglob("*.ckpt"))), "--data", str(grown), "--user", "u1", "--item",
                         "m1", "--quiet"]) == 2
    assert f"{grown} changed since the model was trained on it; train again on it" in capsys.readouterr().err
    latin = tmp_path / "latin.csv"
    latin.write_bytes("user,item,timestamp\n1,a,1\n1,caf\xe9,2\n".encode("latin-1"))
    assert _error(capsys, ["fit", "--data.dataset", str(latin), *SMALL]).startswith(
        f"{latin}, line 3: not valid utf-8 text; save it as UTF-8")
    data = ["fit", "--data.dataset", str(a), *SMALL, "--trainer.default_root_dir", str(tmp_path / "s")]
    k20 = _error(capsys, ["fit", "--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(a), *SMALL,
                          "--model.k", "20"])
    assert k20.startswith("ModelCheckpoint monitors val_ndcg10, which this fit never logs with --model.k 20") \
        and "`monitor: val_ndcg20`" in k20
    assert _error(capsys, data + ["--trainer.max_epochs", "-5"]) == \
        "--trainer.max_epochs must be at least 0 (or -1: no limit), not -5."
    assert _error(capsys, data + ["--trainer.max_epochs", "0"]).startswith("--trainer.max_epochs 0 trains nothing")
    never = _error(capsys, ["fit", "--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(a), *SMALL,
                            "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "3"])
    assert never.startswith("--trainer.check_val_every_n_epoch 3 validates first after epoch 3, past "
                            "--trainer.max_epochs 2, so the checkpoint that keeps the best val_ndcg10 would keep none")
    assert "--data.split_seed" in _error(capsys, data + ["--data.split_seed", "-1"])
    assert "--torch_threads must be at least 1" in _error(capsys, data + ["--torch_threads", "-2"])
    huge = _error(capsys, data + ["--model.network.factor", str(10 ** 10)])
    assert "GiB" in huge and "--model.network.factor" in huge
    with pytest.raises(ConfigError, match=r"has 262,600,000,001 weights \(978\.3 GiB\)"):
        make_module("gmf", 943, 1682, factor=10 ** 8)  # MovieLens-100k's shape: refused before allocating
    raw = torch.load(ckpt, weights_only=True)
    raw["hyper_parameters"]["network"]["init_args"]["factor"] = 8  # the hyperparameters no longer describe the weights
    torch.save(raw, tmp_path / "edited.ckpt")
    assert explain_main([str(tmp_path / "edited.ckpt"), "--user", "u1", "--item", "m1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "user_embedding.weight is [20, 4] in the file, [20, 8] for the model" in err[0]


def test_a_trainer_setting_lightning_refuses_is_one_line(capsys):
    gmf = str(REPO / "configs" / "gmf.yaml")
    line = _error(capsys, ["fit", "--config", gmf, "--trainer.strategy", "dpp"])
    assert "strategy='dpp'" in line and line.endswith("; check the --trainer options (python train.py fit --help lists them).")
    assert "devices" in _error(capsys, ["fit", "--config", gmf, "--trainer.accelerator", "cpu", "--trainer.devices", "two"])
    line = _error(capsys, ["fit", "--config", gmf, "--trainer.devices", "0"])
    assert "devices='0'" in line and line.endswith("--trainer.devices takes a count of 1 or more, a list of device "
                                                   "indices such as [0, 1], or auto.")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_asked_of_a_machine_without_one_names_the_fix(capsys):
    line = _error(capsys, ["fit", "--config", str(REPO / "configs" / "gmf.yaml"), "--trainer.accelerator", "gpu"])
    assert line.endswith("this machine has no gpu that torch can use: --trainer.accelerator auto takes a GPU when "
                         "there is one and the CPU otherwise (or name cpu)."), line


def test_testing_a_runs_checkpoint_reports_into_that_run(tmp_path, monkeypatch):
    """`test` of runs/<data>/exp1/checkpoints/best.ckpt without --run_name logs into exp1, as `fit` named it:
    no second run folder under the config's name, and the checkpoint callbacks keep exp1's folder."""
    monkeypatch.chdir(tmp_path)
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    cfg = ["--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(data), *SMALL[:-4]]
    cli_main(["fit", *cfg, "--run_name", "exp1"])
    ckpt = Path("runs/tiny/exp1/checkpoints/best.ckpt")
    assert ckpt.is_file()
    cli_main(["test", *cfg, "--ckpt_path", str(ckpt)])
    assert sorted(p.name for p in Path("runs/tiny").iterdir()) == ["exp1"]
    assert "test_hr10" in Path("runs/tiny/exp1/version_1/metrics.csv").read_text()
    cli_main(["test", *cfg, "--ckpt_path", str(ckpt), "--run_name", "other"])  # a name given still wins
    assert sorted(p.name for p in Path("runs/tiny").iterdir()) == ["exp1", "other"]
    # the same rows under another file's name: still the checkpoint's run (its folder under runs/tiny)
    same = tmp_path / "copy.csv"
    same.write_text(data.read_text())
    again = ["--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(same), *SMALL[:-4]]
    cli_main(["test", *again, "--ckpt_path", str(ckpt)])
    cli_main(["predict", *again, "--ckpt_path", str(ckpt)])
    assert not Path("runs/copy").exists() and Path("runs/tiny/exp1/recommendations.csv").is_file()
    assert "test_hr10" in Path("runs/tiny/exp1/version_2/metrics.csv").read_text()
    # a new run in the folder moves the earlier run's list with its checkpoints; that run's checkpoint, predicted
    # from where it was moved, writes there, never into the new run's folder
    cli_main(["fit", *cfg, "--run_name", "exp1", "--model.lr", "0.02"])
    aside = next(Path("runs/tiny/exp1/superseded").iterdir())
    assert not Path("runs/tiny/exp1/recommendations.csv").exists() and (aside / "recommendations.csv").is_file()
    (aside / "recommendations.csv").unlink()
    cli_main(["predict", *cfg, "--ckpt_path", str(aside / "checkpoints" / "best.ckpt")])
    assert (aside / "recommendations.csv").is_file() and not Path("runs/tiny/exp1/recommendations.csv").exists()


def test_testing_a_checkpoint_with_another_models_config_says_which_model_it_scores(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    cli_main(["fit", "--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(data), *SMALL[:-4],
              "--run_name", "g"])
    capsys.readouterr()
    ckpt = "runs/tiny/g/checkpoints/best.ckpt"
    cli_main(["test", "--config", str(REPO / "configs" / "mf.yaml"), "--data.dataset", str(data), *SMALL[4:-4],
              "--ckpt_path", ckpt])
    assert f"{ckpt} holds a GMF (ncf.models.GMF): test uses it, not the config's ncf.mf.MF." in capsys.readouterr().err
    cli_main(["test", "--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(data), *SMALL[:-4],
              "--model.network", "ncf.GMF", "--ckpt_path", ckpt])
    assert "holds a" not in capsys.readouterr().err  # the same class, by another path: nothing to say
    factor = torch.load(ckpt, weights_only=True)["hyper_parameters"]["network"]["init_args"]["factor"]
    cli_main(["test", "--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(data), *SMALL[:-4],
              "--model.network.factor", str(factor + 1), "--ckpt_path", ckpt])  # the same class, other settings
    assert (f"{ckpt} holds a GMF with factor {factor}: test uses the checkpoint's settings, not the config's "
            f"factor {factor + 1}.") in capsys.readouterr().err
    # a config whose NeuMF starts from pretrained files: they are its network's, not the checkpoint's
    cli_main(["test", "--config", str(REPO / "configs" / "neumf_pretrained.yaml"), "--data.dataset", str(data),
              *SMALL[4:-4], "--ckpt_path", ckpt])
    assert "holds a GMF (ncf.models.GMF): test uses it, not the config's ncf.models.NeuMF." in capsys.readouterr().err


def test_resuming_before_any_checkpoint_says_it_starts_afresh(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    cli_main(["fit", "--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(data), *SMALL[:-4],
              "--ckpt_path", "last"])
    err = capsys.readouterr().err
    assert "--ckpt_path last: no checkpoint of this run yet in " in err and "training starts from the beginning" in err
    assert "save_last" not in err  # Lightning's hint: the configs keep their own last.ckpt
    assert Path("runs/tiny/gmf/checkpoints/last.ckpt").is_file()


def test_test_and_validate_without_a_checkpoint_refuse_instead_of_scoring_an_untrained_model(tmp_path, monkeypatch,
                                                                                            capsys):
    monkeypatch.chdir(tmp_path)
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    cfg = ["--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(data), *SMALL[:-4], "--run_name", "x"]
    line = _error(capsys, ["test", *cfg])
    assert line.startswith("test scores a trained model and there is no --ckpt_path: pass --ckpt_path"), line
    line = _error(capsys, ["validate", *cfg, "--ckpt_path", "last"])
    assert line.startswith("validate scores a trained model and there is no checkpoint of this run yet in "), line
    assert "training starts" not in capsys.readouterr().err


def test_an_option_is_its_whole_name_not_a_prefix(capsys):
    gmf = str(REPO / "configs" / "gmf.yaml")
    assert _error(capsys, ["fit", "--config", gmf, "--trainer.max_epoch", "1"]) == \
        "unknown option --trainer.max_epoch; did you mean --trainer.max_epochs?"
    assert _error(capsys, ["fit", "--config", gmf, "--data.split", "3"]) == \
        "unknown option --data.split; did you mean --data.split_seed?"


def test_a_misspelt_callback_is_named_as_a_callback_with_the_one_meant(capsys):
    line = _error(capsys, ["fit", "--config", str(REPO / "configs" / "gmf.yaml"),
                           "--trainer.callbacks+=explain.AttributionCalback"])
    assert line == ("--trainer.callbacks: 'explain.AttributionCalback' is not a known Callback; did you mean "
                    "explain.callback.AttributionCallback?"), line


def test_a_second_config_whose_callbacks_replace_the_checkpoints_is_named(tmp_path, monkeypatch, capsys):
    """`trainer.callbacks:` in a second --config replaces the config's list (checkpoints included); the run
    says so, and `trainer.callbacks+:` adds to it instead."""
    monkeypatch.chdir(tmp_path)
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    cfg = ["--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(data), *SMALL[:-4]]
    for key, warned in (("callbacks", True), ("callbacks+", False)):
        extra = tmp_path / f"{key}.yaml"
        extra.write_text(f"trainer:\n  {key}:\n    - class_path: pytorch_lightning.callbacks.LearningRateMonitor\n")
        capsys.readouterr()
        cli_main(["fit", *cfg, "--config", str(extra), "--run_name", f"{key.strip('+')}{warned}"])
        assert ("No ModelCheckpoint with a fixed dirpath" in capsys.readouterr().err) == warned
        assert Path(f"runs/tiny/{key.strip('+')}{warned}/checkpoints/best.ckpt").is_file() != warned


RECORDING = ["--trainer.callbacks+=explain.AttributionCallback", "--trainer.callbacks.init_args.methods=[deeplift]",
             "--trainer.callbacks.num_probe_users", "4"]


def _recorded_gmf_run(tmp_path, monkeypatch) -> tuple[list, Path]:
    """A one-epoch GMF run of configs/gmf.yaml with the attribution callback, in tmp_path: its options and folder."""
    monkeypatch.chdir(tmp_path)
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    cfg = ["--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(data), *SMALL[:-4]]
    cli_main(["fit", *cfg, *RECORDING])
    return cfg, Path("runs/tiny/gmf")


def test_resuming_a_weights_only_checkpoint_is_refused_before_anything_moves(tmp_path, monkeypatch, capsys):
    cfg, run = _recorded_gmf_run(tmp_path, monkeypatch)
    before = sorted(str(p) for p in run.rglob("*") if p.is_file())
    with pytest.raises(SystemExit) as exit_:
        cli_main(["fit", *cfg, "--trainer.max_epochs", "2", *RECORDING,
                  "--ckpt_path", str(run / "checkpoints" / "epochs" / "epoch=0.ckpt")])
    assert exit_.value.code == 2
    assert "holds weights only (a per-epoch checkpoint)" in capsys.readouterr().err
    assert sorted(str(p) for p in run.rglob("*") if p.is_file()) == before  # the run and its record as they were


def test_a_new_run_without_the_callback_moves_the_earlier_runs_record_with_its_checkpoints(tmp_path, monkeypatch):
    import json

    cfg, run = _recorded_gmf_run(tmp_path, monkeypatch)
    first = json.loads((run / "attributions" / "manifest.json").read_text())["run"]["id"]
    cli_main(["fit", *cfg, "--model.lr", "0.02"])  # another run in the same folder, no callback
    assert not (run / "attributions").exists()
    kept = next(run.glob("superseded/*"))
    assert (kept / "checkpoints" / "best.ckpt").is_file()
    assert json.loads((kept / "attributions" / "manifest.json").read_text())["run"]["id"] == first


def test_an_empty_run_name_is_refused_not_read_as_none(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    with pytest.raises(SystemExit) as exit_:
        cli_main(["fit", "--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(data), *SMALL[:-4],
                  "--run_name", ""])
    assert exit_.value.code == 2 and "--run_name '' is not a folder name" in capsys.readouterr().err
    assert not Path("runs").exists()


def test_the_run_is_named_after_the_config_that_sets_the_model_not_a_later_file_of_callbacks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    callbacks = tmp_path / "record.yaml"
    callbacks.write_text("trainer:\n  callbacks+:\n    - class_path: pytorch_lightning.callbacks.LearningRateMonitor\n")
    cfg = ["--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(data), *SMALL[:-4]]
    cli_main(["fit", *cfg, "--config", str(callbacks)])
    assert Path("runs/tiny/gmf/checkpoints/best.ckpt").is_file() and not Path("runs/tiny/record").exists()
    variant = tmp_path / "gmf_small_lr.yaml"  # a later file that sets model settings names the run
    variant.write_text("model:\n  lr: 0.002\n")
    cli_main(["fit", *cfg, "--config", str(variant), "--config", str(callbacks)])
    assert Path("runs/tiny/gmf_small_lr/checkpoints/best.ckpt").is_file()


def test_warnings_printed_by_the_tools_say_so_first(capsys):
    import logging

    from ncf.console import show_info

    show_info()
    logging.getLogger("ncf").info("an information line")
    logging.getLogger("ncf").warning("the data is not quite the training data")
    err = capsys.readouterr().err.splitlines()
    assert "an information line" in err
    assert "warning: the data is not quite the training data" in err


def test_seed_everything_true_draws_a_seed_and_records_it(tmp_path, capsys, monkeypatch):
    import yaml

    data = write_tiny(tmp_path / "tiny.csv")
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    seeds = []
    for k in range(2):
        root = tmp_path / f"r{k}"
        cli_main(["fit", "--data.dataset", str(data), *SMALL, "--trainer.default_root_dir", str(root),
                  "--seed_everything", "true"])
        said = capsys.readouterr().err
        seed = yaml.safe_load(next(root.rglob("config.yaml")).read_text())["seed_everything"]
        assert f"drew the seed {seed} " in said and isinstance(seed, int) and seed is not True
        seeds.append(seed)
    assert seeds[0] != seeds[1]
    # resumed with the same command: the run goes on with the seed it drew (the run's fingerprint holds it)
    monkeypatch.chdir(tmp_path)
    cfg = ["--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(data), *SMALL[:-4],
           "--seed_everything", "true"]
    cli_main(["fit", *cfg])
    first = yaml.safe_load(Path("runs/tiny/gmf/version_0/config.yaml").read_text())["seed_everything"]
    capsys.readouterr()
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    cli_main(["fit", *cfg, "--ckpt_path", "last", "--trainer.max_epochs", "2"])
    said = capsys.readouterr().err
    assert f"with the seed it started with, {first}" in said and "drew the seed" not in said
    assert torch.load("runs/tiny/gmf/checkpoints/last.ckpt", weights_only=True)["epoch"] == 1
    # a launcher that starts every rank itself (torchrun): no rank could know the others' draw
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    assert "give the same number to all of them" in _error(capsys, ["fit", "--data.dataset", str(data), *SMALL,
                                                                      "--seed_everything", "true"])
    monkeypatch.setenv("PL_GLOBAL_SEED", "77")  # started by Lightning's DDP from a rank 0 that drew 77
    cli_main(["fit", "--data.dataset", str(data), *SMALL, "--trainer.default_root_dir", str(tmp_path / "r2"),
              "--seed_everything", "true"])
    assert yaml.safe_load(next((tmp_path / "r2").rglob("config.yaml")).read_text())["seed_everything"] == 77


def test_a_refused_command_leaves_no_log_folder_and_a_failed_run_keeps_its_logs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    short = tmp_path / "short.csv"
    short.write_text("user,item\n1,2\n1,3\n")  # refused while the data is read, after the logger has its folder
    cfg = ["--config", str(REPO / "configs" / "gmf.yaml"), *SMALL[:-4]]
    assert "fewer than 3 interactions" in _error(capsys, ["fit", *cfg, "--data.dataset", str(short)])
    assert not Path("runs/short").exists()
    tb = ["--trainer.logger", "pytorch_lightning.loggers.TensorBoardLogger", "--trainer.logger.save_dir", "{runs}"]
    assert "fewer than 3 interactions" in _error(capsys, ["fit", *cfg, *tb, "--data.dataset", str(short)])
    assert not Path("runs/short").exists()
    # a run that fails after it logged keeps what it logged
    data = write_tiny(tmp_path / "tiny.csv")
    original = NCFModule.on_train_epoch_start

    def failing(self):
        if self.current_epoch == 1:
            raise RuntimeError("out of memory")
        original(self)

    monkeypatch.setattr(NCFModule, "on_train_epoch_start", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        cli_main(["fit", *cfg, "--data.dataset", str(data), "--trainer.max_epochs", "3"])
    assert "val_ndcg10" in Path("runs/tiny/gmf/version_0/metrics.csv").read_text()


def test_predict_never_writes_over_the_files_it_reads(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    names = tmp_path / "names.csv"
    names.write_text("item,title\n" + "".join(f"m{k},Film {k}\n" for k in range(40)))
    cfg = ["--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(data), *SMALL[:-4]]
    cli_main(["fit", *cfg])
    kept = data.read_text(), names.read_text()
    for out, option in ((str(data), "--data.dataset"), ("names.csv", "--data.item_names")):
        said = _error(capsys, ["predict", *cfg, "--data.item_names", str(names), "--recommend.output", out,
                               "--ckpt_path", "runs/tiny/gmf/checkpoints/best.ckpt"])
        assert f"is the file {option} reads" in said
    assert (data.read_text(), names.read_text()) == kept


def test_test_of_the_runs_best_and_predict_of_a_checkpoint_in_no_run_folder(tmp_path, capsys, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    cfg = ["--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(data), *SMALL[:-4]]
    assert "no best.ckpt in" in _error(capsys, ["test", *cfg, "--ckpt_path", "best"])
    cli_main(["fit", *cfg])
    cli_main(["test", *cfg, "--ckpt_path", "best"])  # the run's best.ckpt, as the config keeps it
    assert "test_hr10" in Path("runs/tiny/gmf/version_1/metrics.csv").read_text()
    cli_main(["predict", *cfg, "--ckpt_path", "runs/tiny/gmf/checkpoints/best.ckpt"])
    own = Path("runs/tiny/gmf/recommendations.csv").read_bytes()
    # a checkpoint kept elsewhere (a tuning trial's, an exported copy): its list goes beside it, not over the run's
    (tmp_path / "trial" / "checkpoints").mkdir(parents=True)
    shutil.copy("runs/tiny/gmf/checkpoints/last.ckpt", tmp_path / "trial" / "checkpoints" / "best.ckpt")
    shutil.copy("runs/tiny/gmf/checkpoints/last.ckpt", tmp_path / "exported.ckpt")
    cli_main(["predict", *cfg, "--ckpt_path", str(tmp_path / "trial" / "checkpoints" / "best.ckpt")])
    cli_main(["predict", *cfg, "--ckpt_path", str(tmp_path / "exported.ckpt")])
    assert (tmp_path / "trial" / "recommendations.csv").is_file()
    assert (tmp_path / "exported_recommendations.csv").is_file()
    assert Path("runs/tiny/gmf/recommendations.csv").read_bytes() == own


def test_lightnings_max_epochs_refusal_on_resume_names_the_option():
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from ncf.cli import _in_cli_terms

    err = _in_cli_terms(MisconfigurationException("You restored a checkpoint with current_epoch=3, but you have set "
                                                  "Trainer(max_epochs=2)."))
    assert isinstance(err, ConfigError) and "past --trainer.max_epochs 2: give a larger --trainer.max_epochs" in str(err)
    other = MisconfigurationException("something else")
    assert _in_cli_terms(other) is other
