"""Peers on the identical split: RecBole's GMF, NeuMF, BPR and LightGCN beside the project's models, trained
and scored on the same data, in one run.

The project's split (any dataset ``train.py`` reads; ``--data.*`` options apply to it) is exported as RecBole
atomic benchmark files (:mod:`ncf.export`: the same training rows, validation and test items, and the same
1 + 99 candidates). For each seed the project's models and RecBole's alternate (the side that starts
alternates with the seed), so drift of the machine's speed hits both; each runs on one thread. RecBole runs
at its defaults with 4 uniform negatives, batch 1024, Adam 1e-3 and early stopping on validation NDCG@10,
validated on the exported candidates (``_recbole_runner.py``); the project's models train with their configs.
Both keep the epoch with the best validation NDCG@10, and both are scored here by the project's metric code:
HR@10 / NDCG@10 among the 1 + 99 test candidates and in the full ranking (the test item against every item
the user has not interacted with). ``seconds_to_best`` is the wall time from reading the configuration to
the end of the best epoch's validation (data loading, every epoch's training and validation up to it); for
a chain of configs (the default pipeline: GMF, MLP, then the pretrained NeuMF) the earlier runs count whole.
A seed sets everything random in training on both sides (for the project: ``seed_everything`` and
``data.negatives_seed``); the split is the same for every seed.
A first line (``source`` baseline, ``model`` popularity; ``--no-popularity`` leaves it out) scores the floor
on the same candidates: every item ranked by its number of training interactions, the same for every user.
A model that does not clear it has learned nothing about the users on that data.

RecBole lives in its own virtual environment; the project never imports it. Set it up once (~3 min):

    python3 -m venv benchmarks/.peers-venv && benchmarks/.peers-venv/bin/pip install torch==2.13.0 && benchmarks/.peers-venv/bin/pip install recbole==1.2.1 'numpy<2' 'pandas<2.3' 'setuptools<81' 'scipy<1.13'

then (one JSON line per model and seed, then the means; the table goes to stderr):

    python benchmarks/peers.py --seeds 5 > benchmarks/results/peers.jsonl
    python benchmarks/peers.py --seeds 1 --no-pipeline --configs configs/gmf.yaml --peers GMF --peer-set epochs=2
    python benchmarks/peers.py --configs configs/gmf.yaml configs/neumf.yaml --data.dataset my.csv
    python benchmarks/peers.py --export bench_out/peers/export     # only write the benchmark files
    python benchmarks/peers.py --table a.jsonl b.jsonl 2>&1 >/dev/null  # one table of runs made in pieces
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, data_root, emit

import numpy as np
import torch

from ncf.candidates import interacted_keys
from ncf.cli import main as cli_main
from ncf.movielens import MOVIELENS
from ncf.loaders import EvalLoader
from ncf.export import export_recbole
from ncf.metrics import HitRateNDCG, rank_among
from ncf.splits import Split

PIPELINE = ("configs/gmf.yaml", "configs/mlp.yaml", "configs/neumf_pretrained.yaml")
PEERS = ("GMF", "NeuMF", "BPR", "LightGCN")
PEER_VENV = REPO / "benchmarks" / ".peers-venv"
RUNNER = REPO / "benchmarks" / "_recbole_runner.py"
SETUP = (f"python3 -m venv {PEER_VENV.relative_to(REPO)} && {PEER_VENV.relative_to(REPO)}/bin/pip install torch==2.13.0 "
         f"&& {PEER_VENV.relative_to(REPO)}/bin/pip install recbole==1.2.1 'numpy<2' 'pandas<2.3' 'setuptools<81' "
         f"'scipy<1.13'")
EXPORT_NAME = "ncf"


def fail(message: str) -> None:
    """A one-line error naming the problem and its fix; exit code 2, as train.py's."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def the_split(config: Path, extra: list[str], scratch: Path) -> tuple[Split, str, str]:
    """The split ``train.py fit --config config EXTRA`` trains on, its SHA-256 and the dataset's run-folder name."""
    scratch.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(scratch)  # building the trainer may create its folders
    try:
        cli = cli_main(["--config", str(config), "--trainer.enable_progress_bar", "false", *extra], run=False)
        dm = cli.datamodule
        dm.prepare_data()
        dm.setup("fit")
        return dm.split, dm.data_fingerprint(), Path(str(dm.dataset)).stem
    finally:
        os.chdir(cwd)


