import pytest
import torch
from captum._utils.models.linear_model import SkLearnLinearRegression
from captum.attr import DeepLift, Lime
from captum.attr._core.lime import get_exp_kernel_similarity_function

from explain.core import attribute, spearman
from explain.methods import names
from explain.methods._design import Design
from explain.methods._surrogate import fit_on_masks, fit_surrogate, perturbations
from explain.methods.lime import exp_kernel_similarity
from explain.target import feature_map as _feature_map

METHODS = names()
from tests.helpers import build as make_network


def _net(name, seed=0, scale=0.3):
    torch.manual_seed(seed)
    net = make_network(name, 30, 40, factor=4, num_layers=2)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, scale)  # trained-like magnitudes, so products and ReLUs matter
    return net.eval()


PAIRS = (torch.arange(24) % 30, (torch.arange(24) * 7) % 40)


@pytest.mark.parametrize("name", ["gmf", "mlp", "neumf"])
@pytest.mark.parametrize("baseline", ["zero", "mean"])
def test_deeplift_completeness(name, baseline):
    a = attribute(_net(name), *PAIRS, "deeplift", baseline=baseline)
    assert a.completeness_gap.max() < 1e-4
    total = sum(d.sum(1) for d in a.dims)
    torch.testing.assert_close(total, a.prediction - a.baseline_prediction, atol=1e-5, rtol=0)


def test_deeplift_product_rule_by_hand():
    """GMF with a zero baseline: score change h.(p*q); the product's change is split evenly."""
    net = _net("gmf")
    u, i = torch.tensor([3]), torch.tensor([5])
    p, q = net.embed(u, i)
    h = net.head.weight[0]
    a = attribute(net, u, i, "deeplift", baseline="zero")
    torch.testing.assert_close(a.dims[0], (h * p * q / 2).detach())
    torch.testing.assert_close(a.dims[1], (h * p * q / 2).detach())
    # captum's DeepLift alone treats the product with plain gradients and double counts it.
    class Score(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, p, q):
            return self.net.score(p, q)

    raw = DeepLift(Score(net)).attribute((p.detach(), q.detach()), baselines=(torch.zeros_like(p), torch.zeros_like(q)))
    change = (a.prediction - a.baseline_prediction).item()
    assert (raw[0].sum() + raw[1].sum()).item() == pytest.approx(2 * change, rel=1e-4)


def test_deeplift_equals_captum_without_products():
    net = _net("mlp")
    a = attribute(net, *PAIRS, "deeplift", baseline="zero")
    embs = tuple(e.detach() for e in net.embed(*PAIRS))

    class Score(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, *e):
            return self.net.score(*e)

    ref = DeepLift(Score(net)).attribute(embs, baselines=tuple(torch.zeros_like(e) for e in embs))
    for got, want in zip(a.dims, ref):
        torch.testing.assert_close(got, want.detach())


@pytest.mark.parametrize("name", ["gmf", "mlp", "neumf"])
def test_every_method_shapes_and_groups(name):
    net = _net(name)
    for m in METHODS:
        a = attribute(net, *PAIRS, m, n_samples=300) if m in ("lime", "kernel_shap") else attribute(net, *PAIRS, m)
        assert a.embedding_totals.shape == (24, len(net.embedding_names))
        assert set(a.groups) >= {"user", "item"}
        if name == "neumf":
            assert set(a.groups) == {"user", "item", "gmf", "mlp"}
            shares = a.shares
            torch.testing.assert_close(shares["gmf"] + shares["mlp"], torch.ones(24))
        if m == "shapley":
            assert a.dims is None
        else:
            assert [d.shape[1] for d in a.dims] == [e.shape[1] for e in net.embed(*PAIRS)]


@pytest.mark.parametrize("name", ["gmf", "mlp", "neumf"])
def test_exact_shapley_counts_groups_once(name):
    """Efficiency: group values sum to f(x) - f(b). Summing captum's broadcast per-dimension output
    instead would multiply each group by its width."""
    net = _net(name)
    a = attribute(net, *PAIRS, "shapley")
    assert a.completeness_gap.max() < 1e-5
    for part in (("user", "item"), ("gmf", "mlp")):
        if part[0] in a.groups:
            torch.testing.assert_close(a.groups[part[0]] + a.groups[part[1]], a.prediction - a.baseline_prediction,
                                       atol=1e-5, rtol=0)


