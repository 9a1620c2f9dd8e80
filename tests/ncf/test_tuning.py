"""The tuner on a small synthetic dataset: a study runs, resumes from its SQLite storage, prunes, never
reads test metrics, and writes a config that train.py accepts."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import yaml

from ncf.cli import main as cli_main
from ncf.errors import ConfigError
from ncf.search_space import load_space
from ncf.tuning import Plan, run_study
from tests.conftest import write_tiny
from tests.helpers import network

pytestmark = pytest.mark.slow  # trains through the CLI or several processes: pytest -m "not slow" skips it


@pytest.fixture
def setup(tmp_path, monkeypatch):
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    cfg = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 3, "accelerator": "cpu", "devices": 1,
                    "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger",
                               "init_args": {"save_dir": "runs", "name": "tiny"}},
                    "callbacks": [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": "runs/tiny/checkpoints", "filename": "best",
                                                 "monitor": "val_ndcg10", "mode": "max"}},
                                  {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": "runs/tiny/checkpoints/epochs", "filename": "{epoch}",
                                                 "save_top_k": -1}}]},
        "model": {"network": {"class_path": "ncf.models.GMF", "init_args": {"factor": 4}}, "lr": 0.01},
        "data": {"dataset": str(data), "batch_size": 64, "num_eval_negatives": 20},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "space.yaml").write_text("model.lr: {type: float, low: 1.0e-3, high: 5.0e-2, log: true}\n"
                                         "model.network.init_args.factor: {type: categorical, choices: [2, 4]}\n")
    monkeypatch.chdir(tmp_path)

    def no_test(*a, **k):
        raise AssertionError("the objective must never run the test set")

    monkeypatch.setattr(pl.Trainer, "test", no_test)
    return tmp_path


def test_study_runs_resumes_and_writes_a_usable_config(setup):
    out = setup / "study"
    study = run_study("tiny.yaml", "space.yaml", 2, str(out), seed=0)
    assert len(study.trials) == 2 and all(t.value is not None for t in study.trials)
    assert (out / "study.db").exists() and not list((out / "trial_0").rglob("epoch=*.ckpt"))  # no per-epoch files
    # As if the process had been killed after two trials: the next run continues the same study.
    study = run_study("tiny.yaml", "space.yaml", 3, str(out), seed=0)
    assert [t.number for t in study.trials] == [0, 1, 2]
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["model"]["lr"] == pytest.approx(study.best_trial.params["model.lr"])
    assert "Best trials" in (out / "report.md").read_text()
    # train.py accepts it
    cli = cli_main(["fit", "--config", str(out / "best.yaml"), "--trainer.max_epochs", "1",
                    "--trainer.enable_progress_bar", "false"])
    assert cli.trainer.current_epoch == 1
    # a finished study is not run again
    assert len(run_study("tiny.yaml", "space.yaml", 3, str(out)).trials) == 3


def test_a_killed_trial_is_retried_at_once_and_a_resumed_study_draws_new_settings(setup):
    """A trial whose process was killed on this machine is failed and retried when the study resumes, even
    within Optuna's heartbeat grace period or killed before its first beat; the second sitting's sampler
    does not draw the first sitting's settings again."""
    import socket
    import subprocess

    import optuna

    out = setup / "study"
    drawn = [t.params["model.lr"] for t in run_study("tiny.yaml", "space.yaml", 2, str(out), seed=0).trials]
    gone = subprocess.Popen(["true"])
    gone.wait()
    stored = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    killed = stored.ask()  # as a tune.py process leaves it when killed mid-trial
    lr = killed.suggest_float("model.lr", 1.0e-3, 5.0e-2, log=True)
    killed.suggest_categorical("model.network.init_args.factor", [2, 4])
    killed.set_user_attr("process", f"{socket.gethostname()}:{gone.pid}")
    study = run_study("tiny.yaml", "space.yaml", 4, str(out), seed=0)
    states = {t.number: t.state.name for t in study.trials}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "FAIL", 3: "COMPLETE", 4: "COMPLETE"}, states
    assert study.trials[3].params["model.lr"] == lr  # the killed trial's settings, trained again
    assert study.trials[4].params["model.lr"] not in drawn
    assert "1 failed trials (1 of them interrupted or killed, their settings tried again as trial 3)." in \
        (out / "report.md").read_text()


