"""One rule for a user's candidate items and their ranking, followed by train.py predict, explain.py's top-N
and rank, and the counterfactual check."""
import json

import pandas as pd
import pytest
import torch

from explain.cli import main as explain_main
from ncf import NCFDataModule
from ncf.candidates import candidate_rank, interacted, interacted_keys, recommend, top_candidates
from ncf.cli import main as cli_main
from tests.conftest import write_tiny


@pytest.fixture(scope="module")
def tiny_neumf(tmp_path_factory):
    """A small NeuMF trained through train.py on a tiny CSV: 20 users, 40 items, 10 interactions each."""
    root = tmp_path_factory.mktemp("cands")
    data = write_tiny(root / "tiny.csv", n_users=20, n_items=40, per_user=10)
    common = ["--data.dataset", str(data), "--data.num_eval_negatives", "20", "--data.batch_size", "64",
              "--trainer.enable_progress_bar", "false", "--trainer.logger", "false"]
    cli_main(["fit", *common, "--model.network", "ncf.models.NeuMF", "--model.network.factor", "4", "--model.network.num_layers", "2",
              "--model.lr", "0.01", "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(root / "run")])
    ckpt = next(p for p in (root / "run").rglob("*.ckpt") if p.name.startswith("epoch") or p.name == "best.ckpt")
    return data, ckpt, common


def test_explain_top_n_and_predict_give_the_same_list_without_any_interacted_item(tiny_neumf, tmp_path):
    data, ckpt, common = tiny_neumf
    recs_path = tmp_path / "recs.csv"
    n = 30  # every candidate of every user (40 items, 10 interactions each), so the lists must match in full
    cli_main(["predict", *common, "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp_path),
              "--recommend.output", str(recs_path), "--recommend.top_n", str(n)])
    recs = pd.read_csv(recs_path, dtype={"user_id": str, "item_id": str})
    dm = NCFDataModule(str(data), num_eval_negatives=20)
    dm.setup("fit")
    ids, items = dm.interactions.user_ids, dm.interactions.item_ids
    raw = pd.read_csv(data, dtype=str)
    had = set(zip(raw["user"], raw["item"]))
    held_out = {(ids[u], items[i]) for u, i in zip(dm.split.test_users.tolist(), dm.split.test_candidates[:, 0].tolist())}
    held_out |= {(ids[u], items[i]) for u, i in zip(dm.split.val_users.tolist(), dm.split.val_candidates[:, 0].tolist())}
    assert held_out <= had and len(held_out) == 2 * 20
    assert not any(pair in had for pair in zip(recs["user_id"], recs["item_id"]))
    assert (recs.groupby("user_id").size() == n).all()
    for user in ("u2", "u7"):
        out = tmp_path / user
        assert explain_main([str(ckpt), "--data", str(data), "--user", user, "--top-n", str(n), "--methods", "deeplift",
                             "--no-faithfulness", "--quiet", "--out", str(out)]) == 0
        pairs = json.loads((out / "explanations.json").read_text())["checkpoints"][0]["pairs"]
        assert [p["item_id"] for p in pairs] == recs[recs.user_id == user]["item_id"].tolist()
        # each recommended item's rank among the user's candidates is its place in the list
        assert [p["rank"] for p in pairs] == list(range(1, n + 1)) and {p["candidates"] for p in pairs} == {n}
        short = tmp_path / f"{user}-5"
        assert explain_main([str(ckpt), "--data", str(data), "--user", user, "--top-n", "5", "--methods", "deeplift",
                             "--no-faithfulness", "--quiet", "--out", str(short)]) == 0
        top5 = [p["item_id"] for p in json.loads((short / "explanations.json").read_text())["checkpoints"][0]["pairs"]]
        assert top5 == recs[recs.user_id == user]["item_id"].tolist()[:5]


def test_a_held_out_item_is_ranked_among_the_candidates_plus_itself(tiny_neumf, tmp_path):
    data, ckpt, _ = tiny_neumf
    dm = NCFDataModule(str(data), num_eval_negatives=20)
    dm.setup("fit")
    u = int(dm.split.test_users[3])
    test_item = dm.split.test_candidates[3, 0].item()
    user, item = dm.interactions.user_ids[u], dm.interactions.item_ids[test_item]
    assert explain_main([str(ckpt), "--data", str(data), "--user", user, "--item", item, "--methods", "deeplift",
                         "--no-faithfulness", "--quiet", "--out", str(tmp_path)]) == 0
    pair = json.loads((tmp_path / "explanations.json").read_text())["checkpoints"][0]["pairs"][0]
    assert pair["candidates"] == 30 + 1  # the user's 30 candidates and the explained item


def test_interacted_covers_training_and_held_out_items(tiny_csv):
    dm = NCFDataModule(str(tiny_csv), num_eval_negatives=5)
    dm.setup("fit")
    sp = dm.split
    mask = interacted(interacted_keys(sp), torch.arange(sp.n_users), sp.n_items)
    expected = torch.zeros_like(mask)
    expected[sp.train_users, sp.train_items] = True
    expected[sp.test_users, sp.test_candidates[:, 0]] = True
    expected[sp.val_users, sp.val_candidates[:, 0]] = True
    assert torch.equal(mask, expected) and int(mask.sum()) == len(dm.interactions)


def test_ranking_rule_by_hand():
    #                    items: 0    1    2    3    4
    scores = torch.tensor([[0.2, 0.9, 0.4, 0.4, 0.1],
                           [0.3, 0.3, 0.8, 0.1, 0.3]])
    exclude = torch.tensor([[False, True, False, False, False],
                            [False, False, True, True, True]])
    items, values, count = top_candidates(scores, exclude, 3)
    assert items[0].tolist() == [2, 3, 0]  # a tie keeps item order; item 1 was interacted with
    assert items[1, :2].tolist() == [0, 1] and count.tolist() == [3, 2]  # user 1 has two candidates
    assert values[0].tolist() == pytest.approx([0.4, 0.4, 0.2])
    # item 3 ties with item 2: counted against it, as HR@10 counts ties; an excluded item joins the candidates
    rank, among = candidate_rank(scores, torch.tensor([3, 2]), exclude)
    assert rank.tolist() == [2, 1] and among.tolist() == [4, 3]


def test_recommend_without_data_ranks_every_item():
    from ncf.models import GMF

    torch.manual_seed(0)
    net = GMF(2, 6, 3)
    with torch.no_grad():
        order = net(torch.zeros(6, dtype=torch.long), torch.arange(6)).sort(descending=True, stable=True).indices
    assert recommend(net, torch.tensor([0]), 6) == [order.tolist()]


class _Table(torch.nn.Module):
    """A 'model' whose logits are a fixed table ``[n_users, n_items]``."""

    def __init__(self, table):
        super().__init__()
        self.table, self.n_items = table, table.shape[1]

    def forward(self, users, items):
        return self.table[users, items]


def test_rank_items_is_the_rank_explain_and_the_counterfactual_report():
    from ncf.candidates import rank_items
    from ncf.sampling import key_lookup, pair_keys

    net = _Table(torch.tensor([[0.5, 0.9, 0.5, 0.1, 0.7],
                               [0.2, 0.2, 0.8, 0.3, 0.1]]))
    # user 0 interacted with items 1 and 2 (item 2 is, say, its held-out item), user 1 with item 4
    known = key_lookup(pair_keys(torch.tensor([0, 0, 1]), torch.tensor([1, 2, 4]), 5), 10)
    users, items = torch.tensor([0, 0, 1]), torch.tensor([0, 2, 0])
    rank, among, logit = rank_items(net, users, items, known)
    # user 0, item 0: candidates {0, 3, 4}; 4 scores higher, 0 itself counts: rank 2 of 3
    # user 0, item 2 (interacted): ranked among {0, 3, 4} plus itself; 4 higher, 0 ties against it: rank 3 of 4
    # user 1, item 0: candidates {0, 1, 2, 3}; 2 and 3 higher, 1 ties: rank 4 of 4
    assert rank.tolist() == [2, 3, 4] and among.tolist() == [3, 4, 4]
    assert logit.tolist() == [0.5, 0.5, pytest.approx(0.2)]
    rank_all, among_all, _ = rank_items(net, users, items)  # no data: among every item
    assert rank_all.tolist() == [4, 4, 4] and among_all.tolist() == [5, 5, 5]
