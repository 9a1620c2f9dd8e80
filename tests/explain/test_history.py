"""History influence (TracInCP over the embedding tables) against captum and a direct computation."""
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from explain.history import EpochModel, history_influence, tracin
from ncf.models import GMF, NeuMF
from tests.helpers import module as make_module


def _models(cls, n_users=5, n_items=7, epochs=3, **kw):
    out = []
    for e in range(epochs):
        torch.manual_seed(e)
        net = cls(n_users, n_items, 3, **kw).eval()
        for emb in net.modules():  # larger weights than the N(0, 0.01) start, so the terms are far from zero
            if isinstance(emb, nn.Embedding):
                nn.init.normal_(emb.weight, std=0.5)
        out.append(EpochModel(e, net, 0.1 * 0.9 ** e))
    return out


def _data():
    g = torch.Generator().manual_seed(0)
    train_u = torch.randint(0, 5, (30,), generator=g)
    train_i = torch.randint(0, 7, (30,), generator=g)
    test_u, test_i = torch.tensor([0, 3, 4]), torch.tensor([2, 6, 0])
    return train_u, train_i, test_u, test_i


def _direct(models, train_u, train_i, test_u, test_i):
    """The TracIn sum by its definition: gradients of each example's loss w.r.t. the embedding tables."""
    out = torch.zeros(len(test_u), len(train_u))
    for m in models:
        tables = [p for n, p in m.net.named_parameters() if "embedding" in n]

        def grad(u, i):
            logit = m.net(torch.tensor([u]), torch.tensor([i]))
            loss = nn.functional.binary_cross_entropy_with_logits(logit, torch.ones(1))
            return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, tables)])

        gtr = torch.stack([grad(u, i) for u, i in zip(train_u.tolist(), train_i.tolist())])
        gte = torch.stack([grad(u, i) for u, i in zip(test_u.tolist(), test_i.tolist())])
        out += m.lr * gte @ gtr.T
    return out


@pytest.mark.parametrize("cls,kw", [(GMF, {}), (NeuMF, {"num_layers": 2})])
def test_tracin_equals_the_direct_sum(cls, kw):
    models = _models(cls, **kw)
    train_u, train_i, test_u, test_i = _data()
    got = tracin(models, train_u, train_i, test_u, test_i)
    assert got.shape == (3, 3, 30)
    torch.testing.assert_close(got.sum(0), _direct(models, train_u, train_i, test_u, test_i), rtol=1e-4, atol=1e-7)


def test_a_network_whose_embedding_is_no_table_row_is_refused_not_explained_wrongly():
    """A layer inside embed() (a projection of the user's row) makes the tables' gradients other than the
    embeddings': TracIn over the rows a pair touches would be off (about 2x in a stranger's model)."""
    from ncf.errors import ConfigError
    from tests.ncf.test_contract_check import Dot, Projected

    train_u, train_i, test_u, test_i = _data()
    with pytest.raises(ConfigError, match=r"its embedding 'user' is not one row of its tables \(a layer inside "
                                          r"embed\(\)\?\), though it does not set embeddings_are_rows = False"):
        tracin([EpochModel(0, Projected(5, 7).eval(), 0.1)], train_u, train_i, test_u, test_i)
    assert tracin([EpochModel(0, Dot(5, 7).eval(), 0.1)], train_u, train_i, test_u, test_i).shape == (1, 3, 30)


def test_tracin_equals_captum_tracincp(tmp_path):
    from captum.influence import TracInCP

    models = _models(NeuMF, num_layers=2)
    train_u, train_i, test_u, test_i = _data()
    paths = []
    for m in models:
        paths.append(str(tmp_path / f"epoch={m.epoch}.pt"))
        torch.save({"state": m.net.state_dict(), "lr": m.lr}, paths[-1])
    net = NeuMF(5, 7, 3, 2).eval()

    def load(model, path):
        ck = torch.load(path, weights_only=True)
        model.load_state_dict(ck["state"])
        return ck["lr"]

    layers = ["gmf.user_embedding", "gmf.item_embedding", "mlp.user_embedding", "mlp.item_embedding"]
    train = TensorDataset(train_u, train_i, torch.ones(len(train_u)))
    tracincp = TracInCP(net, train, paths, checkpoints_load_func=load, layers=layers,
                        loss_fn=nn.BCEWithLogitsLoss(reduction="none"), batch_size=1)
    ref = tracincp.influence((test_u, test_i, torch.ones(len(test_u))))
    torch.testing.assert_close(tracin(models, train_u, train_i, test_u, test_i).sum(0), ref, rtol=1e-4, atol=1e-7)