def test_ctrl_c_or_sigterm_during_a_trial_queues_it_again(setup, monkeypatch):
    """Ctrl-C (Lightning's graceful shutdown exits 1 after the KeyboardInterrupt) or SIGTERM stops the study,
    not as a failed input: the trial is failed and its settings queued, and the next run trains them."""
    import ncf.tuning
    from ncf.tuning import StudyInterrupted

    real, calls = ncf.tuning.train_trial, []

    def stopped_on_the_second(cfg, folder, callbacks=()):
        calls.append(folder)
        if len(calls) == 2:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise SystemExit(1)
        return real(cfg, folder, callbacks)

    monkeypatch.setattr(ncf.tuning, "train_trial", stopped_on_the_second)
    out = setup / "study"
    with pytest.raises(StudyInterrupted, match="interrupted during trial 1; its settings are queued"):
        run_study("tiny.yaml", "space.yaml", 3, str(out), seed=0)
    monkeypatch.setattr(ncf.tuning, "train_trial", real)
    study = run_study("tiny.yaml", "space.yaml", 3, str(out), seed=0)
    states = {t.number: t.state.name for t in study.trials}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE", 3: "COMPLETE"}, states
    assert study.trials[2].params == study.trials[1].params  # the interrupted trial's settings, trained


def test_settings_that_never_validate_are_refused_before_the_study(setup):
    for extra, message in ((["--trainer.max_epochs", "0"], "--trainer.max_epochs 0 trains nothing"),
                           (["--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "3"],
                            "--trainer.check_val_every_n_epoch 3 validates first after epoch 3, past "
                            "--trainer.max_epochs 2")):
        with pytest.raises(ConfigError, match=message + ", so a trial would end without a validation score"):
            run_study("tiny.yaml", "space.yaml", 1, str(setup / "never"), seed=0, extra=extra)
    assert not (setup / "never" / "study.db").exists()  # nothing made: the folder is not tied to those settings


def test_hopeless_trials_are_pruned(setup):
    import optuna

    with pytest.raises(ConfigError, match="No trial of the study completed"):
        run_study("tiny.yaml", "space.yaml", 2, str(setup / "pruned"),
                  pruner=optuna.pruners.ThresholdPruner(lower=1.0, n_warmup_steps=0))
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{setup / 'pruned' / 'study.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2


def test_bad_search_space(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("lr: {type: float, low: 1, high: 2}\n")
    with pytest.raises(ConfigError, match="dotted key"):
        load_space(bad)
    bad.write_text("model.lr: {type: float, low: 2, high: 1}\n")
    with pytest.raises(ConfigError, match="low <= high"):
        load_space(bad)
    with pytest.raises(ConfigError, match="no such search space file; name one with --space"):
        load_space(tmp_path / "none.yaml")
    bad.write_text("data.validation_item: {type: categorical, choices: [random, previous]}\n")
    with pytest.raises(ConfigError, match="validation set itself"):  # the objective must stay one measure
        load_space(bad)


def test_best_config_names_pretrained_checkpoints_as_the_config_does(setup):
    # The trials load GMF and MLP by absolute path; best.yaml keeps the config's own (relative) paths, so
    # it works wherever the project is, as the tuned config did.
    for name in ("gmf", "mlp"):
        cfg = yaml.safe_load((setup / "tiny.yaml").read_text())
        cfg["model"] = {"network": network(name, factor=4, num_layers=2), "lr": 0.01}
        cfg["trainer"]["max_epochs"] = 1
        for cb, folder in zip(cfg["trainer"]["callbacks"], (f"runs/{name}/checkpoints", f"runs/{name}/epochs")):
            cb["init_args"]["dirpath"] = folder
        (setup / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        cli_main(["fit", "--config", f"{name}.yaml", "--trainer.enable_progress_bar", "false"])
    cfg = yaml.safe_load((setup / "tiny.yaml").read_text())
    cfg["model"] = {"network": {"class_path": "ncf.models.NeuMF", "init_args": {"factor": 4, "num_layers": 2}},
                    "lr": 0.01, "optimizer": "sgd",
                    "pretrained_gmf": "runs/gmf/checkpoints/best.ckpt",
                    "pretrained_mlp": "runs/mlp/checkpoints/best.ckpt"}
    (setup / "neumf.yaml").write_text(yaml.safe_dump(cfg))
    (setup / "alpha.yaml").write_text("model.alpha: {type: float, low: 0.3, high: 0.7}\n")
    run_study("neumf.yaml", "alpha.yaml", 1, str(setup / "study"), seed=0)
    trial = yaml.safe_load((setup / "study" / "trial_0" / "config.yaml").read_text())
    assert trial["model"]["pretrained_gmf"] == str(setup / "runs/gmf/checkpoints/best.ckpt")
    best = yaml.safe_load((setup / "study" / "best.yaml").read_text())
    assert (best["model"]["pretrained_gmf"], best["model"]["pretrained_mlp"]) == \
        ("runs/gmf/checkpoints/best.ckpt", "runs/mlp/checkpoints/best.ckpt")


def _fit_best(path) -> float:
    cli = cli_main(["fit", "--config", str(path), "--trainer.enable_progress_bar", "false"])
    return float(cli.trainer.checkpoint_callback.best_model_score)


def test_best_config_holds_the_command_line_and_reproduces_the_best_trial(setup):
    # The config names MovieLens; the command line trains on another file for 2 epochs. best.yaml must say
    # so, and train.py fit with it must give the best trial's validation score again.
    cfg = yaml.safe_load((setup / "tiny.yaml").read_text())
    cfg["data"]["dataset"] = "ml-100k"
    (setup / "ml.yaml").write_text(yaml.safe_dump(cfg))
    other = write_tiny(setup / "other.csv", n_users=16, n_items=30, per_user=9, seed=3)
    extra = ["--data.dataset", "other.csv", "--trainer.max_epochs=2", "--model.weight_decay", "0.001"]
    study = run_study("ml.yaml", "space.yaml", 2, str(setup / "study"), seed=0, extra=extra)
    best = yaml.safe_load((setup / "study" / "best.yaml").read_text())
    # the data by absolute path: run from another folder, "other.csv" would be another file (or none)
    assert best["data"]["dataset"] == str(other.resolve()) and best["trainer"]["max_epochs"] == 2
    assert best["model"]["weight_decay"] == 0.001 and best["model"]["network"]["init_args"]["factor"] == \
        study.best_trial.params["model.network.init_args.factor"]
    trial = yaml.safe_load((setup / "study" / f"trial_{study.best_trial.number}" / "config.yaml").read_text())
    assert {**trial["data"], "dataset": str(other.resolve())} == best["data"] and trial["model"] == best["model"]
    assert "`data.dataset=other.csv`" in (setup / "study" / "report.md").read_text()
    assert _fit_best(setup / "study" / "best.yaml") == pytest.approx(study.best_value, abs=1e-5)


@pytest.mark.parametrize("extra", [["--model.network.factor", "4"],  # the config's own value: still an override
                                   ["--model.network.init_args.factor=2"],
                                   ["--model.network", "{class_path: ncf.models.GMF, init_args: {factor: 2}}"]])
def test_an_option_setting_a_searched_key_is_refused(setup, extra):
    named = extra[0].split("=")[0] if extra[0].startswith("--model.network.") else \
        r"model.network.init_args.factor \(set by --model.network '\{class_path: ncf.models.GMF, init_args: \{factor: 2\}\}'\)"
    with pytest.raises(ConfigError, match=rf"^{named} is searched by space.yaml; drop it from the command line "
                                          r"or remove the key from the search space\.$"):
        run_study("tiny.yaml", "space.yaml", 1, str(setup / "study"), extra=extra)
    assert not (setup / "study").exists()  # refused before anything was written


def test_a_searched_key_must_be_a_train_py_option(setup):
    (setup / "typo.yaml").write_text("model.network.init_args.factr: {type: categorical, choices: [2, 4]}\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: 'model.network.init_args.factr' is not a train.py option "
                                          r"\(did you mean 'model.network.init_args.factor'\?\)"):
        run_study("tiny.yaml", "typo.yaml", 1, str(setup / "study"))
    (setup / "far.yaml").write_text("model.colour: {type: categorical, choices: [2, 4]}\n")
    with pytest.raises(ConfigError, match=r"'model.colour' is not a train.py option; python train.py fit --config "
                                          r"tiny.yaml --print_config lists them\.$"):
        run_study("tiny.yaml", "far.yaml", 1, str(setup / "study"))


def test_a_study_is_continued_only_with_what_defines_it(setup):
    out = str(setup / "study")
    run_study("tiny.yaml", "space.yaml", 1, out, seed=0, extra=["--trainer.max_epochs", "1"])
    write_tiny(setup / "other.csv", n_users=16, n_items=30, per_user=9, seed=3)
    (setup / "space2.yaml").write_text("model.lr: {type: float, low: 1.0e-3, high: 5.0e-2, log: true}\n")
    refused = [(["--trainer.max_epochs", "1", "--data.dataset", "other.csv"], "space.yaml",
                r"data.dataset '.*tiny.csv' there, 'other.csv' now"),
               ([], "space.yaml", r"trainer.max_epochs 1 there, 3 now"),
               (["--trainer.max_epochs", "1"], "space2.yaml", r"search space model.network.init_args.factor .* there, None now")]
    for extra, space, why in refused:
        with pytest.raises(ConfigError, match=why + r".*give --out another folder"):
            run_study("tiny.yaml", space, 2, out, extra=extra)
    # the same file, edited
    data = setup / "tiny.csv"
    data.write_text(data.read_text().replace("u0,", "u99,"))
    with pytest.raises(ConfigError, match=r"the content of '.*tiny.csv'"):
        run_study("tiny.yaml", "space.yaml", 2, out, extra=["--trainer.max_epochs", "1"])
    # another config's study in this folder
    (setup / "other.yaml").write_text((setup / "tiny.yaml").read_text())
    with pytest.raises(ConfigError, match=r"holds study 'tiny', not 'other'; give --out another folder"):
        run_study("other.yaml", "space.yaml", 1, out)
    import optuna

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{setup / 'study' / 'study.db'}")
    assert len(study.trials) == 1  # nothing was added by the refused runs


def test_an_error_inside_a_trial_is_one_line(setup, capfd):
    from ncf.tuning import TrialFailed, main

    (setup / "bad.yaml").write_text("model.network.init_args.factor: {type: int, low: 0, high: 0}\n")
    args = ["--config", "tiny.yaml", "--space", "bad.yaml", "--n-trials", "1", "--out", "study"]
    assert main(args) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Trial 0 failed" not in err  # no Optuna dump
    assert err.strip().splitlines()[-1] == ("error: trial 0 failed (study/trial_0/config.yaml): "
                                            "GMF(factor=0): factor must be at least 1, not 0 (--model.network.factor)")
    with pytest.raises(TrialFailed):  # --debug: the exception itself
        main([*args, "--debug"])


def test_an_unexpected_error_inside_a_trial_is_one_line_too(setup, capfd, monkeypatch):
    import ncf.tuning as tuning

    def crash(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(tuning, "train_trial", crash)
    assert tuning.main(["--config", "tiny.yaml", "--space", "space.yaml", "--n-trials", "1", "--out", "study"]) == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "error: trial 0 failed (study/trial_0/config.yaml): RuntimeError: out of memory"


def test_the_shipped_pretrained_config_tunes_on_the_data_it_is_given(tmp_path, monkeypatch, capsys):
    """configs/neumf_pretrained.yaml names its GMF and MLP as {runs}/gmf and {runs}/mlp: the study on a file
    starts every trial from the GMF and MLP of that file, lives in runs/<file>/tune/<config> by default, and
    its best.yaml trains into runs/<file>/neumf_pretrained_tuned."""
    from pathlib import Path

    from ncf.tuning import main as tune_main

    repo = Path(__file__).resolve().parents[2]
    data = write_tiny(tmp_path / "mine.csv", n_users=20, n_items=40, per_user=10)
    monkeypatch.chdir(tmp_path)
    quick = ["--data.dataset", str(data), "--model.network.factor", "4",
             "--data.num_eval_negatives", "20", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    for name in ("gmf", "mlp"):
        cli_main(["fit", "--config", str(repo / "configs" / f"{name}.yaml"), *quick])
    space = tmp_path / "space.yaml"
    space.write_text("model.lr: {type: float, low: 1.0e-3, high: 5.0e-2, log: true}\n")
    config = str(repo / "configs" / "neumf_pretrained.yaml")
    assert tune_main(["--config", config, "--space", str(space), "--n-trials", "1", *quick]) == 0
    out = Path("runs/mine/tune/neumf_pretrained")
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["model"]["pretrained_gmf"] == "{runs}/gmf/checkpoints/best.ckpt"  # as the config names it
    assert best["run_name"] == "neumf_pretrained_tuned"
    assert set(best["pretrained_sha256"]) == {"pretrained_gmf", "pretrained_mlp"}  # what the trials started from
    cli_main(["fit", "--config", str(out / "best.yaml")])
    assert Path("runs/mine/neumf_pretrained_tuned/checkpoints/best.ckpt").is_file()
    # GMF retrained since: best.yaml would start from another GMF than its trials; refused, naming the one kept
    cli_main(["fit", "--config", str(repo / "configs" / "gmf.yaml"), *quick, "--model.lr", "0.02"])
    kept = list(Path("runs/mine/gmf/superseded").glob("*/checkpoints/best.ckpt"))
    assert len(kept) == 1
    with pytest.raises(SystemExit) as exit_:
        cli_main(["fit", "--config", str(out / "best.yaml")])
    assert exit_.value.code == 2
    assert f"the one it recorded is {kept[0]}: train with --model.pretrained_gmf {kept[0]}" in capsys.readouterr().err
    cli_main(["fit", "--config", str(out / "best.yaml"), "--model.pretrained_gmf", str(kept[0])])  # the one named


@pytest.mark.parametrize("space", sorted(p.name for p in (Path(__file__).resolve().parents[2] / "configs" / "search").glob("*.yaml")))
def test_every_shipped_search_space_fits_its_config(space):
    """configs/search/<name>.yaml is the tuner's default space for configs/<name>.yaml: each key is an option
    of that config, so `tune.py --config configs/<name>.yaml` starts."""
    repo = Path(__file__).resolve().parents[2]
    config = repo / "configs" / space
    assert config.is_file(), f"configs/search/{space} has no configs/{space}"
    plan = Plan(str(config), str(repo / "configs" / "search" / space))
    assert set(plan.space) and all("." in key for key in plan.space)


def test_a_config_without_a_search_space_is_told_which_to_name(tmp_path, monkeypatch, capsys):
    """A copy of a shipped config has no space beside it: the error says --space and names the shipped space
    of the config that trains the same network, as a path that works from anywhere."""
    from ncf.tuning import main as tune_main

    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "mine.yaml").write_text((repo / "configs" / "mlp.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    assert tune_main(["--config", "mine.yaml", "--n-trials", "1"]) == 2
    err = capsys.readouterr().err
    assert f"Name one with --space FILE (e.g. --space {repo / 'configs' / 'search' / 'mlp.yaml'})" in err, err
    assert not (tmp_path / "runs").exists()  # refused before anything was made
    # a space where the README says, configs/search/<config>.yaml, is found for a config kept elsewhere
    (tmp_path / "configs" / "search").mkdir(parents=True)
    (tmp_path / "configs" / "search" / "mine.yaml").write_text("model.lr: {type: float, low: 1.0e-3, high: 1.0e-2}\n")
    class Found(Exception):
        pass

    def run_study(config, space, *args, **kwargs):
        raise Found(space)

    monkeypatch.setattr("ncf.tuning.run_study", run_study)
    monkeypatch.setattr("ncf.tuning.default_out", lambda *a, **k: str(tmp_path / "out"))
    with pytest.raises(Found) as found:
        tune_main(["--config", "mine.yaml", "--n-trials", "1"])
    assert str(found.value) == str(Path("configs") / "search" / "mine.yaml")


def test_tuning_a_config_that_reads_the_order_asks_for_the_previous_validation_item(tmp_path, monkeypatch, capfd):
    """mf_recent.yaml weights each user's latest interactions: a study validated on a random past item is told
    to validate on the item before the test item, and one that does is not."""
    from ncf.tuning import main as tune_main

    repo = Path(__file__).resolve().parents[2]
    data = write_tiny(tmp_path / "mine.csv", n_users=20, n_items=40, per_user=12)
    monkeypatch.chdir(tmp_path)
    quick = ["--data.dataset", str(data), "--data.num_eval_negatives", "20", "--trainer.max_epochs", "1",
             "--trainer.enable_progress_bar", "false"]
    warned = "add --data.validation_item previous"
    for extra, out, expect in (([], "a", True), (["--data.validation_item", "previous"], "b", False)):
        capfd.readouterr()
        assert tune_main(["--config", str(repo / "configs" / "mf_recent.yaml"), "--n-trials", "1", "--out", out,
                          *quick, *extra]) == 0
        err = capfd.readouterr().err
        assert (warned in err) is expect, err[-2000:]
