"""RecentMF (ncf/recent.py): MF whose user vector adds the mean of the user's latest training items."""
from pathlib import Path

import numpy as np
import pytest
import torch

from ncf.datasets import Interactions
from ncf.errors import DataError
from ncf.recent import RecentMF
from ncf.splits import leave_one_out

from tests.helpers import history_and_methods

REPO = Path(__file__).resolve().parents[2]


def _net(n_users=3, n_items=7, factor=4, history=3) -> RecentMF:
    torch.manual_seed(0)
    net = RecentMF(n_users, n_items, factor=factor, history=history)
    with torch.no_grad():  # biases away from zero, so that they count in the check
        net.user_bias.weight.normal_()
        net.item_bias.weight.normal_()
        net.bias.fill_(0.3)
    return net


def test_the_score_is_the_formula_by_hand():
    net = _net()
    net.recent_items[0] = torch.tensor([4, 1, 2])
    net.recent_items[1] = torch.tensor([5, 7, 7])  # one item; 7 = n_items marks empty slots
    # user 2 has no history at all
    P, Q, C = net.user_embedding.weight, net.item_embedding.weight, net.context.weight
    bu, bi = net.user_bias.weight[:, 0], net.item_bias.weight[:, 0]

    def by_hand(u, i):
        read = [j for j in net.recent_items[u].tolist() if j != 7 and j != i]
        recent = C[read].mean(0) if read else torch.zeros(4)
        return float((P[u] + recent) @ Q[i] + bu[u] + bi[i] + net.bias)

    pairs = [(0, 3), (0, 1), (0, 4), (1, 5), (1, 0), (2, 6)]  # (0, 1) and (0, 4), (1, 5): the item is left out
    got = net(torch.tensor([u for u, _ in pairs]), torch.tensor([i for _, i in pairs]))
    for (u, i), g in zip(pairs, got.tolist()):
        assert g == pytest.approx(by_hand(u, i), abs=1e-6), (u, i)


def test_rows_of_a_user_and_many_items_score_as_their_pairs():
    net = _net(n_users=4, n_items=9)
    net.recent_items.copy_(torch.tensor([[1, 2, 3], [4, 9, 9], [9, 9, 9], [0, 5, 8]]))
    users, items = torch.tensor([0, 1, 3]), torch.tensor([[1, 5, 6], [4, 0, 2], [8, 5, 7]])
    rows = net.score(*net.embed(users.unsqueeze(1), items))
    pairs = net(users.repeat_interleave(3), items.reshape(-1)).view(3, 3)
    torch.testing.assert_close(rows, pairs)


def _interactions() -> Interactions:
    # user a: items 0..5 at times 6, 1, 5, 2, 4, 3; user b: items 2, 3, 4 at times 1, 3, 2
    users = np.array([0] * 6 + [1] * 3)
    items = np.array([0, 1, 2, 3, 4, 5, 2, 3, 4])
    times = np.array([6, 1, 5, 2, 4, 3, 1, 3, 2])
    return Interactions(users, items, times, ["a", "b"], [f"i{k}" for k in range(8)])


def test_observe_keeps_each_users_latest_training_items_latest_first():
    split = leave_one_out(_interactions(), False, 1, 0, False, "latest")
    net = RecentMF(2, 8, factor=2, history=3)
    net.observe(split)
    # a's latest (0, time 6) is its test item; then 2 (5), 4 (4), 5 (3). b: 3 tests; then 4 (2), 2 (1), empty (8)
    assert net.recent_items.tolist() == [[2, 4, 5], [4, 2, 8]]


def test_a_split_without_some_rows_reorders_the_users_rest():
    from ncf.splits import without_rows

    inter = _interactions()
    split = leave_one_out(inter, False, 1, 0, False, "latest")
    less = without_rows(split, torch.tensor([0, 1]), torch.tensor([4, 2]))
    rows = list(zip(less.train_users.tolist(), less.train_items.tolist()))
    assert sorted(rows) == [(0, 1), (0, 2), (0, 3), (0, 5), (1, 4)]
    time = {(u, i): t for u, i, t in zip(inter.users.tolist(), inter.items.tolist(), inter.timestamps.tolist())}
    for (u, i), r in zip(rows, less.train_recency.tolist()):  # by hand: the user's remaining rows after this one
        assert r == sum(1 for (v, j) in rows if v == u and time[(v, j)] > time[(u, i)]), (u, i, r)
    assert torch.equal(less.test_candidates, split.test_candidates)


def test_observe_needs_an_order_by_time():
    split = leave_one_out(_interactions(), False, 1, 0, False, "random")
    with pytest.raises(DataError, match="no order by time.*--data.holdout latest"):
        RecentMF(2, 8, history=3).observe(split)


def test_bad_sizes_name_the_option():
    for history in (0, 7):
        with pytest.raises(ValueError, match=f"history must be from 1 to the number of items \\(6\\), not {history}"):
            RecentMF(2, 6, history=history)
    split = leave_one_out(_interactions(), False, 1, 0, False, "latest")  # a has 5 training items, b 2
    with pytest.raises(DataError, match="history 6 is more than any user's training items \\(at most 5\\)"):
        RecentMF(2, 8, history=6).observe(split)
    RecentMF(2, 8, history=5).observe(split)


def _trained_like(recent: list, factor: int) -> RecentMF:
    """4 users, 9 items, weights at trained-like scales, ``recent`` as the users' latest items (9: empty)."""
    net = _net(n_users=4, n_items=9, factor=factor)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.5)
    with torch.no_grad():
        net.context.weight[9].zero_()
    net.recent_items.copy_(torch.tensor(recent))
    return net


