"""Recent positives weighted more: each training row's recency in the split, and the data module repeating
each user's latest training rows (--data.recent_positives, --data.recent_weight)."""
from collections import Counter

import numpy as np
import pytest

from ncf import NCFDataModule
from ncf.datasets import DataError, Interactions
from ncf.run import defining
from ncf.splits import leave_one_out


def _two_users() -> Interactions:
    # user a at times 5, 1, 3, 9, 7 (items 0-4); user b at times 2, 4, 6, 8 (items 0-3)
    return Interactions(np.array([0, 0, 0, 0, 0, 1, 1, 1, 1]), np.array([0, 1, 2, 3, 4, 0, 1, 2, 3]),
                        np.array([5, 1, 3, 9, 7, 2, 4, 6, 8]), ["a", "b"], [f"i{k}" for k in range(7)])


@pytest.mark.parametrize("validation_item", ["previous", "random"])
def test_recency_counts_the_users_later_training_rows(validation_item):
    split = leave_one_out(_two_users(), True, 1, 0, False, "latest", validation_item)
    inter = _two_users()
    time = {(u, i): t for u, i, t in zip(inter.users.tolist(), inter.items.tolist(), inter.timestamps.tolist())}
    rows = list(zip(split.train_users.tolist(), split.train_items.tolist()))
    for (u, i), r in zip(rows, split.train_recency.tolist()):  # by hand: the user's training rows after this one
        assert r == sum(1 for (v, j) in rows if v == u and time[(v, j)] > time[(u, i)]), (u, i, r)
    if validation_item == "previous":  # a: 3 (time 9) tests, 4 (7) validates; b: 3 tests, 2 validates
        assert dict(zip(rows, split.train_recency.tolist())) == {(0, 0): 0, (0, 2): 1, (0, 1): 2, (1, 1): 0, (1, 0): 1}
    assert leave_one_out(_two_users(), True, 1, 0, False, "random", validation_item).train_recency is None


def test_recent_positives_are_drawn_recent_weight_times(tiny_csv):
    dm = NCFDataModule(str(tiny_csv), num_negatives=2, num_eval_negatives=5, recent_positives=2, recent_weight=3)
    dm.setup()
    split = dm.split
    users, items = dm._weighted_positives()
    drawn = Counter(zip(users.tolist(), items.tolist()))
    for u, i, r in zip(split.train_users.tolist(), split.train_items.tolist(), split.train_recency.tolist()):
        assert drawn[(u, i)] == (3 if r < 2 else 1), (u, i, r)
    assert len(users) == len(split.train_users) + 2 * 2 * dm.num_users  # every user has 2 recent rows, 2 more copies
    # the training loader takes them, and a user's negatives are still never one of their positives
    loader = dm.train_dataloader()
    assert len(loader.users) == len(users)
    positives = set(zip(split.train_users.tolist(), split.train_items.tolist()))
    for u, i, label in zip(*next(iter(loader))):
        assert label == 1 or (int(u), int(i)) not in positives


def test_off_by_default_and_the_run_identity_unchanged(tiny_csv):
    dm = NCFDataModule(str(tiny_csv), num_eval_negatives=5)
    dm.setup()
    users, items = dm._weighted_positives()
    assert users is dm.split.train_users and items is dm.split.train_items
    hp = dict(dm.hparams)
    old = {k: v for k, v in hp.items() if k not in ("recent_positives", "recent_weight")}  # a checkpoint from before
    assert defining({}, hp, None, None) == defining({}, old, None, None)
    assert defining({}, {**hp, "recent_positives": 10, "recent_weight": 3}, None, None) != defining({}, old, None, None)


def test_bad_settings_and_data_without_time_are_one_clear_error(tmp_path, tiny_csv):
    with pytest.raises(DataError, match=r"recent_positives must be at least 0 and recent_weight at least 1, not 2 "
                                        r"and 0 \(--data.recent_positives, --data.recent_weight\)"):
        NCFDataModule(str(tiny_csv), recent_positives=2, recent_weight=0)
    no_time = tmp_path / "no_time.csv"
    no_time.write_text("\n".join(",".join(line.split(",")[:2]) for line in tiny_csv.read_text().splitlines()) + "\n")
    dm = NCFDataModule(str(no_time), num_eval_negatives=5, timestamp_col=None, recent_positives=2, recent_weight=3)
    with pytest.raises(DataError, match=r"needs to know which interactions are recent, and this split holds out "
                                        r"random items: give the data a time column"):
        dm.setup()  # as the data is read: before a fit moves an earlier run's checkpoints aside


