"""A network that breaks the contract is refused before it trains, with the member to fix: each mistake a
model author makes here used to train and then fail later (or, for ``forward``, silently train one function
and rank by another)."""
from pathlib import Path

import pytest
import torch
from torch import nn

from ncf.cli import main as cli_main
from ncf.contract import Recommender, build_network, check_network
from ncf.errors import ConfigError
from tests.conftest import write_tiny

REPO = Path(__file__).resolve().parents[2]


class Dot(Recommender):
    """A plain dot product: follows the contract."""

    embedding_names = ("user", "item")
    feature_sources = (("product", 0, 1),)
    groups = {"side": {"user": (0,), "item": (1,)}}

    def __init__(self, n_users: int, n_items: int, factor: int = 4):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.user_embedding = nn.Embedding(n_users, factor)
        self.item_embedding = nn.Embedding(n_items, factor)

    def embed(self, users, items):
        return self.user_embedding(users), self.item_embedding(items)

    def features(self, p, q):
        return (p * q,)

    def score_features(self, x):
        return x.sum(-1)


class ForwardExtra(Dot):
    def forward(self, users, items):
        return super().forward(users, items) + 1.0


class NoGroups(Dot):
    groups = None


class OneSide(Dot):
    groups = {"side": {"user": (0,)}}


class GroupOutOfRange(Dot):
    groups = {"side": {"user": (0,), "item": (2,)}}


class WrongSources(Dot):
    feature_sources = (("identity", 0),)


class Column(Dot):
    def score_features(self, x):
        return x.sum(-1, keepdim=True)


class ThreeD(Dot):
    def embed(self, users, items):
        return self.user_embedding(users)[:, None], self.item_embedding(items)[:, None]


class WrongTable(Dot):
    def embed(self, users, items):
        return self.user_embedding(items), self.item_embedding(items)  # the user table read with item indices


class Double(Dot):
    def __init__(self, n_users: int, n_items: int, factor: int = 4):
        super().__init__(n_users, n_items, factor)
        self.double()

    def embed(self, users, items):
        return self.user_embedding(users).float(), self.item_embedding(items).float()


class BatchMix(Dot):
    def score_features(self, x):
        s = x.sum(-1)
        return s - s.mean()


class NoSizes(Dot):
    def __init__(self, n_users: int, n_items: int, factor: int = 4):
        super().__init__(n_users, n_items, factor)
        del self.n_users, self.n_items


class NoEmbeddings(Recommender):
    embedding_names = ()
    feature_sources = ()
    groups = {"side": {"user": (), "item": ()}}

    def __init__(self, n_users: int, n_items: int):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.bias = nn.Parameter(torch.zeros(1))

    def embed(self, users, items):
        return ()

    def features(self):
        return ()

    def score_features(self):
        return self.bias.expand(2)


class GroupsByName(Dot):
    groups = {"side": {"user": ("user",), "item": ("item",)}}


class GroupsMethod(Dot):
    def groups(self):
        return {"side": {"user": (0,), "item": (1,)}}


class SourcesMethod(Dot):
    def feature_sources(self):
        return (("product", 0, 1),)


class WrongSide(Dot):
    groups = {"side": {"user": (1,), "item": (0,)}}


class Projected(Dot):
    def __init__(self, n_users: int, n_items: int, factor: int = 4):
        super().__init__(n_users, n_items, factor)
        self.proj = nn.Linear(factor, factor)

    def embed(self, users, items):
        return self.proj(self.user_embedding(users)), self.item_embedding(items)


class SwappedSizes(Dot):
    def __init__(self, n_items: int, n_users: int, factor: int = 4):
        super().__init__(n_users, n_items, factor)


class NoSuper(Dot):
    def __init__(self, n_users: int, n_items: int, factor: int = 4):
        self.user_embedding = nn.Embedding(n_users, factor)


