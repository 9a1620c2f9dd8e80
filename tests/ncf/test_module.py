"""Real training through Lightning: the CLI, a short ML-100k run, resume after a kill, checkpoints."""
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from ncf import NCFDataModule, NCFModule
from ncf.checkpoint import CheckpointError, load_network
from ncf.errors import ConfigError
from ncf.cli import main as cli_main
from ncf.loaders import TrainLoader
from tests.conftest import write_tiny
from tests.helpers import module as make_module

REPO = Path(__file__).resolve().parents[2]


def test_train_loader_fresh_negatives_and_ddp_shards():
    users, items = torch.arange(6).repeat_interleave(2), torch.arange(12) % 7
    loader = TrainLoader(users, items, n_items=9, num_negatives=3, batch_size=5, seed=1)
    loader.sampler.set_epoch(0)
    e0 = [torch.stack(b[:2]) for b in loader]
    loader.sampler.set_epoch(1)
    e1 = [torch.stack(b[:2]) for b in loader]
    loader.sampler.set_epoch(0)
    again = [torch.stack(b[:2]) for b in loader]
    assert all(torch.equal(a, b) for a, b in zip(e0, again))
    assert not all(torch.equal(a, b) for a, b in zip(e0, e1))
    labels = torch.cat([b[2] for b in loader])
    assert labels.sum().item() == 12 and len(labels) == 48
    # Two ranks: each its own users' positives (together all of them) and negatives, the same number of steps.
    shards = [TrainLoader(users, items, 9, 3, 5, seed=1, rank=r, world_size=2) for r in (0, 1)]
    got = [list(s) for s in shards]
    assert len(got[0]) == len(got[1]) == math.ceil(len(e0) / 2)
    pos = [{tuple(p) for b in g for p in torch.stack(b[:2], 1)[b[2] == 1].tolist()} for g in got]
    assert not pos[0] & pos[1] and pos[0] | pos[1] == set(zip(users.tolist(), items.tolist()))


def test_train_loader_skips_rows_left_out():
    # Three users with four items each of six; user 0's items 1 and 2 are left out, as if never had.
    users, items = torch.arange(3).repeat_interleave(4), torch.tensor([0, 1, 2, 3, 1, 2, 3, 4, 0, 2, 4, 5])
    full = TrainLoader(users, items, 6, num_negatives=8, batch_size=7, seed=2)
    left = TrainLoader(users, items, 6, num_negatives=8, batch_size=7, seed=2,
                       skip=(torch.tensor([0, 0]), torch.tensor([1, 2])))
    kept = set(zip(users.tolist(), items.tolist())) - {(0, 1), (0, 2)}
    negatives = set()
    for epoch in range(3):
        full.set_epoch(epoch)
        left.set_epoch(epoch)
        batches = list(left)
        assert len(batches) == len(list(full)) == len(left)
        pairs = [(u, i, y) for b in batches for u, i, y in zip(*(t.tolist() for t in b))]
        assert sorted((u, i) for u, i, y in pairs if y == 1) == sorted(kept)  # each kept row once, no left-out one
        assert len(pairs) == len(kept) + 12 * 8  # negatives still drawn for every training row
        negatives |= {(u, i) for u, i, y in pairs if y == 0}
        assert not negatives & kept
    assert {(0, 1), (0, 2)} <= negatives  # the left-out items are the user's negatives now


def _trainer(tmp_path, max_epochs, callbacks=(), **kw):
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="best", monitor="val_ndcg10", mode="max", save_last=True)
    return pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[ckpt, *callbacks], default_root_dir=str(tmp_path), **kw)


def _dm(ml_root):
    return NCFDataModule("ml-100k", root=str(ml_root), batch_size=4096)


def _module(dm, model="gmf"):
    return make_module(model, dm.num_users, dm.num_items, factor=8, lr=0.01)


