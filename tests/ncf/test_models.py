import functools
import sys

import pytest
import torch
from torch import nn

from ncf.fused import FoldedScorer
from ncf.models import GMF, MLP, NeuMF
from tests.helpers import build as make_network
from tests.helpers import module as make_module


@pytest.mark.parametrize("name,dims", [("gmf", [8, 8]), ("mlp", [32, 32]), ("neumf", [8, 8, 32, 32])])
def test_embed_score_shapes(name, dims):
    net = make_network(name, 10, 20, factor=8, num_layers=3)
    u, i = torch.tensor([0, 3, 9]), torch.tensor([1, 19, 5])
    embs = net.embed(u, i)
    assert [e.shape for e in embs] == [torch.Size([3, d]) for d in dims]
    assert len(net.embedding_names) == len(embs)
    out = net(u, i)
    assert out.shape == (3,)
    torch.testing.assert_close(out, net.score(*embs))
    torch.testing.assert_close(out, net.score_features(*net.features(*embs)))


def test_mlp_tower_halves_with_distinct_relus():
    net = MLP(5, 5, factor=8, num_layers=3)
    linears = [m for m in net.tower if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(64, 32), (32, 16), (16, 8)]
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 3 and len({id(r) for r in relus}) == 3


def test_neumf_head_concatenates_branches():
    net = NeuMF(5, 6, factor=4, num_layers=2)
    assert net.head.in_features == 8
    u, i = torch.tensor([1]), torch.tensor([2])
    gu, gi, mu, mi = net.embed(u, i)
    expected = net.head(torch.cat([gu * gi, net.mlp.tower(torch.cat([mu, mi], -1))], -1)).squeeze(-1)
    torch.testing.assert_close(net(u, i), expected)


def test_neumf_pretraining_loads_exact_weights():
    torch.manual_seed(0)
    gmf, mlp, neumf = GMF(5, 6, 4), MLP(5, 6, 4, 2), NeuMF(5, 6, 4, 2)
    neumf.load_pretrained(gmf, mlp, alpha=0.3)
    assert torch.equal(neumf.gmf.user_embedding.weight, gmf.user_embedding.weight)
    assert torch.equal(neumf.gmf.item_embedding.weight, gmf.item_embedding.weight)
    assert torch.equal(neumf.mlp.user_embedding.weight, mlp.user_embedding.weight)
    assert torch.equal(neumf.mlp.item_embedding.weight, mlp.item_embedding.weight)
    for a, b in zip(neumf.mlp.tower.parameters(), mlp.tower.parameters()):
        assert torch.equal(a, b)
    torch.testing.assert_close(neumf.head.weight, torch.cat([0.3 * gmf.head.weight, 0.7 * mlp.head.weight], 1))
    torch.testing.assert_close(neumf.head.bias, 0.3 * gmf.head.bias + 0.7 * mlp.head.bias)
    # The fused logit is the alpha-mix of the two pretrained logits.
    u, i = torch.tensor([0, 4]), torch.tensor([5, 1])
    torch.testing.assert_close(neumf(u, i), 0.3 * gmf(u, i) + 0.7 * mlp(u, i))


def test_a_network_is_named_by_its_class():
    from ncf.contract import build_network, network_spec
    from ncf.errors import ConfigError

    spec = {"class_path": "ncf.models.MLP", "init_args": {"factor": 4, "num_layers": 2}}
    assert network_spec(functools.partial(MLP, factor=4, num_layers=2)) == spec == network_spec(dict(spec))
    assert type(build_network(spec, 3, 5)) is MLP and build_network(spec, 3, 5).tower[0].in_features == 16
    for bad, message in ((dict(spec, class_path="ncf.models.BPR"), "not a class implementing ncf.contract.Recommender"),
                         (dict(spec, class_path="os.system"), "not a class implementing"),  # a function, not a class
                         (dict(spec, class_path="antigravity.X"), "not a class implementing"),  # the stdlib is never imported
                         ({"class_path": "ncf.models.GMF", "init_args": {"factr": 4}}, "did you mean 'factor'"),
                         ({"class_path": "ncf.models.GMF", "init_args": {"factor": 0}}, r"factor must be at least 1.*--model.network.factor"),
                         ({"class_path": "ncf.models.MLP", "init_args": {"dropout": 1.5}}, r"dropout must be in \[0, 1\)")):
        with pytest.raises(ConfigError, match=message):
            build_network(bad, 3, 5)
    assert "antigravity" not in sys.modules


def test_a_pretrained_neumf_refuses_branches_of_other_sizes():
    neumf = NeuMF(5, 7, factor=4, num_layers=2)
    with pytest.raises(ValueError, match="MLP num_layers 3 where this NeuMF has 2"):
        neumf.load_pretrained(GMF(5, 7, 4), MLP(5, 7, 4, 3))
    with pytest.raises(ValueError, match="the pretrained GMF is a MLP"):
        neumf.load_pretrained(MLP(5, 7, 4, 2), MLP(5, 7, 4, 2))