def test_deeplift_is_complete_where_the_item_feeds_two_products():
    from explain.core import attribute

    net = _trained_like([[1, 2, 3], [4, 9, 9], [9, 9, 9], [0, 5, 8]], factor=4)
    users, items = torch.tensor([0, 1, 2, 3, 0]), torch.tensor([6, 4, 2, 7, 1])
    for method in ("deeplift", "ig", "shapley"):
        res = attribute(net.eval(), users, items, method)
        assert res.completeness_gap.max() < 1e-4, (method, res.completeness_gap)


def test_history_influence_is_tracin_over_the_tables_by_brute_force():
    """TracIn's term for each (test pair, training row): lr times the dot product of the two pairs' loss
    gradients over every embedding table, computed here pair by pair with autograd, against explain.history's
    (which reads the context rows each recent vector averages from embedding_rows)."""
    import torch.nn.functional as F

    from explain.history import EpochModel, tracin

    net = _trained_like([[1, 2, 3], [2, 9, 9], [9, 9, 9], [3, 1, 8]], factor=3)
    tables = [net.user_embedding.weight, net.item_embedding.weight, net.context.weight, net.user_bias.weight,
              net.item_bias.weight]

    def grads(u, i):
        logit = net(torch.tensor([u]), torch.tensor([i]))
        loss = F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, tables)])

    train = [(0, 1), (0, 2), (0, 3), (1, 2), (3, 3), (3, 1), (3, 8), (2, 5)]
    test = [(0, 6), (1, 4), (3, 2), (2, 7)]
    want = torch.stack([torch.stack([0.3 * grads(*t) @ grads(*r) for r in train]) for t in test])
    got = tracin([EpochModel(0, net.eval(), 0.3)], *(torch.tensor(c) for c in zip(*train)),
                 *(torch.tensor(c) for c in zip(*test)))[0]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert want[0, 6].abs() > 1e-4  # user 3's row (3, 8) reaches user 0's pair through context rows 1 and 3


def test_history_influence_refuses_a_network_that_mixes_rows_without_saying_which():
    from explain.history import EpochModel, tracin
    from ncf.errors import ConfigError

    class Silent(RecentMF):
        def embedding_rows(self, users, items):
            return None

    with pytest.raises(ConfigError, match="history influence is not available for Silent.*without --history"):
        tracin([EpochModel(0, Silent(3, 7, 4, 3), 0.1)], torch.tensor([0]), torch.tensor([1]), torch.tensor([0]),
               torch.tensor([2]))


@pytest.mark.slow
def test_trains_resumes_and_is_explained_from_its_checkpoint(tmp_path, monkeypatch, capsys):
    from ncf.checkpoint import load_network
    from ncf.cli import main as cli_main

    monkeypatch.chdir(tmp_path)

    def fit(epochs, *extra):
        cli_main(["fit", "--config", str(REPO / "configs" / "recent_mf.yaml"), "--data.dataset", "synthetic:3000",
                  "--data.batch_size", "256", "--model.network.init_args.factor", "8", "--trainer.max_epochs",
                  str(epochs), "--trainer.enable_progress_bar", "false", *extra])

    fit(3, "--run_name", "whole")
    fit(2, "--run_name", "cut")
    fit(3, "--run_name", "cut", "--ckpt_path", "last")
    whole = torch.load("runs/synthetic-3000/whole/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    cut = torch.load("runs/synthetic-3000/cut/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    for k, v in whole.items():
        assert torch.equal(v, cut[k]), k  # the resumed run is the uninterrupted one
    assert (whole["net.recent_items"] != whole["net.item_embedding.weight"].shape[0]).any()  # observed, and saved

    net, _ = load_network("runs/synthetic-3000/whole/checkpoints/best.ckpt")
    assert type(net) is RecentMF and net.history == 5
    from ncf import NCFDataModule

    dm = NCFDataModule("synthetic:3000")
    dm.setup()
    fresh = RecentMF(dm.num_users, dm.num_items, history=5)
    fresh.observe(dm.split)
    assert torch.equal(net.recent_items, fresh.recent_items)  # the checkpoint's history is the split's

    # a counterfactual fine-tune without the user's latest training item no longer reads it
    from explain.counterfactual import finetune_without

    latest = int(net.recent_items[0, 0])
    tuned = finetune_without("runs/synthetic-3000/whole/checkpoints/last.ckpt", dm.split, torch.tensor([0]),
                             torch.tensor([latest]), epochs=1, batch_size=256)
    assert latest not in tuned.recent_items[0].tolist()
    assert tuned.recent_items[0].tolist()[:4] == net.recent_items[0].tolist()[1:]  # the rest move up one
    assert torch.equal(tuned.recent_items[1:], net.recent_items[1:])

    # history influence, afterwards and in the callback's record; then the main methods
    doc = history_and_methods(tmp_path, capsys, lambda: fit(1, "--run_name", "record", "--trainer.callbacks+=explain.AttributionCallback",
                                                       "--trainer.callbacks.history", "true"), top_n=2)
    for pair in doc["checkpoints"][0]["pairs"]:
        for name, result in pair["methods"].items():
            assert set(result["groups"]) == {"user", "item"}, (name, result)
        for name in ("shapley", "ig"):  # exact over groups; exact along the path of a bilinear net
            assert abs(pair["methods"][name]["completeness_gap"]) < 1e-4, (name, pair["methods"][name])


def test_a_history_buffer_beyond_memory_is_refused_before_it_is_allocated():
    from ncf.contract import build_network
    from ncf.errors import ConfigError

    with pytest.raises(ConfigError, match=r"GiB with its buffers\), more than this machine's"):
        build_network({"class_path": "ncf.recent.RecentMF", "init_args": {"factor": 4, "history": 100_000}},
                      10_000_000, 100_000)  # 8 TB of item indices
