"""Where a training step of the default NeuMF network spends its time, at a given table shape.

A bare step (no Trainer, random batches, the config's optimiser and batch, one thread) timed at each
``--shapes`` USERSxITEMS, with torch's profiler's top operators for the last shape; and, for the
synthetic data set of ``--distinct-of`` interactions, the expected share of distinct users and items in
one training batch (users in proportion to their interactions x (1 + negatives), items 1/(1 + negatives)
by popularity and the rest uniform, as the epoch's negatives are drawn): what a fold of the first layer
over a batch's distinct rows could save. And, at the last shape, the floor of any per-pair step of the
network (:func:`per_pair_floor`): its matrix products forward and backward, and the reads and SGD updates
of the batch's embedding rows, each timed bare (best of ``--repeats``); a step that pays the first layer
per pair (catalogues too large to fold) takes no less than that on this core, whatever else is made
faster. One JSON line.

    python benchmarks/step_profile.py                       # ML-100k's shape and ML-20M's, ~1 min
    python benchmarks/step_profile.py --distinct-of 20M     # + the distinct shares at 20M (~1 min more)
    python benchmarks/step_profile.py --shapes 137931x27000 --batch-size 262144 --steps 3   # folds at 20M
"""
from __future__ import annotations

import argparse
import time

from _common import emit, timing_setup

import numpy as np
import torch
from torch import nn


def _shape(text: str) -> tuple[int, int]:
    users, items = text.lower().split("x")
    return int(users), int(items)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


_positive.__name__ = "integer"  # argparse names the type in its error: "invalid integer value"


def bare_step_ms(cfg: dict, n_users: int, n_items: int, steps: int, profile: bool) -> tuple[float, list]:
    from ncf.module import NCFModule, sparse_embeddings

    batch, negatives = cfg["data"]["batch_size"], cfg["data"].get("num_negatives", 4)
    module = NCFModule(**cfg["model"], n_users=n_users, n_items=n_items)
    sparse = sparse_embeddings(module.hparams.optimizer, n_users + n_items, batch)  # one process, no clipping
    for mod in module.net.modules():
        if isinstance(mod, nn.Embedding):
            mod.sparse = sparse
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(n_users, (batch,), generator=g), torch.randint(n_items, (batch,), generator=g),
                (torch.rand(batch, generator=g) < 1 / (1 + negatives)).float()) for _ in range(2 * steps + 5)]

    def step(b):
        opt.zero_grad(set_to_none=True)
        module.training_step(b, 0).backward()
        opt.step()

    module.on_train_epoch_start()
    for b in batches[:5]:
        step(b)
    t = time.perf_counter()
    for b in batches[5:5 + steps]:
        step(b)
    ms = (time.perf_counter() - t) / steps * 1e3
    top = []
    if profile:
        from torch.profiler import ProfilerActivity, profile as prof

        with prof(activities=[ProfilerActivity.CPU]) as p:
            for b in batches[5 + steps:]:
                step(b)
        total = sum(e.self_cpu_time_total for e in p.key_averages())
        top = [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3)}
               for e in sorted(p.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]]
    return ms, top


