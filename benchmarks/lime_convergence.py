"""LIME's convergence rule against a fixed sample count, on each config's model from several training seeds.

For each run folder (e.g. the per-seed folders ``benchmarks/accuracy.py`` leaves in ``bench_out/accuracy``)
and each config's model trained there (``--configs``, default GMF, MLP, NeuMF and pretrained NeuMF), on the callback's default probe set (64 validation users x
(validation item, one sampled negative)): LIME at its defaults (drawing samples until the split-half
rank agreement reaches ``stability_target``) with seeds 0 and 1, and LIME at its fixed ``n_samples`` with seeds 0
and 1. Reports per model the median seed-to-seed Spearman (dimensions at the baseline left out), the
mean samples drawn, and the seconds of one attribution of the probe set.

    python benchmarks/accuracy.py                      # trains the models of seeds 0, 1, 2
    python benchmarks/lime_convergence.py bench_out/accuracy/seed0 bench_out/accuracy/seed1 bench_out/accuracy/seed2
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _common import add_configs, config_name, emit, probe_pairs

import torch

from explain.core import attribute, spearman
from explain.methods.lime import DEFAULTS as LIME_DEFAULTS
from ncf import load_network

FIXED = {"n_samples": LIME_DEFAULTS["n_samples"], "stability_target": None}  # the count LIME uses without the rule
FIXED_KEY = f"fixed_{FIXED['n_samples']}"


def measure(net, users, items, **settings) -> dict:
    t = time.perf_counter()
    a = attribute(net, users, items, "lime", seed=0, **settings)
    secs = time.perf_counter() - t
    b = attribute(net, users, items, "lime", seed=1, **settings)
    out = {"seed_spearman": round(float(spearman(a.features, b.features, a.inactive).median()), 4),
           "seconds": round(secs, 2)}
    if a.samples is not None:
        out["samples_mean"] = round(float(a.samples.float().mean()), 0)
        out["samples_max"] = int(a.samples.max())
        out["split_half_median"] = round(float(a.stability.median()), 4)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+", help="folders holding runs/ml-100k/<config name>/checkpoints/best.ckpt")
    p.add_argument("--users", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    add_configs(p, what="whose runs are measured")
    p.add_argument("--no-fixed", action="store_true", help="only the rule, without the fixed count")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    users, items = probe_pairs(num_users=a.users)
    rows = []
    for run in a.runs:
        for name in map(config_name, a.configs):
            ckpt = Path(run) / "runs" / "ml-100k" / name / "checkpoints" / "best.ckpt"
            if not ckpt.exists():
                continue
            net, _ = load_network(ckpt)
            row = {"run": str(run), "model": name, "rule": measure(net, users, items)}
            if not a.no_fixed:
                row[FIXED_KEY] = measure(net, users, items, **FIXED)
            rows.append(row)
    if not rows:
        p.error(f"no runs/ml-100k/<name>/checkpoints/best.ckpt of --configs ({', '.join(map(config_name, a.configs))}) "
                f"in {' '.join(a.runs)}; train them first (benchmarks/accuracy.py)")
    fixed = [r for r in rows if FIXED_KEY in r]
    converged = [r for r in fixed if r[FIXED_KEY]["seed_spearman"] >= LIME_DEFAULTS["stability_target"]]
    emit({
        "benchmark": "lime_convergence", "pairs": len(users), "rule": registry_defaults(), "models": rows,
        "rule_min_seed_spearman": min(r["rule"]["seed_spearman"] for r in rows),
        "rule_seconds_total": round(sum(r["rule"]["seconds"] for r in rows), 1),
        **({"fixed_min_seed_spearman": min(r[FIXED_KEY]["seed_spearman"] for r in fixed),
            "fixed_seconds_total": round(sum(r[FIXED_KEY]["seconds"] for r in fixed), 1)} if fixed else {}),
        **({"rule_cost_vs_fixed_where_fixed_converges": round(statistics.mean(
            r["rule"]["seconds"] / r[FIXED_KEY]["seconds"] for r in converged), 3)} if converged else {}),
    })


def registry_defaults() -> dict:
    return {k: v for k, v in LIME_DEFAULTS.items() if k in ("stability_target", "min_samples", "max_samples")}


if __name__ == "__main__":
    main()
