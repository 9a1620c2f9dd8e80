"""Are "because you watched" explanations faithful? A counterfactual check over many users of ML-100k.

Trains the from-scratch NeuMF (``--configs``, default ``configs/neumf.yaml``, with its per-epoch checkpoints;
configs before the last are trained first, beside it, for a model that starts from them) once, then for
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

``--pipeline``: the pretrained NeuMF (``--configs``, default ``configs/gmf.yaml``, ``configs/mlp.yaml``, then
``configs/neumf_pretrained.yaml``, shortened to ``--epochs`` (one per config, default 8 6 2)), once per seed
in ``--seeds``. Each user's interactions are ranked by TracIn over the whole pipeline (the GMF
and MLP runs' epoch checkpoints and NeuMF's own, ``explain.history.load_pretraining``) and, for comparison,
over NeuMF's own epochs alone; then the interactions are removed **before the GMF and MLP runs** and the
whole pipeline is retrained from the same initial weights with the same batches and negatives: GMF and
MLP for the epochs that produced the checkpoints NeuMF started from, NeuMF from them for its own, one user
at a time. Arms: nothing removed, the top-k by pipeline TracIn, the top-k by NeuMF-only TracIn, k random.

    python benchmarks/history_faithfulness.py --pipeline --users 3 --seeds 0 1 --epochs 5 4 2
        # ~26 min on a shared 2-core machine (about a minute per retrained pipeline)
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _common import config_name, config_path, data_root, emit, trained_checkpoint

import numpy as np
import torch
import yaml

PIPELINE = ["configs/gmf.yaml", "configs/mlp.yaml", "configs/neumf_pretrained.yaml"]


def bootstrap(top: np.ndarray, rand: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[list[float], list[float]]:
    """95% intervals of mean(top) / mean(rand) and of mean(top - rand), resampling users. The ratio's
    interval is wide whenever the random drop is near zero; the paired difference is the steadier test."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(top), size=(n, len(top)))
    ratios = top[idx].mean(1) / rand[idx].mean(1)
    diffs = (top - rand)[idx].mean(1)
    return ([float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))],
            [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))])


def retrain_without(hp: dict, epochs: int, split, removed: list[tuple[int, list[int]]], seed: int, dh: dict,
                    scratch: Path, init=None) -> torch.nn.Module:
    """A run of ``hp`` trained from its seeded initial weights (``init``: the GMF and MLP a NeuMF starts from)
    for ``epochs`` epochs on ``split``'s training rows minus ``removed`` (user, items), with the batches,
    negatives and optimizer of ``explain.counterfactual.finetune_without`` (which runs from the initial
    state written to ``scratch``)."""
    import inspect

    from explain.counterfactual import finetune_without
    from ncf.checkpoint import DIGEST_KEY, weights_digest
    from ncf.module import NCFModule

    torch.manual_seed(seed)  # the initial weights, as train.py's seed_everything draws them
    module = NCFModule(**{k: v for k, v in hp.items() if k in inspect.signature(NCFModule).parameters})
    if init is not None:
        module.net.load_pretrained(*init, float(hp["alpha"]))
    state = module.state_dict()  # with its checksum, as every checkpoint read is checked
    torch.save({"hyper_parameters": dict(hp), "state_dict": state, "epoch": -1, DIGEST_KEY: weights_digest(state)}, scratch)
    ru = torch.tensor([u for u, its in removed for _ in its], dtype=torch.int64)
    ri = torch.tensor([i for _, its in removed for i in its], dtype=torch.int64)
    return finetune_without(str(scratch), split, ru, ri, epochs=epochs, seed=seed,
                            num_negatives=int(dh.get("num_negatives", 4)), batch_size=int(dh.get("batch_size", 1024)),
                            negatives_seed=int(dh.get("negatives_seed", 0)))


def train_runs(a, work: Path, seed: int) -> list[str]:
    """The best checkpoints of ``--configs`` trained in order in ``work`` (reused when there), each for its
    ``--epochs``; a run that starts from others (``model.pretrained_*``) finds theirs in ``work``."""
    return [trained_checkpoint(config, str(work), seed=seed, epochs=epochs) for config, epochs in zip(a.configs, a.epochs)]


def explained_pairs(ckpt: str, n_users: int, seed: int):
    """The checkpoint (``explain.loading.load``), its data's split, ``n_users`` users drawn with ``seed`` (and
    the generator, to draw on), their training items, and each user's top recommendation among their
    candidates (as train.py predict and explain.py give it) as the pair explained."""
    from explain.loading import load
    from ncf import NCFDataModule
    from ncf.candidates import interacted_keys, recommend

    ld = load(Path(ckpt))
    dm = NCFDataModule(**{**ld.dm_hparams, "root": data_root(), "download": False})
    dm.setup("fit")
    sp = dm.split
    gen = torch.Generator().manual_seed(seed)
    users = torch.randperm(sp.n_users, generator=gen)[:n_users].sort().values.tolist()
    histories = {u: sp.train_items[sp.train_users == u] for u in users}
    pairs = [(u, r[0]) for u, r in zip(users, recommend(ld.net, torch.tensor(users), 1, interacted_keys(sp)))]
    return ld, sp, gen, histories, pairs


