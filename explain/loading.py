"""What ``explain.py`` reads: checkpoints, and the training data they name, rebuilt from the command line.

A checkpoint gives the network, its epoch, the id mapping and the data module's settings; the data itself
(titles, user names, each user's training items, every interaction for ranking among a user's candidates)
is rebuilt as train.py built it, from the command line's paths only: a path stored in a checkpoint is data,
never followed.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from ncf.candidates import interacted_keys
from ncf.data import dropping_filters
from ncf.checkpoint import PRETRAINED_KEY, load_network
from ncf.errors import CheckpointError, DataError
from ncf.run import id_differences, same_data

__all__ = ["ExplainError", "data_hint", "find_checkpoints", "Loaded", "load", "one_run", "Context", "DataPaths", "data_context",
           "id_index"]


class ExplainError(Exception):
    """Bad input: printed as one line and exit code 2."""


def find_checkpoints(paths: Sequence[str]) -> list[Path]:
    """Expand folders into their ``.ckpt`` files (the caller orders them by epoch)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.ckpt"))
            if not found:
                inside = [q for q in (p / "checkpoints", p / "checkpoints" / "epochs") if any(q.glob("*.ckpt"))]
                hint = f"; a run folder keeps them in {inside[0]} (or {inside[1]}: one per epoch)" if len(inside) == 2 \
                    else f"; they are in {inside[0]}" if inside else ""
                raise ExplainError(f"{p}: no .ckpt files in this folder{hint}.")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise ExplainError(f"{p}: no such checkpoint file or folder.")
    return out


@dataclass
class Loaded:
    """A checkpoint as explain.py reads it: the network, its epoch, its id mapping and the settings of the data
    it trained on."""

    path: Path
    net: torch.nn.Module
    epoch: int
    user_ids: list
    item_ids: list
    dataset: Optional[str]
    dm_hparams: dict
    meta: dict  # the checkpoint's hyperparameters and id mapping, to match its per-epoch checkpoints
    run_id: Optional[str] = None  # the training run it belongs to (ncf.run); None where the checkpoint has none
    data_sha256: Optional[str] = None  # the hash of the split it trained on (ncf.run); None where it has none


def load(path: Path) -> Loaded:
    """Read a checkpoint (``weights_only``; the network from :func:`ncf.checkpoint.load_network`)."""
    try:
        net, ckpt = load_network(path)
    except CheckpointError as err:
        raise ExplainError(str(err)) from None
    ids = ckpt.get("NCFDataModule") or {}
    user_ids = ids.get("user_ids") or list(range(net.n_users))
    item_ids = ids.get("item_ids") or list(range(net.n_items))
    epoch = ckpt.get("epoch", -1)
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not isinstance(user_ids, list) \
            or not isinstance(item_ids, list):
        raise ExplainError(f"{path}: its epoch or id mapping is not of the kind train.py writes; the file was altered.")
    if len(user_ids) != net.n_users or len(item_ids) != net.n_items:
        raise ExplainError(f"{path}: its id mapping ({len(user_ids)} users, {len(item_ids)} items) does not match the "
                           f"model ({net.n_users}, {net.n_items}); the file was altered.")
    hp = {k: v for k, v in (ckpt.get("datamodule_hyper_parameters") or {}).items() if not k.startswith("_")}
    run = ckpt.get("ncf_run") if isinstance(ckpt.get("ncf_run"), dict) else {}
    run_id = run.get("id") if isinstance(run.get("id"), str) else None
    defines = run.get("defines")
    digest = defines.get("data_sha256") if isinstance(defines, dict) else None
    meta = {"hyper_parameters": ckpt["hyper_parameters"], "NCFDataModule": ids, "ncf_run": run,
            PRETRAINED_KEY: ckpt.get(PRETRAINED_KEY) if isinstance(ckpt.get(PRETRAINED_KEY), dict) else None}
    return Loaded(path, net, epoch, user_ids, item_ids, ids.get("dataset"), hp, meta, run_id,
                  digest if isinstance(digest, str) else None)