def _grads(net, loss):
    net.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("cls", [MLP, NeuMF])
def test_folded_first_layer_equals_per_pair_route(cls):
    # 2 * 200 pairs > 11 + 13 rows: the fast scorer folds the first layer into the tables.
    torch.manual_seed(0)
    net = cls(11, 13, factor=4, num_layers=3)
    scorer = FoldedScorer(net)
    users, items = torch.randint(11, (200,)), torch.randint(13, (200,))
    target = torch.rand(200)
    folded = scorer(users, items)
    per_pair = net.score(*net.embed(users, items))
    torch.testing.assert_close(folded, per_pair, rtol=1e-5, atol=1e-6)
    g_fold = _grads(net, ((scorer(users, items) - target) ** 2).sum())
    g_pair = _grads(net, ((net.score(*net.embed(users, items)) - target) ** 2).sum())
    assert g_fold.keys() == g_pair.keys() and len(g_fold) == len(list(net.parameters()))
    for name in g_fold:
        torch.testing.assert_close(g_fold[name], g_pair[name], rtol=1e-4, atol=1e-6, msg=name)
    # Small batches take the per-pair route: bitwise the same as score(embed(...)).
    assert torch.equal(scorer(users[:5], items[:5]), net.score(*net.embed(users[:5], items[:5])))


def _autograd_fold_logit(net, users, items):
    """The folded route through autograd alone: the expression ``_FoldedLogit`` computes by hand."""
    from ncf.fused import folded_hidden

    if isinstance(net, NeuMF):
        gmf = net.gmf.user_embedding(users) * net.gmf.item_embedding(items)
        return net.head(torch.cat([gmf, folded_hidden(net.mlp, users, items)], -1)).squeeze(-1)
    return net.head(folded_hidden(net, users, items)).squeeze(-1)


@pytest.mark.parametrize("cls", [MLP, NeuMF])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_hand_written_backward_is_bitwise_autograd(cls, num_layers):
    torch.manual_seed(num_layers)
    net = cls(37, 53, factor=8, num_layers=num_layers)
    scorer = FoldedScorer(net)
    for p in net.parameters():  # trained-like scales, so that ReLUs switch both ways
        nn.init.normal_(p, std=0.3)
    users, items = torch.randint(37, (500,)), torch.randint(53, (500,))
    labels = (torch.rand(500) < 0.2).float()
    fused = scorer(users, items)
    assert fused.grad_fn is not None and "FoldedLogit" in type(fused.grad_fn).__name__
    reference = _autograd_fold_logit(net, users, items)
    assert torch.equal(fused, reference)
    g_fused = _grads(net, torch.nn.functional.binary_cross_entropy_with_logits(scorer(users, items), labels))
    g_ref = _grads(net, torch.nn.functional.binary_cross_entropy_with_logits(reference, labels))
    assert g_fused.keys() == g_ref.keys() and len(g_fused) == len(list(net.parameters()))
    for name in g_fused:
        assert torch.equal(g_fused[name], g_ref[name]), name
    with torch.no_grad():  # evaluation takes the same route
        assert torch.equal(scorer(users, items), reference)