def logit_and_rank(net, u: int, i: int, known) -> tuple[float, int]:
    """The pair's logit and its rank among the user's candidates (``ncf.candidates.rank_items``)."""
    from ncf.candidates import rank_items

    rank, _, logit = rank_items(net, torch.tensor([u]), torch.tensor([i]), known)
    return float(logit[0]), int(rank[0])


def pipeline_seed(a, seed: int) -> list[dict]:
    """One seed of ``--pipeline``: train the pipeline, rank, remove, retrain; one row per user."""
    from explain.history import history_influence, load_epoch_models, load_pretraining
    from ncf.candidates import interacted_keys
    from ncf.checkpoint import read_checkpoint

    work = Path(a.out) / f"pipeline_seed{seed}"
    ckpts = train_runs(a, work, seed)
    ckpt = ckpts[-1]
    ld, sp, gen, histories, pairs = explained_pairs(ckpt, a.users, seed)
    pre, _ = load_pretraining(ld.meta)
    own = load_epoch_models(Path(ckpt).parent / "epochs", ld.meta, up_to_epoch=ld.epoch)
    t0 = time.perf_counter()
    full = [history_influence(pre + own, u, i, histories[u]) for u, i in pairs]
    seconds_per_pair = (time.perf_counter() - t0) / len(pairs)
    alone = [history_influence(own, u, i, histories[u]) for u, i in pairs]

    stages = [read_checkpoint(c) for c in ckpts]
    stage_of = {str(Path(c).resolve()): k for k, c in enumerate(ckpts)}
    dh = ld.dm_hparams
    scratch = work / "initial_state.ckpt"

    def starts_from(hp: dict) -> list[int]:
        """The stages a run was initialised from (its ``pretrained_*`` checkpoints), in the module's order."""
        paths = [hp[k] for k in ("pretrained_gmf", "pretrained_mlp") if hp.get(k)]
        missing = [p for p in paths if str(Path(p).resolve()) not in stage_of]
        if missing:
            raise SystemExit(f"error: {missing[0]} is not the run of any of --configs; list the configs a run starts "
                             f"from before it.")
        return [stage_of[str(Path(p).resolve())] for p in paths]

    def pipeline(removed):
        nets = []
        for ck in stages:
            init = tuple(nets[k] for k in starts_from(ck["hyper_parameters"])) or None
            nets.append(retrain_without(ck["hyper_parameters"], int(ck["epoch"]) + 1, sp, removed, seed, dh,
                                        scratch, init))
        return nets[-1]

    known = interacted_keys(sp)  # a rank is among the user's candidates, as explain.py ranks
    t0 = time.perf_counter()
    control = pipeline([])
    rows = []
    for p, (u, i) in enumerate(pairs):
        h = histories[u]
        arms = {"top": full[p].items[full[p].order[: a.k]].tolist(),
                "top_neumf_only": alone[p].items[alone[p].order[: a.k]].tolist(),
                "random": h[torch.randperm(len(h), generator=gen)[: a.k]].tolist()}
        row = {"user": u, "item": i}
        row["trained"], _ = logit_and_rank(ld.net, u, i, known)
        row["control"], row["rank_control"] = logit_and_rank(control, u, i, known)
        done = {}
        for arm, items in arms.items():
            key = tuple(sorted(items))
            if key not in done:  # NeuMF-only TracIn may pick the same k: the same retrained pipeline
                done[key] = logit_and_rank(pipeline([(u, items)]), u, i, known)
            row[arm], row[f"rank_{arm}"] = done[key]
        row["same_top"] = len(set(arms["top"]) & set(arms["top_neumf_only"]))
        row["pretraining_share"] = float((full[p].influence - full[p].stage_influence(own[0].stage)).abs().sum()
                                         / full[p].influence.abs().sum())
        rows.append(row)
    for r in rows:
        r.update(seed=seed, checkpoints=len(pre) + len(own), neumf_checkpoints=len(own),
                 seconds_per_pair=seconds_per_pair, retrain_s=(time.perf_counter() - t0) / (1 + 3 * len(pairs)))
    return rows