def same_weights_once(loaded: list[Loaded], quiet: bool) -> list[Loaded]:
    """A folder's checkpoints with each set of weights once: ``best.ckpt`` and ``last.ckpt`` of the same epoch
    of one run often hold the same weights (kept: the first by name), named in a note."""
    kept: list[Loaded] = []
    for ld in sorted(loaded, key=lambda ld: ld.path.name):
        twin = next((k for k in kept if (k.run_id, k.epoch) == (ld.run_id, ld.epoch) and _same_weights(k.net, ld.net)),
                    None)
        if twin is None:
            kept.append(ld)
        elif not quiet:
            print(f"note: {ld.path.name} holds the weights of {twin.path.name} (run {ld.run_id}, epoch {ld.epoch}); "
                  f"explained once, as {twin.path.name}.", file=sys.stderr)
    return [ld for ld in loaded if any(ld is k for k in kept)]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def one_run(loaded: list[Loaded], from_folder: bool, quiet: bool) -> list[Loaded]:
    """Checkpoints of one training run. From a folder, the run of its most recently written checkpoint is
    kept and the others are named; files listed one by one are all kept, with a note when runs differ."""
    runs: dict[Optional[str], list[Loaded]] = {}
    for ld in loaded:
        runs.setdefault(ld.run_id, []).append(ld)
    if len(runs) < 2:
        return loaded
    if not from_folder:
        if not quiet:
            print(f"note: these checkpoints come from {len(runs)} different training runs "
                  f"({', '.join(str(r) for r in runs)}); they are compared side by side, not as one run's evolution.",
                  file=sys.stderr)
        return loaded
    newest = max(loaded, key=lambda ld: ld.path.stat().st_mtime)
    kept = runs[newest.run_id]
    if not quiet:
        others = ", ".join(f"{r} ({len(v)})" for r, v in runs.items() if r != newest.run_id)
        print(f"note: explaining run {newest.run_id} ({len(kept)} checkpoint{'s' if len(kept) != 1 else ''}, the "
              f"folder's most recent); skipped "
              f"checkpoints of other runs: {others}.", file=sys.stderr)
    return kept


@dataclass
class Context:
    """What the data adds: item and user names, each user's training items (for history influence), and
    every interaction (to rank among each user's candidates, :mod:`ncf.candidates`)."""

    titles: Optional[list]
    train_items: Optional[dict[int, set]]
    user_names: Optional[list] = None
    split: Optional[object] = None  # the training split, for the counterfactual check
    note: Optional[str] = None  # why there is no data, shown once the request is known to be valid
    warning: Optional[str] = None  # said even with --quiet: the data is not quite what the model trained on
    known: Optional[torch.Tensor] = None  # every (user, item) interaction (ncf.candidates.interacted_keys)


def data_hint(ld: "Loaded") -> str:
    """What to pass for the training data of ``ld``: ``--data FILE`` for a user's own file, ``--data-root``
    for MovieLens (the folder that holds it)."""
    from ncf.movielens import MOVIELENS

    trained = ld.dm_hparams.get("dataset")
    if isinstance(trained, str) and trained in MOVIELENS:
        return f"pass --data-root DIR, the folder that holds {trained}/ (or set $NCF_DATA_DIR)"
    shown = f" ({trained})" if isinstance(trained, str) and trained and not trained.startswith("synthetic:") else ""
    return f"pass --data FILE, the file it was trained on{shown}"


@dataclass
class DataPaths:
    """Where the command line says the data is (``--data``, ``--data-root``, the names files and how to read
    them); ``None``: not given."""

    data: Optional[str] = None
    data_root: Optional[str] = None
    item_names: Optional[str] = None
    user_names: Optional[str] = None
    names_sep: Optional[str] = None
    names_encoding: Optional[str] = None
    training_rows: bool = False  # the training rows themselves are read (history influence, the counterfactual)


# Data-module settings that are paths: taken from the command line only, never from a checkpoint.
_PATH_SETTINGS = ("dataset", "root", "item_names", "user_names")