class ZeroBias(Dot):
    """A dot product with an item bias that starts at zero (the usual choice)."""

    embedding_names = ("user", "item", "item_bias")
    feature_sources = (("product", 0, 1), ("identity", 2))
    groups = {"side": {"user": (0,), "item": (1, 2)}}

    def __init__(self, n_users: int, n_items: int, factor: int = 4):
        super().__init__(n_users, n_items, factor)
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.zeros_(self.item_bias.weight)

    def embed(self, users, items):
        return self.user_embedding(users), self.item_embedding(items), self.item_bias(items)

    def features(self, p, q, b):
        return p * q, b

    def score_features(self, x, b):
        return x.sum(-1) + b.squeeze(-1)


class ZeroBiasOnTheUserSide(ZeroBias):
    groups = {"side": {"user": (0, 2), "item": (1,)}}


class Shared(Dot):
    """One table for users and items, the items' rows after the users'."""

    def __init__(self, n_users: int, n_items: int, factor: int = 4):
        super().__init__(n_users, n_items, factor)
        self.table = nn.Embedding(n_users + n_items, factor)

    def embed(self, users, items):
        return self.table(users), self.table(items + self.n_users)


class Probability(Dot):
    def score_features(self, x):
        return torch.sigmoid(x.sum(-1))


class ShortEmbed(Dot):
    embedding_names = ("user", "item", "extra")
    groups = {"side": {"user": (0,), "item": (1,)}}


@pytest.mark.parametrize("cls, says", [
    (ZeroBiasOnTheUserSide, r"`groups` puts embedding 2 \('item_bias'\) on the user side, but it changes with the item "
                            r"alone"),
    (ShortEmbed, r"embed\(\) returns 2 tensors, where `embedding_names` names 3 \('user', 'item', 'extra'\)"),
    (GroupsByName, r"`groups\['side'\]` lists \['user', 'item'\]; it names embeddings by their index in "
                   r"`embedding_names` \(0: 'user', 1: 'item'\)"),
    (GroupsMethod, r"`groups` is a method; it is a class attribute"),
    (SourcesMethod, r"`feature_sources` is a method; it is a class attribute"),
    (WrongSide, r"`groups` puts embedding 0 \('user'\) on the item side, but it changes with the user alone: the "
                r"item/user shares of every explanation would be wrong"),
    (Projected, r"embedding 0 \('user'\) is not one row of a table indexed by the pair's user .* or set "
                r"`embeddings_are_rows = False`"),
    (ForwardExtra, r"forward\(\) is not score\(\*embed\(users, items\)\)"),
    (NoGroups, r"`groups` needs \{\"side\""),
    (OneSide, r"`groups` needs"),
    (GroupOutOfRange, r"`groups\['side'\]` must put each of the 2 embeddings \('user', 'item'\) .* it lists \[0, 2\]"),
    (WrongSources, r"feature 0 of features\(\) is not \('identity', 0\)"),
    (Column, r"score_features\(\) returns shape \(2, 1\) for 2 pairs"),
    (ThreeD, r"embed\(\)'s 'user' has shape \(2, 1, 4\)"),
    (NoSizes, r"`self.n_users` is not set in __init__"),
    (NoEmbeddings, r"`embedding_names` is empty"),
    (WrongTable, r"on two valid pairs \(user and item indices 0 and the last\) it raised IndexError"),
    (Double, r"its weights are float64; the trainer and the explanation methods work in float32"),
    (BatchMix, r"a pair's logit depends on the other pairs of its batch"),
])
def test_each_contract_mistake_is_named(cls, says):
    net = cls(5, 7)
    net.train()
    state = torch.get_rng_state()
    with pytest.raises(ConfigError, match=says):
        check_network(net)
    assert net.training and torch.equal(state, torch.get_rng_state())  # mode and random state left as they were


