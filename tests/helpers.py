"""Small builders the tests share."""
from __future__ import annotations

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
