"""Training objectives on MovieLens-100k: the paper's pointwise log loss, BPR and sampled softmax, with the
number of negatives per positive, the softmax temperature, learning rate, L2 and batch size as levers.

Each variant is a config in ``configs/`` plus command-line overrides (``VARIANTS``); each seed trains it as
``benchmarks/accuracy.py`` does (the epoch kept is the best on validation NDCG@10), then tests that epoch on
the sampled candidates (1 + 99) and on the full ranking. Variants are compared on **validation** NDCG@10
only; the test figures are reported for the one validation selects. Prints one JSON line per variant and
seed, then one per variant with the means (``"seed": "mean"``).

    python benchmarks/objectives.py --variants gmf softmax_k64 --seeds 5
    python benchmarks/objectives.py --stage sweep --seeds 1     # every variant of the sweep, seed 0
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from _common import data_root, emit

import torch

from accuracy import run_one

SOFTMAX = "ncf.objectives.SampledSoftmax"
BPR = "ncf.objectives.BPR"


def objective(class_path: str, **init_args) -> dict[str, str]:
    """Overrides naming an objective by class path (and its arguments)."""
    out = {"model.objective": class_path}
    out.update({f"model.objective.init_args.{k}": str(v) for k, v in init_args.items()})
    return out


# name: (config, overrides). The paper's configs as they are, then the objectives on GMF.
GROUPED = {"data.batch_size": "1024", "trainer.max_epochs": "20"}  # 1024 positives a batch, each with k negatives
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "gmf": ("gmf", {}),
    "softmax_k16": ("gmf", {**objective(SOFTMAX), **GROUPED, "data.num_negatives": "16"}),
    "softmax_k16_wd0": ("gmf", {**objective(SOFTMAX), **GROUPED, "data.num_negatives": "16", "model.weight_decay": "0"}),
    "bpr_k16": ("gmf", {**objective(BPR), **GROUPED, "data.num_negatives": "16"}),
    "softmax_k64": ("gmf", {**objective(SOFTMAX), **GROUPED, "data.num_negatives": "64", "data.batch_size": "256"}),
    "softmax_k16_wd05": ("gmf", {**objective(SOFTMAX), **GROUPED, "data.num_negatives": "16", "model.weight_decay": "0.05",
                                 "trainer.max_epochs": "12"}),
    "softmax_k16_wd2": ("gmf", {**objective(SOFTMAX), **GROUPED, "data.num_negatives": "16", "model.weight_decay": "0.2",
                                "trainer.max_epochs": "12"}),
    "softmax_k16_lr002": ("gmf", {**objective(SOFTMAX), **GROUPED, "data.num_negatives": "16", "model.lr": "0.002",
                                  "trainer.max_epochs": "12"}),
    "bpr_k16_wd05": ("gmf", {**objective(BPR), **GROUPED, "data.num_negatives": "16", "model.weight_decay": "0.05",
                             "trainer.max_epochs": "12"}),
}
MF = {"model.network": "ncf.mf.MF", "model.network.init_args.factor": "64"}  # the gmf config's recipe on MF
VARIANTS.update({
    "mf": ("gmf", MF),
    "mf_softmax_k16": ("gmf", {**MF, **objective(SOFTMAX), **GROUPED, "data.num_negatives": "16",
                               "trainer.max_epochs": "15"}),
    "mf_softmax_k16_wd05": ("gmf", {**MF, **objective(SOFTMAX), **GROUPED, "data.num_negatives": "16",
                                    "model.weight_decay": "0.05", "trainer.max_epochs": "15"}),
    "mf_bpr_k16": ("gmf", {**MF, **objective(BPR), **GROUPED, "data.num_negatives": "16", "trainer.max_epochs": "15"}),
    "mf_bpr_k16_wd05": ("gmf", {**MF, **objective(BPR), **GROUPED, "data.num_negatives": "16",
                                "model.weight_decay": "0.05", "trainer.max_epochs": "15"}),
    "mf_softmax_k16_wd1": ("gmf", {**MF, **objective(SOFTMAX), **GROUPED, "data.num_negatives": "16",
                                   "model.weight_decay": "0.1", "trainer.max_epochs": "15"}),
    "mf_softmax_k16_wd05_t05": ("gmf", {**MF, **objective(SOFTMAX, temperature=0.5), **GROUPED,
                                        "data.num_negatives": "16", "model.weight_decay": "0.05",
                                        "trainer.max_epochs": "15"}),
    "mf_softmax_k64_wd05": ("gmf", {**MF, **objective(SOFTMAX), **GROUPED, "data.num_negatives": "64",
                                    "model.weight_decay": "0.05", "trainer.max_epochs": "15"}),
    # configs/mf_softmax.yaml as it stands, and the best trial of `tune.py --config configs/mf_softmax.yaml`
    "mf_softmax": ("mf_softmax", {}),
    "mf_softmax_tuned": ("mf_softmax", {"model.lr": "0.008819804402225946", "model.weight_decay": "0.02061405842281245",
                                        "model.lr_decay": "0.9426453245613815",
                                        "model.objective.init_args.temperature": "1.4370512423831343"}),
    "mf_softmax_k64_wd1": ("mf_softmax", {"data.num_negatives": "64", "model.weight_decay": "0.1"}),
    "mf_softmax_k32": ("mf_softmax", {"data.num_negatives": "32"}),
    "mf_softmax_e30": ("mf_softmax", {"trainer.max_epochs": "30"}),
})


def run_variant(name: str, seed: int, out: Path, extra: list[str]) -> dict:
    config, overrides = VARIANTS[name]
    # objective first: its init_args options exist only once the class is named
    args = [a for k, v in overrides.items() for a in (f"--{k}", v)] + extra
    return run_one(config, seed, out / name / f"seed{seed}", args)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS))
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--out", default="bench_out/objectives")
    p.add_argument("--threads", type=int, default=1)
    a, extra = p.parse_known_args()
    torch.set_num_threads(a.threads)
    os.environ["NCF_DATA_DIR"] = data_root()
    out = Path(a.out).resolve()
    for name in a.variants or list(VARIANTS):
        config, overrides = VARIANTS[name]
        rs = []
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            r = run_variant(name, seed, out, extra)
            rs.append(r)
            emit({"benchmark": "objectives", "variant": name, "config": config, "overrides": overrides, "seed": seed,
                  **{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}})
            print(f"{name} seed {seed}: val NDCG@10 {r['best_val_ndcg10']:.4f}, test {r['test_hr10']:.4f} / "
                  f"{r['test_ndcg10']:.4f}, full {r['test_full_hr10']:.4f} / {r['test_full_ndcg10']:.4f}, "
                  f"epoch {r['best_epoch']} at {r['to_best_s']:.1f} s", file=sys.stderr, flush=True)
        mean = lambda key: round(statistics.mean(r[key] for r in rs), 4)  # noqa: E731
        emit({"benchmark": "objectives", "variant": name, "config": config, "overrides": overrides, "seed": "mean",
              "seeds": [a.first_seed + s for s in range(a.seeds)], "extra": " ".join(extra),
              "best_val_ndcg10": mean("best_val_ndcg10"), "test_hr10": mean("test_hr10"),
              "test_ndcg10": mean("test_ndcg10"), "test_full_hr10": mean("test_full_hr10"),
              "test_full_ndcg10": mean("test_full_ndcg10"), "to_best_s": round(mean("to_best_s"), 1),
              "fit_s": round(mean("fit_s"), 1), "best_epochs": [r["best_epoch"] for r in rs],
              "test_hr10_each": [round(r["test_hr10"], 4) for r in rs],
              "test_ndcg10_each": [round(r["test_ndcg10"], 4) for r in rs],
              "capability": torch.backends.cpu.get_cpu_capability(), "threads": a.threads})


if __name__ == "__main__":
    main()
