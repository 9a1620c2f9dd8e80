"""TransitionMF (ncf/transitions.py): MF plus a count-based prior of what others watched next after the user's
latest items."""
import math
from pathlib import Path

import numpy as np
import pytest
import pandas as pd
import torch

from ncf.datasets import Interactions
from ncf.errors import DataError
from ncf.mf import MF
from ncf.splits import leave_one_out
from ncf.transitions import TransitionMF

from tests.helpers import history_and_methods

REPO = Path(__file__).resolve().parents[2]


def _interactions(seed=0, n_users=6, n_items=9, per_user=6) -> Interactions:
    """Each user watches ``per_user`` distinct items at distinct times, drawn at random (seeded)."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        seq = rng.permutation(n_items)[:per_user]
        users += [u] * per_user
        items += seq.tolist()
        times += rng.permutation(100)[:per_user].tolist()
    return Interactions(np.array(users), np.array(items), np.array(times), [f"u{k}" for k in range(n_users)],
                        [f"i{k}" for k in range(n_items)])


def _sequences(split) -> dict[int, list[int]]:
    """Each user's training items, oldest first."""
    seqs: dict[int, list] = {}
    for u, i, r in zip(split.train_users.tolist(), split.train_items.tolist(), split.train_recency.tolist()):
        seqs.setdefault(u, []).append((-r, i))
    return {u: [i for _, i in sorted(rows)] for u, rows in seqs.items()}


def _net(split, history=2, window=2, weight=0.7) -> TransitionMF:
    torch.manual_seed(0)
    net = TransitionMF(split.n_users, split.n_items, factor=3, history=history, window=window, weight=weight)
    with torch.no_grad():  # every weight away from zero, so that each term counts in the check
        for p in net.parameters():
            p.normal_()
    net.observe(split)
    return net


def test_the_score_is_the_formula_by_hand():
    """next(u, i) counted by hand from the other users' sequences (the user's own transitions are out)."""
    split = leave_one_out(_interactions(), False, 1, 0, False, "latest")
    net = _net(split).eval()
    seqs = _sequences(split)
    trained = np.bincount(split.train_items.numpy(), minlength=split.n_items)
    P, Q = net.user_embedding.weight.detach(), net.item_embedding.weight.detach()
    bu, bi = net.user_bias.weight[:, 0].detach(), net.item_bias.weight[:, 0].detach()

    def next_by_hand(u, i):
        recent = seqs[u][::-1][:2]  # the user's 2 latest, latest first
        total = 0.0
        for l in recent:
            n_li = sum(1 for v, s in seqs.items() if v != u for a in range(len(s)) for b in range(a + 1, min(len(s), a + 3))
                       if s[a] == l and s[b] == i)
            total += n_li / (trained[l] + 1)
        return total

    checked_positive = 0
    for u in range(split.n_users):
        for i in range(split.n_items):
            want_next = next_by_hand(u, i)
            got_next = float(net.next_counts(torch.tensor([u]), torch.tensor([i])))
            assert got_next == pytest.approx(want_next, abs=1e-6), (u, i)
            want = float(P[u] @ Q[i] + bu[u] + bi[i] + net.bias.detach()) + 0.7 * math.log1p(want_next / 0.01)
            assert float(net(torch.tensor([u]), torch.tensor([i])).detach()) == pytest.approx(want, abs=1e-5), (u, i)
            checked_positive += want_next > 0
    assert checked_positive > 10  # the prior is not zero everywhere


def test_training_mode_scores_as_mf_and_trains_its_weights_only():
    split = leave_one_out(_interactions(), False, 1, 0, False, "latest")
    torch.manual_seed(1)
    net = TransitionMF(split.n_users, split.n_items, factor=4)
    torch.manual_seed(1)
    mf = MF(split.n_users, split.n_items, factor=4)
    net.observe(split)
    assert torch.equal(net.user_embedding.weight, mf.user_embedding.weight)  # the same draws as MF
    u, i = split.train_users, split.train_items
    torch.testing.assert_close(net.train()(u, i), mf.train()(u, i))
    assert (net.eval()(u, i) != mf.eval()(u, i)).any()  # the prior, when scoring
    assert {n for n, _ in net.named_parameters()} == {n for n, _ in mf.named_parameters()}


def test_rows_of_a_user_and_many_items_score_as_their_pairs():
    split = leave_one_out(_interactions(), False, 1, 0, False, "latest")
    net = _net(split).eval()
    users, items = torch.tensor([0, 1, 3]), torch.tensor([[1, 5, 6], [4, 0, 2], [8, 5, 7]])
    rows = net.score(*net.embed(users.unsqueeze(1), items))
    pairs = net(users.repeat_interleave(3), items.reshape(-1)).view(3, 3)
    torch.testing.assert_close(rows, pairs)