def test_folded_route_falls_back_under_dropout():
    torch.manual_seed(0)
    net = NeuMF(11, 13, factor=4, num_layers=2, dropout=0.5)
    scorer = FoldedScorer(net)
    users, items = torch.randint(11, (200,)), torch.randint(13, (200,))
    assert "FoldedLogit" not in type(scorer(users, items).grad_fn).__name__  # dropout is active in training
    net.eval()
    assert "FoldedLogit" in type(scorer(users, items).grad_fn).__name__
    torch.testing.assert_close(scorer(users, items), net.score(*net.embed(users, items)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", ["mlp", "neumf"])
def test_l2_counted_per_row_equals_gathered_rows(model):
    # Folded batches (2 * 300 pairs > 17 + 19 rows) count the L2 penalty per table row instead of gathering
    # each pair's rows: the same loss and gradients as the per-pair route, up to rounding.

    torch.manual_seed(0)
    module = make_module(model, 17, 19, factor=4, num_layers=2, weight_decay=0.05)
    for p in module.parameters():
        nn.init.normal_(p, std=0.3)
    users, items = torch.randint(17, (300,)), torch.randint(19, (300,))
    labels = (torch.rand(300) < 0.2).float()
    module.on_train_epoch_start()
    assert module.scorer.l2(users, items) is not None and module.scorer.l2(users[:5], items[:5]) is None
    g_counted = _grads(module, module.training_step((users, items, labels), 0))
    embs = module.net.embed(users, items)
    gathered = torch.nn.functional.binary_cross_entropy_with_logits(module.net.score(*embs), labels) \
        + 0.05 * sum(e.pow(2).sum() for e in embs) / 300
    torch.testing.assert_close(module.training_step((users, items, labels), 0), gathered, rtol=1e-5, atol=1e-6)
    g_gathered = _grads(module, gathered)
    assert g_counted.keys() == g_gathered.keys() and len(g_counted) == len(list(module.parameters()))
    for name in g_counted:
        torch.testing.assert_close(g_counted[name], g_gathered[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("cls", [MLP, NeuMF])
def test_large_catalogue_route_without_concatenation(cls, monkeypatch):
    # Sparse embeddings (large catalogues) and a batch too small to fold: the per-pair route splits the
    # concatenations into sums of products; the same logits and gradients as score(embed(...)).
    torch.manual_seed(0)
    net = cls(211, 307, factor=4, num_layers=2)
    scorer = FoldedScorer(net)
    for p in net.parameters():
        nn.init.normal_(p, std=0.3)
    users, items = torch.randint(211, (60,)), torch.randint(307, (60,))
    labels = (torch.rand(60) < 0.2).float()
    reference = net.score(*net.embed(users, items))
    assert torch.equal(scorer(users, items), reference)  # dense tables: the plain route
    g_ref = _grads(net, torch.nn.functional.binary_cross_entropy_with_logits(reference, labels))
    for mod in net.modules():
        if isinstance(mod, nn.Embedding):
            mod.sparse = True
    from ncf import fused

    calls = []
    route = fused._split_logit
    monkeypatch.setattr(fused, "_split_logit", lambda *a: calls.append(1) or route(*a))
    split = scorer(users, items)
    assert calls  # it took the split route
    torch.testing.assert_close(split, reference, rtol=1e-5, atol=1e-6)
    g_split = _grads(net, torch.nn.functional.binary_cross_entropy_with_logits(split, labels))
    assert g_split.keys() == g_ref.keys() and len(g_split) == len(list(net.parameters()))
    for name in g_split:
        got = g_split[name].to_dense() if g_split[name].is_sparse else g_split[name]
        torch.testing.assert_close(got, g_ref[name], rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():  # evaluation keeps the plain route
        assert torch.equal(scorer(users, items), reference)


def test_a_scoring_pass_folds_the_tables_once(monkeypatch):
    # Without gradients the folded tables are computed per call, or once inside a scoring pass (where the
    # caller vouches that the weights hold still: fused Adam changes them without counting versions).
    from ncf import fused

    torch.manual_seed(0)
    net = NeuMF(37, 53, factor=8, num_layers=2)
    scorer = FoldedScorer(net)
    for p in net.parameters():
        nn.init.normal_(p, std=0.3)
    batches = [(torch.randint(37, (400,)), torch.randint(53, (400,))) for _ in range(3)]
    calls = []
    fold = fused._folded_tables
    monkeypatch.setattr(fused, "_folded_tables", lambda m: calls.append(1) or fold(m))

    def scores():
        return [scorer(u, i) for u, i in batches]

    with torch.inference_mode(), scorer.scoring_pass():
        kept = scores()
    assert len(calls) == 1
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(kept, scores()))  # the same bits as folding per call
        assert len(calls) == 1 + 3
        assert all(torch.equal(a, _autograd_fold_logit(net, u, i)) for a, (u, i) in zip(kept, batches))
    opt = torch.optim.Adam(net.parameters(), lr=0.1, fused=True)
    users, items = batches[0]
    torch.nn.functional.binary_cross_entropy_with_logits(scorer(users, items), torch.ones(400)).backward()
    opt.step()
    with torch.no_grad():  # outside a pass: the new weights
        assert not torch.equal(scorer(users, items), kept[0])
        assert torch.equal(scorer(users, items), _autograd_fold_logit(net, users, items))
        with scorer.scoring_pass():  # a new pass folds them again
            assert torch.equal(scorer(users, items), _autograd_fold_logit(net, users, items))


def test_the_networks_forward_is_the_plain_computation():
    # The models never take the fast path themselves: forward is score(embed(...)) to the bit, at any batch size.
    torch.manual_seed(0)
    for net in (MLP(11, 13, factor=4, num_layers=2), NeuMF(11, 13, factor=4, num_layers=2)):
        users, items = torch.randint(11, (500,)), torch.randint(13, (500,))
        out = net(users, items)
        assert torch.equal(out, net.score(*net.embed(users, items))) and "FoldedLogit" not in type(out.grad_fn).__name__


def test_the_module_chooses_the_fast_path():
    torch.manual_seed(0)
    fast = make_module("neumf", 11, 13, factor=4, num_layers=2)
    plain = make_module("neumf", 11, 13, factor=4, num_layers=2, fast_path=False)
    plain.load_state_dict(fast.state_dict())
    users, items = torch.randint(11, (500,)), torch.randint(13, (500,))
    assert "FoldedLogit" in type(fast.score_pairs(users, items).grad_fn).__name__
    assert plain.scorer is None and torch.equal(plain.score_pairs(users, items), plain.net(users, items))
    torch.testing.assert_close(fast.score_pairs(users, items), plain.score_pairs(users, items), rtol=1e-5, atol=1e-6)
