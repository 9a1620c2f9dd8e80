import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from explain import AttributionCallback
from explain.record import load_record, recorded_epochs
from ncf import NCFDataModule, NCFModule
from tests.conftest import write_tiny
from tests.helpers import module as make_module


@pytest.fixture
def tiny(tmp_path):
    return write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)


def _fit(tmp_path, data, callbacks, epochs=3, ckpt_path=None, dropout=0.2, save_on_train_epoch_end=None,
         every_epoch=False, **trainer_kw):
    """``every_epoch``: ``last.ckpt`` written at every epoch's end, as the configs' (else with each new best)."""
    pl.seed_everything(0)
    dm = NCFDataModule(str(data), batch_size=64, num_eval_negatives=20)
    module = make_module("neumf", dm.num_users, dm.num_items, factor=4, num_layers=2, dropout=dropout, lr=0.01)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="last", monitor="epoch", mode="max") if every_epoch \
        else ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="best", monitor="val_ndcg10", mode="max",
                             save_last=True, save_on_train_epoch_end=save_on_train_epoch_end)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[*callbacks, ckpt], default_root_dir=str(tmp_path),
                         **trainer_kw)
    trainer.fit(module, dm, ckpt_path=ckpt_path)
    return module, trainer


def _cb(out, **kw):
    return AttributionCallback(**{"methods": ["deeplift", "lime", "ig", "shapley"], "num_probe_users": 6,
                                  "n_samples": 200, "out_dir": None if out is None else str(out), **kw})


def test_observes_without_perturbing(tmp_path, tiny):
    plain, _ = _fit(tmp_path / "a", tiny, [])
    watched, _ = _fit(tmp_path / "b", tiny, [_cb(tmp_path / "b" / "rec")])
    for (name, a), (_, b) in zip(plain.state_dict().items(), watched.state_dict().items()):
        assert torch.equal(a, b), name


class _CLIBookkeeping(pl.Callback):
    """Adds the entry LightningCLI puts in a module's hyperparameters (``_instantiator``)."""

    def setup(self, trainer, pl_module, stage):
        pl_module.hparams["_instantiator"] = "pytorch_lightning.cli.instantiate_module"


def test_record_reads_back_with_pandas(tmp_path, tiny):
    out = tmp_path / "rec"
    _fit(tmp_path, tiny, [_CLIBookkeeping(), _cb(out, pairs=[["u1", "m3"]], plots=True, faithfulness_every_n_epochs=1)])
    assert recorded_epochs(out) == [-1, 0, 1, 2]
    dims = pd.read_parquet(sorted(out.glob("dims_epoch=*.parquet")))  # plain pandas, no project code
    pairs = pd.read_parquet(sorted(out.glob("pairs_epoch=*.parquet")))
    n_pairs = 13  # 6 users x (validation item, sampled negative) + 1 listed
    width = 4 + 4 + 8 + 8  # NeuMF factor 4, 2 layers: GMF 4+4, MLP 8+8
    assert len(dims) == 4 * 3 * n_pairs * width  # epochs x dimension-level methods x pairs x dims
    assert dims["at_baseline"].dtype == bool and not dims["at_baseline"].all()
    assert len(pairs) == 4 * 4 * n_pairs
    assert set(pairs["kind"]) == {"validation_positive", "sampled_negative", "listed"}
    listed = pairs[pairs["kind"] == "listed"]
    assert set(listed["user_id"]) == {"u1"} and set(listed["item_id"]) == {"m3"}
    dl = pairs[pairs["method"] == "deeplift"]
    assert dl["completeness_gap"].max() < 1e-4
    assert dl[dl["epoch"] >= 0]["stability"].notna().all() and dl[dl["epoch"] == -1]["stability"].isna().all()
    assert {"agreement_lime", "deletion_gain", "insertion_gain", "infidelity", "share_user", "share_gmf"} <= set(dl.columns)
    # agreement only between dimension-level methods: over four embedding totals it cannot vary
    assert "agreement_shapley" not in dl.columns and not any(c.startswith("agreement_") for c in
                                                              pairs[pairs["method"] == "shapley"].dropna(axis=1, how="all"))
    assert dl[dl["epoch"] >= 0]["val_ndcg10"].notna().all() and dl[dl["epoch"] == -1]["val_ndcg10"].isna().all()
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["epoch"].unique()) == [-1, 0, 1, 2]
    for png in ("group_shares.png", "stability.png", "agreement.png", "faithfulness.png"):
        assert (out / png).stat().st_size > 1000
    import json
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["methods"] == ["deeplift", "lime", "ig", "shapley"] and len(manifest["probe"]) == n_pairs
    # the model's settings as a person reads them: no Lightning bookkeeping
    assert manifest["model"]["lr"] == 0.01 and not any(k.startswith("_") for k in manifest["model"])
    assert manifest["training_seed"] == 0 and manifest["pretrained_from"] is None  # seed_everything(0), from scratch


