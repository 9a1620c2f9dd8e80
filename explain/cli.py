"""``python explain.py``: explain a trained model's predictions from its checkpoints.

Examples::

    python explain.py runs/ml-100k/neumf_pretrained/checkpoints/best.ckpt --user 196 --item 242
    python explain.py runs/ml-100k/neumf_pretrained/checkpoints/best.ckpt --user 196 --top-n 10 --out out/196
    python explain.py runs/ml-100k/gmf/checkpoints/epochs/ --pairs pairs.csv --methods lime deeplift ig --out out/evolution
    python explain.py runs/ml-100k/mlp/checkpoints/best.ckpt --user 196 --item 242 --methods lime --lime-preset notebook
    python explain.py report runs/ml-100k/neumf_pretrained      # the HTML report of a run's attribution record

Ids are the dataset's original ids (MovieLens user and movie ids), mapped through the id mapping saved in
the checkpoint. Checkpoints are read with ``weights_only=True`` and the model class comes from the file.
Exit codes: 0 success, 2 bad input (unknown ids, unreadable or foreign checkpoints, bad arguments).
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd
import torch

from ncf.candidates import candidate_rank, interacted, interacted_keys, recommend, score_items
from ncf.checkpoint import PRETRAINED_KEY, load_network
from ncf.cli import debug_requested
from ncf.errors import CheckpointError, DataError, UserError, report

from . import methods as registry
from .core import BACKENDS, Attribution, Target, attribute, learned_nothing, spearman
from .faithfulness import faithfulness
from .methods.lime import PRESETS as LIME_PRESETS
from .report import render_pair, write_outputs

__all__ = ["main", "build_parser", "ExplainError", "ExplainSettings", "explain_checkpoint"]

DEFAULT_METHODS = ("lime", "deeplift")
MAX_SAMPLES = 1 << 22  # per pair: beyond this LIME's forwards take minutes per pair
LEARNED_NOTHING = ("every score equals the baseline's and every attribution is 0: the model has not learned "
                   "anything to explain (did training run? check the checkpoint's epoch and val_ndcg10)")


class ExplainError(Exception):
    """Bad input: printed as one line and exit code 2."""


# ---------------------------------------------------------------------------------------------------
# checkpoints and data
# ---------------------------------------------------------------------------------------------------
def find_checkpoints(paths: Sequence[str]) -> list[Path]:
    """Expand folders into their ``.ckpt`` files (the caller orders them by epoch)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.ckpt"))
            if not found:
                raise ExplainError(f"{p}: no .ckpt files in this folder.")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise ExplainError(f"{p}: no such checkpoint file or folder.")
    return out


@dataclass
class Loaded:
    path: Path
    net: torch.nn.Module
    epoch: int
    user_ids: list
    item_ids: list
    dataset: Optional[str]
    dm_hparams: dict
    meta: dict  # the checkpoint's hyperparameters and id mapping, to match its per-epoch checkpoints
    run_id: Optional[str] = None  # the training run it belongs to (ncf.run), None for older checkpoints
    data_sha256: Optional[str] = None  # the hash of the split it trained on (ncf.run), None for older checkpoints