def absolute_paths(extra: list[str]) -> list[str]:
    """train.py options with the file that ``--data.dataset`` names (and other existing paths) made absolute.

    >>> absolute_paths(["--data.dataset", "ml-100k", "--trainer.max_epochs=2"])
    ['--data.dataset', 'ml-100k', '--trainer.max_epochs=2']
    """
    out = []
    for tok in extra:
        key, eq, value = tok.partition("=")
        if eq and key.startswith("--") and value not in MOVIELENS and os.path.exists(value):
            tok = f"{key}={os.path.abspath(value)}"
        elif not tok.startswith("--") and tok not in MOVIELENS and os.path.exists(tok):
            tok = os.path.abspath(tok)
        out.append(tok)
    return out


def sampled(scores: torch.Tensor) -> tuple[float, float]:
    """HR@10 and NDCG@10 of column 0 among ``[U, C]`` candidate scores (the project's metric)."""
    m = HitRateNDCG(10)
    m.update(scores)
    r = m.compute()
    return float(r["hr"]), float(r["ndcg"])


def full_ranking(scores: np.ndarray, split: Split) -> tuple[float, float]:
    """HR@10 and NDCG@10 of each test item against every item its user has not interacted with, as the
    project's test step ranks it: ``scores [U, n_items]`` in the order of ``split.test_users``."""
    m = HitRateNDCG(10)
    loader = EvalLoader(split.test_users, split.test_candidates, known_keys=interacted_keys(split),
                        n_items=split.n_items)
    start = 0
    for users, cands, exclude in loader:
        rows = torch.from_numpy(np.array(scores[start:start + len(users)]))
        m.update(rank=rank_among(rows, cands[:, 0], exclude))
        start += len(users)
    r = m.compute()
    return float(r["hr"]), float(r["ndcg"])


def run_project(chain: tuple[Path, ...], seed: int, workdir: Path, extra: list[str], done: dict) -> dict:
    """Train each config of ``chain`` in turn (later ones may start from earlier ones' checkpoints) and test
    the last; a config already trained for this seed (``done``) is not trained again."""
    from accuracy import run_one

    args = ["--data.negatives_seed", str(seed), *extra]
    for config in chain:
        if config not in done:
            done[config] = run_one(config, seed, workdir, args)
    *before, last = (done[c] for c in chain)
    r = dict(last)
    r["seconds_to_best"] = sum(b["fit_s"] for b in before) + last["to_best_s"]
    r["fit_seconds"] = sum(b["fit_s"] for b in before) + last["fit_s"]
    r["val_ndcg10"] = last["best_val_ndcg10"]
    return r