def test_the_counts_travel_with_the_weights():
    split = leave_one_out(_interactions(), False, 1, 0, False, "latest")
    net = _net(split).eval()
    fresh = TransitionMF(split.n_users, split.n_items, factor=3, history=2, window=2, weight=0.7).eval()
    assert len(fresh.next_keys) == 0
    fresh.load_state_dict(net.state_dict())  # counts of the data's length, into a network that has none
    u = torch.arange(split.n_users).repeat_interleave(split.n_items)
    i = torch.arange(split.n_items).repeat(split.n_users)
    assert torch.equal(fresh(u, i), net(u, i))


def test_observe_needs_an_order_by_time_and_sizes_name_the_option():
    split = leave_one_out(_interactions(), False, 1, 0, False, "random")
    with pytest.raises(DataError, match="no order by time.*--data.holdout latest"):
        TransitionMF(6, 9).observe(split)
    split = leave_one_out(_interactions(), False, 1, 0, False, "latest")  # 5 training items a user
    with pytest.raises(DataError, match="history 6 is more than any user's training items \\(at most 5\\)"):
        TransitionMF(6, 9, history=6).observe(split)
    for kwargs, what in (({"history": 0}, "history must be from 1"), ({"window": 0}, "window must be at least 1"),
                         ({"weight": -1.0}, "need weight >= 0")):
        with pytest.raises(ValueError, match=what):
            TransitionMF(6, 9, **kwargs)


def test_deeplift_and_others_are_complete_with_the_prior_as_an_input():
    from explain.core import attribute

    split = leave_one_out(_interactions(), False, 1, 0, False, "latest")
    net = _net(split).eval()
    users, items = split.test_users, split.test_candidates[:, 0]
    assert (net.next_counts(users, items) > 0).any()
    term = net.embed(users, items)[4][:, 0].detach()  # the prior's part of each logit
    for method in ("deeplift", "ig", "shapley"):
        res = attribute(net, users, items, method)
        assert res.completeness_gap.max() < 1e-4, (method, res.completeness_gap)
        if method != "shapley":  # per embedding: the additive prior is credited with exactly its part (its
            # baseline is zero, not its mean over the users at one item)
            torch.testing.assert_close(res.embedding_totals[:, 4], term, atol=1e-5, rtol=1e-5)