def test_neumf_side_groups_are_their_own_game():
    """user vs item in NeuMF is a 2-player game over both branches' embeddings, by hand."""
    net = _net("neumf")
    u, i = torch.tensor([2]), torch.tensor([9])
    a = attribute(net, u, i, "shapley", baseline="zero")
    gu, gi, mu, mi = (e.detach() for e in net.embed(u, i))
    z = torch.zeros_like
    f = lambda *e: net.score(*e).item()  # noqa: E731
    v_u = f(gu, z(gi), mu, z(mi)) - f(z(gu), z(gi), z(mu), z(mi))
    v_i = f(z(gu), gi, z(mu), mi) - f(z(gu), z(gi), z(mu), z(mi))
    v_ui = f(gu, gi, mu, mi) - f(z(gu), z(gi), z(mu), z(mi))
    assert a.groups["user"].item() == pytest.approx(0.5 * v_u + 0.5 * (v_ui - v_i), abs=1e-5)
    assert a.groups["item"].item() == pytest.approx(0.5 * v_i + 0.5 * (v_ui - v_u), abs=1e-5)


@pytest.mark.parametrize("name", ["gmf", "mlp", "neumf"])
def test_ig_piecewise_is_complete(name):
    """Cutting the path where a ReLU switches makes IG exact; fixed-step quadrature is not."""
    net = _net(name)
    a = attribute(net, *PAIRS, "ig")
    assert a.completeness_gap.max() < 1e-4
    torch.testing.assert_close(a.completeness_gap, a.convergence_delta)
    fixed = attribute(net, *PAIRS, "ig", integration="gausslegendre", n_steps=16)
    assert fixed.convergence_delta is not None and fixed.convergence_delta.shape == (24,)
    if name != "gmf":  # GMF has no ReLU: both are exact there
        assert fixed.completeness_gap.max() > 10 * a.completeness_gap.max()
    for got, want in zip(a.dims, attribute(net, *PAIRS, "ig", integration="gausslegendre", n_steps=2000).dims):
        torch.testing.assert_close(got, want, atol=2e-3, rtol=0)  # the many-step limit


def test_kernel_shap_matches_exact_shapley_on_two_groups():
    net = _net("mlp")
    ks = attribute(net, *PAIRS, "kernel_shap", n_samples=300)
    ex = attribute(net, *PAIRS, "shapley")
    # Two groups: every coalition fits in the budget, so KernelSHAP enumerates them and is exact.
    torch.testing.assert_close(ks.groups["user"], ex.groups["user"], atol=1e-5, rtol=0)
    assert ks.completeness_gap.max() < 1e-3  # the end-point constraints of KernelSHAP


def _flat_problem(name, n):
    """The first ``n`` pairs' embeddings flattened ``[n, D]``, the per-dimension feature map and a scorer of
    flattened embeddings: what ``fit_surrogate`` takes."""
    net = _net(name)
    embs = [e.detach() for e in net.embed(PAIRS[0][:n], PAIRS[1][:n])]
    dims = [e.shape[1] for e in embs]
    fmap, nf = _feature_map(dims, None)
    return torch.cat(embs, 1), fmap, nf, lambda flat: net.score(*torch.split(flat, dims, dim=1))


def test_batched_lime_equals_captum_lime():
    """Same perturbations, same kernel: batched least squares gives captum's per-pair surrogate."""
    x, fmap, nf, score = _flat_problem("neumf", 4)
    base = torch.zeros_like(x)
    gen = torch.Generator().manual_seed(0)
    masks = (torch.rand(4, 150, nf, generator=gen) < 0.5).float()
    ours = fit_on_masks(score, x, base, fmap, nf, masks, exp_kernel_similarity("cosine", 0.75))
    for b in range(4):
        replay = iter(masks[b].long()[:, None, :])
        lime = Lime(lambda flat: score(flat), interpretable_model=SkLearnLinearRegression(),
                    similarity_func=get_exp_kernel_similarity_function("cosine", 0.75),
                    perturb_func=lambda inp, **kw: next(replay))
        ref = lime.attribute(x[b:b + 1], baselines=base[b:b + 1], n_samples=150, feature_mask=fmap[None],
                             return_input_shape=False)
        torch.testing.assert_close(ours[b], ref[0].float(), atol=2e-4, rtol=1e-3)