def test_short_ml100k_run_beats_random(ml_root, tmp_path):
    pl.seed_everything(0)
    dm = _dm(ml_root)
    module = _module(dm, "neumf")
    trainer = _trainer(tmp_path, 3)
    trainer.fit(module, dm)
    assert trainer.callback_metrics["val_hr10"] > 0.35  # random ranking gives 0.10
    res = trainer.test(module, dm, ckpt_path="best", verbose=False)[0]
    assert res["test_hr10"] > 0.35 and 0 < res["test_ndcg10"] < res["test_hr10"]


class _Killed(RuntimeError):
    pass


class _Kill(pl.Callback):
    """Dies at the start of an epoch, after the previous epoch's checkpoint was written."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise _Killed(f"killed at the start of epoch {self.epoch}")


def test_resume_matches_uninterrupted(ml_root, tmp_path):
    pl.seed_everything(7)
    dm = _dm(ml_root)
    full = _trainer(tmp_path / "a", 4)
    m_full = _module(dm)
    full.fit(m_full, dm)

    pl.seed_everything(7)
    first = _trainer(tmp_path / "b", 4, callbacks=[_Kill(2)])
    with pytest.raises(_Killed):
        first.fit(_module(dm), dm)
    assert first.current_epoch == 2
    # A new process would re-seed and rebuild everything from the config.
    pl.seed_everything(7)
    resumed = _trainer(tmp_path / "b", 4)
    m_res = _module(dm)
    resumed.fit(m_res, dm, ckpt_path="last")
    assert resumed.current_epoch == 4
    for a, b in zip(m_full.parameters(), m_res.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert full.callback_metrics["val_ndcg10"] == resumed.callback_metrics["val_ndcg10"]


def test_cli_configs_parse_and_train(ml_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NCF_DATA_DIR", str(ml_root))
    for name in ("gmf", "mlp", "neumf", "neumf_pretrained", "neumf_paper"):
        cli = cli_main(["--config", str(REPO / "configs" / f"{name}.yaml")], run=False)
        assert cli.model.hparams.n_users == 943 and cli.model.hparams.n_items == 1682
    cli_main(["--config", str(REPO / "configs" / "gmf.yaml"), "--torch_threads", "2"], run=False)
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    assert (torch.tensor([1e-39]) * 1.0).item() == 0.0  # float32 denormals are flushed by default
    cli_main(["--config", str(REPO / "configs" / "gmf.yaml"), "--flush_denormal", "false"], run=False)
    assert (torch.tensor([1e-39]) * 1.0).item() > 0.0
    torch.set_flush_denormal(True)
    cli = cli_main(["--config", str(REPO / "configs" / "gmf.yaml"), "--trainer.max_epochs", "1",
                    "--trainer.enable_progress_bar", "false"], run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    ckpt = Path("runs/ml-100k/gmf/checkpoints")
    assert (ckpt / "last.ckpt").exists() and (ckpt / "best.ckpt").exists()
    assert list(Path("runs/ml-100k/gmf").glob("version_*/metrics.csv"))
    net, raw = load_network(ckpt / "best.ckpt")
    assert type(net).__name__ == "GMF"
    assert raw["NCFDataModule"]["user_ids"][:2] == [1, 2]  # the id mapping travels with the checkpoint
    with pytest.raises(CheckpointError, match="holds a GMF, but a MLP"):
        from ncf.models import MLP
        load_network(ckpt / "best.ckpt", expect=MLP)


def test_tiny_csv_fit_and_pretrain(tmp_path):
    """NeuMF pretraining from GMF + MLP checkpoints, on a file of string ids, end to end."""
    path = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    dm = NCFDataModule(str(path), batch_size=64, num_eval_negatives=20)
    paths = {}
    for name in ("gmf", "mlp"):
        pl.seed_everything(0)
        t = _trainer(tmp_path / name, 2)
        t.fit(make_module(name, dm.num_users, dm.num_items, factor=4, num_layers=2), dm)
        paths[name] = str(tmp_path / name / "ckpt" / "best.ckpt")
    pl.seed_everything(0)
    neumf = make_module("neumf", dm.num_users, dm.num_items, factor=4, num_layers=2, optimizer="sgd",
                      pretrained_gmf=paths["gmf"], pretrained_mlp=paths["mlp"])
    t = _trainer(tmp_path / "neumf", 1, limit_train_batches=0)  # setup + validation only: weights as loaded
    t.fit(neumf, dm)
    gmf, _ = load_network(paths["gmf"])
    assert torch.equal(neumf.net.gmf.user_embedding.weight, gmf.user_embedding.weight)
    with pytest.raises(ConfigError, match="pretrained_gmf .*mlp.* do not fit this NeuMF \\(the pretrained GMF is a MLP\\)"):
        make_module("neumf", dm.num_users, dm.num_items, factor=4, num_layers=2,
                  pretrained_gmf=paths["mlp"], pretrained_mlp=paths["mlp"]).load_pretrained(paths["mlp"], paths["mlp"])


def test_bad_checkpoints(tmp_path):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_network(bad)
    torch.save({"state_dict": {}, "hyper_parameters": {"model": "resnet"}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a checkpoint of an ncf-explain model"):
        load_network(tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_network(tmp_path / "missing.ckpt")


def test_train_loader_shares_under_ddp():
    """Two ranks' loaders: disjoint users, together every training row, about half the samples each, the
    same number of steps, and negatives that are never a positive of their user."""
    from ncf.loaders import TrainLoader, user_shares
    from ncf.sampling import pair_keys

    gen = torch.Generator().manual_seed(0)
    users = torch.repeat_interleave(torch.arange(30), torch.randint(3, 40, (30,), generator=gen))
    items = torch.cat([torch.randperm(60, generator=gen)[:n] for n in torch.bincount(users).tolist()])
    one = TrainLoader(users, items, 60, num_negatives=4, batch_size=64, seed=3)
    ranks = [TrainLoader(users, items, 60, num_negatives=4, batch_size=32, seed=3, rank=r, world_size=2) for r in (0, 1)]
    owner = user_shares(users, 2)
    assert set(owner.tolist()) == {0, 1}
    mine = [set(r.users.tolist()) for r in ranks]
    assert not mine[0] & mine[1] and mine[0] | mine[1] == set(users.tolist())
    assert len(ranks[0].users) + len(ranks[1].users) == len(users)
    assert abs(len(ranks[0].users) - len(ranks[1].users)) <= 40  # balanced by rows
    assert sum(r.samples_per_epoch for r in ranks) == one.samples_per_epoch
    assert len(ranks[0]) == len(ranks[1])
    positives = set(pair_keys(users, items, 60).tolist())
    for r in ranks:
        r.set_epoch(2)
        b_users, b_items, b_labels = (torch.cat(t) for t in zip(*r))
        neg = b_labels == 0
        assert not set(pair_keys(b_users[neg], b_items[neg], 60).tolist()) & positives
        assert set(b_users.tolist()) <= set(r.users.tolist())
    a, b = (torch.cat([x[1] for x in r]) for r in ranks)  # ranks draw from different streams
    assert not torch.equal(a[: min(len(a), len(b))], b[: min(len(a), len(b))])


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_validation_scores_the_weights_of_its_epoch(tmp_path, optimizer, monkeypatch):
    # Each validation folds the tables once (a scoring pass) from that epoch's weights: fused Adam updates
    # them without counting versions, so a kept fold must never outlive its pass.
    from ncf import fused

    data = write_tiny(tmp_path / "t.csv", n_users=40, n_items=60, per_user=12)
    pl.seed_everything(0)
    dm = NCFDataModule(str(data), batch_size=256, eval_batch_size=8, num_eval_negatives=20)
    dm.setup("fit")
    module = make_module("mlp", dm.num_users, dm.num_items, factor=4, num_layers=2, optimizer=optimizer, lr=0.05)
    trainer = _trainer(tmp_path, 3)
    trainer.fit(module, dm)
    last = {k: float(trainer.callback_metrics[k]) for k in ("val_hr10", "val_ndcg10")}
    fresh = make_module("mlp", dm.num_users, dm.num_items, factor=4, num_layers=2)
    fresh.load_state_dict(module.state_dict())
    calls = []
    fold = fused._folded_tables
    monkeypatch.setattr(fused, "_folded_tables", lambda m: calls.append(1) or fold(m))
    reference = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                           enable_model_summary=False).validate(fresh, dm, verbose=False)[0]
    assert len(calls) == 1  # five validation batches, one fold
    assert last == {k: reference[k] for k in last}


def test_test_logs_the_epoch_of_the_weights_it_tests(tmp_path):
    """metrics.csv's `epoch` of a test is the trainer's own count (0 for a fresh trainer): checkpoint_epoch
    says which epoch's weights were tested, and only when they are a checkpoint's."""
    import pandas as pd
    from pytorch_lightning.loggers import CSVLogger

    path = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    dm = NCFDataModule(str(path), batch_size=64, num_eval_negatives=20)
    pl.seed_everything(0)
    fit = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                     callbacks=[ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="x", save_last=True)])
    module = make_module("gmf", dm.num_users, dm.num_items, factor=4)
    fit.fit(module, dm)
    logger = CSVLogger(str(tmp_path / "logs"), name="", version=0)
    pl.Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False, enable_model_summary=False).test(
        make_module("gmf", dm.num_users, dm.num_items, factor=4), dm, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    row = pd.read_csv(tmp_path / "logs" / "version_0" / "metrics.csv").iloc[-1]
    assert row["checkpoint_epoch"] == 2 and row["epoch"] == 0 and "test_hr10" in row
    fit.test(module, dm, verbose=False)  # the trained weights in memory: no checkpoint's epoch to name
    assert "checkpoint_epoch" not in fit.callback_metrics


def test_a_run_stopped_within_an_epoch_resumes_with_the_batches_it_had_not_trained(tmp_path):
    """max_steps (or max_time) can stop a run within an epoch: resumed, it trains that epoch's remaining
    batches, the ones an uninterrupted run trains, and ends with the same weights."""
    path = write_tiny(tmp_path / "tiny.csv", n_users=40, n_items=60, per_user=10)
    dm = NCFDataModule(str(path), batch_size=32, num_eval_negatives=20)
    dm.setup("fit")
    per_epoch = len(dm.train_dataloader())
    assert per_epoch >= 5
    stop, total = per_epoch + 2, 2 * per_epoch  # within the second epoch, the last

    def run(folder, max_steps, ckpt_path=None):
        pl.seed_everything(3)
        module = make_module("neumf", dm.num_users, dm.num_items, factor=4, num_layers=2, dropout=0.2, lr=0.01)
        last = ModelCheckpoint(dirpath=str(folder), filename="last", monitor="epoch", mode="max")  # as the configs
        trainer = pl.Trainer(max_epochs=10, max_steps=max_steps, accelerator="cpu", logger=False, callbacks=[last],
                             enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(folder))
        trainer.fit(module, dm, ckpt_path=ckpt_path)
        return trainer, module

    full, m_full = run(tmp_path / "a", total)
    first, _ = run(tmp_path / "b", stop)
    saved = torch.load(tmp_path / "b" / "last.ckpt", weights_only=True)
    assert first.global_step == saved["global_step"] == stop and saved["epoch"] == 1  # within epoch 1
    resumed, m_res = run(tmp_path / "b", total, str(tmp_path / "b" / "last.ckpt"))
    assert resumed.global_step == total and resumed.current_epoch == full.current_epoch
    for a, b in zip(m_full.parameters(), m_res.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the loss logged for the last epoch is the whole epoch's mean, its batches before the stop included
    assert float(resumed.callback_metrics["train_loss"]) == pytest.approx(float(full.callback_metrics["train_loss"]),
                                                                           rel=1e-6)