def test_manifest_training_seed_is_seed_everything(monkeypatch):
    from explain.callback import _training_seed

    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    assert _training_seed() == 7
    monkeypatch.delenv("PL_GLOBAL_SEED")
    assert _training_seed() is None


class _Killed(RuntimeError):
    pass


class _KillAfterCheckpoint(pl.Callback):
    """Dies at the end of an epoch: after that epoch's checkpoint, before its attribution record."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise _Killed


@pytest.mark.parametrize("case", ["before_record", "after_record", "checkpoint_before_record"])
def test_resume_records_every_epoch_once(tmp_path, tiny, case):
    """Kill at the end of epoch 1 (a) before the record and the checkpoint, (b) after the record but before
    the checkpoint, (c) after a checkpoint written at validation end but before the record. The resumed
    record must equal an uninterrupted run's, each epoch once."""
    save_on_end = False if case == "checkpoint_before_record" else None
    _fit(tmp_path / "full", tiny, [_cb(tmp_path / "full" / "rec")], epochs=4, save_on_train_epoch_end=save_on_end)
    out = tmp_path / "run" / "attributions"  # the default: beside the fixed checkpoint folder run/ckpt
    kill = _KillAfterCheckpoint(1)
    callbacks = [_cb(None), kill] if case == "after_record" else [kill, _cb(None)]
    with pytest.raises(_Killed):
        _fit(tmp_path / "run", tiny, callbacks, epochs=4, save_on_train_epoch_end=save_on_end)
    assert recorded_epochs(out) == ([-1, 0, 1] if case == "after_record" else [-1, 0])
    # A fresh process with the same config: the record continues in the same (configured) folder.
    _fit(tmp_path / "run", tiny, [_cb(None)], epochs=4, ckpt_path=str(tmp_path / "run" / "ckpt" / "last.ckpt"),
         save_on_train_epoch_end=save_on_end)
    assert recorded_epochs(out) == [-1, 0, 1, 2, 3]
    _, got = load_record(out)
    _, want = load_record(tmp_path / "full" / "rec")
    assert got.groupby(["epoch", "method"]).size().eq(12).all()  # 6 users x 2 pairs, once each
    pd.testing.assert_frame_equal(got.drop(columns=["stability"]), want.drop(columns=["stability"]), rtol=1e-5)
    pd.testing.assert_series_equal(got["stability"], want["stability"], atol=1e-3)


def test_resume_with_other_recording_settings_is_refused(tmp_path, tiny):
    """One record holds one set of settings: a resumed run whose callback records other methods or draws
    with another seed would mix them under a manifest that names only the new ones."""
    from ncf.errors import ConfigError

    out = tmp_path / "run" / "attributions"
    with pytest.raises(_Killed):
        _fit(tmp_path / "run", tiny, [_KillAfterCheckpoint(1), _cb(None)], epochs=4)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    last = str(tmp_path / "run" / "ckpt" / "last.ckpt")
    with pytest.raises(ConfigError, match=r"\(methods \[deeplift, lime, ig, shapley\] there, \[deeplift, lime\] now; "
                                          r"lime.n_samples 200 there, 400 now; seed 0 there, 7 now\).*another --run_name"):
        _fit(tmp_path / "run", tiny, [_cb(None, methods=["deeplift", "lime"], seed=7, n_samples=400)], epochs=4,
             ckpt_path=last)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before  # the record is as the kill left it
    with pytest.raises(ConfigError, match="history False there, True now"):
        _fit(tmp_path / "run", tiny, [_cb(None, history=True)], epochs=4, ckpt_path=last)
    _fit(tmp_path / "run", tiny, [_cb(None, plots=True)], epochs=4, ckpt_path=last)  # how it is shown may change
    assert recorded_epochs(out) == [-1, 0, 1, 2, 3]


