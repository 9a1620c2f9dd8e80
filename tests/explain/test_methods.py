"""Every registered method against its captum reference, captum as a backend, and a new method added
through the registry alone."""
import pytest
import torch

from explain import methods as registry
from explain.core import attribute
from explain.target import Target, explaining
from tests.helpers import build as make_network

# Small settings: LIME and KernelSHAP at a fixed sample count (the reference replays the same draws).
SETTINGS = {"lime": {"n_samples": 256, "stability_target": None}, "kernel_shap": {"n_samples": 120}}
USERS, ITEMS = torch.tensor([0, 3, 5, 7]), torch.tensor([1, 2, 9, 4])


def _net(name):
    torch.manual_seed(0)
    net = make_network(name, 8, 12, factor=4, num_layers=2)
    for p in net.parameters():  # trained-like scales, so that ReLUs switch and products matter
        torch.nn.init.normal_(p, std=0.4)
    return net.eval()


@pytest.mark.parametrize("model", ["gmf", "mlp", "neumf"])
@pytest.mark.parametrize("method", registry.names())
def test_every_method_equals_its_captum_reference(method, model):
    m = registry.get(method)
    net = _net(model)
    t = Target.build(net, USERS, ITEMS)
    settings = {**m.defaults, **SETTINGS.get(method, {})}
    with explaining(net):
        ours = m.run(t, torch.Generator().manual_seed(3), **settings)
        ref = m.reference(t, torch.Generator().manual_seed(3), **settings)
    torch.testing.assert_close(m.comparable(t, ours).float(), ref.float(), atol=5e-4, rtol=1e-3)
    assert m.captum_class  # says which captum class defines it


@pytest.mark.parametrize("method", registry.names())
def test_captum_backend_runs_every_method(method):
    net = _net("neumf")
    n = {"n_samples": 64} if method in ("lime", "kernel_shap") else {}
    ours = attribute(net, USERS, ITEMS, method, **{**SETTINGS.get(method, {}), **n})
    theirs = attribute(net, USERS, ITEMS, method, backend="captum", **{**SETTINGS.get(method, {}), **n})
    assert theirs.settings["backend"] == "captum" and theirs.embedding_totals.shape == ours.embedding_totals.shape
    assert set(theirs.groups) == set(ours.groups) == {"user", "item", "gmf", "mlp"}
    if method == "shapley":  # exact either way
        torch.testing.assert_close(theirs.embedding_totals, ours.embedding_totals, atol=1e-5, rtol=1e-4)


def test_captum_deeplift_double_counts_products():
    """captum's DeepLift alone: equal to ours without products (MLP), not complete with them (GMF)."""
    mlp, gmf = _net("mlp"), _net("gmf")
    torch.testing.assert_close(attribute(mlp, USERS, ITEMS, "deeplift", backend="captum").features,
                               attribute(mlp, USERS, ITEMS, "deeplift").features, atol=1e-5, rtol=1e-4)
    assert attribute(gmf, USERS, ITEMS, "deeplift").completeness_gap.max() < 1e-4
    assert attribute(gmf, USERS, ITEMS, "deeplift", backend="captum").completeness_gap.max() > 1e-2


def test_lime_reports_samples_and_stability_reached():
    net = _net("neumf")
    a = attribute(net, USERS, ITEMS, "lime", min_samples=1024, max_samples=8192, stability_target=0.9)
    assert a.samples.shape == (4,) and bool((a.samples >= 1024).all()) and bool((a.samples <= 8192).all())
    reached = a.stability >= 0.9
    assert bool((reached | (a.samples + 2 * 1024 > 8192)).all())  # each pair stable, or at the cap
    b = attribute(net, USERS, ITEMS, "lime", min_samples=1024, max_samples=8192, stability_target=0.9)
    assert torch.equal(a.features, b.features) and torch.equal(a.samples, b.samples)  # seeded


def test_a_new_method_is_one_file_and_one_registry_line():
    from explain import AttributionCallback

    from . import toy_grad_x_input as toy

    registry.register(toy.METHOD)  # the registry line
    try:
        net = _net("neumf")
        a = attribute(net, USERS, ITEMS, "grad_x_input")
        assert a.dims is not None and set(a.groups) == {"user", "item", "gmf", "mlp"}
        t = Target.build(net, USERS, ITEMS)
        with explaining(net):
            torch.testing.assert_close(toy.METHOD.comparable(t, toy.METHOD.run(t, None)),
                                       toy.METHOD.reference(t, None), atol=1e-5, rtol=1e-4)
        AttributionCallback(methods=["grad_x_input", "deeplift"])  # the callback accepts it
        assert "grad_x_input" not in registry.random_methods()
        # and explain.py offers it
        from explain.cli import build_parser
        assert "grad_x_input" in build_parser()._option_string_actions["--methods"].choices
    finally:
        registry.REGISTRY.pop("grad_x_input")
    with pytest.raises(ValueError, match="Unknown method 'grad_x_input'"):
        attribute(net, USERS, ITEMS, "grad_x_input")
