"""Small builders the tests share."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ncf.checkpoint import network_hparams
from ncf.module import NCFModule


def network(name: str, factor: int = 8, num_layers: int = 3, dropout: float = 0.0,
            mlp_embedding: Optional[int] = None) -> dict:
    """The spec of GMF, MLP or NeuMF (``name``) with the usual sizes; arguments a network does not take are left out."""
    return network_hparams({"model": name, "factor": factor, "num_layers": num_layers, "dropout": dropout,
                            "mlp_embedding": mlp_embedding})["network"]


def module(name: str, n_users: int, n_items: int, factor: int = 8, num_layers: int = 3, dropout: float = 0.0,
           mlp_embedding: Optional[int] = None, **kwargs) -> NCFModule:
    """An NCFModule over :func:`network`; ``kwargs`` go to the module (lr, optimizer, ...)."""
    return NCFModule(network(name, factor, num_layers, dropout, mlp_embedding), n_users, n_items, **kwargs)


def build(name: str, n_users: int, n_items: int, **sizes):
    """The network :func:`network` names, built for ``n_users`` x ``n_items``."""
    from ncf.contract import build_network

    return build_network(network(name, **sizes), n_users, n_items)


def history_and_methods(tmp_path: Path, capsys, record_fit, top_n: int) -> dict:
    """In a run folder ``runs/synthetic-3000/whole`` (the working directory's): ``explain.py --history`` on user
    0's top item, ``record_fit()`` (a 1-epoch fit named ``record`` with the callback's history on), and
    ``explain.py`` by DeepLift, IG, LIME and Shapley for user 0's ``top_n`` items; returns the last JSON. What
    the slow tests of models that read the user's history (RecentMF, TransitionMF) check of a trained run."""
    from explain.cli import main as explain_main

    best = "runs/synthetic-3000/whole/checkpoints/best.ckpt"
    assert explain_main([best, "--data", "synthetic:3000", "--top-n", "1", "--user", "0", "--methods", "ig",
                         "--history", "--quiet", "--out", str(tmp_path / "h")]) == 0
    assert json.loads((tmp_path / "h" / "explanations.json").read_text())["checkpoints"][0]["pairs"][0]["history"]
    record_fit()
    assert list(Path("runs/synthetic-3000/record/attributions").glob("history_epoch=0*"))
    out = tmp_path / "explained"
    assert explain_main([best, "--data", "synthetic:3000", "--top-n", str(top_n), "--user", "0", "--methods",
                         "deeplift", "ig", "lime", "shapley", "--quiet", "--out", str(out)]) == 0, capsys.readouterr().err
    return json.loads((out / "explanations.json").read_text())
