"""History influence (TracInCP over the embedding tables) against captum and a direct computation."""
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from explain.history import EpochModel, history_influence, tracin
from ncf.models import GMF, NeuMF


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