def data_context(ld: Loaded, paths: DataPaths) -> Context:
    """The training data of a checkpoint, read from where the command line says. A checkpoint names its
    dataset, but a path stored in a file is never followed: MovieLens is looked up by name under
    ``--data-root`` (or ``$NCF_DATA_DIR``), synthetic data is generated again from its spec, a user's own
    data needs ``--data FILE``."""
    from ncf.data import NCFDataModule
    from ncf.movielens import MOVIELENS

    if not ld.dm_hparams:
        if paths.data:  # its split cannot be rebuilt: ranking among the rows of another split would be wrong
            raise ExplainError(f"{ld.path} carries no data settings (datamodule_hyper_parameters), so the split it "
                               f"was trained on cannot be rebuilt from --data; the file was altered. Use a checkpoint "
                               f"written by `python train.py fit`.")
        return Context(None, None)
    hp = {k: v for k, v in ld.dm_hparams.items() if k not in _PATH_SETTINGS}
    hp.setdefault("validation_item", "previous")  # the rule of a checkpoint that does not name one
    trained_on = ld.dm_hparams.get("dataset")
    if paths.data:
        hp["dataset"] = paths.data
    elif isinstance(trained_on, str) and (trained_on in MOVIELENS or trained_on.startswith("synthetic:")):
        hp["dataset"] = trained_on  # a name or a generator spec, not a path
    else:
        titles = users = None
        if paths.item_names or paths.user_names:  # names need the ids alone: the checkpoint has them
            from ncf.names import distinct_names, read_names

            names = {k: v for k, v in (("encoding", paths.names_encoding), ("sep", paths.names_sep)) if v}
            try:
                titles = distinct_names(read_names(paths.item_names, ld.item_ids, **names), ld.item_ids) \
                    if paths.item_names else None
                users = distinct_names(read_names(paths.user_names, ld.user_ids, **names), ld.user_ids) \
                    if paths.user_names else None
            except DataError as err:
                raise ExplainError(str(err).replace("--data.names_encoding", "--names-encoding")
                                   .replace("--data.names_sep", "--names-sep")) from None
        return Context(titles, None, users, note="this checkpoint was trained on your own data; pass --data FILE to "
                       "rank among the user's unseen items (and for --top-n, --history); ranking among all items.")
    hp.update(root=paths.data_root, item_names=paths.item_names, user_names=paths.user_names)
    if paths.names_sep:
        hp["names_sep"] = paths.names_sep
    if paths.names_encoding:
        hp["names_encoding"] = paths.names_encoding
    hp["download"] = False  # never reach out to the internet to explain
    try:
        dm = NCFDataModule(**hp)
        dm.setup("fit")
    except (DataError, OSError, TypeError) as err:
        if paths.data or paths.item_names or paths.user_names:
            # train.py's option names in the data module's words, as explain.py spells them
            said = str(err).replace("--data.names_encoding", "--names-encoding").replace("--data.names_sep", "--names-sep")
            raise ExplainError(f"The data given on the command line could not be read: {said}") from None
        return Context(None, None, note=f"{hp['dataset']} not found under --data-root / $NCF_DATA_DIR "
                       f"({type(err).__name__}); showing ids without titles, ranking among all items.")
    if list(dm.interactions.user_ids) != list(ld.user_ids) or list(dm.interactions.item_ids) != list(ld.item_ids):
        trained = ld.dm_hparams.get("dataset")
        which = id_differences("user", ld.user_ids, dm.interactions.user_ids) + \
            id_differences("item", ld.item_ids, dm.interactions.item_ids)
        now = str(hp.get("dataset"))
        grown = isinstance(trained, str) and bool(same_data(trained, now))
        fix = (f"{now} changed since the model was trained on it; train again on it, or pass a copy of the rows it "
               f"was trained on" if grown else
               f"pass the data it was trained on{f' (--data {trained})' if isinstance(trained, str) and trained else ''}")
        raise ExplainError(f"{ld.path} was trained on data whose user or item ids differ from {hp.get('dataset')!r} as "
                           f"found now{' (' + '; '.join(which) + ')' if which else ''}; {fix}.")
    warning = None
    if ld.data_sha256 and dm.data_fingerprint() != ld.data_sha256:  # what it trained on, not a near copy
        if paths.training_rows:  # history influence and the counterfactual read the rows it trained on
            raise ExplainError(f"{ld.path} was trained on other training rows or candidate lists than "
                               f"{hp.get('dataset')!r} split with its settings gives now, and --history / "
                               f"--counterfactual read the rows it trained on; pass the data it was trained on "
                               f"(--data FILE).")
        # newer interactions of the same users and items are a use, as for train.py predict: said, not refused
        warning = (f"{ld.path} was trained on other rows of these users and items than {hp.get('dataset')!r} holds "
                   f"now: ranks and top-N leave out the items each user has in this data (as train.py predict does), "
                   f"not those of the data it was trained on.")
    train: dict[int, set] = {}
    for u, i in zip(dm.split.train_users.tolist(), dm.split.train_items.tolist()):
        train.setdefault(u, set()).add(i)
    return Context(dm.interactions.item_titles, train, dm.interactions.user_names, dm.split,
                   known=interacted_keys(dm.split), warning=warning)


def id_index(ids: list, key, what: str, path: Path, dm_hparams: Optional[dict] = None) -> int:
    """The index of the original id ``key`` among ``ids`` (a checkpoint's id mapping), or a one-line error
    (naming the filters its training data went through, when an id of the file may have been dropped by one)."""
    lookup = {str(v): k for k, v in enumerate(ids)}
    if str(key) not in lookup:
        filters = dropping_filters(dm_hparams)
        why = (f"; the model was trained after {', '.join(filters)} dropped users and items with too few "
               f"interactions, so an id of the file may be one of them") if filters else ""
        raise ExplainError(f"Unknown {what} id {key!r}: {path} knows {len(ids)} {what}s "
                           f"(e.g. {', '.join(map(str, ids[:3]))}); ids are the dataset's original ids{why}.")
    return lookup[str(key)]