class _StopAfter(pl.Callback):
    """Stops training at the end of an epoch, as early stopping does (after the callbacks before it)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def test_the_last_epoch_trained_is_recorded_when_training_stops_early(tmp_path, tiny):
    out = tmp_path / "rec"
    _fit(tmp_path, tiny, [_cb(out, methods=["deeplift"], every_n_epochs=3), _StopAfter(3)], epochs=9)
    assert recorded_epochs(out) == [-1, 2, 3]  # epoch 3 is off the schedule, but training ended there
    _, pairs = load_record(out)
    last = pairs[pairs["epoch"] == 3]
    assert last["val_ndcg10"].notna().all() and last["deletion_gain"].notna().all()  # its validation, faithfulness


def test_a_last_epoch_cut_short_by_max_steps_is_said(tmp_path, tiny):
    from explain.html_report import write_report
    from explain.record import read_manifest

    out = tmp_path / "rec"
    _fit(tmp_path, tiny, [_cb(out, methods=["deeplift"], every_n_epochs=5)], epochs=5, max_steps=20)  # 13 a epoch
    assert recorded_epochs(out) == [-1, 1]
    assert read_manifest(out)["last_epoch_cut_short"] == {"epoch": 1, "batches": 7, "of": 13}
    page = write_report([out], tmp_path / "r.html").read_text()
    assert "Training stopped within epoch 1, after 7 of its 13 batches" in page
    _fit(tmp_path / "whole", tiny, [_cb(tmp_path / "whole_rec", methods=["deeplift"])], epochs=2)
    assert read_manifest(tmp_path / "whole_rec")["last_epoch_cut_short"] is None


def test_an_epoch_without_validation_records_none(tmp_path, tiny):
    """Lightning keeps the latest validation's metrics: an epoch that did not validate must not take them."""
    out = tmp_path / "rec"
    _fit(tmp_path, tiny, [_cb(out, methods=["deeplift"])], epochs=4, check_val_every_n_epoch=2)
    _, pairs = load_record(out)
    validated = pairs.groupby("epoch")["val_ndcg10"].apply(lambda v: bool(v.notna().all())).to_dict()
    assert validated == {-1: False, 0: False, 1: True, 2: False, 3: True}


def test_a_callback_added_on_resume_starts_a_record_and_a_gap_is_refused(tmp_path, tiny):
    from explain.record import read_manifest
    from ncf.errors import ConfigError

    last = str(tmp_path / "run" / "ckpt" / "last.ckpt")
    out = tmp_path / "run" / "attributions"
    with pytest.raises(_Killed):  # trained without the callback to epoch 1, killed at epoch 2's end
        _fit(tmp_path / "run", tiny, [_KillAfterCheckpoint(2)], epochs=4, every_epoch=True)
    _fit(tmp_path / "run", tiny, [_cb(None, methods=["deeplift"])], epochs=4, ckpt_path=last, every_epoch=True)
    assert recorded_epochs(out) == [2, 3] and read_manifest(out)["added_on_resume_at_epoch"] == 2

    # recorded to epoch 1, resumed without the callback to epoch 3, then with it again: epoch 2 would be missing
    gap, gap_last = tmp_path / "gap" / "attributions", str(tmp_path / "gap" / "ckpt" / "last.ckpt")
    with pytest.raises(_Killed):
        _fit(tmp_path / "gap", tiny, [_KillAfterCheckpoint(2), _cb(None, methods=["deeplift"])], epochs=6,
             every_epoch=True)
    with pytest.raises(_Killed):
        _fit(tmp_path / "gap", tiny, [_KillAfterCheckpoint(4)], epochs=6, ckpt_path=gap_last, every_epoch=True)
    with pytest.raises(ConfigError, match=r"saved by a fit without AttributionCallback.*stops at epoch 1: continuing "
                                          r"it would leave epochs 2-3 out"):
        _fit(tmp_path / "gap", tiny, [_cb(None, methods=["deeplift"])], epochs=6, ckpt_path=gap_last, every_epoch=True)
    assert recorded_epochs(gap) == [-1, 0, 1]
    # a run resumed into another folder (another --run_name): its record there starts where it resumed, and says so
    _fit(tmp_path / "moved", tiny, [_cb(None, methods=["deeplift"])], epochs=5, ckpt_path=last, every_epoch=True)
    assert recorded_epochs(tmp_path / "moved" / "attributions") == [4]
    assert read_manifest(tmp_path / "moved" / "attributions")["added_on_resume_at_epoch"] == 4
    # the probe set is part of what a record holds: another one on resume is refused, not silently ignored
    with pytest.raises(ConfigError, match="num_probe_users 6 there, 3 now"):
        _fit(tmp_path / "run", tiny, [_cb(None, methods=["deeplift"], num_probe_users=3)], epochs=5, ckpt_path=last,
             every_epoch=True)