def test_unusual_but_right_models_are_not_refused_and_a_probability_is_said(caplog):
    import logging

    check_network(ZeroBias(5, 7), 5, 7)
    check_network(Shared(5, 7), 5, 7)  # rows at an offset are rows: history influence reads them right
    logging.getLogger("ncf").addHandler(caplog.handler)
    try:
        check_network(Dot(5, 7))
        assert not caplog.records
        check_network(Probability(5, 7))
    finally:
        logging.getLogger("ncf").removeHandler(caplog.handler)
    assert {r.getMessage() for r in caplog.records} == {
        "Probability: with random weights every one of 16 scores lies in [0, 1]: does score_features() return a "
        "probability (a sigmoid)? It returns the logit; training and ranking apply the sigmoid."}


def test_sizes_other_than_the_datas_and_a_failing_init_are_named():
    with pytest.raises(ConfigError, match=r"`self.n_users` is 7 where the data has 5 \(__init__ takes \(n_users, "
                                          r"n_items, ...\) in that order"):
        check_network(SwappedSizes(5, 7), 5, 7)
    check_network(Dot(5, 7), 5, 7)
    with pytest.raises(ConfigError, match=r"building NoSuper\(\) raised AttributeError: .*super\(\).__init__\(\)"):
        build_network({"class_path": f"{__name__}.NoSuper", "init_args": {}}, 5, 7)