def test_restricting_to_rows_of_the_user_or_item_keeps_the_ranking():
    """Rows sharing neither the user nor the item have exactly zero influence: the user's history ranks the
    same whether the sum runs over it alone or over the whole training set."""
    models = _models(NeuMF, num_layers=2)
    train_u, train_i, _, _ = _data()
    user, item = 0, 6
    full = _direct(models, train_u, train_i, torch.tensor([user]), torch.tensor([item]))[0]
    unrelated = (train_u != user) & (train_i != item)
    assert full[unrelated].abs().max() < 1e-9
    mine = train_u == user
    history = train_i[mine]
    h = history_influence(models, user, item, history)
    torch.testing.assert_close(h.influence, full[mine], rtol=1e-4, atol=1e-7)
    assert torch.equal(h.order, torch.sort(full[mine], descending=True, stable=True).indices)
    assert h.per_epoch.shape == (3, len(history)) and h.epochs == [0, 1, 2]
    assert 0 < h.top_share(1) <= 1


def test_callback_records_history_that_sums_to_tracin(tmp_path):
    """The callback's per-epoch terms are each epoch's TracIn term; their running total is the TracIn sum
    over the per-epoch checkpoints that explain.py --history reads."""
    import pandas as pd
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from explain import AttributionCallback
    from explain.history import load_epoch_models
    from ncf import NCFDataModule, NCFModule
    from ncf.checkpoint import read_checkpoint
    from tests.conftest import write_tiny

    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    (tmp_path / "users.csv").write_text("user,name\n" + "".join(f"u{k},Name {k}\n" for k in range(20)))
    pl.seed_everything(0)
    dm = NCFDataModule(str(data), batch_size=64, num_eval_negatives=20, user_names=str(tmp_path / "users.csv"))
    module = make_module("neumf", dm.num_users, dm.num_items, factor=4, num_layers=2, lr=0.01, lr_decay=0.9)
    cb = AttributionCallback(methods=["deeplift"], num_probe_users=4, out_dir=str(tmp_path / "rec"), history=True,
                             faithfulness=False, plots=False)
    epochs = ModelCheckpoint(dirpath=str(tmp_path / "epochs"), filename="{epoch}", save_top_k=-1)
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[cb, epochs], default_root_dir=str(tmp_path))
    trainer.fit(module, dm)
    rec = tmp_path / "rec"
    assert not (rec / "history_epoch=-1.parquet").exists()
    frames = [pd.read_parquet(rec / f"history_epoch={e}.parquet") for e in range(3)]
    last = frames[-1]
    assert set(last["pair"]) == set(range(8)) and last["lr"].iloc[0] == pytest.approx(0.01 * 0.9 ** 2)
    assert list(last["user_name"]) == ["Name " + u[1:] for u in last["user_id"]]
    summed = sum(f.set_index(["pair", "history_item_id"])["contribution"] for f in frames)
    pd.testing.assert_series_equal(summed, last.set_index(["pair", "history_item_id"])["running_total"],
                                   check_names=False, rtol=1e-5)
    # the same sum from the saved per-epoch checkpoints, as explain.py --history computes it
    ckpt = read_checkpoint(tmp_path / "epochs" / "epoch=2.ckpt")
    models = load_epoch_models(tmp_path / "epochs", ckpt)
    inter, probe = dm.interactions, cb.probe
    for p in (0, 5):
        u, i = probe["user_index"][p], probe["item_index"][p]
        rows = last[last["pair"] == p]
        hist = torch.tensor([inter.item_ids.index(x) for x in rows["history_item_id"]])
        h = history_influence(models, u, i, hist)
        torch.testing.assert_close(h.influence, torch.tensor(rows["running_total"].to_numpy(), dtype=torch.float32),
                                   rtol=1e-4, atol=1e-8)