def test_callback_settings_out_of_range_are_refused(tmp_path, tiny, capsys):
    from ncf.errors import ConfigError

    with pytest.raises(ConfigError, match="methods is empty"):
        AttributionCallback(methods=[])
    with pytest.raises(ConfigError, match="n_samples must be between 1 and"):
        AttributionCallback(methods=["lime"], n_samples=0)
    with pytest.raises(ConfigError, match="num_probe_users must be 0 or more, not -3"):
        AttributionCallback(num_probe_users=-3)
    from ncf.cli import main as cli_main

    with pytest.raises(SystemExit) as exit_:
        cli_main(["fit", "--data.dataset", str(tiny), "--model.network", "ncf.models.GMF", "--trainer.max_epochs", "1",
                  "--trainer.callbacks+=explain.AttributionCallback", "--trainer.callbacks+=explain.AttributionCallback",
                  "--trainer.default_root_dir", str(tmp_path / "r")])
    assert exit_.value.code == 2
    assert "error: AttributionCallback is given more than once" in capsys.readouterr().err


def test_unknown_probe_ids(tmp_path, tiny):
    with pytest.raises(ValueError, match="Unknown item id 'nope'"):
        _fit(tmp_path, tiny, [_cb(tmp_path / "rec", pairs=[["u1", "nope"]])], epochs=1)
    with pytest.raises(ValueError, match="Unknown attribution methods"):
        AttributionCallback(methods=["saliency_maps"])


def _ddp(tmp_path, devices, batch, mode="full", expect=0):
    script = Path(__file__).with_name("_ddp_script.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = subprocess.run([sys.executable, str(script), str(tmp_path), str(devices), str(batch), mode], env=env,
                         timeout=300, capture_output=True, text=True)
    assert run.returncode == expect, f"devices={devices} {mode} exited {run.returncode}:\n{run.stderr[-4000:]}"


@pytest.mark.slow
def test_ddp_ranks_split_the_epoch_and_record_once(tmp_path):
    """strategy='ddp' on 2 CPU processes: each rank draws and holds its own users' share of the epoch
    (disjoint, together the whole epoch, about half each), the attribution record is written once, by
    rank 0, and starts from the same model as one process's."""
    import json

    _ddp(tmp_path, 1, 100)
    single = json.loads((tmp_path / "share_1_0.json").read_text())
    _ddp(tmp_path, 2, 50)
    shares = [json.loads((tmp_path / f"share_2_{r}.json").read_text()) for r in (0, 1)]
    assert not set(shares[0]["users"]) & set(shares[1]["users"])
    assert set(shares[0]["users"]) | set(shares[1]["users"]) == set(single["users"])
    assert shares[0]["rows"] + shares[1]["rows"] == single["rows"] == single["total"]
    assert sum(s["samples"] for s in shares) == single["samples"]
    assert all(abs(s["samples"] - single["samples"] / 2) <= 0.1 * single["samples"] for s in shares)
    assert shares[0]["steps"] == shares[1]["steps"]
    single_dims, single_pairs = load_record(tmp_path / "record_1")
    ddp_dims, ddp_pairs = load_record(tmp_path / "record_2")
    assert recorded_epochs(tmp_path / "record_2") == [-1, 0, 1] and len(ddp_dims) == len(single_dims)
    before = ddp_pairs["epoch"] == -1
    pd.testing.assert_series_equal(ddp_pairs[before]["prediction"], single_pairs[before]["prediction"], atol=1e-5)
    assert ddp_pairs["prediction"].notna().all() and ddp_pairs["completeness_gap"].max() < 1e-3


