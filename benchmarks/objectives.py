"""Training objectives on MovieLens-100k: the paper's pointwise log loss, BPR and sampled softmax, with the
number of negatives per positive, the softmax temperature, learning rate, L2 and batch size as levers.

Each variant is a config in ``configs/`` plus command-line overrides (``VARIANTS``); each seed trains it as
``benchmarks/accuracy.py`` does (the epoch kept is the best on validation NDCG@10), then tests that epoch on
the sampled candidates (1 + 99) and on the full ranking. Variants are compared on **validation** NDCG@10
only; the test figures are reported for the one validation selects. Prints one JSON line per variant and
seed, then one per variant with the means (``"seed": "mean"``).

    python benchmarks/objectives.py --stage sweep             # one seed (0) of every variant
    python benchmarks/objectives.py --stage top --seeds 2     # seeds 0 and 1 of the best on validation
    python benchmarks/objectives.py --stage final --seeds 5   # seeds 0-4: the two best and the paper's recipe
    python benchmarks/objectives.py --stage recent            # recent interactions weighted more: one seed each
    python benchmarks/objectives.py --variants mf_softmax --seeds 5 --out bench_out/objectives   # any variant
    python benchmarks/objectives.py --summarize part1.jsonl part2.jsonl   # means of a stage run in parts
"""
from __future__ import annotations

import argparse
import json
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


# name: (config, overrides). First the paper's GMF recipe (configs/gmf.yaml: pointwise log loss, 4 negatives per
# positive, batches of 8192 pairs) under other objectives, then on MF with biases.
GROUPED = {"data.batch_size": "1024", "trainer.max_epochs": "20"}  # 1024 positives a batch, each with k negatives
MF = {"model.network": "ncf.mf.MF", "model.network.init_args.factor": "64"}
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "gmf": ("gmf", {}),
    "softmax_k16": ("gmf", {**objective(SOFTMAX), **GROUPED, "data.num_negatives": "16"}),
    "softmax_k16_wd0": ("gmf", {**objective(SOFTMAX), **GROUPED, "data.num_negatives": "16", "model.weight_decay": "0"}),
    "bpr_k16": ("gmf", {**objective(BPR), **GROUPED, "data.num_negatives": "16"}),
    "softmax_k16_wd05": ("gmf", {**objective(SOFTMAX), **GROUPED, "data.num_negatives": "16", "model.weight_decay": "0.05",
                                 "trainer.max_epochs": "12"}),
    "softmax_k16_wd2": ("gmf", {**objective(SOFTMAX), **GROUPED, "data.num_negatives": "16", "model.weight_decay": "0.2",
                                "trainer.max_epochs": "12"}),
    "softmax_k16_lr002": ("gmf", {**objective(SOFTMAX), **GROUPED, "data.num_negatives": "16", "model.lr": "0.002",
                                  "trainer.max_epochs": "12"}),
    "bpr_k16_wd05": ("gmf", {**objective(BPR), **GROUPED, "data.num_negatives": "16", "model.weight_decay": "0.05",
                             "trainer.max_epochs": "12"}),
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
    # configs/mf_softmax.yaml (MF, softmax, 16 negatives, L2 0.05, Adam 0.008 decayed 0.93, batches of 1024
    # positives) for 20 and 30 epochs, with other settings, and the best trial of its tuning study
    # (`tune.py --config configs/mf_softmax.yaml --n-trials 25`, space configs/search/mf_softmax.yaml)
    "mf_softmax": ("mf_softmax", {"trainer.max_epochs": "20"}),
    "mf_softmax_e30": ("mf_softmax", {"trainer.max_epochs": "30"}),
    "mf_softmax_k32": ("mf_softmax", {"trainer.max_epochs": "20", "data.num_negatives": "32"}),
    "mf_softmax_k64_wd1": ("mf_softmax", {"trainer.max_epochs": "20", "data.num_negatives": "64",
                                          "model.weight_decay": "0.1"}),
    "mf_softmax_tuned": ("mf_softmax", {"trainer.max_epochs": "20", "model.lr": "0.008819804402225946",
                                        "model.weight_decay": "0.02061405842281245",
                                        "model.lr_decay": "0.9426453245613815",
                                        "model.objective.init_args.temperature": "1.4370512423831343"}),
    # each user's R latest training interactions drawn W times an epoch (--data.recent_positives R,
    # --data.recent_weight W), chosen on validation with the user's previous interaction held out for it (the
    # default validation item is a random one, which does not reward knowing what a user did lately); then
    # configs/mf_recent.yaml on the default split, the one the peers were measured on
    "mf_softmax_prev": ("mf_softmax", {"trainer.max_epochs": "20", "data.validation_item": "previous"}),
    **{f"mf_recent_{r}x{w}_prev": ("mf_softmax", {"trainer.max_epochs": "20", "data.validation_item": "previous",
                                                 "data.recent_positives": str(r), "data.recent_weight": str(w)})
       for r, w in ((5, 3), (10, 3), (10, 5), (20, 3), (20, 5))},
    "mf_recent": ("mf_recent", {}),
    # RecentMF (ncf/recent.py): the user's latest H training items read at scoring, chosen on validation as above
    **{f"recent_mf_h{h}_wd{wd}_prev": ("recent_mf", {"trainer.max_epochs": "20", "data.validation_item": "previous",
                                                        "model.network.init_args.history": str(h),
                                                        "model.weight_decay": wd})
       for h in (5, 10, 20) for wd in ("0.05", "0.1")},
    # TransitionMF (ncf/transitions.py): mf_recent's MF plus what others watched next after the user's H latest
    # items (transitions counted within a window of K places, weight B), chosen on validation as above
    **{f"transition_mf_h{h}_k{k}_b{b}_prev": ("transition_mf", {
        "trainer.max_epochs": "20", "data.validation_item": "previous", "model.network.init_args.history": str(h),
        "model.network.init_args.window": str(k), "model.network.init_args.weight": b})
       for h, k, b in [(h, k, b) for h in (3, 5) for k in (3, 10) for b in ("0.5", "1.0", "2.0")]
       + [(3, 10, "3.0"), (3, 10, "4.0")]},  # the best of the grid had the largest weight: larger ones too
    "transition_mf": ("transition_mf", {}),
    "recent_mf_h10_prev_unweighted": ("recent_mf", {"trainer.max_epochs": "20", "data.validation_item": "previous",
                                                    "model.network.init_args.history": "10", "model.weight_decay": "0.05",
                                                    "data.recent_positives": "0", "data.recent_weight": "1"}),
}
# The stages of the selection, each judged on validation NDCG@10: one seed of every variant, two seeds of the
# best, five seeds of the two best and of the paper's recipe on GMF and on MF.
STAGES = {
    "sweep": [v for v in VARIANTS if v not in ("gmf", "mf_softmax_e30", "mf_softmax_k32", "mf_softmax_tuned")
              and "_prev" not in v and v not in ("mf_recent", "recent_mf", "transition_mf")],
    "recent": [v for v in VARIANTS if v.startswith("mf_recent_") and v.endswith("_prev")],
    "history": [v for v in VARIANTS if v.startswith("recent_mf_")],
    "transitions": [v for v in VARIANTS if v.startswith("transition_mf_")] + ["mf_recent_10x5_prev"],
    "top": ["mf_softmax", "mf_softmax_tuned", "mf_softmax_e30", "mf_softmax_k32"],
    "final": ["mf_softmax_e30", "mf_softmax", "gmf", "mf"],
}


