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
import collections
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd
import torch

from ncf.candidates import recommend
from ncf.console import debug_requested, show_info
from ncf.errors import UserError, report

from . import methods as registry
from .core import BACKENDS
from .explaining import DEFAULT_METHODS, ExplainSettings, explain_checkpoints, explain_history
from .loading import (Context, DataPaths, ExplainError, Loaded, data_context, data_hint, find_checkpoints, id_index,
                      load, one_run, same_weights_once)
from .methods.lime import PRESETS as LIME_PRESETS
from .report import render_pair, write_outputs

__all__ = ["main", "run", "build_parser", "requested_pairs"]

MAX_SAMPLES = registry.MAX_SAMPLES


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
    shap_samples = registry.get("kernel_shap").defaults["n_samples"]
    p.add_argument("--n-samples", type=int, help="a fixed sample count for LIME / KernelSHAP (default: LIME draws "
                                                 f"until stable, KernelSHAP {shap_samples})")
    p.add_argument("--backend", default="ours", choices=BACKENDS,
                   help="'captum': run captum's own implementation of each method (slower)")
    notebook = LIME_PRESETS["notebook"]
    p.add_argument("--lime-preset", default="default", choices=sorted(LIME_PRESETS),
                   help=f"'notebook' = the starting notebook's LIME ({notebook['n_samples']} samples, kernel width "
                        f"{notebook['kernel_width']:g})")
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
    p.add_argument("--history-k", type=int, default=None, help="interactions shown per pair with --history (default 5)")
    p.add_argument("--counterfactual", action="store_true",
                   help="with --history: remove each user's top-k (and, as control, k random) interactions, "
                        "fine-tune from the checkpoint, and report the change in the item's score and rank")
    p.add_argument("--cf-epochs", type=int, default=None, help="fine-tuning epochs for --counterfactual (default 3)")
    p.add_argument("--torch-threads", type=int, default=1, metavar="N",
                   help="CPU threads for torch (default 1, as train.py: on a small machine more threads fight each "
                        "other and other work; 0: torch's default)")
    p.add_argument("--quiet", action="store_true", help="no tables or progress bar")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also NCF_DEBUG=1)")
    return p


def requested_pairs(args, ld: Loaded, ctx: Context) -> tuple[list[int], list[int]]:
    """The (user, item) index pairs the command line asks for, each once, in the order given (a repeat is
    named and dropped)."""
    users, items = _requested(args, ld, ctx)
    first = list(dict.fromkeys(zip(users, items)))  # each pair once, where it first appears
    if len(first) < len(users) and not args.quiet:
        counts = collections.Counter(zip(users, items))
        again = [p for p in first if counts[p] > 1]
        named = ", ".join(f"{ld.user_ids[u]} x {ld.item_ids[i]}" for u, i in again[:3])
        print(f"note: {len(users) - len(first)} pair(s) given more than once ({named}{' ...' if len(again) > 3 else ''}); "
              f"each is explained once.", file=sys.stderr)
    return [u for u, _ in first], [i for _, i in first]


def _requested(args, ld: Loaded, ctx: Context) -> tuple[list[int], list[int]]:
    """``--pairs FILE``, ``--user`` with ``--item``, or ``--user`` with ``--top-n`` (the user's top-N
    candidates, as ``train.py predict`` ranks them)."""
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
        if not {"user", "item"} <= set(df.columns) and {"user_id", "item_id"} <= set(df.columns):
            df = df.rename(columns={"user_id": "user", "item_id": "item"})  # predict's list, explain.py's pairs.csv
            if "method" in df:  # explain.py's pairs.csv: a row per method and pair
                df = df.drop_duplicates(["user", "item"])
        if not {"user", "item"} <= set(df.columns):
            raise ExplainError(f"{path}: needs columns 'user' and 'item' (or 'user_id' and 'item_id', as train.py "
                               f"predict writes them; original ids); found {list(df.columns)}.")
        users = [id_index(ld.user_ids, u, "user", ld.path, ld.dm_hparams) for u in df["user"]]
        items = [id_index(ld.item_ids, i, "item", ld.path, ld.dm_hparams) for i in df["item"]]
        return users, items
    if args.user is None:
        raise ExplainError("Say what to explain: --user U --item I, --user U --top-n N, or --pairs FILE.")
    user = id_index(ld.user_ids, args.user, "user", ld.path, ld.dm_hparams)
    if args.item:
        return [user] * len(args.item), [id_index(ld.item_ids, i, "item", ld.path, ld.dm_hparams) for i in args.item]
    if args.top_n is not None:
        if args.top_n < 1:
            raise ExplainError(f"--top-n must be at least 1, not {args.top_n}.")
        if ctx.known is None:  # without the data, the user's own items would be among the "recommendations"
            raise ExplainError(f"--top-n recommends among the items the user has not interacted with, and the "
                               f"training data is not loaded: {data_hint(ld)}; or explain chosen items with --item.")
        items = recommend(ld.net, torch.tensor([user]), args.top_n, ctx.known)[0]  # as train.py predict writes them
        if len(items) < args.top_n and not args.quiet:
            print(f"note: user {args.user} has only {len(items)} items to recommend (not interacted with); "
                  f"explaining those.", file=sys.stderr)
        return [user] * len(items), items
    raise ExplainError("With --user, give --item ITEM [ITEM ...] or --top-n N.")


