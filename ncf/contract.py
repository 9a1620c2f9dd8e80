"""What every network here is, written down: the contract that explanations, training and checkpoints
rely on, so a new model implements these members and nothing reads meaning out of names.

A model maps (user, item) index pairs to a logit in two steps, so that explanations never patch layers:

* ``embed(users, items)``: the embedding tensors of the pairs, ``[B, d_k]`` each, named by
  ``embedding_names``;
* ``score(*embeddings)``: the logit from them, ``[B]``. It is ``score_features(*features(*embeddings))``:
  ``features`` does the element-wise work between embeddings (GMF's product; ``feature_sources`` says,
  for each feature, ``("identity", k)`` or ``("product", i, j)`` of which embeddings), and
  ``score_features`` is the network above it (what DeepLift propagates through).

``groups`` declares how the embeddings group for explanation: ``{"side": {"user": (...), "item": (...)}}``
and, for a model with branches, ``{"branch": {"gmf": (...), "mlp": (...)}}``, each a partition of the
embedding indices.

A network is named by its class and constructor arguments, ``{"class_path": "ncf.models.GMF", "init_args":
{"factor": 64}}`` (a config's ``model.network``); the catalogue sizes come from the data. :func:`network_spec`
writes that name down for any way a network is given, :func:`build_network` builds it, and checkpoints store it,
so every tool rebuilds a trained network from its checkpoint alone.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import os
import sys
from typing import Any, Callable, ClassVar, Optional, Union

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["Recommender", "NetworkSpec", "network_spec", "network_class", "build_network", "network_name",
           "check_network", "import_problem", "not_rows"]

# A network given to NCFModule: its spec, its class, or a callable (jsonargparse's partial of the class)
# taking (n_users, n_items).
NetworkSpec = Union[dict, type, Callable[..., "Recommender"]]


class Recommender(nn.Module):
    """Base class of GMF, MLP and NeuMF (see the module docstring for the contract)."""

    embedding_names: ClassVar[tuple[str, ...]]
    feature_sources: ClassVar[tuple[tuple, ...]]
    # Each embedding ``embed`` returns is one row of one table, the pair's user's or item's: what history
    # influence (TracIn over the rows a pair touches, explain.history) reads by default. False for a network
    # whose embedding mixes several rows (RecentMF's mean of the user's latest items): it then says which rows
    # in ``embedding_rows``, or history influence refuses it.
    embeddings_are_rows: ClassVar[bool] = True
    groups: ClassVar[dict[str, dict[str, tuple[int, ...]]]]
    n_users: int
    n_items: int

    def embed(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def features(self, *embeddings: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def score_features(self, *features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embedding_tables(self) -> Optional[tuple[torch.Tensor, ...]]:
        """The weight each embedding ``embed`` returns is a row of, in ``embedding_names`` order (it may stop
        before trailing embeddings that have no weights, e.g. :class:`ncf.transitions.TransitionMF`'s prior), or
        None (the default). Given, training counts the L2 penalty of a batch once per table row (``count x |row|^2``)
        instead of on the gathered rows: the same penalty, without passes over the gathered tensors."""
        return None

    def embedding_rows(self, users: torch.Tensor, items: torch.Tensor) -> Optional[dict[int, tuple]]:
        """For each embedding that is not one table row (``embeddings_are_rows`` False): ``{k: (rows [N, R],
        weights [N, R], table_rows)}``, embedding ``k`` of pair ``n`` being ``sum_r weights[n, r] *
        table[rows[n, r]]`` of a table of ``table_rows`` rows used by no other embedding. None (the default):
        every embedding is one row. History influence takes its table gradients from it."""
        return None

    def read_items(self, users: torch.Tensor, items: torch.Tensor) -> Optional[tuple[int, torch.Tensor, torch.Tensor]]:
        """For a network whose embedding ``k`` is computed from the user's own training items rather than read
        from weights (:class:`ncf.transitions.TransitionMF`'s ``next``): ``(k, items [N, R], parts [N, R])``,
        the items it reads for each pair (``n_items``: none) and what each adds to it. ``explain.py`` names them
        beside the attributions. None (the default): no embedding is."""
        return None

    def observe(self, split) -> None:
        """Called with the training :class:`~ncf.splits.Split` before a fit (and before fine-tuning): a network
        that reads more than the pair (e.g. the user's latest items, :class:`ncf.recent.RecentMF`) keeps what it
        needs here, in buffers, which checkpoints save with the weights. Most networks read only the pair."""

    def score(self, *embeddings: torch.Tensor) -> torch.Tensor:
        """The logit from the embeddings ``embed`` returns."""
        return self.score_features(*self.features(*embeddings))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.score(*self.embed(users, items))

    def side_of(self, k: int) -> str:
        """``"user"`` or ``"item"``: the side embedding ``k`` belongs to."""
        return next(side for side, members in self.groups["side"].items() if k in members)


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def network_class(class_path: str) -> type:
    """The :class:`Recommender` subclass a class path names.

    Raises:
        ConfigError: the path names nothing importable, or not a Recommender.

    >>> network_class("ncf.models.GMF").__name__
    'GMF'
    """
    module, _, name = str(class_path).rpartition(".")
    # A path read from a checkpoint is data: only a module that can hold a Recommender is imported (dotted
    # identifiers, nothing of the standard library, whose modules may act when imported).
    cls = None
    if module and all(part.isidentifier() for part in class_path.split(".")) \
            and module.split(".")[0] not in sys.stdlib_module_names:
        try:
            cls = getattr(importlib.import_module(module), name)
        except Exception:  # not importable, or its code failed (a syntax error): named below
            cls = None
    if not (isinstance(cls, type) and issubclass(cls, Recommender)):
        why = import_problem(class_path) if cls is None and module and module.split(".")[0] not in \
            sys.stdlib_module_names else ""
        raise ConfigError(f"network {class_path!r} is not a class implementing ncf.contract.Recommender"
                          f"{f': {why}' if why else ''}; name one by its import path, e.g. ncf.models.NeuMF, "
                          f"ncf.mf.MF or mypackage.MyModel.")
    return cls


def import_problem(class_path: str) -> str:
    """Why ``class_path`` (``module.Class``) names no class: the module cannot be found, its code raised when
    imported (a syntax error, an import inside it), it has no such name; ``""`` when it names a class.

    >>> import_problem("ncf.models.Nope")
    'ncf.models has no Nope'
    >>> import_problem("no_such_package_xyz.Model")
    "no module named 'no_such_package_xyz' (is its folder on PYTHONPATH, or its package installed?)"
    """
    module, _, name = str(class_path).rpartition(".")
    if not module:
        return (f"{class_path!r} is not an import path (module.Class); a bare name may also match several classes "
                f"(ncf.models.GMF and one of yours)")
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and module.startswith(err.name):  # the module itself (or its package) is not there
            return f"no module named {err.name!r} (is its folder on PYTHONPATH, or its package installed?)"
        return f"importing {module} raised {type(err).__name__}: {' '.join(str(err).split())[:200]}"
    except Exception as err:  # its own code failed: a syntax error, a missing name, ...
        return f"importing {module} raised {type(err).__name__}: {' '.join(str(err).split())[:200]}"
    if not hasattr(found, name):
        return f"{module} has no {name}"
    return "" if isinstance(getattr(found, name), type) else f"{class_path} is not a class"


def network_spec(network: NetworkSpec) -> dict:
    """``{"class_path": ..., "init_args": {...}}`` for a network given as a spec, a class, or a partial of a
    class (what the CLI makes of a config's ``model.network``). Plain values only: it is saved in checkpoints.

    >>> from ncf.models import GMF
    >>> network_spec(functools.partial(GMF, factor=4))
    {'class_path': 'ncf.models.GMF', 'init_args': {'factor': 4}}
    >>> network_spec({"class_path": "ncf.GMF", "init_args": {"factor": 4}})
    {'class_path': 'ncf.models.GMF', 'init_args': {'factor': 4}}
    """
    if isinstance(network, dict):
        if set(network) - {"class_path", "init_args"} or not isinstance(network.get("init_args", {}) or {}, dict):
            raise ConfigError(f"a network is {{class_path: ..., init_args: {{...}}}}, not {network!r}.")
        cls, args = network_class(network.get("class_path", "")), dict(network.get("init_args") or {})
    elif isinstance(network, type):
        cls, args = network_class(_class_path(network)), {}
    elif isinstance(network, functools.partial):
        # functools.partial(Class, ...), or jsonargparse's partial(call, instantiator, Class, **init_args)
        found = [a for a in (network.func, *network.args) if isinstance(a, type) and issubclass(a, Recommender)]
        if not found:
            raise ConfigError(f"{network!r} does not build a Recommender.")
        cls, args = found[-1], dict(network.keywords)
    else:
        raise ConfigError(f"a network is given by its class or {{class_path, init_args}}, not {type(network).__name__}.")
    for key in ("n_users", "n_items"):
        args.pop(key, None)  # the data's, never part of the name
    return {"class_path": _class_path(cls), "init_args": args}


def network_name(hparams: dict) -> str:
    """A model's short name from its hyperparameters: its network's class name in lower case (``neumf``), or
    the ``model`` of hyperparameters that name it by a string; ``""`` when neither is there.

    >>> network_name({"network": {"class_path": "ncf.models.NeuMF", "init_args": {}}}), network_name({"model": "gmf"})
    ('neumf', 'gmf')
    """
    net = hparams.get("network") if isinstance(hparams, dict) else None
    if isinstance(net, dict) and isinstance(net.get("class_path"), str):
        return net["class_path"].rpartition(".")[2].lower()
    model = hparams.get("model") if isinstance(hparams, dict) else None
    return model.lower() if isinstance(model, str) else ""


def _physical_memory() -> Optional[int]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no limit known
        return None


def build_network(network: NetworkSpec, n_users: int, n_items: int) -> Recommender:
    """The network ``network`` names (see :func:`network_spec`) for a catalogue of ``n_users`` x ``n_items``.

    One whose float32 weights alone exceed this machine's memory (e.g. ``--model.network.factor 100000000``)
    is refused before anything is allocated: its size is counted on the meta device, which holds no data.

    Raises:
        ConfigError: not a Recommender, arguments its constructor does not take, or too large.

    >>> type(build_network({"class_path": "ncf.models.NeuMF", "init_args": {"factor": 4}}, 10, 20)).__name__
    'NeuMF'
    """
    spec = network_spec(network)
    cls, args = network_class(spec["class_path"]), spec["init_args"]
    params = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(args) - set(params))
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], list(params), n=1)
            raise ConfigError(f"{cls.__name__} takes no argument {unknown[0]!r}"
                              + (f"; did you mean {close[0]!r}?" if close else f"; it takes {sorted(set(params) - {'n_users', 'n_items'})}."))
    try:
        with torch.device("meta"):
            shape = cls(n_users, n_items, **args)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in args.items())}): {err}") from None
    except Exception as err:  # the network's own __init__ failed, e.g. super().__init__() not called first
        raise ConfigError(f"building {cls.__name__}({', '.join(f'{k}={v!r}' for k, v in args.items())}) raised "
                          f"{type(err).__name__}: {' '.join(str(err).split())[:200]} (a network's __init__ calls "
                          f"super().__init__() before it assigns layers)") from None
    n_params = sum(p.numel() for p in shape.parameters())
    buffers = list(shape.buffers())
    n_bytes = sum(t.numel() * t.element_size() for t in (*shape.parameters(), *buffers))
    limit = _physical_memory()
    if limit is not None and n_bytes > limit:
        raise ConfigError(f"a {cls.__name__} with {args} for {n_users} users and {n_items} items has {n_params:,} "
                          f"weights ({n_bytes / 2 ** 30:,.1f} GiB{' with its buffers' if buffers else ''}), more than "
                          f"this machine's {limit / 2 ** 30:,.0f} GiB of memory; make it smaller (e.g. --model.network.factor).")
    return cls(n_users, n_items, **args)


def check_network(net: Recommender, n_users: Optional[int] = None, n_items: Optional[int] = None) -> None:
    """Refuse, before a fit, a network that breaks the contract (the module docstring), naming what to fix.

    Checks the declared members (``embedding_names``, ``feature_sources``, ``groups`` partitioning the
    embeddings, ``n_users`` / ``n_items``) and, on two pairs in ``eval()`` mode without gradients, the shapes
    ``embed`` / ``features`` / ``score_features`` return, that each feature is what ``feature_sources`` says,
    and that ``forward`` is ``score(*embed(...))``: training, evaluation and explanations each take one of
    the two, so a model whose ``forward`` adds a term of its own would be trained on one function and ranked
    by another. Each embedding is on the side ``groups`` puts it (a user's does not change with the item), and
    one row of a table unless ``embeddings_are_rows`` is False (history influence relies on it). ``n_users``
    / ``n_items``: the data's, which the network's must be. The network's mode and the random state are left
    as they were.

    Raises:
        ConfigError: the first thing found, with the member and what it must be.
    """
    name = type(net).__name__

    def bad(what: str) -> None:
        raise ConfigError(f"{name} does not follow the network contract (ncf/contract.py; README, Models): {what}.")

    for attr in ("embedding_names", "feature_sources", "groups"):
        if not hasattr(net, attr):
            bad(f"it has no `{attr}` (a class attribute; see ncf/mf.py)")
        if callable(getattr(net, attr)):
            bad(f"`{attr}` is a method; it is a class attribute (`{attr} = ...` in the class body; see ncf/mf.py)")
    for attr, want in (("n_users", n_users), ("n_items", n_items)):
        if not isinstance(getattr(net, attr, None), int) or getattr(net, attr) < 1:
            bad(f"`self.{attr}` is not set in __init__ (the catalogue size it is built with)")
        if want is not None and getattr(net, attr) != want:
            bad(f"`self.{attr}` is {getattr(net, attr)} where the data has {want} (__init__ takes (n_users, n_items, "
                f"...) in that order, and sets self.n_users = n_users, self.n_items = n_items)")
    if not isinstance(net.embedding_names, (tuple, list)) or not all(isinstance(x, str) for x in net.embedding_names):
        bad(f"`embedding_names` is {net.embedding_names!r}; it is a tuple of names, one per embedding embed() returns")
    names = tuple(net.embedding_names)
    n = len(names)
    if n == 0:
        bad("`embedding_names` is empty; explanations attribute the logit to the embeddings, so a model has at "
            "least one")
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    users = torch.tensor([0, net.n_users - 1], device=device)
    items = torch.tensor([0, net.n_items - 1], device=device)
    got, was_training = None, net.training
    net.eval()
    try:  # its errors are named below, with the other calls; the random state is left as it was
        with contextlib.suppress(Exception), torch.no_grad(), torch.random.fork_rng(devices=[]):
            got = net.embed(users, items)
    finally:
        net.train(was_training)
    if isinstance(got, (tuple, list)) and len(got) != n:
        bad(f"embed() returns {len(got)} tensors, where `embedding_names` names {n} ({', '.join(map(repr, names))})")
    groups = net.groups
    if not isinstance(groups, dict) or not isinstance(groups.get("side"), dict) \
            or set(groups["side"]) != {"user", "item"}:
        bad('`groups` needs {"side": {"user": (...), "item": (...)}}: which embeddings are the user\'s and which the '
            'item\'s')
    for kind, parts in groups.items():
        listed = [k for part in (parts or {}).values() for k in part] if isinstance(parts, dict) else [None]
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in listed):
            bad(f"`groups[{kind!r}]` lists {listed}; it names embeddings by their index in `embedding_names` "
                f"({', '.join(f'{k}: {x!r}' for k, x in enumerate(names))}), e.g. {{\"user\": (0,), \"item\": (1,)}}")
        members = sorted(listed)
        if members != list(range(n)):
            bad(f"`groups[{kind!r}]` must put each of the {n} embeddings {names} (indices 0-{n - 1}) in exactly one "
                f"group; it lists {members}")
    if not isinstance(net.feature_sources, (tuple, list)):
        bad(f"`feature_sources` is {type(net.feature_sources).__name__}; it is a tuple with one ('identity', k) or "
            f"('product', i, j) entry per feature features() returns")
    sources = tuple(net.feature_sources)
    for src in sources:
        ok = isinstance(src, tuple) and ((len(src) == 2 and src[0] == "identity") or
                                         (len(src) == 3 and src[0] == "product"))
        if not ok or not all(isinstance(k, int) and 0 <= k < n for k in src[1:]):
            bad(f"`feature_sources` entry {src!r} is not ('identity', k) or ('product', i, j) of embeddings 0-{n - 1}")
    other = sorted({str(p.dtype).replace("torch.", "") for p in net.parameters() if p.dtype != torch.float32})
    if other:
        bad(f"its weights are {', '.join(other)}; the trainer and the explanation methods work in float32 (drop "
            f"the .double() / .half(); --trainer.precision chooses lower precision for training)")
    was_training = net.training
    net.eval()
    try:
        _check_calls(net, users, items, names, sources, bad)
    except ConfigError:
        raise
    except Exception as err:  # the network's own code failed on two valid pairs
        bad(f"on two valid pairs (user and item indices 0 and the last) it raised {type(err).__name__}: "
            f"{' '.join(str(err).split())[:200]}")
    finally:
        net.train(was_training)


def _check_calls(net: Recommender, users: torch.Tensor, items: torch.Tensor, names: tuple, sources: tuple,
                 bad: Callable[[str], None]) -> None:
    """:func:`check_network`'s checks of what ``embed`` / ``features`` / ``score_features`` / ``forward`` return."""
    n = len(names)
    with torch.no_grad():
        emb = net.embed(users, items)
        if not isinstance(emb, (tuple, list)) or len(emb) != n:
            bad(f"embed() returns {len(emb) if isinstance(emb, (tuple, list)) else type(emb).__name__} "
                f"{'tensors' if isinstance(emb, (tuple, list)) else ''}, where `embedding_names` names {n}")
        for k, e in enumerate(emb):
            if not isinstance(e, torch.Tensor) or e.dim() != 2 or e.shape[0] != 2:
                bad(f"embed()'s {names[k]!r} has shape {tuple(getattr(e, 'shape', ()))} for 2 pairs; each "
                    f"embedding is [batch, width]")
        feats = net.features(*emb)
        if not isinstance(feats, (tuple, list)) or len(feats) != len(sources):
            bad(f"features() returns {len(feats) if isinstance(feats, (tuple, list)) else 'no tuple'}, where "
                f"`feature_sources` lists {len(sources)}")
        for f, (src, got) in enumerate(zip(sources, feats)):
            want = emb[src[1]] if src[0] == "identity" else emb[src[1]] * emb[src[2]]
            if not isinstance(got, torch.Tensor) or got.shape != want.shape or \
                    not torch.allclose(got, want, rtol=1e-5, atol=1e-6):
                bad(f"feature {f} of features() is not {src!r} of the embeddings, as `feature_sources` says")
        logit = net.score_features(*feats)
        if not isinstance(logit, torch.Tensor) or logit.shape != (2,):
            bad(f"score_features() returns shape {tuple(getattr(logit, 'shape', ()))} for 2 pairs; the logits of a "
                f"batch are [batch] (e.g. .squeeze(-1))")
        out = net(users, items)
        if not isinstance(out, torch.Tensor) or out.shape != (2,) or \
                not torch.allclose(out, logit, rtol=1e-5, atol=1e-6):
            bad("forward() is not score(*embed(users, items)): training, evaluation and explanations each use one "
                "of the two, so they would disagree; put any extra term into score_features() (or features()) "
                "and leave forward() to the base class")
        alone = net(users[:1], items[:1])
        if not torch.allclose(alone, out[:1], rtol=1e-5, atol=1e-6):
            bad("a pair's logit depends on the other pairs of its batch (scored alone it differs); a pair's "
                "score must be its own (no batch statistics such as a mean over the batch)")
        # with random weights (a table initialised to zeros, a bias, hides what reads it) and the other pair's item
        # (user): what changes depends on the item (user)
        embed = _with_random_weights(net, "embed")
        base, changes = embed(users, items), {"item": embed(users, items.flip(0)), "user": embed(users.flip(0), items)}
        for k in range(n):
            side = net.side_of(k)
            other = "item" if side == "user" else "user"
            # one that depends on both (a term of the user's history and the item, TransitionMF's) may sit on either
            if not torch.equal(changes[other][k], base[k]) and torch.equal(changes[side][k], base[k]):
                bad(f"`groups` puts embedding {k} ({names[k]!r}) on the {side} side, but it changes with the "
                    f"{other} alone: the {side}/{other} shares of every explanation would be wrong; list it under "
                    f"{other!r} in groups['side']")
        many = torch.arange(16, device=users.device)
        logits = _with_random_weights(net, "forward")(many % net.n_users, (many * 7) % net.n_items)
        if bool(((logits >= 0) & (logits <= 1)).all()):
            import logging

            logging.getLogger("ncf").warning(
                f"{type(net).__name__}: with random weights every one of 16 scores lies in [0, 1]: does score_features() "
                f"return a probability (a sigmoid)? It returns the logit; training and ranking apply the sigmoid.")
        k = not_rows(net, users, items, emb)
        if k is not None:
            bad(f"embedding {k} ({names[k]!r}) is not one row of a table indexed by the pair's {net.side_of(k)} (a "
                f"layer applied in embed(), say), which history influence assumes; apply such layers in features() or "
                f"score_features(), or set `embeddings_are_rows = False` (history influence is then refused unless "
                f"embedding_rows() says which rows it mixes)")


class _Call(nn.Module):
    def __init__(self, net: nn.Module, method: str):
        super().__init__()
        self.net, self.method = net, method

    def forward(self, *args):
        return getattr(self.net, self.method)(*args)


def _with_random_weights(net: nn.Module, method: str) -> Callable:
    """``net.<method>`` as it would compute with every 2-D weight (tables, layers) drawn from N(0, 1) by a
    generator of its own: the network's weights and the global random state are left as they were."""
    from torch.func import functional_call

    g = torch.Generator().manual_seed(0)
    weights = {f"net.{name}": torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device) if p.dim() == 2 else p
               for name, p in net.named_parameters()}
    return lambda *args: functional_call(_Call(net, method), weights, args)


def not_rows(net: Recommender, users: torch.Tensor, items: torch.Tensor, emb=None) -> Optional[int]:
    """The first embedding of a network that says its embeddings are table rows (``embeddings_are_rows``) that is
    not a row of any of its 2-D weights at the pair's user or item index; None when each is (or it says not).

    >>> from ncf.models import GMF
    >>> not_rows(GMF(3, 4, 2), torch.tensor([0, 2]), torch.tensor([1, 3])) is None
    True
    """
    if not getattr(net, "embeddings_are_rows", True):
        return None
    with torch.no_grad():
        emb = net.embed(users, items) if emb is None else emb
        tables = [p for p in net.parameters() if p.dim() == 2]
        for k, e in enumerate(emb):
            index = users if net.side_of(k) == "user" else items
            # at the index, or past the other side's rows (one table shared by users and items)
            if not any(t.shape[0] > int(index.max()) + off and t.shape[1] == e.shape[1] and torch.equal(t[index + off], e)
                       for t in tables for off in {0, net.n_users, net.n_items}):
                return k
    return None