def test_lime_design_sampler():
    gen = torch.Generator().manual_seed(0)
    masks = perturbations(Design(), 3, 64, 20, gen)  # Hadamard order 32, fold-over blocks of 64 rows
    assert masks.shape == (3, 64, 20)
    torch.testing.assert_close(masks.mean(1), torch.full((3, 20), 0.5))  # every feature on in half the rows
    centred = 2 * masks - 1
    gram = centred.transpose(1, 2) @ centred
    torch.testing.assert_close(gram, 64 * torch.eye(20).expand(3, -1, -1))  # orthogonal columns
    assert perturbations(Design(), 2, 16, 3, gen).shape == (2, 8, 3)  # 2^3 <= 16: each coalition once


def test_walsh_hadamard_transform_is_sylvester():
    from explain.methods._design import fwht as _fwht, sylvester as _sylvester

    h = torch.ones(1, 1)
    while h.shape[0] < 64:  # Sylvester's construction, written out
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    assert torch.equal(_sylvester(64), h > 0)
    v = torch.randn(3, 64, dtype=torch.float64)
    torch.testing.assert_close(_fwht(v), v @ h.double())


@pytest.mark.parametrize("n_samples", [40, 700, 9000])
@pytest.mark.parametrize("chunk", [1 << 22, 300])
def test_fast_design_lime_equals_least_squares_on_the_design(n_samples, chunk):
    """The Walsh-Hadamard fit (never building the design) equals the explicit weighted least squares
    on the very same masks, for one and several blocks, and however the work is chunked."""
    x, fmap, nf, score = _flat_problem("neumf", 5)
    base = 0.3 * x.mean(0, keepdim=True).expand_as(x)
    kernel = exp_kernel_similarity("cosine", 0.75)
    fast = fit_surrogate(score, x, base, fmap, nf, n_samples, torch.Generator().manual_seed(3), Design(), kernel,
                         chunk=chunk)
    masks = perturbations(Design(), 5, n_samples, nf, torch.Generator().manual_seed(3))
    explicit = fit_on_masks(score, x, base, fmap, nf, masks, kernel)
    torch.testing.assert_close(fast, explicit, atol=1e-6, rtol=1e-5)
    assert fast.abs().max() > 1e-2


def test_a_surrogate_is_its_perturbation_and_its_similarity():
    """The solver takes its behaviour as two functions, as captum's LimeBase does: KernelSHAP is the solver
    given KernelSHAP's sampling and weights, and any other pair plugs in (coin flips with equal weights are
    ordinary least squares)."""
    import numpy as np

    from explain.methods.kernel_shap import ShapleySampling, shapley_similarity
    from explain.methods.lime import Bernoulli

    x, fmap, nf, score = _flat_problem("neumf", 3)
    base = torch.zeros_like(x)
    ks = fit_surrogate(score, x, base, fmap, nf, 400, torch.Generator().manual_seed(5), ShapleySampling(),
                       shapley_similarity)
    a = attribute(_net("neumf"), PAIRS[0][:3], PAIRS[1][:3], "kernel_shap", baseline="zero", seed=5, n_samples=400)
    assert torch.equal(ks, a.features)

    def equal_weights(masks, *_):
        return torch.ones(masks.shape[:2])

    ols = fit_surrogate(score, x, base, fmap, nf, 300, torch.Generator().manual_seed(1), Bernoulli(), equal_weights)
    masks = perturbations(Bernoulli(), 3, 300, nf, torch.Generator().manual_seed(1))
    for p in range(3):
        with torch.no_grad():
            y = score(base[p] + masks[p] * (x[p] - base[p])).double().numpy()
        want = np.linalg.lstsq(np.c_[np.ones(300), masks[p].double().numpy()], y, rcond=None)[0][1:]
        np.testing.assert_allclose(ols[p].detach().numpy(), want, atol=1e-4, rtol=1e-3)