def _check(args) -> None:
    """Refuse contradictory or out-of-range options before any checkpoint is read."""
    if args.history_k is not None and not args.history:
        raise ExplainError("--history-k applies to --history: add --history.")
    if args.cf_epochs is not None and not args.counterfactual:
        raise ExplainError("--cf-epochs applies to --counterfactual: add --counterfactual.")
    args.history_k = 5 if args.history_k is None else args.history_k
    args.cf_epochs = 3 if args.cf_epochs is None else args.cf_epochs
    if args.history_k < 1 or args.cf_epochs < 1:
        raise ExplainError(f"--history-k and --cf-epochs must be at least 1 (got {args.history_k}, {args.cf_epochs}).")
    if args.top_dims < 0:
        raise ExplainError(f"--top-dims must be 0 or more, not {args.top_dims}.")
    if not 0 <= args.seed < 2 ** 63:
        raise ExplainError(f"--seed must be between 0 and 2**63 - 1, not {args.seed}.")
    if args.n_samples is not None and not 1 <= args.n_samples <= MAX_SAMPLES:
        raise ExplainError(f"--n-samples must be between 1 and {MAX_SAMPLES}, not {args.n_samples}.")
    if args.out:
        blocking = next((p for p in [Path(args.out), *Path(args.out).parents] if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise ExplainError(f"--out {args.out}: {blocking} is a file; give a folder (it is created if missing).")
    if args.out and args.pairs and Path(args.pairs).resolve().parent == Path(args.out).resolve() and \
            Path(args.pairs).name in ("pairs.csv", "attributions.csv", "history.csv", "explanations.json"):
        raise ExplainError(f"--pairs {args.pairs} is a file explain.py writes in --out {args.out}; it would be replaced "
                           f"by this run's output. Give another --out, or move the pairs file.")
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


def run(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _check(args)
    if args.torch_threads < 0:
        raise ExplainError(f"--torch-threads must be 0 (torch's default) or more, not {args.torch_threads}.")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    torch.manual_seed(args.seed)
    cfg = ExplainSettings(list(args.methods), args.baseline, args.seed, args.n_samples, args.lime_preset, args.backend,
                          not args.no_faithfulness, args.history_k, args.cf_epochs)
    paths = find_checkpoints(args.checkpoints)
    from_folder = any(Path(c).is_dir() for c in args.checkpoints)
    loaded = one_run([load(p) for p in paths], from_folder, args.quiet)
    if from_folder:
        loaded = same_weights_once(loaded, args.quiet)
    if len({ld.run_id for ld in loaded}) == 1:  # one run's checkpoints along its epochs; several runs as given
        loaded.sort(key=lambda ld: (ld.epoch, ld.path.name))
    ref = loaded[-1]
    for ld in loaded:
        if (ld.user_ids, ld.item_ids) != (ref.user_ids, ref.item_ids):
            raise ExplainError(f"{ld.path} and {ref.path} were trained on different data; explain them separately.")
    ctx = data_context(ref, DataPaths(args.data, args.data_root, args.item_names, args.user_names, args.names_sep,
                                      args.names_encoding, training_rows=bool(args.history or args.counterfactual)))
    if ctx.warning:
        print(f"warning: {ctx.warning}", file=sys.stderr)
    users, items = requested_pairs(args, ref, ctx)
    if args.top_n is not None and len(loaded) > 1 and not args.quiet:
        print(f"note: the top {args.top_n} are those of {ref.path} (epoch {ref.epoch}, the last checkpoint given); "
              f"every checkpoint explains these items, each with its own rank.", file=sys.stderr)
    if ctx.note and not args.quiet:
        print(f"note: {ctx.note}", file=sys.stderr)
    runs = explain_checkpoints(loaded, users, items, cfg, ctx, args.quiet)
    hist = explain_history(ref, users, items, ctx, args.history_checkpoints, args.history_pretraining,
                           args.quiet) if args.history else None
    if hist is not None and len(loaded) > 1 and not args.quiet:
        print(f"note: history influence (and --counterfactual) is that of the last checkpoint, {ref.path}; the "
              f"others are explained without it.", file=sys.stderr)
    cf = None
    if args.counterfactual:
        from .counterfactual import counterfactual

        cf = counterfactual(str(ref.path), ctx.split, list(zip(users, items)), [h.items[h.order].tolist() for h in hist],
                            k=args.history_k, epochs=args.cf_epochs, seed=args.seed, data_hparams=ref.dm_hparams)
        if cf and cf[0].optimizer == "fresh":  # said even with --quiet: the fine-tuning is not the run's own
            print(f"warning: {ref.path} holds weights only (a per-epoch checkpoint), so the counterfactual fine-tunes "
                  f"with a fresh optimizer and learning-rate schedule, not the run's; for those, explain a checkpoint "
                  f"that has them (the run's best.ckpt or last.ckpt).", file=sys.stderr)
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
    show_info()  # warnings print as train.py's do ("warning: ...")
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