def test_counterfactual_on_a_tiny_dataset(tmp_path):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from explain.counterfactual import counterfactual, finetune_without
    from ncf import NCFDataModule, NCFModule
    from ncf.checkpoint import load_network
    from tests.conftest import write_tiny

    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    pl.seed_everything(0)
    dm = NCFDataModule(str(data), batch_size=64, num_eval_negatives=20)
    module = make_module("gmf", dm.num_users, dm.num_items, factor=4, lr=0.01)
    ck = ModelCheckpoint(dirpath=str(tmp_path / "c"), filename="last")
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[ck], default_root_dir=str(tmp_path))
    trainer.fit(module, dm)
    path = str(tmp_path / "c" / "last.ckpt")
    sp = dm.split
    # Removing nothing continues training exactly as before, and is deterministic.
    a = finetune_without(path, sp, torch.tensor([], dtype=torch.int64), torch.tensor([], dtype=torch.int64), epochs=1)
    b = finetune_without(path, sp, torch.tensor([], dtype=torch.int64), torch.tensor([], dtype=torch.int64), epochs=1)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)
    orig, _ = load_network(path)
    assert not torch.equal(a.user_embedding.weight, orig.user_embedding.weight)
    # Removing a user's rows leaves the other users' rows of the tables untouched by that change alone:
    # a user with no removal and no shared item... (checked through the pair measure below instead)
    u = int(sp.train_users[0])
    hist = sp.train_items[sp.train_users == u]
    item = int(torch.tensor([i for i in range(sp.n_items) if i not in set(hist.tolist())][0]))
    res = counterfactual(path, sp, [(u, item)], [hist.tolist()], k=3, epochs=1, seed=0)
    r = res[0]
    assert r.removed_top == hist.tolist()[:3] and len(r.removed_random) == 3
    assert set(r.removed_random) <= set(hist.tolist())
    assert set(r.logit) == {"original", "control", "top", "random"} and all(v >= 1 for v in r.rank.values())
    assert r.drop_top == pytest.approx(r.logit["control"] - r.logit["top"])
    # the control arm is the plain fine-tune
    assert r.logit["control"] == pytest.approx(float(a(torch.tensor([u]), torch.tensor([item]))), abs=1e-6)
    with pytest.raises(ValueError, match="distinct users"):
        counterfactual(path, sp, [(u, item), (u, item)], [hist.tolist()] * 2, batched=True)