def _best_ms(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def per_pair_floor(cfg: dict, n_users: int, n_items: int, repeats: int) -> dict:
    """What one per-pair training step of the config's network cannot do without, each part timed bare
    (best of ``repeats``) on random operands of the step's shapes:

    * ``per_pair_matmul_ms``: the matrix products; for every linear layer ``[in -> out]`` at batch ``B``
      the forward ``[B, in] x [in, out]``, the input gradient ``[B, out] x [out, in]`` and the weight
      gradient ``[out, B] x [B, in]``;
    * ``per_pair_rows_ms``: reading the batch's rows of every embedding table and SGD's update of those
      rows (a sparse gradient added in place, as ``torch.optim.SGD`` does), at ``n_users x n_items``.
    """
    from ncf.contract import build_network

    batch = cfg["data"]["batch_size"]
    net = build_network(cfg["model"]["network"], n_users, n_items)
    matmul, flop = 0.0, 0
    for layer in (mod for mod in net.modules() if isinstance(mod, nn.Linear)):
        d_in, d_out = layer.in_features, layer.out_features
        for rows, inner, cols in ((batch, d_in, d_out), (batch, d_out, d_in), (d_out, batch, d_in)):
            a, b, out = torch.randn(rows, inner), torch.randn(inner, cols), torch.empty(rows, cols)
            matmul += _best_ms(lambda: torch.mm(a, b, out=out), repeats)
            flop += 2 * rows * inner * cols
    rows_ms = 0.0
    with torch.no_grad():
        for emb in (mod for mod in net.modules() if isinstance(mod, nn.Embedding)):
            table = emb.weight
            index = torch.randint(table.shape[0], (batch,))
            grad = torch.sparse_coo_tensor(index[None], torch.randn(batch, table.shape[1]), table.shape,
                                           check_invariants=False)
            rows_ms += _best_ms(lambda: torch.index_select(table, 0, index), repeats)
            rows_ms += _best_ms(lambda: table.add_(grad, alpha=-1e-3), repeats)
    return {"per_pair_matmul_ms": round(matmul, 1), "per_pair_gflop": round(flop / 1e9, 2),
            "per_pair_matmul_gflops": round(flop / matmul / 1e6, 1), "per_pair_rows_ms": round(rows_ms, 1),
            "per_pair_floor_ms": round(matmul + rows_ms, 1), "floor_shape": f"{n_users}x{n_items}"}


def distinct_shares(n: int, batch: int, negatives: int) -> dict:
    from ncf.synthetic import generate

    data = generate(n, seed=0)
    cu = np.bincount(np.asarray(data.users), minlength=data.n_users).astype(np.float64)
    ci = np.bincount(np.asarray(data.items), minlength=data.n_items).astype(np.float64)
    pu = cu / cu.sum()
    pi = ci / ci.sum() / (1 + negatives) + negatives / (1 + negatives) / data.n_items
    return {"distinct_users_share": round(float((1 - (1 - pu) ** batch).sum()) / batch, 3),
            "distinct_items_share": round(float((1 - (1 - pi) ** batch).sum()) / batch, 3),
            "distinct_of": n}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/neumf_pretrained.yaml")
    p.add_argument("--shapes", nargs="+", default=["943x1682", "137931x27000"])
    p.add_argument("--steps", type=_positive, default=20)
    p.add_argument("--distinct-of", default=None, help="e.g. 20M: synthetic interactions to count distinct rows in")
    p.add_argument("--threads", type=_positive, default=1)
    p.add_argument("--batch-size", type=_positive, help="instead of the config's")
    p.add_argument("--repeats", type=_positive, default=30, help="timings of each matrix product (the best counts)")
    a = p.parse_args()
    try:
        shapes = {text: _shape(text) for text in a.shapes}
    except ValueError:
        p.error(f"--shapes takes USERSxITEMS, e.g. 943x1682 (got {' '.join(a.shapes)})")
    cfg = timing_setup(a.config, a.threads)
    if a.batch_size:
        cfg["data"]["batch_size"] = a.batch_size
    out = {"benchmark": "step_profile", "config": a.config, "batch_size": cfg["data"]["batch_size"],
           "threads": a.threads, "shapes": {}}
    for k, (shape, (n_users, n_items)) in enumerate(shapes.items()):
        ms, top = bare_step_ms(cfg, n_users, n_items, a.steps, profile=k == len(shapes) - 1)
        out["shapes"][shape] = {"step_ms": round(ms, 1), "samples_per_s": round(cfg["data"]["batch_size"] / ms * 1e3)}
        if top:
            out["shapes"][shape]["top_ops"] = top
    out.update(per_pair_floor(cfg, *shapes[a.shapes[-1]], a.repeats))
    if a.distinct_of:
        n = int(float(a.distinct_of.upper().replace("M", "e6").replace("K", "e3")))
        out.update(distinct_shares(n, cfg["data"]["batch_size"], cfg["data"].get("num_negatives", 4)))
    emit(out)


if __name__ == "__main__":
    main()
