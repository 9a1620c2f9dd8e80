"""Are "because you watched" explanations faithful? A counterfactual check over many users of ML-100k.

Trains the from-scratch NeuMF (``configs/neumf.yaml``, with its per-epoch checkpoints) once, then for
``--users`` users drawn with ``--seed``: takes each user's top recommendation, ranks the user's training
interactions by TracIn influence on it (``explain.history``, timed: ``seconds_per_pair``), and runs the
counterfactual check of ``explain.counterfactual``: fine-tune from the checkpoint with (a) nothing
removed, (b) the user's top-5 influential interactions removed, (c) 5 random interactions of the user
removed, one user at a time (``--batched``: all users' removals in one fine-tune per arm, much faster,
but then the removals of many users share items and add up, which inflates the top-5 arm). Reports the mean drop of the item's logit against (a), the ratio
top-5 / random-5 with a bootstrap 95% interval over users, rank changes, and the fraction of items that
leave the user's top 10 (POS@10-style). The ratio's interval is wide whenever the random drop is near
zero, so the paired difference top-5 minus random-5 is reported with its interval too.

    python benchmarks/history_faithfulness.py --users 50 --finetune-epochs 1   # ~10 min on one CPU core
    python benchmarks/history_faithfulness.py --users 100 --batched            # ~5 min
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _common import data_root, emit, trained_checkpoint

import numpy as np
import torch


def bootstrap(top: np.ndarray, rand: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[list[float], list[float]]:
    """95% intervals of mean(top) / mean(rand) and of mean(top - rand), resampling users. The ratio's
    interval is wide whenever the random drop is near zero; the paired difference is the steadier test."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(top), size=(n, len(top)))
    ratios = top[idx].mean(1) / rand[idx].mean(1)
    diffs = (top - rand)[idx].mean(1)
    return ([float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))],
            [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))])


def main() -> None:
    from explain.cli import load
    from ncf.candidates import interacted_keys, recommend
    from explain.counterfactual import counterfactual
    from explain.history import history_influence, load_epoch_models
    from ncf import NCFDataModule

    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=60)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--config", default="neumf")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench_out/history")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batched", action="store_true",
                   help="one fine-tune per arm for all users at once (fast; users' removals then interact)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)

    ckpt = trained_checkpoint(a.config, a.out)
    ld = load(Path(ckpt))
    dm = NCFDataModule(**{**ld.dm_hparams, "root": data_root(), "download": False})
    dm.setup("fit")
    sp = dm.split
    gen = torch.Generator().manual_seed(a.seed)
    users = torch.randperm(sp.n_users, generator=gen)[: a.users].sort().values.tolist()
    histories = {u: sp.train_items[sp.train_users == u] for u in users}
    # each user's top recommendation among their candidates, as train.py predict and explain.py give it
    pairs = [(u, r[0]) for u, r in zip(users, recommend(ld.net, torch.tensor(users), 1, interacted_keys(sp)))]

    t0 = time.perf_counter()
    models = load_epoch_models(Path(ckpt).parent / "epochs", ld.meta, up_to_epoch=ld.epoch)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    hist = [history_influence(models, u, i, histories[u]) for u, i in pairs]
    seconds_per_pair = (time.perf_counter() - t0) / len(pairs)
    top = [h.items[h.order].tolist() for h in hist]

    t0 = time.perf_counter()
    cf = counterfactual(ckpt, sp, pairs, top, k=a.k, epochs=a.finetune_epochs, seed=a.seed, batched=a.batched,
                        data_hparams=ld.dm_hparams)
    cf_s = time.perf_counter() - t0
    d_top = np.array([c.drop_top for c in cf])
    d_rand = np.array([c.drop_random for c in cf])
    rank_top = np.array([c.rank["top"] - c.rank["control"] for c in cf])
    rank_rand = np.array([c.rank["random"] - c.rank["control"] for c in cf])
    k = a.k
    ratio_ci, diff_ci = bootstrap(d_top, d_rand, seed=a.seed)
    emit({
        "benchmark": "history_faithfulness", "dataset": "ml-100k", "model": a.config, "epoch": ld.epoch,
        "checkpoints": len(models), "users": len(pairs), "k": k, "finetune_epochs": a.finetune_epochs,
        "batched": a.batched,
        "pair": "each user's top recommendation", "score": "logit, drop vs fine-tuned with nothing removed",
        f"score_drop_top{k}": round(float(d_top.mean()), 4), f"score_drop_random{k}": round(float(d_rand.mean()), 4),
        "ratio": round(float(d_top.mean() / d_rand.mean()), 3),
        "ratio_ci95": [round(x, 3) for x in ratio_ci],
        "drop_difference": round(float((d_top - d_rand).mean()), 4), "drop_difference_ci95": [round(x, 4) for x in diff_ci],
        "drop_top_gt_random_frac": round(float((d_top > d_rand).mean()), 3),
        f"rank_change_top{k}": round(float(rank_top.mean()), 2), f"rank_change_random{k}": round(float(rank_rand.mean()), 2),
        "rank_change_median": [float(np.median(rank_top)), float(np.median(rank_rand))],
        "left_top10_frac": round(float(np.mean([c.rank["top"] > 10 for c in cf])), 3),
        "left_top10_frac_random": round(float(np.mean([c.rank["random"] > 10 for c in cf])), 3),
        "left_top10_frac_control": round(float(np.mean([c.rank["control"] > 10 for c in cf])), 3),
        "top_share_mean": round(statistics.mean(h.top_share(k) for h in hist), 3),
        "seconds_per_pair": round(seconds_per_pair, 4), "load_checkpoints_s": round(load_s, 2),
        "counterfactual_s": round(cf_s, 1),
    })


if __name__ == "__main__":
    main()