def run_variant(name: str, seed: int, out: Path, extra: list[str]) -> dict:
    config, overrides = VARIANTS[name]
    # objective first: its init_args options exist only once the class is named
    args = [a for k, v in overrides.items() for a in (f"--{k}", v)] + extra
    return run_one(f"configs/{config}.yaml", seed, out / name / f"seed{seed}", args)


def summary(name: str, rs: list[dict], extra: str = "") -> dict:
    """The line of a variant's means over its seeds' lines ``rs``."""
    config, overrides = VARIANTS[name]
    mean = lambda key: round(statistics.mean(r[key] for r in rs), 4)  # noqa: E731
    return {"benchmark": "objectives", "variant": name, "config": config, "overrides": overrides, "seed": "mean",
            "seeds": [r["seed"] for r in rs], "extra": extra,
            "best_val_ndcg10": mean("best_val_ndcg10"), "test_hr10": mean("test_hr10"),
            "test_ndcg10": mean("test_ndcg10"), "test_full_hr10": mean("test_full_hr10"),
            "test_full_ndcg10": mean("test_full_ndcg10"), "to_best_s": round(mean("to_best_s"), 1),
            "fit_s": round(mean("fit_s"), 1), "best_epochs": [r["best_epoch"] for r in rs],
            "best_val_ndcg10_each": [round(r["best_val_ndcg10"], 4) for r in rs],
            "test_hr10_each": [round(r["test_hr10"], 4) for r in rs],
            "test_ndcg10_each": [round(r["test_ndcg10"], 4) for r in rs],
            "capability": torch.backends.cpu.get_cpu_capability()}


def summarize(paths: list[str]) -> None:
    """Mean lines from the per-seed lines of earlier runs (e.g. a stage run in parts), one per variant."""
    runs: dict[str, dict[int, dict]] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            if r.get("benchmark") == "objectives" and r.get("seed") != "mean":
                runs.setdefault(r["variant"], {})[r["seed"]] = r  # a seed run again: its last line
    for name, by_seed in runs.items():
        emit(summary(name, [by_seed[s] for s in sorted(by_seed)]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS))
    p.add_argument("--stage", choices=list(STAGES), help="the variants of one stage of the selection")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--out", default="bench_out/objectives")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--summarize", nargs="+", metavar="JSONL", help="print the mean lines of these files' seed lines")
    a, extra = p.parse_known_args()
    if a.summarize:
        summarize(a.summarize)
        return
    torch.set_num_threads(a.threads)
    os.environ["NCF_DATA_DIR"] = data_root()
    out = Path(a.out).resolve()
    for name in a.variants or (STAGES[a.stage] if a.stage else list(VARIANTS)):
        config, overrides = VARIANTS[name]
        rs = []
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            r = run_variant(name, seed, out, extra)
            rs.append({"benchmark": "objectives", "variant": name, "config": config, "overrides": overrides,
                       "seed": seed, **{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}})
            emit(rs[-1])
            print(f"{name} seed {seed}: val NDCG@10 {r['best_val_ndcg10']:.4f}, test {r['test_hr10']:.4f} / "
                  f"{r['test_ndcg10']:.4f}, full {r['test_full_hr10']:.4f} / {r['test_full_ndcg10']:.4f}, "
                  f"epoch {r['best_epoch']} at {r['to_best_s']:.1f} s", file=sys.stderr, flush=True)
        emit({**summary(name, rs, " ".join(extra)), "threads": a.threads})


if __name__ == "__main__":
    main()
