"""Seconds to explain 1 and 256 pairs with each method at its default settings on a trained model
(``--config``, default configs/neumf.yaml), and LIME against captum's per-pair ``Lime`` loop at the same
settings, side by side.

captum's loop is timed on ``--captum-pairs`` pairs (each pair is an independent fit, so the time is
linear in pairs) and scaled to 256; captum gets its fastest setting (all perturbations of a pair in one
forward) and only the per-dimension fit, while our LIME also fits the group-level surrogates.

    python benchmarks/explain_speed.py
"""
from __future__ import annotations

import argparse
import time

from _common import config_name, emit, probe_pairs, trained_checkpoint

import torch
from captum._utils.models.linear_model import SkLearnLinearRegression
from captum.attr import Lime
from captum.attr._core.lime import get_exp_kernel_similarity_function

from explain import methods as registry
from explain.core import attribute, baselines_for
from ncf import load_network

KEYS = {"deeplift": "deeplift", "ig": "ig", "lime": "lime", "kernel_shap": "kernel_shap", "shapley": "shapley"}


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="bench_out/quality")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--captum-pairs", type=int, default=32)
    p.add_argument("--config", default="configs/neumf.yaml", help="the model explained (trained in --out if not there)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    net, _ = load_network(trained_checkpoint(a.config, a.out))
    users, items = probe_pairs(num_users=128)  # 256 pairs
    seconds_1, seconds_256 = {}, {}
    for m in registry.names():
        attribute(net, users[:4], items[:4], m)  # warm-up
        seconds_1[KEYS[m]] = round(timed(lambda: attribute(net, users[:1], items[:1], m)), 4)
        seconds_256[KEYS[m]] = round(timed(lambda: attribute(net, users, items, m), repeat=2), 4)
    s = registry.get("lime").defaults
    embs = [e.detach() for e in net.embed(users, items)]
    dims = [e.shape[1] for e in embs]
    x = torch.cat(embs, 1)
    base = torch.cat(baselines_for(net, users, "mean"), 1)
    lime = Lime(lambda flat: net.score(*torch.split(flat, dims, dim=1)), interpretable_model=SkLearnLinearRegression(),
                similarity_func=get_exp_kernel_similarity_function(s["distance"], s["kernel_width"]))
    n = a.captum_pairs
    t = time.perf_counter()
    for k in range(n):
        lime.attribute(x[k:k + 1], baselines=base[k:k + 1], n_samples=s["n_samples"],
                       perturbations_per_eval=s["n_samples"])
    captum_256 = (time.perf_counter() - t) / n * 256
    emit({"benchmark": "explain_speed", "threads": a.threads, "model": config_name(a.config), "seconds_1": seconds_1,
          "seconds_256": seconds_256, "pairs_per_s_256": {k: round(256 / v, 1) for k, v in seconds_256.items()},
          "lime_settings": s, "lime_captum_seconds_256": round(captum_256, 2), "lime_captum_pairs_timed": n,
          "lime_speedup_vs_captum": round(captum_256 / seconds_256["lime"], 1)})


if __name__ == "__main__":
    main()