def test_spearman_ties_and_ignored_dimensions():
    a = torch.tensor([[1.0, 2.0, 2.0, 3.0]])
    torch.testing.assert_close(spearman(a, a), torch.tensor([1.0]))
    torch.testing.assert_close(spearman(a, -a), torch.tensor([-1.0]))
    # Two dimensions at the baseline whose attributions are rounding noise of opposite order.
    x = torch.tensor([[0.5, -0.2, 0.9, 1e-9, -1e-9]])
    y = torch.tensor([[0.5, -0.2, 0.9, -1e-9, 1e-9]])
    ignore = torch.tensor([[False, False, False, True, True]])
    assert spearman(x, y).item() < 0.95
    torch.testing.assert_close(spearman(x, y, ignore), torch.tensor([1.0]))


def test_spearman_matches_scipy_row_by_row():
    from scipy.stats import spearmanr

    torch.manual_seed(0)
    a = torch.randn(50, 30)
    a[:, :6] = a[:, :6].round()  # ties
    b = a + torch.randn(50, 30)
    ignore = torch.rand(50, 30) < 0.3
    want = [spearmanr(a[r][~ignore[r]], b[r][~ignore[r]]).statistic for r in range(50)]
    torch.testing.assert_close(spearman(a, b, ignore), torch.tensor(want, dtype=torch.float32))
    torch.testing.assert_close(spearman(a, b), torch.tensor([spearmanr(a[r], b[r]).statistic for r in range(50)],
                                                            dtype=torch.float32))


def test_dimensions_at_the_baseline_are_inactive():
    net = _net("gmf")
    with torch.no_grad():
        net.user_embedding.weight[:, 1] = 0.25  # a column every user shares: equal to the mean baseline
    a = attribute(net, *PAIRS, "deeplift")
    assert a.inactive.shape == a.features.shape
    assert a.inactive[:, 1].all() and not a.inactive[:, 0].any()
    assert a.features[:, 1].abs().max() < 1e-6
    assert attribute(net, *PAIRS, "shapley").inactive is None


def test_a_column_l2_drove_towards_zero_is_inactive_and_left_out_of_rank_correlations():
    """Weight decay leaves unused columns at 1e-5..1e-3 of a row's largest value, not at zero: their
    attributions (products of such values) are next to zero and their order noise."""
    from explain.tables import stability

    net = _net("gmf")
    with torch.no_grad():
        for table in (net.user_embedding.weight, net.item_embedding.weight):
            table[:, 2] = 1e-4 * torch.randn(table.shape[0])  # a column L2 drove towards zero
    a = attribute(net, *PAIRS, "deeplift")
    width = net.user_embedding.weight.shape[1]
    dead = [2, width + 2]
    assert a.inactive[:, dead].all()
    assert not a.inactive[:, [c for c in range(2 * width) if c not in dead]].any()  # the other columns stay in
    # stability leaves out what either epoch flags: a dimension flagged only at the previous epoch too
    prev = a.features.clone()
    prev[:, 0] = -prev[:, 0]
    flagged = torch.zeros_like(a.inactive)
    flagged[:, 0] = True
    torch.testing.assert_close(stability((prev, flagged), a.features, a.inactive),
                               spearman(prev, a.features, a.inactive | flagged))
    # a rank correlation over two values (exact Shapley's user and item totals on GMF) can only be -1 or 1
    s = attribute(net, *PAIRS, "shapley")
    assert s.features.shape[1] == 2 and stability((s.features.flip(0), None), s.features).isnan().all()


def test_lime_design_is_more_stable_than_bernoulli():
    net = _net("gmf")

    def rho(**kw):
        a = attribute(net, *PAIRS, "lime", seed=0, n_samples=128, **kw)  # 128 < 2^8 coalitions: sampled
        b = attribute(net, *PAIRS, "lime", seed=1, n_samples=128, **kw)
        return float(spearman(a.features, b.features).median())

    assert rho(sampler="design") > rho(sampler="bernoulli") + 0.05
    # GMF is bilinear in the masks; with equal weights the fold-over design recovers the main effects exactly.
    assert rho(sampler="design", kernel_width=1e3, distance="euclidean") == pytest.approx(1.0)