def test_explain_history_end_to_end(tmp_path, capsys):
    """explain.py --history on a run with per-epoch checkpoints: text, JSON, CSV and figure agree with the
    direct computation; --counterfactual adds the check; missing checkpoints are a one-line error."""
    import json

    import pandas as pd
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from explain.cli import main
    from explain.history import load_epoch_models
    from ncf import NCFDataModule, NCFModule
    from ncf.checkpoint import read_checkpoint
    from tests.conftest import write_tiny

    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    pl.seed_everything(0)
    dm = NCFDataModule(str(data), batch_size=64, num_eval_negatives=20)
    module = make_module("neumf", dm.num_users, dm.num_items, factor=4, num_layers=2, lr=0.01)
    run = tmp_path / "ckpt"
    cbs = [ModelCheckpoint(dirpath=str(run), filename="best", monitor="val_ndcg10", mode="max"),
           ModelCheckpoint(dirpath=str(run / "epochs"), filename="{epoch}", save_top_k=-1, save_weights_only=True)]
    pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
               callbacks=cbs).fit(module, dm)
    best = str(run / "best.ckpt")
    best_args = [best, "--data", str(data)]  # own data: its file comes from the command line
    out = tmp_path / "out"
    (tmp_path / "users.csv").write_text("user,name\nu1,Ada\n")
    assert main([*best_args, "--user-names", str(tmp_path / "users.csv"), "--user", "u1", "--item", "m3", "--methods",
                 "deeplift", "--no-faithfulness", "--history", "--history-k", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "recommended because you rated" in text
    doc = json.loads((out / "explanations.json").read_text())
    h = doc["checkpoints"][0]["pairs"][0]["history"]
    ckpt = read_checkpoint(best)
    epoch = int(ckpt["epoch"])
    assert h["epochs"] == list(range(epoch + 1)) and len(h["interactions"]) == 8  # 10 items, 2 held out
    inter = dm.interactions
    u, i = inter.user_ids.index("u1"), inter.item_ids.index("m3")
    hist = dm.split.train_items[dm.split.train_users == u]
    ref = history_influence(load_epoch_models(run / "epochs", ckpt, epoch), u, i, hist)
    want = [inter.item_ids[int(hist[j])] for j in ref.order]
    assert [x["item_id"] for x in h["interactions"]] == want
    assert h["interactions"][0]["influence"] == pytest.approx(float(ref.influence.max()), rel=1e-5)
    assert f'"{want[0]}"' in text
    csv = pd.read_csv(out / "history.csv")
    assert list(csv["history_item_id"]) == want and (out / "history.png").stat().st_size > 1000
    assert set(csv["user_name"]) == {"Ada"} and set(csv["user_id"]) == {"u1"}
    # the counterfactual check
    assert main([*best_args, "--user", "u1", "--item", "m3", "--methods", "deeplift", "--no-faithfulness", "--history",
                 "--counterfactual", "--cf-epochs", "1", "--history-k", "2", "--out", str(out)]) == 0
    cf = json.loads((out / "explanations.json").read_text())["checkpoints"][0]["pairs"][0]["history"]["counterfactual"]
    assert cf["removed_top"] == want[:2] and set(cf["logit"]) == {"original", "control", "top", "random"}
    assert cf["optimizer"] == "continued"
    said = capsys.readouterr()
    assert "top 2 removed" in said.out and "fresh optimizer" not in said.err
    # the same epoch's weights-only checkpoint: its fine-tune starts a fresh optimizer, and says so
    assert main([str(run / "epochs" / f"epoch={epoch}.ckpt"), "--data", str(data), "--user", "u1", "--item", "m3",
                 "--methods", "deeplift", "--no-faithfulness", "--history", "--history-checkpoints", str(run / "epochs"),
                 "--counterfactual", "--cf-epochs", "1", "--history-k", "2", "--quiet", "--out", str(out)]) == 0
    assert "holds weights only (a per-epoch checkpoint), so the counterfactual fine-tunes with a fresh optimizer" \
        in capsys.readouterr().err
    doc = json.loads((out / "explanations.json").read_text())
    assert doc["checkpoints"][0]["pairs"][0]["history"]["counterfactual"]["optimizer"] == "fresh"
    assert main([*best_args, "--user", "u1", "--item", "m3", "m5", "--methods", "deeplift", "--no-faithfulness", "--history",
                 "--counterfactual", "--cf-epochs", "1", "--history-k", "2"]) == 0
    assert "counterfactual over 2 pairs: removing the top 2 changes the logit by" in capsys.readouterr().out
    # no per-epoch checkpoints: one line, exit 2
    assert main([*best_args, "--user", "u1", "--item", "m3", "--methods", "deeplift", "--history",
                 "--history-checkpoints", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "per-epoch checkpoints" in err and len(err.strip().splitlines()) == 1
    assert main([*best_args, "--user", "u1", "--item", "m3", "--counterfactual"]) == 2


def _fit(tmp_path, dm, folder, model, epochs=2, callbacks=(), resume=None, **kw):
    """Train ``model`` with the configs' checkpoints: best.ckpt by validation NDCG@10, and every epoch's;
    ``resume``: a checkpoint to continue, as ``--ckpt_path`` does."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from ncf import NCFModule

    pl.seed_everything(0)
    module = make_module(model, dm.num_users, dm.num_items, factor=4, num_layers=2, **kw)
    module.resuming = resume is not None
    run = tmp_path / folder
    cbs = [ModelCheckpoint(dirpath=str(run), filename="best", monitor="val_ndcg10", mode="max"),
           ModelCheckpoint(dirpath=str(run / "epochs"), filename="{epoch}", save_top_k=-1, save_weights_only=True),
           ModelCheckpoint(dirpath=str(run), filename="last", monitor="epoch", mode="max")]
    pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
               enable_model_summary=False, callbacks=[*cbs, *callbacks]).fit(module, dm, ckpt_path=resume)
    return run


def _hand_grads(net, user, item, tables):
    logit = net(torch.tensor([user]), torch.tensor([item]))
    loss = nn.functional.binary_cross_entropy_with_logits(logit, torch.ones(1))
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, tables)])


def _pipeline_by_hand(runs, epochs, lrs, alpha, user, item, hist):
    """TracIn over a pretrained NeuMF's pipeline by its definition, per stage: for every epoch checkpoint of
    each run (up to ``epochs[stage]``), lr times the dot product of full-table gradients; the training pair's
    on the run's own loss, the explained pair's on NeuMF's loss over the branch that run trains, NeuMF being
    initialised from that checkpoint and the other run's used one (``epochs``)."""
    from ncf.checkpoint import load_network

    net = {s: {e: load_network(runs[s] / "epochs" / f"epoch={e}.ckpt")[0] for e in range(epochs[s] + 1)} for s in runs}
    hand = {s: torch.zeros(len(hist)) for s in net}
    for stage, nets in net.items():
        lr, decay = lrs[stage]
        for e, model in nets.items():
            tables = [p for n, p in model.named_parameters() if "embedding" in n]
            if stage == "neumf":
                explained, test_tables = model, tables
            else:
                explained = NeuMF(model.n_users, model.n_items, 4, 2).eval()
                explained.load_pretrained(model if stage == "gmf" else net["gmf"][epochs["gmf"]],
                                          model if stage == "mlp" else net["mlp"][epochs["mlp"]], alpha)
                branch = getattr(explained, stage)
                test_tables = [branch.user_embedding.weight, branch.item_embedding.weight]
            g_test = _hand_grads(explained, user, item, test_tables)
            for j, h in enumerate(hist):
                hand[stage][j] += lr * decay ** e * float(_hand_grads(model, user, h, tables) @ g_test)
    return hand


def test_history_of_a_pretrained_neumf_includes_its_pretraining(tmp_path, capsys):
    """GMF, MLP, then NeuMF initialised from them (2 epochs each): explain.py --history sums TracIn over the GMF
    and MLP epochs up to the checkpoints NeuMF started from and over NeuMF's own epochs, equal to the sum by
    hand with plain autograd over the full tables; each stage's part is reported; the callback's running
    total starts from the pretraining at epoch -1; the pretraining folders are found from the paths the
    NeuMF checkpoint recorded, checked, and a missing one is a one-line error."""
    import json
    import shutil

    import pandas as pd

    from explain import AttributionCallback
    from explain.cli import main
    from ncf import NCFDataModule
    from ncf.checkpoint import read_checkpoint
    from tests.conftest import write_tiny

    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    dm = NCFDataModule(str(data), batch_size=64, num_eval_negatives=20)
    lrs = {"gmf": (0.02, 0.9), "mlp": (0.01, 0.8), "neumf": (0.05, 0.7)}
    gmf_run = _fit(tmp_path, dm, "gmf", "gmf", lr=lrs["gmf"][0], lr_decay=lrs["gmf"][1])
    mlp_run = _fit(tmp_path, dm, "mlp", "mlp", lr=lrs["mlp"][0], lr_decay=lrs["mlp"][1])
    alpha = 0.7
    cb = AttributionCallback(methods=["deeplift"], num_probe_users=2, out_dir=str(tmp_path / "rec"), history=True,
                             faithfulness=False, plots=False)
    neumf_run = _fit(tmp_path, dm, "neumf", "neumf", callbacks=[cb], optimizer="sgd", lr=lrs["neumf"][0],
                     lr_decay=lrs["neumf"][1], alpha=alpha, pretrained_gmf=str(gmf_run / "last.ckpt"),
                     pretrained_mlp=str(mlp_run / "best.ckpt"))  # GMF's two epochs, the MLP's best
    runs = {"gmf": gmf_run, "mlp": mlp_run, "neumf": neumf_run}
    best = neumf_run / "best.ckpt"
    used = {s: int(read_checkpoint(r / ("last.ckpt" if s == "gmf" else "best.ckpt"))["epoch"]) for s, r in runs.items()}
    assert used["gmf"] == 1
    inter = dm.interactions
    u, i = inter.user_ids.index("u1"), inter.item_ids.index("m3")
    hist = dm.split.train_items[dm.split.train_users == u].tolist()
    hand = _pipeline_by_hand(runs, used, lrs, alpha, u, i, hist)
    total = sum(hand.values())
    assert all(hand[s].abs().max() > 0 for s in hand)

    out = tmp_path / "out"
    args = [str(best), "--data", str(data), "--user", "u1", "--item", "m3", "--methods", "deeplift",
            "--no-faithfulness", "--history", "--history-k", "3"]
    record = read_checkpoint(best)["ncf_pretrained"]  # what NeuMF started from, as the loader checks it
    assert record["gmf"]["epoch"] == 1 and record["gmf"]["run_id"] == read_checkpoint(gmf_run / "last.ckpt")["ncf_run"]["id"]
    assert main([*args, "--out", str(out)]) == 0
    text, err = capsys.readouterr()
    assert "predates" not in err
    n = {s: used[s] + 1 for s in used}
    assert f"TracIn over {n['gmf']} GMF + {n['mlp']} MLP + {n['neumf']} NeuMF epoch checkpoints" in text
    h = json.loads((out / "explanations.json").read_text())["checkpoints"][0]["pairs"][0]["history"]
    got = {x["item_id"]: x for x in h["interactions"]}
    for j, item in enumerate(hist):
        x = got[inter.item_ids[item]]
        assert x["influence"] == pytest.approx(float(total[j]), rel=1e-4, abs=1e-9)
        for s in hand:
            assert x["per_stage"][s] == pytest.approx(float(hand[s][j]), rel=1e-4, abs=1e-9)
    assert h["stages"] == ["gmf"] * n["gmf"] + ["mlp"] * n["mlp"] + ["neumf"] * n["neumf"]
    csv = pd.read_csv(out / "history.csv")
    assert {"influence_gmf", "influence_mlp", "influence_neumf"} <= set(csv.columns)
    assert csv["influence"].to_numpy() == pytest.approx(
        (csv["influence_gmf"] + csv["influence_mlp"] + csv["influence_neumf"]).to_numpy(), rel=1e-5, abs=1e-9)

    # the callback: epoch -1 holds the pretraining alone, per stage; the last epoch's running total adds NeuMF's
    p = 0
    pu, pi = cb.probe["user_index"][p], cb.probe["item_index"][p]
    first = pd.read_parquet(tmp_path / "rec" / "history_epoch=-1.parquet")
    last = pd.read_parquet(tmp_path / "rec" / "history_epoch=1.parquet")
    rows = first[first["pair"] == p]
    phist = [inter.item_ids.index(x) for x in rows["history_item_id"]]
    by_hand = _pipeline_by_hand(runs, {**used, "neumf": 1}, lrs, alpha, pu, pi, phist)
    for stage in ("gmf", "mlp"):
        assert rows[f"contribution_{stage}"].to_numpy() == pytest.approx(by_hand[stage].numpy(), rel=1e-4, abs=1e-9)
    assert rows["running_total"].to_numpy() == pytest.approx((by_hand["gmf"] + by_hand["mlp"]).numpy(), rel=1e-4,
                                                             abs=1e-9)
    assert last[last["pair"] == p]["running_total"].to_numpy() == pytest.approx(sum(by_hand.values()).numpy(),
                                                                              rel=1e-4, abs=1e-9)

    # NeuMF's own epochs alone, when asked: a different (the earlier) answer
    assert main([*args, "--history-pretraining", "none", "--out", str(out)]) == 0
    own = {x["item_id"]: x["influence"] for x in
           json.loads((out / "explanations.json").read_text())["checkpoints"][0]["pairs"][0]["history"]["interactions"]}
    assert [own[inter.item_ids[h]] for h in hist] == pytest.approx(hand["neumf"].tolist(), rel=1e-4, abs=1e-9)
    assert "TracIn over" in capsys.readouterr().out

    # a NeuMF checkpoint without the record (written before it existed): the checkpoints at the recorded
    # paths are taken, and a note says so
    from explain.loading import load
    from explain.history import load_pretraining

    meta = {**load(best).meta, "ncf_pretrained": None}
    models, notes = load_pretraining(meta)
    assert [m.stage for m in models] == ["gmf"] * n["gmf"] + ["mlp"] * n["mlp"]
    assert len(notes) == 2 and "predates" in notes[0]

    # the GMF run's epochs moved: a one-line error naming the flag; given by the flag, the same answer
    moved = tmp_path / "moved_gmf_epochs"
    shutil.move(str(gmf_run / "epochs"), moved)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--history-pretraining" in err and len(err.strip().splitlines()) == 1
    assert main([*args, "--history-pretraining", str(moved), str(mlp_run / "epochs"), "--out", str(out)]) == 0
    again = json.loads((out / "explanations.json").read_text())["checkpoints"][0]["pairs"][0]["history"]
    assert again["interactions"] == h["interactions"]
    # another run's epochs in their place (the MLP's for the GMF's): refused
    assert main([*args, "--history-pretraining", str(mlp_run / "epochs"), str(mlp_run / "epochs")]) == 2
    assert "MLP" in capsys.readouterr().err
    # a resumed NeuMF (which does not read the pretrained files again) keeps the record in its checkpoints
    _fit(tmp_path, dm, "neumf", "neumf", epochs=3, resume=str(neumf_run / "last.ckpt"), optimizer="sgd",
         lr=lrs["neumf"][0], lr_decay=lrs["neumf"][1], alpha=alpha, pretrained_gmf=str(gmf_run / "last.ckpt"),
         pretrained_mlp=str(mlp_run / "best.ckpt"))
    assert read_checkpoint(neumf_run / "epochs" / "epoch=2.ckpt")["ncf_pretrained"] == record


def test_a_counterfactual_without_a_control_says_so_and_is_left_out_of_the_summary():
    from explain.counterfactual import CounterfactualPair
    from explain.history_report import render_counterfactual, summarize_counterfactual

    def pair(top, random, drop_top, drop_random):
        return CounterfactualPair(0, 9, top, random, {"original": 1.0, "control": 1.0, "top": 1.0 - drop_top,
                                                      "random": 1.0 - drop_random}, dict.fromkeys(("original", "control", "top", "random"), 1))

    short = pair([4], [4], 0.2, 0.2)  # the user's one interaction: both arms remove it
    text = render_counterfactual(short, 5, 1)
    assert "top 1 removed" in text and "1 random removed" in text and "no control" in text
    full = [pair([1, 2], [3, 5], 0.5, 0.1), pair([1, 2], [6, 7], 0.2, 0.3)]
    assert "no control" not in render_counterfactual(full[0], 2, 1)
    line = summarize_counterfactual([*full, short], 2)
    assert line == ("counterfactual over 2 pairs: removing the top 2 changes the logit by -0.350 on average, 2 random "
                    "by -0.200 (against nothing removed); the top 2 lower it more in 1 of 2 pairs (1 pair left out: "
                    "its user has at most 2 interactions, so no random control).")
    tiny = render_counterfactual(pair([1, 2], [3, 5], 3e-5, -2e-4), 2, 1)  # changes below 0.0005 keep their sign
    assert "(-3.0e-05 vs nothing removed)" in tiny and "(+2.0e-04 vs nothing removed)" in tiny
    assert summarize_counterfactual([short], 5) == ("counterfactual over 1 pair: none has a random control (1 pair "
                                                    "left out: its user has at most 5 interactions, so no random control).")


def test_a_retrained_stage_error_names_where_the_retraining_kept_the_run(tmp_path):
    from explain.history import _kept

    recorded = tmp_path / "runs" / "mine" / "gmf" / "checkpoints" / "best.ckpt"
    assert _kept(str(recorded), "abc123") == ""  # nothing kept: nothing named
    kept = tmp_path / "runs" / "mine" / "gmf" / "superseded" / "abc123" / "checkpoints" / "epochs"
    kept.mkdir(parents=True)
    assert _kept(str(recorded), "abc123") == f"; retraining kept it in {kept}"
    assert _kept(str(recorded), None) == "" and _kept(None, "abc123") == ""


@pytest.mark.slow
def test_a_stage_retrained_with_fewer_epochs_is_named_not_reported_as_a_missing_file(tmp_path, monkeypatch, capsys):
    from explain.cli import main
    from ncf.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    repo = Path(__file__).resolve().parents[2]
    small = ["--data.dataset", "synthetic:3000", "--data.batch_size", "256", "--trainer.enable_progress_bar", "false"]
    for config, epochs in (("gmf", 3), ("mlp", 1), ("neumf_pretrained", 1), ("gmf", 1)):  # GMF retrained, shorter
        cli_main(["fit", "--config", str(repo / "configs" / f"{config}.yaml"), *small, "--trainer.max_epochs", str(epochs)])
    capsys.readouterr()
    assert main(["runs/synthetic-3000/neumf_pretrained/checkpoints/best.ckpt", "--user", "0", "--item", "1",
                 "--history", "--methods", "deeplift"]) == 2
    err = capsys.readouterr().err
    assert "the folder holds another GMF run than run" in err and "retraining kept it in" in err


def test_history_totals_count_the_epochs_the_schedule_does_not_record(tmp_path):
    """every_n_epochs 2 records epochs 1 and 3 (and the last): their running totals are those of a record of
    every epoch (each epoch trained adds its TracIn term), and contribution sums the epochs since the previous
    record (``epochs_summed``); an off-schedule last epoch is counted once."""
    import pandas as pd
    import pytorch_lightning as pl

    from explain import AttributionCallback
    from ncf import NCFDataModule
    from tests.conftest import write_tiny

    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)

    def record(folder, every, epochs):
        pl.seed_everything(0)
        dm = NCFDataModule(str(data), batch_size=64, num_eval_negatives=20)
        module = make_module("gmf", dm.num_users, dm.num_items, factor=4, lr=0.01, lr_decay=0.9)
        cb = AttributionCallback(methods=["deeplift"], num_probe_users=4, out_dir=str(tmp_path / folder), history=True,
                                 faithfulness=False, report=False, every_n_epochs=every)
        pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                   enable_model_summary=False, enable_checkpointing=False, callbacks=[cb]).fit(module, dm)
        return lambda e: pd.read_parquet(tmp_path / folder / f"history_epoch={e}.parquet").set_index(
            ["pair", "history_item_id"]).sort_index()

    every = record("every", 1, 5)
    sparse = record("sparse", 2, 5)  # records 1, 3 and the last, 4
    for e, summed in ((1, 2), (3, 2), (4, 1)):
        pd.testing.assert_series_equal(sparse(e)["running_total"], every(e)["running_total"], rtol=1e-5)
        assert set(sparse(e)["epochs_summed"]) == {summed}
    between = every(2)["contribution"] + every(3)["contribution"]
    pd.testing.assert_series_equal(sparse(3)["contribution"], between, rtol=1e-5, check_names=False)
    assert not (tmp_path / "sparse" / "history_epoch=2.parquet").exists()


def test_history_terms_held_between_records_survive_a_resume(tmp_path):
    import pandas as pd
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from explain import AttributionCallback
    from ncf import NCFDataModule
    from tests.conftest import write_tiny

    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)

    class Kill(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 3:  # after epoch 2, held for the record of epoch 3
                raise RuntimeError("killed")

    def run(folder, kill=False, resume=None):
        pl.seed_everything(0)
        dm = NCFDataModule(str(data), batch_size=64, num_eval_negatives=20)
        module = make_module("gmf", dm.num_users, dm.num_items, factor=4, lr=0.01, lr_decay=0.9)
        cb = AttributionCallback(methods=["deeplift"], num_probe_users=4, out_dir=str(tmp_path / folder / "rec"),
                                 history=True, faithfulness=False, report=False, every_n_epochs=2)
        last = ModelCheckpoint(dirpath=str(tmp_path / folder / "ckpt"), filename="last", monitor="epoch", mode="max")
        trainer = pl.Trainer(max_epochs=5, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, callbacks=[cb, last, *([Kill()] if kill else [])])
        trainer.fit(module, dm, ckpt_path=resume)

    run("full")
    with pytest.raises(RuntimeError, match="killed"):
        run("cut", kill=True)
    run("cut", resume=str(tmp_path / "cut" / "ckpt" / "last.ckpt"))
    for e in (1, 3, 4):
        full, cut = (pd.read_parquet(tmp_path / f / "rec" / f"history_epoch={e}.parquet").set_index(
            ["pair", "history_item_id"]).sort_index()["running_total"] for f in ("full", "cut"))
        pd.testing.assert_series_equal(cut, full, rtol=1e-6)
