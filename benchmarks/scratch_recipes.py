"""NeuMF from scratch: training recipes compared one change at a time on MovieLens-100k, on this project's split.

RecBole's NeuMF recipe (its defaults): Adam at 1e-3, no L2, constant rate, dropout 0.1, MLP embeddings of 64
per side (tower 128 -> 128 -> 64), one sampled negative per positive. ``ours`` is configs/neumf.yaml as it
stands (the variants ``ours_*`` change it; ``--config`` another NeuMF config). Each recipe trains NeuMF from scratch with the same split,
evaluation and epoch selection (best validation NDCG@10) as ``benchmarks/accuracy.py``: this compares
recipes on one split, not this project against RecBole's published figures, which come from RecBole's own
split (another validation item, so other training data). Choose between recipes on ``val_ndcg10``; the
test figures are for reporting. One JSON line per recipe with the means over seeds, the seconds to the
selected epoch and to the end.

    python benchmarks/scratch_recipes.py --seeds 2
    python benchmarks/scratch_recipes.py --recipes ours recbole --seeds 3
"""
from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from _common import data_root, emit

import torch

from accuracy import run_one

NET = "model.network.init_args"
RECBOLE = {"model.lr": "0.001", "model.lr_decay": "1.0", "model.weight_decay": "0.0", f"{NET}.dropout": "0.1",
           f"{NET}.mlp_embedding": "64", "data.num_negatives": "1"}

RECIPES: dict[str, dict[str, str]] = {
    "ours": {},
    "recbole": RECBOLE,
    "recbole_4neg": {**RECBOLE, "data.num_negatives": "4"},
    "recbole_4neg_l2": {**RECBOLE, "data.num_negatives": "4", "model.weight_decay": "0.01"},
    "recbole_4neg_decay": {**RECBOLE, "data.num_negatives": "4", "model.lr": "0.002", "model.lr_decay": "0.93"},
    "recbole_4neg_paper_tower": {**RECBOLE, "data.num_negatives": "4", f"{NET}.mlp_embedding": "null"},
    "recbole_4neg_no_dropout": {**RECBOLE, "data.num_negatives": "4", f"{NET}.dropout": "0.0"},
    "ours_no_l2": {"model.weight_decay": "0.0"},
    "ours_recbole_tower": {f"{NET}.mlp_embedding": "64"},
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--config", default="configs/neumf.yaml", help="the recipe ``ours`` (a NeuMF config)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=20, help="max epochs (RecBole's best epoch was 8 of 20)")
    p.add_argument("--out", default="bench_out/scratch_recipes")
    p.add_argument("--threads", type=int, default=1)
    a, extra = p.parse_known_args()
    torch.set_num_threads(a.threads)
    os.environ["NCF_DATA_DIR"] = data_root()
    for name in a.recipes:
        args = [f"--{k}={v}" for k, v in RECIPES[name].items()] + ["--trainer.max_epochs", str(a.epochs), *extra]
        rs = [run_one(a.config, s, Path(a.out).resolve() / name / f"seed{s}", args) for s in range(a.seeds)]
        mean = lambda key: round(statistics.mean(r[key] for r in rs), 4)  # noqa: E731
        emit({"benchmark": "scratch_recipes", "recipe": name, "overrides": RECIPES[name], "seeds": a.seeds,
              "max_epochs": a.epochs, "test_hr10": mean("test_hr10"), "test_ndcg10": mean("test_ndcg10"),
              "test_hr10_each": [round(r["test_hr10"], 4) for r in rs],
              "test_ndcg10_each": [round(r["test_ndcg10"], 4) for r in rs],
              "val_ndcg10": mean("best_val_ndcg10"), "best_epochs": [r["best_epoch"] for r in rs],
              "to_best_s": round(mean("to_best_s"), 1), "fit_s": round(mean("fit_s"), 1),
              "capability": os.environ.get("ATEN_CPU_CAPABILITY", "default")})


if __name__ == "__main__":
    main()
