"""Loading our checkpoints safely, without Lightning or a Trainer.

``torch.load(..., weights_only=True)`` only: nothing beyond tensors and primitives is unpickled. The
network comes from the checkpoint's own hyperparameters (``network``: its class path and constructor
arguments), so callers need not say which model it is. Checkpoints that name the model the older way
(``model: gmf`` with ``factor``, ``num_layers``, ...) are read as the same network.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .contract import build_network, network_class
from .errors import CheckpointError, ConfigError

__all__ = ["CheckpointError", "read_checkpoint", "load_network", "network_hparams", "weights_digest", "check_digest", "state_digest",
           "check_state_digest", "DIGEST_KEY", "STATE_KEY", "PRETRAINED_KEY", "SOURCE_KEY", "network_source",
           "warn_if_source_changed"]

DIGEST_KEY = "ncf_weights_sha256"
SOURCE_KEY = "ncf_network_source"  # {"module", "sha256"}: the network's module file as it trained
STATE_KEY = "ncf_state_sha256"
# Not covered by the state digest: the weights (their own digest), the digests, and the version stamps that
# Lightning rewrites when it loads a checkpoint.
_NOT_STATE = {"state_dict", DIGEST_KEY, STATE_KEY, SOURCE_KEY, "pytorch-lightning_version", "legacy_pytorch-lightning_version"}
# A pretrained NeuMF's record of the GMF and MLP checkpoints it was initialised from: per stage its path,
# run id, epoch and weights digest (what history influence needs to find and check their training).
PRETRAINED_KEY = "ncf_pretrained"


# Checkpoints that name the model by a string, and the constructor arguments each took from the module's.
_BY_NAME = {"gmf": ("ncf.models.GMF", ("factor",)),
            "mlp": ("ncf.models.MLP", ("factor", "num_layers", "dropout", ("mlp_embedding", "embedding"))),
            "neumf": ("ncf.models.NeuMF", ("factor", "num_layers", "dropout", "mlp_embedding"))}


def network_hparams(hp: dict) -> dict:
    """A checkpoint's hyperparameters with the network as ``network: {class_path, init_args}``, however the
    checkpoint names it (``model: gmf`` and ``factor`` ..., or ``network``).

    >>> network_hparams({"model": "gmf", "factor": 16, "lr": 0.01})
    {'lr': 0.01, 'network': {'class_path': 'ncf.models.GMF', 'init_args': {'factor': 16}}}
    """
    if "network" in hp or hp.get("model") not in _BY_NAME:
        return dict(hp)
    class_path, args = _BY_NAME[hp["model"]]
    old = {"model", "factor", "num_layers", "dropout", "mlp_embedding"}
    init_args = {}
    for arg in args:
        src, dst = arg if isinstance(arg, tuple) else (arg, arg)
        if hp.get(src) is not None:
            init_args[dst] = hp[src]
    return {**{k: v for k, v in hp.items() if k not in old}, "network": {"class_path": class_path, "init_args": init_args}}


def weights_digest(state_dict: dict) -> str:
    """SHA-256 over a state dict's names and tensor bytes: stored at save, checked at load, so a changed
    bit in any weight is caught (the checkpoint's zip container does not check its entries)."""
    import hashlib

    h = hashlib.sha256()
    for key in sorted(state_dict):
        value = state_dict[key]
        h.update(key.encode())
        if isinstance(value, torch.Tensor):
            _tensor_bytes(h, value)
    return h.hexdigest()


def _tensor_bytes(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


_PRIMITIVE = (bool, int, float, str, bytes, type(None))


def _hash_value(h, value) -> None:
    """Feed a nested structure of mappings, sequences, tensors and primitives to ``h``. Containers are tagged
    by kind, not class (Lightning may save a dict subclass that loads as a dict); primitives by ``repr``,
    which tells ``1`` from ``1.0``, ``True`` and ``"1"``."""
    if isinstance(value, torch.Tensor):
        h.update(b"T(")
        _tensor_bytes(h, value)
    elif isinstance(value, dict):
        h.update(b"D(")
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            _hash_value(h, key)
            _hash_value(h, value[key])
    elif isinstance(value, (list, tuple)):
        if all(isinstance(v, _PRIMITIVE) for v in value):  # e.g. an id mapping: one repr, not one call per id
            h.update(b"P(" + repr(list(value)).encode())
        else:
            h.update(b"L(")
            for item in value:
                _hash_value(h, item)
    else:
        h.update(b"V(" + repr(value).encode())
    h.update(b")")


def state_digest(ckpt: dict) -> str:
    """SHA-256 over everything a checkpoint holds beside its weights: optimizer and scheduler states, loop
    progress, callback states, the random generators' state, the run identity, hyperparameters and id
    mapping. Stored at save and checked on resume, so a changed bit in what a resumed run continues from is
    caught, not only one in the weights."""
    import hashlib

    h = hashlib.sha256()
    _hash_value(h, {k: v for k, v in ckpt.items() if k not in _NOT_STATE})
    return h.hexdigest()


def check_digest(ckpt: dict, path: str) -> None:
    """Raise unless the checkpoint carries a weights digest that its weights match."""
    want = ckpt.get(DIGEST_KEY)
    if not isinstance(want, str):
        raise CheckpointError(f"{path}: carries no weights checksum ('{DIGEST_KEY}'), so its weights cannot be verified; "
                              f"use a checkpoint written by `python train.py fit` (or train it again).")
    if weights_digest(ckpt["state_dict"]) != want:
        raise CheckpointError(f"{path}: its weights do not match the hash stored when it was saved; the file was "
                              f"altered or damaged. Use another checkpoint.")


def check_state_digest(ckpt: dict, path: str) -> None:
    """Raise unless the checkpoint carries a digest of its training state (:func:`state_digest`) that the
    state matches: what a resumed run continues from."""
    want = ckpt.get(STATE_KEY)
    if not isinstance(want, str):
        raise CheckpointError(f"{path}: carries no checksum of its training state ('{STATE_KEY}': optimizer, "
                              f"schedulers, progress), so it cannot be verified for resuming; start a fresh run "
                              f"without --ckpt_path.")
    if state_digest(ckpt) != want:
        raise CheckpointError(f"{path}: its training state (optimizer, schedulers, progress, settings) does not match "
                              f"the hash stored when it was saved; the file was altered or damaged. Resume from "
                              f"another checkpoint or start a fresh run without --ckpt_path.")


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint with ``weights_only=True`` and check it holds one of our networks."""
    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure to parse an untrusted file: a damaged or foreign checkpoint
        import re

        found = re.search(r"GLOBAL (\S+)", str(err))
        if found:
            raise CheckpointError(
                f"{path}: holds a pickled object ({found.group(1)}) that could run code when loaded; refused. Only "
                f"tensors and plain values are ever loaded: use a checkpoint written by `python train.py fit`."
            ) from None
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "weights only load failed" in str(err).lower() or "weights_only" in str(err):
            # torch's advice to load it with weights_only=False would run whatever the file holds: never given here
            msg = "torch's weights-only reader refused it: not a file of tensors and plain values"
        elif isinstance(err, (KeyError, IndexError)) or len(msg) < 12:  # the unpickler lost on bytes it does not know
            msg = f"its bytes are not a saved PyTorch object: {type(err).__name__} {msg}"
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({msg}). It may be truncated, tampered with, or not a PyTorch "
            f"checkpoint; only tensors and plain values are loaded, never arbitrary objects."
        ) from err
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    net = network_hparams(hp).get("network") if isinstance(hp, dict) else None
    if not isinstance(net, dict) or not isinstance(net.get("class_path"), str) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path}: not a checkpoint of an ncf-explain model (no network in its hyperparameters). Use a .ckpt "
            f"written by `python train.py fit`."
        )
    try:
        network_class(net["class_path"])  # imports the named module: only a Recommender subclass is accepted
    except ConfigError as err:
        raise CheckpointError(f"{path}: {err}") from None
    ckpt["hyper_parameters"] = network_hparams(hp)
    check_digest(ckpt, path)
    state = ckpt["state_dict"]
    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and torch.is_floating_point(v)
           and not bool(torch.isfinite(v).all())] if isinstance(state, dict) else []
    if bad:
        raise CheckpointError(f"{path}: weights {bad[:3]} hold NaN or infinite values; the run diverged or the file was "
                              f"altered. Use an earlier checkpoint.")
    return ckpt


def network_source(cls: type) -> Optional[dict]:
    """``{"module", "sha256"}`` of the file a network class is defined in (what its checkpoints record), or None
    where there is no file (a class made at run time).

    >>> from ncf.models import GMF
    >>> network_source(GMF)["module"]
    'ncf.models'
    """
    import hashlib
    import inspect

    try:
        path = inspect.getsourcefile(cls)
        return {"module": cls.__module__, "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()} if path else None
    except (OSError, TypeError):
        return None


_SAID_SOURCE: set = set()


def warn_if_source_changed(path, ckpt: dict, cls: type) -> None:
    """A warning, once per checkpoint, where the file of the network's class is not the one the checkpoint was
    trained with: its scores and explanations come from the code as it is now (an edit since, a layer changed)."""
    import logging

    then, now = ckpt.get(SOURCE_KEY), network_source(cls)
    key = str(Path(str(path)).resolve())
    if not isinstance(then, dict) or now is None or then.get("module") != now["module"] \
            or then.get("sha256") == now["sha256"] or key in _SAID_SOURCE:
        return
    _SAID_SOURCE.add(key)
    logging.getLogger("ncf").warning(
        f"{path} was trained with another version of {now['module']} ({cls.__name__}'s file has changed "
        f"since): its scores and explanations come from the code as it is now, which may differ from the trained "
        f"model's (restore the file, or train again).")


def load_network(path: str | os.PathLike, expect: Optional[type] = None) -> tuple[nn.Module, dict]:
    """Rebuild the network of a checkpoint in ``eval()`` mode; returns ``(network, checkpoint_dict)``.

    Raises:
        CheckpointError: unreadable file, not one of ours, weights that do not fit, or not ``expect``.

    Example:
        >>> net, ckpt = load_network("runs/ml-100k/neumf/checkpoints/best.ckpt")  # doctest: +SKIP
    """
    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    try:
        net = build_network(hp["network"], int(hp["n_users"]), int(hp["n_items"]))
    except (KeyError, TypeError, ValueError, RuntimeError, ConfigError) as err:
        raise CheckpointError(f"{path}: its hyperparameters do not describe a model ({err}).") from None
    if expect is not None and not isinstance(net, expect):
        raise CheckpointError(f"{path} holds a {type(net).__name__}, but a {expect.__name__} checkpoint is needed here.")
    warn_if_source_changed(path, ckpt, type(net))
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit a {type(net).__name__} with its hyperparameters "
                              f"({state_mismatch(net.state_dict(), state)}): the model's code changed since the "
                              f"checkpoint was written (use the code it was trained with, or train it again), or the "
                              f"file is not one `python train.py fit` wrote.") from err
    return net.eval(), ckpt


def state_mismatch(expected: dict, found: dict, limit: int = 3) -> str:
    """How the tensors ``found`` (a file's state dict) differ from ``expected`` (a model's), in one line:
    shapes that differ, then missing and unexpected names, each list cut at ``limit``.

    >>> state_mismatch({"w": torch.zeros(2, 4), "b": torch.zeros(1)}, {"w": torch.zeros(2, 8), "x": torch.zeros(1)})
    'w is [2, 8] in the file, [2, 4] for the model; missing b; unexpected x'
    """
    def cut(names: list) -> str:
        return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")

    shapes = [f"{k} is {list(found[k].shape)} in the file, {list(v.shape)} for the model" for k, v in expected.items()
              if k in found and isinstance(found[k], torch.Tensor) and found[k].shape != v.shape]
    parts = [cut(shapes)] if shapes else []
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing:
        parts.append(f"missing {cut(missing)}")
    if unexpected:
        parts.append(f"unexpected {cut(unexpected)}")
    return "; ".join(parts) or "tensors of other types"