def test_seeded_and_global_rng_untouched():
    net = _net("neumf")
    state = torch.get_rng_state()
    a = attribute(net, *PAIRS, "lime", seed=3, n_samples=200)
    b = attribute(net, *PAIRS, "lime", seed=3, n_samples=200)
    c = attribute(net, *PAIRS, "lime", seed=4, n_samples=200)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.features, b.features) and not torch.equal(a.features, c.features)


def test_model_untouched_and_inference_mode_safe():
    net = _net("neumf")
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.inference_mode():
        users, items = PAIRS  # tensors from inference mode, as in trainer.validate
        for m in ("deeplift", "ig", "lime"):
            attribute(net, users.clone(), items.clone(), m, n_samples=100) if m == "lime" else attribute(net, users, items, m)
    assert net.training
    assert list(net.state_dict()) == list(before)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    assert all(p.grad is None for p in net.parameters())


def test_spearman():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    b = torch.tensor([[10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, 4.0]])
    torch.testing.assert_close(spearman(a, b), torch.tensor([1.0, -1.0]))


def test_unknown_method_and_baseline():
    net = _net("gmf")
    with pytest.raises(ValueError, match="Unknown method 'gradcam'"):
        attribute(net, *PAIRS, "gradcam")
    with pytest.raises(ValueError, match="Unknown baseline 'median'"):
        attribute(net, *PAIRS, "deeplift", baseline="median")


def test_a_pairs_faithfulness_does_not_depend_on_the_pairs_beside_it():
    from explain.core import attribute
    from explain.faithfulness import faithfulness
    from tests.helpers import build as make_network

    torch.manual_seed(0)
    net = make_network("neumf", 8, 12, factor=4, num_layers=2).eval()
    users, items = torch.tensor([0, 3, 5, 7]), torch.tensor([1, 2, 9, 4])
    together = faithfulness(net, users, items, attribute(net, users, items, "deeplift"), seed=3)
    for k in range(len(users)):
        u, i = users[k:k + 1], items[k:k + 1]
        alone = faithfulness(net, u, i, attribute(net, u, i, "deeplift"), seed=3)
        for name, value in alone.items():
            torch.testing.assert_close(value[0], together[name][k], msg=name)
    other = faithfulness(net, users, items, attribute(net, users, items, "deeplift"), seed=4)
    assert not torch.equal(other["infidelity"], together["infidelity"])  # the seed still counts


def test_a_group_level_methods_gain_is_against_every_order():
    """Shapley over GMF's two groups: a single random order is the attribution's own half the time, a gain of
    exactly 0; the random figure is the mean over both orders, so the gain is half the two orders' gap."""
    from explain.core import attribute
    from explain.faithfulness import _auc, _curve, faithfulness
    from explain.target import Target, feature_map
    from tests.helpers import build as make_network

    torch.manual_seed(0)
    net = make_network("gmf", 30, 40, factor=8).eval()
    users, items = torch.arange(30), torch.arange(30) + 5
    attr = attribute(net, users, items, "shapley")
    f = faithfulness(net, users, items, attr, seed=0)
    t = Target.build(net, users, items, "mean")
    fmap, n = feature_map(t.dims, list(t.partitions["embedding"].values()))
    score = t.flat_score()
    with torch.no_grad():
        both = [_auc(_curve(score, t.x, t.b, torch.tensor(o).expand(len(users), -1), fmap, 10, False))
                for o in ([0, 1], [1, 0])]
    assert n == 2
    torch.testing.assert_close(f["deletion_auc_random"], (both[0] + both[1]) / 2)
    torch.testing.assert_close(f["deletion_gain"], (both[0] - both[1]).abs() / 2)  # its own order is the better one
    assert (f["deletion_gain"] > 0).all() and (f["insertion_gain"] > 0).all()
