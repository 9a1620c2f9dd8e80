"""A model is one file: a network defined here alone, named by its class path in a config, trains through
``train.py fit``, resumes, and is explained by every method and by history influence; checkpoints that name
their model the older way (``model: neumf``, ``factor``, ...) still load, test and explain."""
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from explain.cli import main as explain_main
from ncf.checkpoint import load_network
from ncf.cli import main as cli_main
from ncf.contract import Recommender

pytestmark = pytest.mark.slow  # trains through the CLI or several processes: pytest -m "not slow" skips it

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "legacy_neumf.ckpt"


class TowerDot(Recommender):
    """A user vector through one ReLU layer, dotted with the item vector: a model no module of the project knows."""

    embedding_names = ("user", "item")
    feature_sources = (("identity", 0), ("identity", 1))
    groups = {"side": {"user": (0,), "item": (1,)}}

    def __init__(self, n_users: int, n_items: int, factor: int = 8):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.user_embedding = nn.Embedding(n_users, factor)
        self.item_embedding = nn.Embedding(n_items, factor)
        for e in (self.user_embedding, self.item_embedding):
            nn.init.normal_(e.weight, std=0.1)
        self.layer = nn.Linear(factor, factor)
        self.relu = nn.ReLU()

    def embed(self, users, items):
        return self.user_embedding(users), self.item_embedding(items)

    def features(self, p, q):
        return p, q

    def score_features(self, p, q):
        return (self.relu(self.layer(p)) * q).sum(-1)


def _config(tmp_path: Path) -> Path:
    text = (REPO / "configs" / "gmf.yaml").read_text()
    text = text.replace("class_path: ncf.models.GMF", f"class_path: {__name__}.TowerDot").replace("{factor: 64}", "{factor: 4}")
    cfg = tmp_path / "towerdot.yaml"
    cfg.write_text(text)
    return cfg


def _fit(cfg: Path, epochs: int, *extra: str) -> None:
    cli_main(["fit", "--config", str(cfg), "--data.dataset", "synthetic:3000", "--data.batch_size", "256",
              "--trainer.max_epochs", str(epochs), "--trainer.enable_progress_bar", "false", *extra])


def test_a_network_defined_in_one_file_trains_resumes_and_is_explained(tmp_path, monkeypatch, capsys):
    cfg = _config(tmp_path)
    monkeypatch.chdir(tmp_path)
    _fit(cfg, 3, "--run_name", "whole")
    _fit(cfg, 2, "--run_name", "cut")
    _fit(cfg, 3, "--run_name", "cut", "--ckpt_path", "last")  # resumed at epoch 2
    whole = torch.load("runs/synthetic-3000/whole/checkpoints/last.ckpt", weights_only=True)
    cut = torch.load("runs/synthetic-3000/cut/checkpoints/last.ckpt", weights_only=True)
    assert whole["hyper_parameters"]["network"] == {"class_path": f"{__name__}.TowerDot", "init_args": {"factor": 4}}
    assert whole["epoch"] == cut["epoch"] == 2
    for k, v in whole["state_dict"].items():
        assert torch.equal(v, cut["state_dict"][k]), k  # the resumed run is the uninterrupted one
    net, _ = load_network("runs/synthetic-3000/whole/checkpoints/best.ckpt")
    assert type(net) is TowerDot

    out = tmp_path / "explained"
    methods = ["deeplift", "ig", "lime", "kernel_shap", "shapley"]
    assert explain_main(["runs/synthetic-3000/whole/checkpoints/best.ckpt", "--data", "synthetic:3000", "--top-n", "2",
                         "--user", "0", "--methods", *methods, "--history", "--history-k", "3", "--quiet",
                         "--out", str(out)]) == 0, capsys.readouterr().err
    doc = json.loads((out / "explanations.json").read_text())
    pairs = doc["checkpoints"][0]["pairs"]
    assert len(pairs) == 2
    for pair in pairs:
        assert set(pair["methods"]) == set(methods), pair.keys()
        for name, result in pair["methods"].items():  # every method attributes the pair to both sides
            assert set(result["groups"]) == {"user", "item"}, (name, result)
            assert all(abs(v) < 1e3 for v in result["groups"].values()), (name, result)
        for name in ("shapley", "ig"):  # exact over groups; exact along the path of a piecewise-bilinear net
            assert abs(pair["methods"][name]["completeness_gap"]) < 1e-4, (name, pair["methods"][name])
        assert pair["history"]["interactions"], pair["history"]


def test_a_checkpoint_naming_its_model_the_older_way_still_loads(tmp_path, monkeypatch, capsys):
    # Written by train.py before networks were named by class path: hyperparameters model: neumf, factor: 4, ...
    raw = torch.load(FIXTURE, weights_only=True)
    assert raw["hyper_parameters"]["model"] == "neumf" and "network" not in raw["hyper_parameters"]
    net, ckpt = load_network(FIXTURE)
    assert type(net).__name__ == "NeuMF" and net.factor == 4 and net.mlp.embedding == 4
    assert ckpt["hyper_parameters"]["network"] == {
        "class_path": "ncf.models.NeuMF", "init_args": {"factor": 4, "num_layers": 2, "dropout": 0.1, "mlp_embedding": 4}}
    monkeypatch.chdir(tmp_path)
    cli_main(["test", "--config", str(REPO / "configs" / "neumf.yaml"), "--data.dataset", "synthetic:3000",
              "--data.batch_size", "256", "--ckpt_path", str(FIXTURE), "--trainer.enable_progress_bar", "false"])
    out = capsys.readouterr().out
    # the figures the version that wrote it printed for the same command
    assert "0.4761904776096344" in out and "0.2679593563079834" in out, out
    assert explain_main([str(FIXTURE), "--data", "synthetic:3000", "--user", "0", "--top-n", "2", "--methods",
                         "deeplift", "--quiet", "--out", str(tmp_path / "x")]) == 0