def run_peer(model: str, seed: int, export: Path, rundir: Path, a, split: Split) -> dict:
    """Train RecBole's ``model`` in its own interpreter and score it here."""
    if rundir.exists():
        shutil.rmtree(rundir)  # this script's own folder: a stale result must not be read back
    rundir.mkdir(parents=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    cmd = [str(a.peer_python), str(RUNNER), "--data", str(export), "--model", model, "--seed", str(seed),
           "--out", str(rundir), "--threads", str(a.threads)]
    if a.peer_set:
        cmd += ["--set", *a.peer_set]
    with open(rundir / "output.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        fail(f"RecBole's {model} (seed {seed}) failed with exit code {proc.returncode}; see {rundir / 'output.log'}")
    res = json.loads((rundir / "result.json").read_text())
    seen = (res["train_rows"], res["n_users"], res["n_items"])
    if seen != (len(split.train_users), split.n_users, split.n_items):
        fail(f"RecBole read {seen} (training rows, users, items) from the export, the split has "
             f"{(len(split.train_users), split.n_users, split.n_items)}")
    val_hr, val_ndcg = sampled(torch.from_numpy(np.load(rundir / "val_scores.npy")))
    if abs(val_ndcg - res["best_val_ndcg10"]) > 1e-5:  # the runner's validation metric is the project's
        fail(f"RecBole's {model} validated at NDCG@10 {res['best_val_ndcg10']:.6f}, the project's "
             f"metric gives {val_ndcg:.6f} on the same scores")
    test_hr, test_ndcg = sampled(torch.from_numpy(np.load(rundir / "test_scores.npy")))
    full_hr, full_ndcg = full_ranking(np.load(rundir / "full_scores.npy", mmap_mode="r"), split)
    return {**res, "test_hr10": test_hr, "test_ndcg10": test_ndcg, "test_full_hr10": full_hr,
            "test_full_ndcg10": full_ndcg, "val_ndcg10": val_ndcg}


def run_popularity(split: Split) -> dict:
    """The floor every model should clear: each item scored by how many training interactions it has, the
    same for every user (ties count against the held-out item, as in every figure here). Nothing is trained,
    so there is no seed and no epoch; ``seconds_to_best`` is the time to count and score."""
    t0 = time.perf_counter()
    counts = torch.bincount(split.train_items.reshape(-1), minlength=split.n_items).double()
    test_hr, test_ndcg = sampled(counts[split.test_candidates])
    val_ndcg = sampled(counts[split.val_candidates])[1] if split.val_candidates is not None else float("nan")
    # every test user's row is the same counts: a broadcast view, no [users, items] array in memory
    full_hr, full_ndcg = full_ranking(np.broadcast_to(counts.numpy(), (len(split.test_users), split.n_items)), split)
    return {"best_epoch": None, "test_hr10": test_hr, "test_ndcg10": test_ndcg, "test_full_hr10": full_hr,
            "test_full_ndcg10": full_ndcg, "val_ndcg10": val_ndcg, "seconds_to_best": time.perf_counter() - t0,
            "fit_seconds": 0.0}


def figures(r: dict) -> dict:
    """A result's figures as a line stores them: scores to 4 decimals, seconds to 1."""
    return {**{k: round(r[k], 4) for k in ("test_hr10", "test_ndcg10", "test_full_hr10", "test_full_ndcg10",
                                           "val_ndcg10")},
            **{k: round(r[k], 1) for k in ("seconds_to_best", "fit_seconds")}}


def table_rows(files: list[Path]) -> list[dict]:
    """The result lines of runs made in pieces, for one table: refused when they come from different splits
    (their figures cannot be averaged), and the popularity line once (every piece writes the same one)."""
    rows, splits = [], {}
    for f in files:
        if not f.is_file():
            fail(f"--table {f}: no such file")
        for line in f.read_text().splitlines():
            if not line.startswith("{") or '"summary"' in line:
                continue
            r = json.loads(line)
            splits.setdefault(r.get("split_sha256"), (f, r.get("dataset")))
            if r.get("source") == "baseline" and any(o.get("source") == "baseline" and o.get("model") == r.get("model")
                                                     for o in rows):
                continue
            rows.append(r)
    if len(splits) > 1:
        (f1, d1), (f2, d2) = list(splits.values())[:2]
        fail(f"--table: {f1} holds runs on {d1} and {f2} on {d2}, two different splits (split_sha256): their "
             f"figures cannot be averaged; make one table per split")
    return rows


def epochs(group: list[dict]) -> str:
    """The best epochs of a model's lines; a baseline trains nothing and has none (older files stored 0)."""
    return " ".join("-" if r["source"] == "baseline" or r["best_epoch"] is None else str(r["best_epoch"])
                    for r in group)


def table(rows: list[dict]) -> str:
    """Means (population std) over seeds, one line per model, as markdown."""
    out = ["| model | source | seeds | test HR@10 | test NDCG@10 | full HR@10 | full NDCG@10 | seconds to best | "
           "best epochs |", "|---|---|---|---|---|---|---|---|---|"]
    key = lambda r: (r["source"], r["model"])  # noqa: E731
    for (source, model), group in itertools.groupby(sorted(rows, key=key), key=key):
        g = list(group)

        def ms(k, digits=4):
            v = [r[k] for r in g]
            return f"{statistics.mean(v):.{digits}f} ({statistics.pstdev(v):.{digits}f})"

        out.append(f"| {model} | {source} | {len(g)} | {ms('test_hr10')} | {ms('test_ndcg10')} | "
                   f"{ms('test_full_hr10')} | {ms('test_full_ndcg10')} | {ms('seconds_to_best', 1)} | "
                   f"{epochs(g)} |")
    return "\n".join(out)


def summary(rows: list[dict]) -> dict:
    models = {}
    for r in rows:
        models.setdefault(f"{r['source']}:{r['model']}", []).append(r)
    keys = ("test_hr10", "test_ndcg10", "test_full_hr10", "test_full_ndcg10", "seconds_to_best")
    return {name: {**{k: round(statistics.mean(r[k] for r in g), 4) for k in keys},
                   **{f"{k}_std": round(statistics.pstdev(r[k] for r in g), 4) for k in keys},
                   "seeds": [r["seed"] for r in g]} for name, g in models.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Other options are train.py's "
                                "(e.g. --data.dataset my.csv); they apply to the export and to every project run.")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (from --first-seed)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--peers", nargs="*", default=list(PEERS), help="RecBole models (GMF is its NeuMF without "
                   "the MLP tower; any other RecBole general model runs under its own name)")
    p.add_argument("--no-pipeline", action="store_true", help="leave out the default pipeline (GMF, MLP, "
                   "pretrained NeuMF)")
    p.add_argument("--configs", nargs="*", default=[], type=Path, help="more project configs, each a model")
    p.add_argument("--no-popularity", dest="popularity", action="store_false",
                   help="leave out the popularity line (items ranked by their training interactions, once)")
    p.add_argument("--peer-python", type=Path, default=PEER_VENV / "bin" / "python",
                   help="the interpreter that has RecBole (default: the set-up virtual environment)")
    p.add_argument("--peer-set", nargs="*", default=[], metavar="KEY=JSON",
                   help="more RecBole settings, e.g. epochs=2 for a quick try (not RecBole's defaults then)")
    p.add_argument("--out", type=Path, default=Path("bench_out/peers"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--export", type=Path, metavar="DIR", help="only write the split as benchmark files to DIR")
    p.add_argument("--table", nargs="+", type=Path, metavar="JSONL", help="only print the table (stderr) and "
                   "the means (stdout) of the lines in these files, e.g. of runs in pieces (--first-seed)")
    a, extra = p.parse_known_args()
    if a.table:
        rows = table_rows(a.table)
        emit({"benchmark": "peers", "summary": True, "sources": [str(f) for f in a.table], "models": summary(rows)})
        print(table(rows), file=sys.stderr)
        return
    if a.seeds < 1 or a.first_seed < 0 or a.threads < 1:
        fail(f"--seeds and --threads must be at least 1 and --first-seed at least 0, not {a.seeds}, {a.threads} "
             f"and {a.first_seed}")
    torch.set_num_threads(a.threads)
    os.environ["NCF_DATA_DIR"] = data_root()
    extra = absolute_paths(extra)  # the runs start in folders of their own
    out = a.out.resolve()
    chains = [] if a.no_pipeline else [tuple((REPO / c).resolve() for c in PIPELINE)]
    for c in a.configs:
        if not c.exists():
            fail(f"--configs {c}: no such file")
        chains.append((c.resolve(),))
    stems = {}
    for config in {c for chain in chains for c in chain}:
        if stems.setdefault(config.stem, config) != config:  # runs live in runs/<dataset>/<config name>
            fail(f"{stems[config.stem]} and {config} share the run name {config.stem!r}; copy one under another name")
    if a.peers and not a.export and not a.peer_python.exists():
        fail(f"{a.peer_python} not found: RecBole runs in its own virtual environment; set it up once with "
             f"`{SETUP}` or name its python with --peer-python")
    split, sha, dataset = the_split(chains[0][0] if chains else REPO / PIPELINE[0], extra, out / "split")
    if a.export:
        export_recbole(split, a.export / EXPORT_NAME, EXPORT_NAME)
        print(f"wrote {a.export / EXPORT_NAME}/{EXPORT_NAME}.* (split sha256 {sha})", file=sys.stderr)
        return
    if split.val_users is None:
        fail("the split has no validation items, and both sides select their epoch on them; drop "
             "--data.validation false")
    export = export_recbole(split, out / "export" / EXPORT_NAME, EXPORT_NAME)
    rows = []
    if a.popularity:  # no training and no seed: one line, before the trained models
        r = run_popularity(split)
        row = {"benchmark": "peers", "source": "baseline", "model": "popularity", "seed": None, "dataset": dataset,
               "split_sha256": sha, "best_epoch": r["best_epoch"], **figures(r)}
        rows.append(row)
        emit(row)
        print(f"popularity: test HR@10 {row['test_hr10']:.4f} NDCG@10 {row['test_ndcg10']:.4f}, full "
              f"{row['test_full_hr10']:.4f} / {row['test_full_ndcg10']:.4f}", file=sys.stderr, flush=True)
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        done: dict = {}
        project = [("project", "+".join(c.stem for c in chain), chain) for chain in chains]
        peers = [("recbole", m, None) for m in a.peers]
        sides = (project, peers) if seed % 2 == 0 else (peers, project)
        for source, model, chain in (j for pair in itertools.zip_longest(*sides) for j in pair if j):
            t0 = time.perf_counter()
            if source == "project":
                r = run_project(chain, seed, out / f"seed{seed}" / "project", extra, done)
                if r["split_sha256"] != sha:
                    fail(f"{chain[-1]} trained on another split than the export; give the configs the same "
                         f"data settings")
            else:
                r = run_peer(model, seed, export, out / f"seed{seed}" / "recbole" / model, a, split)
            row = {"benchmark": "peers", "source": source, "model": model, "seed": seed, "dataset": dataset,
                   "split_sha256": sha, "threads": a.threads, "best_epoch": r["best_epoch"],
                   "wall_seconds": round(time.perf_counter() - t0, 1), **figures(r)}
            if source == "recbole":
                row.update(recbole=r["recbole_version"], settings=r["settings"], model_settings=r["model_settings"],
                           recbole_own_full_hr10=round(r["recbole_own_full_hr10"], 4),
                           recbole_own_full_ndcg10=round(r["recbole_own_full_ndcg10"], 4))
                if a.peer_set:
                    row["overrides"] = " ".join(a.peer_set)
            elif extra:
                row["overrides"] = " ".join(extra)
            rows.append(row)
            emit(row)
            sys.stdout.flush()
            print(f"seed {seed} {source} {model}: test HR@10 {row['test_hr10']:.4f} NDCG@10 {row['test_ndcg10']:.4f}"
                  f", full {row['test_full_hr10']:.4f} / {row['test_full_ndcg10']:.4f}, {row['seconds_to_best']:.0f} s "
                  f"to epoch {row['best_epoch']}", file=sys.stderr, flush=True)
    emit({"benchmark": "peers", "summary": True, "dataset": dataset, "split_sha256": sha,
          "capability": torch.backends.cpu.get_cpu_capability(), "models": summary(rows)})
    print(table(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