def load(path: Path) -> Loaded:
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
        print(f"note: explaining run {newest.run_id} ({len(kept)} checkpoints, the folder's most recent); skipped "
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
    known: Optional[torch.Tensor] = None  # every (user, item) interaction (ncf.candidates.interacted_keys)


# Data-module settings that are paths: taken from the command line only, never from a checkpoint.
_PATH_SETTINGS = ("dataset", "root", "item_names", "user_names")


def data_context(ld: Loaded, args) -> Context:
    """The training data of a checkpoint, read from where the command line says. A checkpoint names its
    dataset, but a path stored in a file is never followed: MovieLens is looked up by name under
    ``--data-root`` (or ``$NCF_DATA_DIR``), synthetic data is generated again from its spec, a user's own
    data needs ``--data FILE``."""
    from ncf.data import NCFDataModule
    from ncf.movielens import MOVIELENS

    if not ld.dm_hparams:
        if args.data:  # its split cannot be rebuilt: ranking among the rows of another split would be wrong
            raise ExplainError(f"{ld.path} carries no data settings (datamodule_hyper_parameters), so the split it "
                               f"was trained on cannot be rebuilt from --data; the file was altered. Use a checkpoint "
                               f"written by `python train.py fit`.")
        return Context(None, None)
    hp = {k: v for k, v in ld.dm_hparams.items() if k not in _PATH_SETTINGS}
    hp.setdefault("validation_item", "previous")  # the only rule before the setting existed
    trained_on = ld.dm_hparams.get("dataset")
    if args.data:
        hp["dataset"] = args.data
    elif isinstance(trained_on, str) and (trained_on in MOVIELENS or trained_on.startswith("synthetic:")):
        hp["dataset"] = trained_on  # a name or a generator spec, not a path
    else:
        return Context(None, None, note="this checkpoint was trained on your own data; pass --data FILE (and "
                       "--item-names FILE) to show names and rank among unseen items. Showing ids, ranking among all items.")
    hp.update(root=args.data_root, item_names=args.item_names, user_names=args.user_names)
    if args.names_sep:
        hp["names_sep"] = args.names_sep
    if args.names_encoding:
        hp["names_encoding"] = args.names_encoding
    hp["download"] = False  # never reach out to the internet to explain
    try:
        dm = NCFDataModule(**hp)
        dm.setup("fit")
    except (DataError, OSError, TypeError) as err:
        if args.data or args.item_names or args.user_names:
            # train.py's option names in the data module's words, as explain.py spells them
            said = str(err).replace("--data.names_encoding", "--names-encoding").replace("--data.names_sep", "--names-sep")
            raise ExplainError(f"The data given on the command line could not be read: {said}") from None
        return Context(None, None, note=f"{hp['dataset']} not found under --data-root / $NCF_DATA_DIR "
                       f"({type(err).__name__}); showing ids without titles, ranking among all items.")
    if list(dm.interactions.user_ids) != list(ld.user_ids) or list(dm.interactions.item_ids) != list(ld.item_ids):
        raise ExplainError(f"{ld.path} was trained on data whose ids differ from {hp.get('dataset')!r} as found now.")
    if ld.data_sha256 and dm.data_fingerprint() != ld.data_sha256:  # what it trained on, not a near copy
        raise ExplainError(f"{ld.path} was trained on other training rows or candidate lists than {hp.get('dataset')!r} "
                           f"split with its settings gives now; pass the data it was trained on (--data FILE).")
    train: dict[int, set] = {}
    for u, i in zip(dm.split.train_users.tolist(), dm.split.train_items.tolist()):
        train.setdefault(u, set()).add(i)
    return Context(dm.interactions.item_titles, train, dm.interactions.user_names, dm.split,
                   known=interacted_keys(dm.split))


def _index(ids: list, key: str, what: str, path: Path) -> int:
    lookup = {str(v): k for k, v in enumerate(ids)}
    if str(key) not in lookup:
        raise ExplainError(f"Unknown {what} id {key!r}: {path} knows {len(ids)} {what}s "
                           f"(e.g. {', '.join(map(str, ids[:3]))}); ids are the dataset's original ids.")
    return lookup[str(key)]


# ---------------------------------------------------------------------------------------------------
# the work
# ---------------------------------------------------------------------------------------------------
def pair_ranks(net, users: list[int], items: list[int], known: Optional[torch.Tensor]) -> list[tuple[int, int]]:
    """Each pair's 1-based rank among its user's candidates (plus the item itself) and how many items that
    is (:func:`ncf.candidates.candidate_rank`); without the data (``known`` None) among all items."""
    u = torch.tensor(users, dtype=torch.int64)
    rank, count = candidate_rank(score_items(net, u), torch.tensor(items, dtype=torch.int64),
                                 interacted(known, u, net.n_items))
    return list(zip(rank.tolist(), count.tolist()))


@dataclass
class ExplainSettings:
    """What to compute, resolved from the command line (or written by hand in Python)."""

    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    baseline: str = "mean"
    seed: int = 0
    n_samples: Optional[int] = None
    lime_preset: str = "default"
    backend: str = "ours"
    faithfulness: bool = True
    history_k: int = 5
    cf_epochs: int = 3

    @property
    def settings(self) -> dict[str, dict]:
        """Each method's settings: defaults, the LIME preset, and a sample count if one was given."""
        return {m: registry.settings_for(m, self.n_samples, LIME_PRESETS[self.lime_preset] if m == "lime" else None)
                for m in self.methods}


def explain_checkpoint(ld: Loaded, users: list[int], items: list[int], cfg: ExplainSettings, ctx: Context) -> dict:
    """Attributions, faithfulness and seed-to-seed stability (random methods) for the pairs, and each
    pair's rank among the user's unseen items."""
    net = ld.net
    u, i = torch.tensor(users), torch.tensor(items)
    settings = cfg.settings
    target = Target.build(net, u, i, cfg.baseline)
    attrs: dict[str, Attribution] = {}
    faith: dict[str, dict] = {}
    seed_stab: dict[str, torch.Tensor] = {}
    for m in cfg.methods:
        attrs[m] = attribute(net, u, i, m, cfg.baseline, cfg.seed, target=target, backend=cfg.backend, **settings[m])
        if cfg.faithfulness:
            faith[m] = faithfulness(net, u, i, attrs[m], seed=cfg.seed, target=target)
        if m in registry.random_methods():  # how much the answer depends on the seed
            other = attribute(net, u, i, m, cfg.baseline, cfg.seed + 1, target=target, backend=cfg.backend,
                              **settings[m])
            seed_stab[m] = spearman(attrs[m].features, other.features, attrs[m].inactive)
    ranks = pair_ranks(net, users, items, ctx.known)
    return {"attrs": attrs, "faith": faith, "seed_stability": seed_stab, "ranks": ranks}


def explain_history(ld: Loaded, users: list[int], items: list[int], ctx: Context,
                    folder: Optional[str] = None, pretraining: Optional[Sequence[str]] = None,
                    quiet: bool = False) -> list:
    """TracIn influence of each user's training interactions on each pair, over the per-epoch checkpoints
    up to the explained one and, for a pretrained NeuMF, those of the GMF and MLP runs it started from
    (``pretraining``: their epochs folders, GMF's then MLP's; ``["none"]``: NeuMF's own epochs only)."""
    from .history import epochs_folder, history_influence, load_epoch_models, load_pretraining

    if ctx.train_items is None:
        raise ExplainError("--history needs the training data (to know each user's interactions); pass "
                           "--data-root with the folder that holds the dataset.")
    folder = Path(folder) if folder else epochs_folder(ld.path)
    skip = list(pretraining or []) == ["none"]
    try:
        models = load_epoch_models(folder, ld.meta, up_to_epoch=ld.epoch if ld.epoch >= 0 else None)
        earlier, notes = ([], []) if skip else load_pretraining(ld.meta, pretraining)
    except CheckpointError as err:
        raise ExplainError(str(err)) from None
    if pretraining and not skip and not earlier:
        raise ExplainError(f"--history-pretraining: {ld.path} is not a NeuMF initialised from a GMF and an MLP; "
                           f"drop the option.")
    if not quiet:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    models = earlier + models
    return [history_influence(models, u, i, torch.tensor(sorted(ctx.train_items.get(u, ())), dtype=torch.int64))
            for u, i in zip(users, items)]


def pairs_meta(ld: Loaded, users: list[int], items: list[int], ctx: Context, ranks) -> pd.DataFrame:
    return pd.DataFrame({
        "pair": range(len(users)),
        "user_id": [ld.user_ids[u] for u in users],
        "item_id": [ld.item_ids[i] for i in items],
        "title": [ctx.titles[i] if ctx.titles else "" for i in items],
        "user_name": [ctx.user_names[u] if ctx.user_names else "" for u in users],
        "rank": [r for r, _ in ranks],
        "candidates": [c for _, c in ranks],
    })


# ---------------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="explain.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Ids are the dataset's original ids. See README for more.")
    p.add_argument("checkpoints", nargs="+", help="one or more .ckpt files, or a run's checkpoint folder")
    p.add_argument("--user", help="user id (original id)")
    p.add_argument("--item", nargs="+", help="item id(s) to explain for --user")
    p.add_argument("--top-n", type=int, help="explain the user's top-N recommendations (unseen items)")
    p.add_argument("--pairs", help="CSV/TSV file with columns user,item (original ids)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=registry.names())
    p.add_argument("--n-samples", type=int, help="a fixed sample count for LIME / KernelSHAP (default: LIME draws "
                                                 "until stable, KernelSHAP 1000)")
    p.add_argument("--backend", default="ours", choices=BACKENDS,
                   help="'captum': run captum's own implementation of each method (slower)")
    p.add_argument("--lime-preset", default="default", choices=sorted(LIME_PRESETS),
                   help="'notebook' = the starting notebook's LIME (100 samples, kernel width 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", default="mean", choices=["mean", "zero"])
    p.add_argument("--out", help="folder for JSON, CSV and PNG outputs")
    p.add_argument("--data-root", help="folder that holds MovieLens (default: $NCF_DATA_DIR, else ./data)")
    p.add_argument("--data", help="the interactions file the checkpoint was trained on, for your own data (a path "
                                  "stored in a checkpoint is never followed); MovieLens is found by name")
    p.add_argument("--item-names", help="item names file, as given to train.py's --data.item_names")
    p.add_argument("--user-names", help="user names file, as given to train.py's --data.user_names")
    p.add_argument("--names-sep", help="separator of the names files (default: the one given to train.py, else "
                                       "sniffed: comma, tab, '::', '|', ';')")
    p.add_argument("--names-encoding", help="encoding of the names files (default: the one given to train.py, "
                                            "else utf-8; e.g. latin-1 for MovieLens's u.item)")
    p.add_argument("--top-dims", type=int, default=5, help="top contributing dimensions shown per method")
    p.add_argument("--no-faithfulness", action="store_true", help="skip deletion/insertion and infidelity")
    p.add_argument("--history", action="store_true",
                   help="also rank each user's own training interactions by their influence on the pair (TracIn)")
    p.add_argument("--history-checkpoints", help="per-epoch checkpoints for --history (default: the explained "
                                                 "checkpoint's folder/epochs)")
    p.add_argument("--history-pretraining", nargs="+", metavar="DIR",
                   help="for a pretrained NeuMF: the GMF and MLP runs' per-epoch checkpoint folders (default: the "
                        "epochs folders beside the checkpoints it recorded); 'none': NeuMF's own epochs only")
    p.add_argument("--history-k", type=int, default=5, help="interactions shown per pair with --history")
    p.add_argument("--counterfactual", action="store_true",
                   help="with --history: remove each user's top-k (and, as control, k random) interactions, "
                        "fine-tune from the checkpoint, and report the change in the item's score and rank")
    p.add_argument("--cf-epochs", type=int, default=3, help="fine-tuning epochs for --counterfactual")
    p.add_argument("--quiet", action="store_true", help="no tables or progress bar")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also NCF_DEBUG=1)")
    return p


def _requested_pairs(args, ld: Loaded, ctx: Context) -> tuple[list[int], list[int]]:
    if args.pairs:
        path = Path(args.pairs)
        if not path.is_file():
            raise ExplainError(f"{path}: no such pairs file{' (it is a folder)' if path.is_dir() else ''}.")
        sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
        try:
            df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
            raise ExplainError(f"{path}: not a CSV/TSV table with columns user,item ({str(err).splitlines()[0]}).") \
                from None
        if df.empty:
            raise ExplainError(f"{path}: no pairs in it; one row per pair under a header 'user,item'.")
        if not {"user", "item"} <= set(df.columns):
            raise ExplainError(f"{path}: needs columns 'user' and 'item' (original ids); found {list(df.columns)}.")
        users = [_index(ld.user_ids, u, "user", ld.path) for u in df["user"]]
        items = [_index(ld.item_ids, i, "item", ld.path) for i in df["item"]]
        return users, items
    if args.user is None:
        raise ExplainError("Say what to explain: --user U --item I, --user U --top-n N, or --pairs FILE.")
    user = _index(ld.user_ids, args.user, "user", ld.path)
    if args.item:
        return [user] * len(args.item), [_index(ld.item_ids, i, "item", ld.path) for i in args.item]
    if args.top_n:
        if args.top_n < 1:
            raise ExplainError("--top-n must be at least 1.")
        items = recommend(ld.net, torch.tensor([user]), args.top_n, ctx.known)[0]  # as train.py predict writes them
        if len(items) < args.top_n and not args.quiet:
            print(f"note: user {args.user} has only {len(items)} items to recommend (not interacted with); "
                  f"explaining those.", file=sys.stderr)
        return [user] * len(items), items
    raise ExplainError("With --user, give --item ITEM [ITEM ...] or --top-n N.")


def run(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.history_k < 1 or args.cf_epochs < 1:
        raise ExplainError(f"--history-k and --cf-epochs must be at least 1 (got {args.history_k}, {args.cf_epochs}).")
    if not 0 <= args.seed < 2 ** 63:
        raise ExplainError(f"--seed must be between 0 and 2**63 - 1, not {args.seed}.")
    if args.n_samples is not None and not 1 <= args.n_samples <= MAX_SAMPLES:
        raise ExplainError(f"--n-samples must be between 1 and {MAX_SAMPLES}, not {args.n_samples}.")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ExplainError(f"--out {args.out} is a file; give a folder (it is created if missing).")
    if args.history_pretraining is not None and len(args.history_pretraining) != 2 \
            and args.history_pretraining != ["none"]:
        raise ExplainError("--history-pretraining takes two folders (the GMF run's epochs, then the MLP run's), or "
                           "'none' for NeuMF's own epochs only.")
    if args.history_pretraining is not None and not args.history:
        raise ExplainError("--history-pretraining applies to --history: add --history.")
    if args.counterfactual and not args.history:
        raise ExplainError("--counterfactual checks the history explanation: add --history.")
    if args.item and args.top_n is not None:
        raise ExplainError("--item and --top-n choose the items in two ways: give --item ITEM [ITEM ...] for those "
                           "items, or --top-n N for the user's top N, not both.")
    if args.pairs and (args.user is not None or args.item or args.top_n is not None):
        raise ExplainError("--pairs FILE names its own (user, item) pairs: drop --user / --item / --top-n, or drop "
                           "--pairs.")
    torch.manual_seed(args.seed)
    cfg = ExplainSettings(list(args.methods), args.baseline, args.seed, args.n_samples, args.lime_preset, args.backend,
                          not args.no_faithfulness, args.history_k, args.cf_epochs)
    paths = find_checkpoints(args.checkpoints)
    loaded = one_run([load(p) for p in paths], any(Path(c).is_dir() for c in args.checkpoints), args.quiet)
    loaded.sort(key=lambda ld: (ld.epoch, ld.path.name))
    ref = loaded[-1]
    for ld in loaded:
        if (ld.user_ids, ld.item_ids) != (ref.user_ids, ref.item_ids):
            raise ExplainError(f"{ld.path} and {ref.path} were trained on different data; explain them separately.")
    ctx = data_context(ref, args)
    users, items = _requested_pairs(args, ref, ctx)
    if ctx.note and not args.quiet:
        print(f"note: {ctx.note}", file=sys.stderr)
    runs = []
    progress = None
    if not args.quiet and len(loaded) * len(args.methods) * len(users) > 64:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(loaded), desc="checkpoints", unit="ckpt", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*required_grads has been set automatically.*")
        for ld in loaded:
            res = explain_checkpoint(ld, users, items, cfg, ctx)
            if learned_nothing(res["attrs"]):  # shown even with --quiet: nothing below means anything
                res["warnings"] = [LEARNED_NOTHING]
                print(f"warning: {ld.path.name} (epoch {ld.epoch}): {LEARNED_NOTHING}", file=sys.stderr)
            runs.append((ld, res, pairs_meta(ld, users, items, ctx, res["ranks"])))
            if progress:
                progress.update(1)
    if progress:
        progress.close()
    hist = explain_history(ref, users, items, ctx, args.history_checkpoints, args.history_pretraining,
                           args.quiet) if args.history else None
    cf = None
    if args.counterfactual:
        from .counterfactual import counterfactual

        cf = counterfactual(str(ref.path), ctx.split, list(zip(users, items)), [h.items[h.order].tolist() for h in hist],
                            k=args.history_k, epochs=args.cf_epochs, seed=args.seed, data_hparams=ref.dm_hparams)
    if not args.quiet:
        from .history_report import render_counterfactual, render_history, summarize_counterfactual

        for ld, res, meta in runs:
            for p in range(len(meta)):
                print(render_pair(ld, res, meta, p, args.top_dims))
                if hist is not None and ld is ref:
                    print(render_history(hist[p], ref.item_ids, ctx.titles, args.history_k))
                if cf is not None and ld is ref:
                    print(render_counterfactual(cf[p], args.history_k, args.cf_epochs))
                print()
        if cf is not None and len(cf) > 1:
            print(summarize_counterfactual(cf, args.history_k))
        if args.lime_preset == "notebook" and "lime" in args.methods:
            st = runs[-1][1]["seed_stability"]["lime"]
            print(f"LIME 'notebook' preset: median seed-to-seed Spearman {float(st.median()):.3f} "
                  f"(the default preset's is in BENCHMARKS.md; rerun with --lime-preset default to compare).")
    if args.out:
        written = write_outputs(Path(args.out), runs, cfg, hist, ctx, cf)
        if not args.quiet:
            print(f"wrote {len(written)} files to {args.out}: {', '.join(written[:6])}{' ...' if len(written) > 6 else ''}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Errors a user can fix print one line and return 2; ``--debug`` (or ``NCF_DEBUG=1``) shows the traceback."""
    debug, argv = debug_requested(list(sys.argv[1:] if argv is None else argv))
    # The data a checkpoint trained on is rebuilt quietly: train.py's info lines (hold-out rule, split
    # diagnostic) said their piece when it trained; warnings still show.
    logger = logging.getLogger("ncf")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    from .report_command import ReportError, run as report_run

    try:
        if argv[:1] == ["report"]:  # ``explain.py report FOLDER...``: the HTML report of attribution records
            return report_run(argv[1:])
        return run(argv)
    except (ExplainError, ReportError, UserError) as err:
        return report(err, debug)
    finally:
        logger.setLevel(level)