def pipeline_main(a) -> None:
    rows = [r for seed in a.seeds for r in pipeline_seed(a, seed)]
    k = a.k
    drop = {arm: np.array([r["control"] - r[arm] for r in rows]) for arm in ("top", "top_neumf_only", "random")}
    _, diff_ci = bootstrap(drop["top"], drop["random"], seed=0)
    _, own_ci = bootstrap(drop["top"], drop["top_neumf_only"], seed=0)
    from ncf.contract import network_name

    # each stage's max_epochs, by its model's name (gmf, mlp, neumf)
    epochs = {network_name(yaml.safe_load(config_path(c).read_text())["model"]): e for c, e in zip(a.configs, a.epochs)}
    emit({
        "benchmark": "history_faithfulness", "mode": "pipeline", "dataset": "ml-100k", "model": config_name(a.configs[-1]),
        "seeds": a.seeds, "users": len(rows), "k": k, "epochs": epochs,
        "checkpoints_mean": round(float(np.mean([r["checkpoints"] for r in rows])), 1),
        "neumf_checkpoints_mean": round(float(np.mean([r["neumf_checkpoints"] for r in rows])), 1),
        "pair": "each user's top recommendation", "removal": "before the GMF and MLP runs, pipeline retrained",
        "score": "NeuMF logit, drop vs the pipeline retrained with nothing removed",
        f"score_drop_top{k}": round(float(drop["top"].mean()), 4),
        f"score_drop_top{k}_neumf_only": round(float(drop["top_neumf_only"].mean()), 4),
        f"score_drop_random{k}": round(float(drop["random"].mean()), 4),
        "drop_difference": round(float((drop["top"] - drop["random"]).mean()), 4),
        "drop_difference_ci95": [round(x, 4) for x in diff_ci],
        "drop_difference_vs_neumf_only": round(float((drop["top"] - drop["top_neumf_only"]).mean()), 4),
        "drop_difference_vs_neumf_only_ci95": [round(x, 4) for x in own_ci],
        "drop_top_gt_random_frac": round(float((drop["top"] > drop["random"]).mean()), 3),
        f"rank_change_top{k}": round(float(np.mean([r["rank_top"] - r["rank_control"] for r in rows])), 2),
        f"rank_change_top{k}_neumf_only": round(float(np.mean([r["rank_top_neumf_only"] - r["rank_control"]
                                                               for r in rows])), 2),
        f"rank_change_random{k}": round(float(np.mean([r["rank_random"] - r["rank_control"] for r in rows])), 2),
        "top_k_overlap_with_neumf_only_mean": round(float(np.mean([r["same_top"] for r in rows])), 2),
        "pretraining_share_mean": round(float(np.mean([r["pretraining_share"] for r in rows])), 3),
        "control_vs_trained_logit_gap_mean": round(float(np.mean([abs(r["control"] - r["trained"]) for r in rows])), 4),
        "seconds_per_pair": round(float(np.mean([r["seconds_per_pair"] for r in rows])), 4),
        "seconds_per_retrained_pipeline": round(float(np.mean([r["retrain_s"] for r in rows])), 1),
    })


def main() -> None:
    from explain.counterfactual import counterfactual
    from explain.history import history_influence, load_epoch_models

    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=60)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--configs", nargs="+", metavar="CONFIG",
                   help="train.py configs trained in order in --out, the last one explained (default: configs/neumf.yaml; "
                        "with --pipeline configs/gmf.yaml configs/mlp.yaml configs/neumf_pretrained.yaml)")
    p.add_argument("--epochs", type=int, nargs="+",
                   help="max_epochs of each config's run (default: the configs' own; with --pipeline 8 6 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench_out/history")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batched", action="store_true",
                   help="one fine-tune per arm for all users at once (fast; users' removals then interact)")
    p.add_argument("--pipeline", action="store_true",
                   help="the pretrained NeuMF: TracIn over GMF, MLP and NeuMF epochs; removals before GMF and MLP")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="with --pipeline: one pipeline per seed")
    a = p.parse_args()
    a.configs = a.configs or (PIPELINE if a.pipeline else ["configs/neumf.yaml"])
    a.epochs = a.epochs or ([8, 6, 2] if a.pipeline and a.configs == PIPELINE else [None] * len(a.configs))
    if len(a.epochs) != len(a.configs):
        p.error(f"--epochs takes one value per config ({len(a.configs)}), not {len(a.epochs)}")
    for name in ("users", "k", "finetune_epochs", "threads"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if any(e is not None and e < 1 for e in a.epochs):
        p.error("--epochs must be at least 1")
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    if a.pipeline:
        return pipeline_main(a)

    ckpt = train_runs(a, Path(a.out), a.seed)[-1]
    ld, sp, _, histories, pairs = explained_pairs(ckpt, a.users, a.seed)

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
        "benchmark": "history_faithfulness", "dataset": "ml-100k", "model": config_name(a.configs[-1]), "epoch": ld.epoch,
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