def test_history_influence_is_tracin_over_the_tables_by_brute_force():
    """The prior has no weights: TracIn over every table, pair by pair with autograd, is explain.history's."""
    import torch.nn.functional as F

    from explain.history import EpochModel, tracin

    split = leave_one_out(_interactions(), False, 1, 0, False, "latest")
    net = _net(split).eval()
    tables = [net.user_embedding.weight, net.item_embedding.weight, net.user_bias.weight, net.item_bias.weight]

    def grads(u, i):
        logit = net(torch.tensor([u]), torch.tensor([i]))
        loss = F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, tables)])

    train = list(zip(split.train_users.tolist()[:12], split.train_items.tolist()[:12]))
    test = list(zip(split.test_users.tolist(), split.test_candidates[:, 0].tolist()))
    want = torch.stack([torch.stack([0.3 * grads(*t) @ grads(*r) for r in train]) for t in test])
    got = tracin([EpochModel(0, net, 0.3)], *(torch.tensor(c) for c in zip(*train)),
                 *(torch.tensor(c) for c in zip(*test)))[0]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_trains_as_mf_resumes_and_is_explained_from_its_checkpoint(tmp_path, monkeypatch, capsys):
    from ncf import NCFDataModule
    from ncf.checkpoint import load_network
    from ncf.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    small = ["--data.dataset", "synthetic:3000", "--data.batch_size", "256", "--model.network.init_args.factor", "8",
             "--trainer.enable_progress_bar", "false"]

    def fit(config, epochs, *extra):
        cli_main(["fit", "--config", str(REPO / "configs" / config), *small, "--trainer.max_epochs", str(epochs), *extra])

    fit("transition_mf.yaml", 3, "--run_name", "whole")
    fit("transition_mf.yaml", 2, "--run_name", "cut")
    fit("transition_mf.yaml", 3, "--run_name", "cut", "--ckpt_path", "last")
    fit("mf_recent.yaml", 3, "--run_name", "mf")
    whole = torch.load("runs/synthetic-3000/whole/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    cut = torch.load("runs/synthetic-3000/cut/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    mf = torch.load("runs/synthetic-3000/mf/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    for k, v in whole.items():
        assert torch.equal(v, cut[k]), k  # the resumed run is the uninterrupted one
    for k, v in mf.items():
        assert torch.equal(v, whole[k]), k  # MF's weights, trained as mf_recent.yaml trains them
    assert len(whole["net.next_keys"]) > 0  # observed, and saved
    # test and predict of its checkpoint: the counts load with the weights (a fresh network holds none yet)
    ckpt = "runs/synthetic-3000/whole/checkpoints/best.ckpt"
    cli_main(["test", "--config", str(REPO / "configs" / "transition_mf.yaml"), *small, "--ckpt_path", ckpt])
    cli_main(["predict", "--config", str(REPO / "configs" / "transition_mf.yaml"), *small, "--ckpt_path", ckpt,
              "--recommend.users", "[0]", "--recommend.output", str(tmp_path / "recs.csv")])
    assert len(pd.read_csv(tmp_path / "recs.csv")) == 10

    net, _ = load_network("runs/synthetic-3000/whole/checkpoints/best.ckpt")
    assert type(net) is TransitionMF and not net.training
    dm = NCFDataModule("synthetic:3000")
    dm.setup()
    fresh = TransitionMF(dm.num_users, dm.num_items)
    fresh.observe(dm.split)
    for name in ("recent_items", "recent_norm", "next_keys", "next_values"):
        assert torch.equal(getattr(net, name), getattr(fresh, name)), name  # the checkpoint's counts are the split's

    # a counterfactual fine-tune without the user's latest training item counts without it
    from explain.counterfactual import finetune_without

    latest = int(net.recent_items[0, 0])
    tuned = finetune_without("runs/synthetic-3000/whole/checkpoints/last.ckpt", dm.split, torch.tensor([0]),
                             torch.tensor([latest]), epochs=1, batch_size=256)
    assert latest not in tuned.recent_items[0].tolist()
    assert len(tuned.next_keys) < len(net.next_keys) or not torch.equal(tuned.next_values, net.next_values)

    # history influence, afterwards and in the callback's record; then the main methods
    doc = history_and_methods(tmp_path, capsys, lambda: fit("transition_mf.yaml", 1, "--run_name", "record",
                                                       "--trainer.callbacks+=explain.AttributionCallback",
                                                       "--trainer.callbacks.history", "true"), top_n=3)
    ids = dm.interactions.item_ids
    latest_ids = {ids[j] for j in net.recent_items[0].tolist() if j < dm.num_items}
    named = 0
    for pair in doc["checkpoints"][0]["pairs"]:
        for name in ("shapley", "ig", "deeplift"):
            assert abs(pair["methods"][name]["completeness_gap"]) < 1e-4, (name, pair["methods"][name])
        # the items the prior read: the user's latest, their shares adding up, the term the network adds
        read = pair["read_items"]
        assert read["embedding"] == "next" and {r["item_id"] for r in read["items"]} <= latest_ids
        item = list(ids).index(pair["item_id"])
        counts = float(net.next_counts(torch.tensor([0]), torch.tensor([item])))
        assert read["logit"] == pytest.approx(net.weight * math.log1p(counts / net.eps), rel=1e-5)
        if read["items"]:
            named += 1
            assert sum(r["share"] for r in read["items"]) == pytest.approx(1.0)
            assert sum(r["part"] for r in read["items"]) == pytest.approx(counts, rel=1e-5)
    assert named  # at least one of the top items is there through what followed the user's latest


def test_a_window_past_every_sequence_counts_as_the_longest_and_one_beyond_memory_is_refused(monkeypatch):
    split = leave_one_out(_interactions(), False, 1, 0, False, "latest")  # 5 training items a user
    whole, huge = TransitionMF(6, 9, window=4), TransitionMF(6, 9, window=10 ** 9)  # counted at once, not looped
    whole.observe(split)
    huge.observe(split)
    assert torch.equal(whole.next_keys, huge.next_keys) and torch.equal(whole.next_values, huge.next_values)
    import ncf.transitions

    monkeypatch.setattr(ncf.transitions, "_physical_memory", lambda: 1000)  # 6 users x 10 pairs x 32 bytes: more
    with pytest.raises(DataError, match="window 4 counts 60 pairs of training rows .* use a smaller "
                                        "--model.network.init_args.window"):
        TransitionMF(6, 9, window=4).observe(split)