def test_a_model_file_that_fails_to_import_is_named_with_its_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "mymodels").mkdir()
    (tmp_path / "mymodels" / "__init__.py").write_text("")
    (tmp_path / "mymodels" / "broken.py").write_text("from ncf.contract import Recommender\n\nclass A(Recommender:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    for path, says in (("mymodels.broken.A", "importing mymodels.broken raised SyntaxError"),
                       ("mymodels.missing.A", "no module named 'mymodels.missing' (is its folder on PYTHONPATH"),
                       ("mymodels.A", "mymodels has no A")):
        with pytest.raises(SystemExit) as exit_:
            cli_main(["fit", "--config", str(REPO / "configs" / "mf.yaml"), "--data.dataset", str(data),
                      "--model.network", path, "--trainer.max_epochs", "1"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and says in err and "Traceback" not in err, err
    config = tmp_path / "broken.yaml"  # the same from a config file
    config.write_text("model:\n  network:\n    class_path: mymodels.broken.A\n    init_args: {factor: 4}\n")
    with pytest.raises(SystemExit) as exit_:
        cli_main(["fit", "--config", str(REPO / "configs" / "mf.yaml"), "--config", str(config), "--data.dataset",
                  str(data), "--trainer.max_epochs", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "importing mymodels.broken raised SyntaxError" in err and "Traceback" not in err


class FactorFirst(Dot):
    def __init__(self, factor: int = 4, n_users: int = 0, n_items: int = 0):
        super().__init__(n_users, n_items, factor)


def test_a_constructor_without_the_sizes_first_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    with pytest.raises(SystemExit) as exit_:
        cli_main(["fit", "--config", str(REPO / "configs" / "mf.yaml"), "--data.dataset", str(data),
                  "--model.network", f"{__name__}.FactorFirst", "--model.network.factor", "8"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "FactorFirst's __init__ starts with factor, n_users, where a network takes " \
                                     "(n_users, n_items, ...) first" in err, err


class Tower(Dot):
    HIDDEN = 4  # a width a test changes after training, as an edit of the model's file would

    def __init__(self, n_users: int, n_items: int, factor: int = 4):
        super().__init__(n_users, n_items, factor)
        self.tower = nn.Sequential(nn.Linear(factor, Tower.HIDDEN), nn.ReLU(), nn.Linear(Tower.HIDDEN, 1))

    def score_features(self, x):
        return self.tower(x).squeeze(-1)


def test_a_checkpoint_of_code_changed_since_is_named_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    cfg = ["--config", str(REPO / "configs" / "mf.yaml"), "--data.dataset", str(data), "--model.network",
           f"{__name__}.Tower", "--data.num_eval_negatives", "20", "--trainer.max_epochs", "1",
           "--trainer.enable_progress_bar", "false"]
    cli_main(["fit", *cfg])
    monkeypatch.setattr(Tower, "HIDDEN", 8)
    for sub in ("test", "predict"):
        with pytest.raises(SystemExit) as exit_:
            cli_main([sub, *cfg, "--ckpt_path", "runs/tiny/mf/checkpoints/best.ckpt"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "Traceback" not in err
        assert "weights do not fit the Tower its code builds now (net.tower.0.weight is [4, 64] in the file, [8, 64] " \
               "for the model" in err and "the model's code changed since the checkpoint was written" in err, err


@pytest.mark.parametrize("path", ["ncf.models.GMF", "ncf.models.MLP", "ncf.models.NeuMF", "ncf.mf.MF", "ncf.recent.RecentMF",
                                  "ncf.transitions.TransitionMF", f"{__name__}.Dot"])
def test_every_shipped_network_follows_it(path):
    check_network(build_network({"class_path": path, "init_args": {}}, 16, 30))
    # and after it has read its training data (RecentMF's latest items, TransitionMF's counts)
    from ncf.synthetic import generate
    from ncf.splits import leave_one_out

    inter = generate(600, seed=0)
    net = build_network({"class_path": path, "init_args": {}}, inter.n_users, inter.n_items)
    net.observe(leave_one_out(inter, False, 4, 0, False, "latest"))
    check_network(net, inter.n_users, inter.n_items)


def test_fit_refuses_a_broken_network_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    with pytest.raises(SystemExit) as exit_:
        cli_main(["fit", "--config", str(REPO / "configs" / "mf.yaml"), "--data.dataset", str(data),
                  "--model.network", f"{__name__}.ForwardExtra", "--data.num_eval_negatives", "20",
                  "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error: ForwardExtra does not follow the network contract" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.ckpt"))  # refused before the first step


def test_a_checkpoint_loaded_under_an_edited_model_file_is_said(tmp_path, monkeypatch, caplog):
    """An edit that keeps the weights' shapes (a ReLU made a Tanh) scores the old weights with new code: said,
    once per checkpoint, by test/predict and by explain.py."""
    import logging

    from explain.loading import load

    (tmp_path / "editable").mkdir()
    (tmp_path / "editable" / "__init__.py").write_text("")
    source = (tmp_path / "editable" / "model.py")
    source.write_text(f"from {__name__} import Tower\n\n\nclass Edited(Tower):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    cfg = ["--config", str(REPO / "configs" / "mf.yaml"), "--data.dataset", str(data), "--model.network",
           "editable.model.Edited", "--data.num_eval_negatives", "20", "--trainer.max_epochs", "1",
           "--trainer.enable_progress_bar", "false"]
    cli_main(["fit", *cfg])
    ckpt = "runs/tiny/mf/checkpoints/best.ckpt"
    logging.getLogger("ncf").addHandler(caplog.handler)
    try:
        cli_main(["test", *cfg, "--ckpt_path", ckpt])
        assert not [r for r in caplog.records if "was trained with another version" in r.getMessage()]
        source.write_text(source.read_text() + "\n# an edit after training\n")
        cli_main(["test", *cfg, "--ckpt_path", ckpt])
        load(Path(ckpt))
        cli_main(["fit", *cfg[:-4], "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
                  "--ckpt_path", "last"])  # a resume of `last`, resolved by Lightning
    finally:
        logging.getLogger("ncf").removeHandler(caplog.handler)
    said = {r.getMessage() for r in caplog.records if "was trained with another version" in r.getMessage()}
    assert len(said) == 2 and all("(Edited's file has changed since): its scores and explanations come from the "
                                  "code as it is now" in m for m in said), said
    assert any(m.startswith(f"{ckpt} was trained") for m in said)
    assert any(m.startswith(str(Path("runs/tiny/mf/checkpoints/last.ckpt").resolve())) for m in said)
    # a model file that no longer imports: explain.py says so in one line
    from explain.cli import main as explain_main
    import sys

    source.write_text(source.read_text() + "\ndef (\n")
    monkeypatch.delitem(sys.modules, "editable.model")
    assert explain_main([ckpt, "--user", "u1", "--item", "m3", "--quiet", "--methods", "deeplift"]) == 2