def test_a_refused_fit_leaves_the_earlier_runs_checkpoints_where_they_are(tmp_path, tiny_csv, monkeypatch):
    from pathlib import Path

    from ncf.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    no_time = tmp_path / "notime.csv"
    no_time.write_text("\n".join(",".join(line.split(",")[:2]) for line in tiny_csv.read_text().splitlines()) + "\n")
    repo = Path(__file__).resolve().parents[2]
    args = ["fit", "--config", str(repo / "configs" / "gmf.yaml"), "--data.dataset", str(no_time), "--data.num_eval_negatives",
            "5", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    cli_main(args)
    with pytest.raises(SystemExit):
        cli_main([*args, "--data.recent_positives", "2", "--data.recent_weight", "3"])
    assert Path("runs/notime/gmf/checkpoints/best.ckpt").is_file() and not Path("runs/notime/gmf/superseded").exists()


def test_mf_recent_config_draws_each_users_ten_latest_five_times_on_movielens(ml_root, monkeypatch, tmp_path):
    from pathlib import Path

    import torch

    from ncf.cli import main as cli_main
    from ncf.objectives import SampledSoftmax

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NCF_DATA_DIR", str(ml_root))
    repo = Path(__file__).resolve().parents[2]
    cli = cli_main(["--config", str(repo / "configs" / "mf_recent.yaml")], run=False)
    dm = cli.datamodule
    assert type(cli.model.net).__name__ == "MF" and isinstance(cli.model.objective, SampledSoftmax)
    assert (dm.hparams.recent_positives, dm.hparams.recent_weight, dm.hparams.validation_item) == (10, 5, "random")
    dm.setup()
    users, _ = dm._weighted_positives()
    per_user = torch.bincount(dm.split.train_users, minlength=dm.num_users)
    assert len(users) == len(dm.split.train_users) + 4 * int(per_user.clamp(max=10).sum())
    assert len(dm.split.train_users) == 98_114  # MovieLens-100k less each user's test and validation item


def test_the_counterfactual_fine_tunes_with_the_weighting_it_was_trained_with(tmp_path, tiny_csv, monkeypatch):
    """explain.py --counterfactual fine-tunes on the rows training drew: recent ones repeated, and a removed
    recent positive is skipped in every copy."""
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import ModelCheckpoint

    import explain.counterfactual as cf
    from tests.helpers import module as make_module

    dm = NCFDataModule(str(tiny_csv), batch_size=16, num_eval_negatives=5, recent_positives=2, recent_weight=3)
    pl.seed_everything(0)
    ck = ModelCheckpoint(dirpath=str(tmp_path / "c"), filename="last")
    pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
               callbacks=[ck], default_root_dir=str(tmp_path)).fit(
        make_module("gmf", dm.num_users, dm.num_items, factor=4, lr=0.01), dm)
    seen = []
    real = cf.TrainLoader

    def spy(users, items, *args, **kwargs):
        seen.append(real(users, items, *args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(cf, "TrainLoader", spy)
    sp = dm.split
    latest = int(torch.nonzero(sp.train_recency == 0)[0])  # a user's latest training row: drawn 3 times
    u, i = sp.train_users[latest:latest + 1], sp.train_items[latest:latest + 1]
    cf.finetune_without(str(tmp_path / "c" / "last.ckpt"), sp, u, i, epochs=1, batch_size=16,
                        recent_positives=2, recent_weight=3)
    loader = seen[-1]
    assert len(loader.users) == len(dm._weighted_positives()[0])
    copies = (loader.users == u) & (loader.items == i)
    assert int(copies.sum()) == 3 and bool(loader.skipped[copies].all())
    cf.counterfactual(str(tmp_path / "c" / "last.ckpt"), sp, [(int(u), int(i))], [[int(i)]], k=1, epochs=1,
                      data_hparams=dict(dm.hparams))
    assert all(len(ld.users) == len(dm._weighted_positives()[0]) for ld in seen[1:])


def test_history_influence_counts_each_interaction_as_often_as_training_drew_it(tiny_csv):
    """TracIn sums over the steps an example took: a recent interaction drawn W times an epoch weighs W times."""
    from types import SimpleNamespace

    import torch

    from explain.explaining import _draws
    from explain.history import EpochModel, history_influence
    from explain.loading import Context
    from ncf.models import GMF

    dm = NCFDataModule(str(tiny_csv), num_eval_negatives=5, recent_positives=2, recent_weight=3)
    dm.setup()
    sp = dm.split
    user = int(sp.train_users[0])
    history = torch.sort(sp.train_items[sp.train_users == user]).values
    ctx = Context(None, None, split=sp)
    draws = _draws(SimpleNamespace(dm_hparams=dict(dm.hparams)), ctx, user, history)
    recency = dict(zip(sp.train_items[sp.train_users == user].tolist(), sp.train_recency[sp.train_users == user].tolist()))
    assert draws.tolist() == [3 if recency[h] < 2 else 1 for h in history.tolist()] and int((draws == 3).sum()) == 2
    assert _draws(SimpleNamespace(dm_hparams={**dict(dm.hparams), "recent_weight": 1}), ctx, user, history) is None
    torch.manual_seed(0)
    models = [EpochModel(0, GMF(dm.num_users, dm.num_items, 4).eval(), 0.1)]
    once = history_influence(models, user, 0, history)
    weighted = history_influence(models, user, 0, history, draws)
    assert torch.allclose(weighted.per_epoch, once.per_epoch * draws)


def test_the_callbacks_history_record_weighs_recent_interactions_as_training_drew_them(tiny_csv):
    import torch

    from explain.epoch_record import history_frame
    from ncf.models import GMF

    dm = NCFDataModule(str(tiny_csv), num_eval_negatives=5, recent_positives=2, recent_weight=3)
    dm.setup()
    sp, inter = dm.split, dm.interactions
    torch.manual_seed(0)
    net = GMF(dm.num_users, dm.num_items, 4).eval()
    probe = {"user_index": [0, 3], "item_index": [1, 2], "user_id": [inter.user_ids[0], inter.user_ids[3]],
             "item_id": [inter.item_ids[1], inter.item_ids[2]]}
    once = history_frame(net, sp, inter, probe, 0, 0.1)
    weighted = history_frame(net, sp, inter, probe, 0, 0.1, recent=(2, 3))
    rows = [(u, i) for u, i in zip(sp.train_users.tolist(), sp.train_items.tolist())]
    recency = dict(zip(rows, sp.train_recency.tolist()))
    index = {name: k for k, name in enumerate(inter.item_ids)}
    expected = [3 if recency[(probe["user_index"][p], index[h])] < 2 else 1
                for p, h in zip(weighted["pair"], weighted["history_item_id"])]
    assert sorted(set(expected)) == [1, 3]
    assert np.allclose(weighted["contribution"], once["contribution"] * np.array(expected))