@pytest.mark.slow
def test_ddp_resume_equals_an_uninterrupted_ddp_run(tmp_path):
    """A DDP run killed at the end of an epoch and resumed from last.ckpt ends with the weights of an
    uninterrupted DDP run (each rank's negatives come from its own (seed, epoch, rank) generator, and each
    rank's dropout resumes from its own random state: the ranks' shares differ, so their streams do too)."""
    _ddp(tmp_path, 2, 50, "straight")
    _ddp(tmp_path, 2, 50, "kill", expect=3)
    _ddp(tmp_path, 2, 50, "resume")
    want = torch.load(tmp_path / "weights_2_straight.pt", weights_only=True)
    got = torch.load(tmp_path / "weights_2_resume.pt", weights_only=True)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0, msg=name)


def test_logs_to_tensorboard_and_csv(tmp_path, tiny):
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    pl.seed_everything(0)
    dm = NCFDataModule(str(tiny), batch_size=64, num_eval_negatives=20)
    module = make_module("neumf", dm.num_users, dm.num_items, factor=4, num_layers=2)
    loggers = [TensorBoardLogger(str(tmp_path), name="tb"), CSVLogger(str(tmp_path), name="csv")]
    cb = AttributionCallback(num_probe_users=4)  # default methods, default out_dir under the first logger
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=loggers, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
    trainer.fit(module, dm)
    assert Path(cb.out_dir).parent == Path(loggers[0].log_dir)
    assert recorded_epochs(cb.out_dir) == [-1, 0]
    metrics = pd.read_csv(Path(loggers[1].log_dir) / "metrics.csv")
    assert {"attr/deeplift/share_user", "attr/shapley/share_gmf"} <= set(metrics.columns)
    assert not any("agreement" in c for c in metrics.columns)  # DeepLift and group Shapley: nothing that can vary
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(loggers[0].log_dir, size_guidance={"histograms": 0, "images": 0}).Reload()
    assert "attr/deeplift/gmf_user" in events.Tags()["histograms"]
    assert "attr/group_shares" in events.Tags()["images"]
    assert "attr/deeplift/deletion_gain" in events.Tags()["scalars"]
    assert "attr_evolution/totals_cosine_median" in events.Tags()["scalars"]
    # every series on the loggers' step axis: epoch -1 at step 0, epoch 0 at the step it ended on
    _, pairs = load_record(cb.out_dir)
    steps = sorted(pairs.groupby("epoch")["global_step"].first())
    assert steps == [0, trainer.global_step] and steps[1] > 0
    assert [e.step for e in events.Scalars("attr_evolution/totals_cosine_median")] == steps
    assert [e.step for e in events.Histograms("attr/deeplift/gmf_user")] == steps


def test_resume_cleanup_touches_only_the_records_own_files(tmp_path):
    from explain import record

    out = tmp_path / "rec"
    out.mkdir()
    for name in ("dims_epoch=1.parquet", "pairs_epoch=1.parquet", "history_epoch=2.parquet", "pairs_epoch=0.parquet",
                 ".pairs_epoch=2.parquet.abc123.tmp", "x_epoch=5.parquet", "notes_epoch=final.parquet", "mine.tmp"):
        (out / name).write_text("x")
    assert record.drop_epochs_after(out, 0) == [1, 2]
    assert sorted(p.name for p in out.iterdir()) == ["mine.tmp", "notes_epoch=final.parquet", "pairs_epoch=0.parquet",
                                                     "x_epoch=5.parquet"]


