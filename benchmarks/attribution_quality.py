"""Attribution quality on models trained on MovieLens-100k (``--configs``, default GMF, MLP, NeuMF and the
pretrained NeuMF), on the callback's default probe set (64 validation users x (validation item, one sampled
negative) = 128 pairs):

* completeness: the largest |sum(attr) - (f(x) - f(baseline))| of DeepLift and IG over the models;
* LIME stability: median over pairs of the Spearman correlation between two seeds, at its defaults and
  over a sweep of kernel widths and sample counts on ``--sweep-model`` (how the defaults were chosen), with
  the notebook's settings for comparison, and LIME's perturbation designs on ``--sampler-model``.
  Dimensions whose input equals the baseline (embedding columns that L2 drove to zero) are left out of the
  correlation: their attribution is zero up to rounding, so their order is noise whatever the method;
  ``lime_seed_spearman_all_dims`` keeps them in;
* per method and model: deletion / insertion gains over a random order and infidelity.

    python benchmarks/attribution_quality.py --out bench_out/accuracy/seed0   # reuses (or trains) the models
    python benchmarks/attribution_quality.py --epochs 1 --configs configs/gmf.yaml configs/neumf.yaml   # a quick look
"""
from __future__ import annotations

import argparse
import time

from _common import add_configs, config_name, emit, probe_pairs, trained_checkpoint

import torch

from explain import methods as registry
from explain.core import attribute, spearman
from explain.methods.lime import PRESETS as LIME_PRESETS
from explain.faithfulness import faithfulness
from ncf import load_network


def lime_stability(net, users, items, all_dims: bool = False, **settings):
    """Median seed-0 vs seed-1 Spearman, leaving out inactive dimensions (and, with ``all_dims``, also
    with every dimension kept: returns both)."""
    a = attribute(net, users, items, "lime", seed=0, **settings)
    b = attribute(net, users, items, "lime", seed=1, **settings)
    active = float(spearman(a.features, b.features, a.inactive).median())
    return (active, float(spearman(a.features, b.features).median())) if all_dims else active


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="bench_out/quality")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=None, help="override the configs' epochs (quicker, less trained)")
    add_configs(p)
    p.add_argument("--sweep-model", default="neumf", help="the config (by name) LIME's settings are swept on")
    p.add_argument("--sampler-model", default="gmf", help="the config (by name) LIME's perturbation designs run on")
    a = p.parse_args()
    for option in ("sweep_model", "sampler_model"):
        if getattr(a, option) not in map(config_name, a.configs):
            p.error(f"--{option.replace('_', '-')} {getattr(a, option)} is not among --configs "
                    f"({', '.join(map(config_name, a.configs))})")
    torch.set_num_threads(a.threads)
    users, items = probe_pairs()
    per_model: dict[str, dict] = {}
    gaps = []
    nets = {}
    for config in a.configs:
        name = config_name(config)
        net, _ = load_network(trained_checkpoint(config, a.out, epochs=a.epochs))
        nets[name] = net
        res = {}
        for method in registry.names():
            t = time.perf_counter()
            attr = attribute(net, users, items, method)
            secs = time.perf_counter() - t
            f = faithfulness(net, users, items, attr)
            res[method] = {
                "completeness_gap_max": float(attr.completeness_gap.max()),
                "deletion_gain": round(float(f["deletion_gain"].mean()), 4),
                "insertion_gain": round(float(f["insertion_gain"].mean()), 4),
                "infidelity": round(float(f["infidelity"].mean()), 5),
                "seconds": round(secs, 3),
            }
            if method in ("deeplift", "ig"):
                gaps.append(float(attr.completeness_gap.max()))
        rho, rho_all = lime_stability(net, users, items, all_dims=True)
        res["lime"]["seed_spearman"], res["lime"]["seed_spearman_all_dims"] = round(rho, 4), round(rho_all, 4)
        res["inactive_dims_share"] = round(float(attribute(net, users, items, "deeplift").inactive.float().mean()), 4)
        per_model[name] = res
    swept = nets[a.sweep_model]  # the NeuMF from scratch by default
    sweep = []
    grid = [(w, n) for w in (0.1, 0.25, 0.75, 2.0) for n in (2048, 8192)] + [(0.75, 512), (0.75, 4096), (0.75, 16384)]
    for width, n in grid:
        s = {"n_samples": n, "kernel_width": width, "distance": "cosine"}
        attr = attribute(swept, users, items, "lime", **s)
        f = faithfulness(swept, users, items, attr)
        sweep.append({**s, "seed_spearman": round(lime_stability(swept, users, items, **s), 4),
                      "deletion_gain": round(float(f["deletion_gain"].mean()), 4),
                      "insertion_gain": round(float(f["insertion_gain"].mean()), 4),
                      "infidelity": round(float(f["infidelity"].mean()), 5)})
    samplers = []  # the perturbation design against captum's coin flips, on GMF
    for sampler, n in (("bernoulli", 1000), ("bernoulli", 8192), ("design", 512), ("design", 8192)):
        samplers.append({"model": a.sampler_model, "sampler": sampler, "n_samples": n,
                         "seed_spearman": round(lime_stability(nets[a.sampler_model], users, items, sampler=sampler,
                                                               n_samples=n), 4)})
    nb = LIME_PRESETS["notebook"]
    attr = attribute(swept, users, items, "lime", **nb)
    f = faithfulness(swept, users, items, attr)
    notebook = {**nb, "seed_spearman": round(lime_stability(swept, users, items, **nb), 4),
                "deletion_gain": round(float(f["deletion_gain"].mean()), 4),
                "insertion_gain": round(float(f["insertion_gain"].mean()), 4),
                "infidelity": round(float(f["infidelity"].mean()), 5)}
    ig_steps = {}  # captum's fixed-step Gauss-Legendre, for comparison with the piecewise default
    for steps in (50, 128, 1000):
        ig_steps[str(steps)] = max(float(attribute(nets[m], users, items, "ig", integration="gausslegendre",
                                                   n_steps=steps).completeness_gap.max()) for m in nets)
    emit({
        "benchmark": "attribution_quality", "pairs": len(users),
        "max_completeness_gap": max(gaps),
        "lime_seed_spearman": min(per_model[m]["lime"]["seed_spearman"] for m in per_model),
        "lime_seed_spearman_all_dims": min(per_model[m]["lime"]["seed_spearman_all_dims"] for m in per_model),
        "lime_defaults": registry.get("lime").defaults, "ig_defaults": registry.get("ig").defaults,
        "ig_gausslegendre_gap_by_steps": ig_steps, "models": per_model, f"lime_sweep_{a.sweep_model}": sweep,
        f"lime_samplers_{a.sampler_model}": samplers, f"lime_notebook_{a.sweep_model}": notebook,
    })


if __name__ == "__main__":
    main()