def test_a_checkpoint_does_not_choose_where_the_callback_writes(tmp_path):
    from explain import record

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "pairs_epoch=3.parquet").write_text("someone else's file")
    record.write_manifest(victim, {"format": record.FORMAT + ", version 1"})  # even a real record folder
    cb = AttributionCallback()
    cb.load_state_dict({"out_dir": str(victim), "probe": None})
    assert cb.out_dir is None  # the default (beside the checkpoints, or under the logger) is used instead
    configured = AttributionCallback(out_dir=str(tmp_path / "mine"))
    configured.load_state_dict({"out_dir": str(victim)})
    assert configured.out_dir == str(tmp_path / "mine")
    assert (victim / "pairs_epoch=3.parquet").read_text() == "someone else's file"


def test_a_new_run_moves_another_runs_record_aside(tmp_path, tiny):
    """A second fresh run in the same folders: the first run's checkpoints and record are moved, whole, to
    superseded/<first run id>/; the folders then hold the second run only."""
    from explain.record import run_id_of
    from ncf.run import run_of

    first, _ = _fit(tmp_path, tiny, [_cb(None)], epochs=2)
    out = tmp_path / "attributions"
    assert run_id_of(out) == first.run_id and recorded_epochs(out) == [-1, 0, 1]
    (out / ".pairs_epoch=1.parquet.abc.tmp").write_bytes(b"partial")  # an interrupted write of that run
    second, _ = _fit(tmp_path, tiny, [_cb(None)], epochs=1)
    assert second.run_id != first.run_id
    assert run_id_of(out) == second.run_id and recorded_epochs(out) == [-1, 0]
    assert not list(out.glob(".*"))
    old = tmp_path / "superseded" / first.run_id
    assert recorded_epochs(old / "attributions") == [-1, 0, 1] and run_id_of(old / "attributions") == first.run_id
    assert sorted(p.name for p in (old / "ckpt").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert run_of(old / "ckpt" / "last.ckpt")["id"] == first.run_id
    assert run_of(tmp_path / "ckpt" / "last.ckpt")["id"] == second.run_id


def test_fit_writes_the_report_and_a_killed_run_is_partial(tmp_path, tiny):
    import json

    from explain.cli import main as explain_main

    out = tmp_path / "done" / "rec"
    _fit(tmp_path / "done", tiny, [_cb(out, methods=["deeplift", "shapley"])], epochs=3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["finished"] is True and manifest["epochs_recorded"] == [-1, 0, 1, 2]
    page = (out / "report.html").read_text()
    assert "panel-settle" in page and "Partial record" not in page and "<script" not in page
    faith = page[page.index('id="run-0-panel-faithfulness"'):page.index('id="run-0-panel-probe"')]
    assert "deletion_gain (deeplift and the other methods)" in faith and "shapley: median" in faith
    evo = pd.read_csv(out / "evolution.csv")
    assert list(evo["epoch"]) == [-1, 0, 1, 2] and evo["totals_cosine_median"].iloc[-1] == pytest.approx(1.0)
    # faithfulness at epoch -1, every 5th epoch and the last: here -1 and 2
    _, pairs = load_record(out)
    assert sorted(pairs.dropna(subset=["deletion_gain"])["epoch"].unique()) == [-1, 2]

    killed = tmp_path / "killed" / "rec"
    with pytest.raises(_Killed):
        _fit(tmp_path / "killed", tiny, [_cb(killed, methods=["deeplift", "shapley"]), _KillAfterCheckpoint(1)], epochs=3)
    assert not (killed / "report.html").exists()
    assert explain_main(["report", str(killed.parent)]) == 0
    assert "Partial record" in (killed / "report.html").read_text()


def test_every_epoch_file_has_the_faithfulness_columns(tmp_path, tiny):
    """Faithfulness is computed every few epochs; the columns are in every pairs file (empty between), so
    reading the files together keeps them whatever file comes first."""
    import glob

    from explain.faithfulness import COLUMNS

    out = tmp_path / "rec"
    _fit(tmp_path, tiny, [_cb(out)])
    files = sorted(glob.glob(str(out / "pairs_epoch=*.parquet")))
    for f in files:
        assert set(COLUMNS) <= set(pd.read_parquet(f).columns), f
    whole = pd.read_parquet(files)
    assert whole.loc[whole.epoch == 0, "deletion_gain"].isna().all()
    assert whole.loc[whole.epoch == -1, "deletion_gain"].notna().all()


def test_a_finished_record_of_another_run_in_out_dir_is_moved_aside_never_deleted(tmp_path, tiny):
    """Two runs given one out_dir: the second moves the first's finished record to superseded/<run id>/,
    also when the first run's checkpoints are elsewhere (nothing of this trainer's could continue it)."""
    from explain.record import read_manifest

    out = tmp_path / "shared" / "attributions"
    _fit(tmp_path / "a", tiny, [_cb(out, methods=["deeplift"])], epochs=2)
    first = read_manifest(out)["run"]["id"]
    _fit(tmp_path / "b", tiny, [_cb(out, methods=["deeplift"])], epochs=1, dropout=0.1)  # another run
    assert read_manifest(out)["run"]["id"] != first
    kept = tmp_path / "shared" / "superseded" / first / "attributions"
    assert read_manifest(kept)["finished"] and recorded_epochs(kept) == [-1, 0, 1]


def test_every_validated_epoch_is_kept_for_the_best_epoch_also_across_a_resume(tmp_path, tiny):
    """The record attributes every 3rd epoch; the report's best validation epoch is over every epoch the run
    validated (the finished manifest keeps them all, a resume included), not over the recorded ones."""
    from explain.evolution import best_val_epoch, run_validation
    from explain.record import Record, read_manifest

    out = tmp_path / "run" / "attributions"
    with pytest.raises(_Killed):
        _fit(tmp_path / "run", tiny, [_KillAfterCheckpoint(3), _cb(None, methods=["deeplift"], every_n_epochs=3)],
             epochs=5, every_epoch=True)
    _fit(tmp_path / "run", tiny, [_cb(None, methods=["deeplift"], every_n_epochs=3)], epochs=5,
         ckpt_path=str(tmp_path / "run" / "ckpt" / "last.ckpt"), every_epoch=True)
    assert recorded_epochs(out) == [-1, 2, 4]
    kept = read_manifest(out)["validation"]
    assert sorted(kept, key=int) == ["0", "1", "2", "3", "4"] and all("val_ndcg10" in m for m in kept.values())
    full = _fit(tmp_path / "full", tiny, [], epochs=5, every_epoch=True)[1]  # the same run without a kill
    val = run_validation(Record.read(out))
    assert val["epoch"].tolist() == [0, 1, 2, 3, 4]
    assert best_val_epoch(val) == int(val.loc[val["val_ndcg10"].idxmax(), "epoch"])
    assert abs(float(val["val_ndcg10"].iloc[-1]) - float(full.callback_metrics["val_ndcg10"])) < 1e-6


def test_a_record_of_per_group_methods_only_is_summarised_and_reported(tmp_path, tiny):
    """Exact Shapley alone attributes groups, not dimensions: its dims files hold the columns and no rows,
    and the end of fit writes the summary, the evolution table and the report as for any record."""
    from explain.record import Record

    rec = tmp_path / "rec"
    _fit(tmp_path, tiny, [AttributionCallback(methods=["shapley"], num_probe_users=4, out_dir=str(rec), plots=True)],
         epochs=2)
    dims = pd.read_parquet(rec / "dims_epoch=1.parquet")
    assert len(dims) == 0 and {"epoch", "method", "pair", "embedding", "dim", "attribution"} <= set(dims.columns)
    for name in ("summary.csv", "evolution.csv", "report.html"):
        assert (rec / name).is_file(), name
    loaded = Record.read(rec)
    assert set(loaded.pairs["method"]) == {"shapley"} and sorted(loaded.pairs["epoch"].unique()) == [-1, 0, 1]
    page = (rec / "report.html").read_text()
    assert "shapley" in page and "Traceback" not in page


def test_an_epoch_cut_short_and_resumed_is_recorded_at_its_end(tmp_path, tiny):
    """max_steps stops a run within epoch 1, off the every-3-epochs schedule (the record holds that epoch as
    trained so far, as the last epoch trained, and the manifest says so); resumed, the run trains the epoch's other
    batches, and its record is the uninterrupted run's: epoch 1 is off the schedule again, epoch 2 the same."""
    dm = NCFDataModule(str(tiny), batch_size=64, num_eval_negatives=20)
    dm.setup("fit")
    per_epoch = len(dm.train_dataloader())
    cb = dict(methods=["deeplift"], num_probe_users=4, faithfulness=False, report=False, every_n_epochs=3)
    _fit(tmp_path / "full", tiny, [AttributionCallback(out_dir=str(tmp_path / "full" / "rec"), **cb)], epochs=3,
         every_epoch=True, max_steps=3 * per_epoch)
    out = tmp_path / "cut" / "rec"
    _fit(tmp_path / "cut", tiny, [AttributionCallback(out_dir=str(out), **cb)], epochs=3, every_epoch=True,
         max_steps=per_epoch + 1)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["last_epoch_cut_short"] == {"epoch": 1, "batches": 1, "of": per_epoch}
    assert recorded_epochs(out) == [-1, 1]
    _fit(tmp_path / "cut", tiny, [AttributionCallback(out_dir=str(out), **cb)], epochs=3, every_epoch=True,
         max_steps=3 * per_epoch, ckpt_path=str(tmp_path / "cut" / "ckpt" / "last.ckpt"))
    assert recorded_epochs(out) == recorded_epochs(tmp_path / "full" / "rec") == [-1, 2]
    full = pd.read_parquet(tmp_path / "full" / "rec" / "pairs_epoch=2.parquet")
    resumed = pd.read_parquet(out / "pairs_epoch=2.parquet")
    assert int(resumed["global_step"].iloc[0]) == 3 * per_epoch
    for col in ("prediction", "stability", "val_ndcg10"):
        np.testing.assert_allclose(resumed[col].to_numpy(), full[col].to_numpy(), rtol=0, atol=1e-6, err_msg=col)
    assert json.loads((out / "manifest.json").read_text())["last_epoch_cut_short"] is None


def test_a_pair_listed_twice_or_already_drawn_is_recorded_once(tiny, caplog):
    import logging

    from explain.probe import make_probe

    dm = NCFDataModule(str(tiny), batch_size=64, num_eval_negatives=20)
    dm.setup("fit")
    drawn = make_probe(dm.split, dm.interactions, 2, 0, [])
    first = [drawn["user_id"][0], drawn["item_id"][0]]  # a drawn validation pair, listed again
    with caplog.at_level(logging.INFO, logger="ncf"):
        probe = make_probe(dm.split, dm.interactions, 2, 0, [["u1", "m3"], first, ["u1", "m3"]])
    pairs = list(zip(probe["user_id"], probe["item_id"]))
    assert len(pairs) == len(set(pairs)) == len(drawn["user_id"]) + 1 and probe["kind"][-1] == "listed"
    said = " ".join(caplog.messages)
    assert "is already in the probe set (pair 0, validation positive); recorded once" in said
    assert f"probe pair ['u1', 'm3'] is already in the probe set (pair {len(pairs) - 1}, listed)" in said


def test_a_killed_runs_record_keeps_every_validated_epoch(tmp_path, tiny):
    class Kill(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 4:
                raise RuntimeError("killed")

    out = tmp_path / "rec"
    cb = AttributionCallback(methods=["deeplift"], num_probe_users=4, out_dir=str(out), faithfulness=False,
                             every_n_epochs=2)
    with pytest.raises(RuntimeError, match="killed"):
        _fit(tmp_path, tiny, [cb, Kill()], epochs=6)
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest.get("finished") and recorded_epochs(out) == [-1, 1, 3]
    assert sorted(manifest["validation"], key=int) == ["0", "1", "2", "3"]  # the epochs between records too
