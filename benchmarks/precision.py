"""bf16-mixed against float32 on ML-100k: test HR@10 / NDCG@10 and seconds per epoch, side by side.

For each seed, ``configs/neumf.yaml`` (NeuMF from scratch, so every layer trains under the precision
tried) runs with ``--trainer.precision 32-true`` and with ``bf16-mixed``, alternating, through the same
path as ``accuracy.py`` (best validation epoch, then test). ``epoch_s`` is the fit's wall time over its
epochs (validation included). On a CPU without native bf16 instructions, autocast's conversions cost
more than they save; the figure says how much.

    python benchmarks/precision.py --seeds 3 --out bench_out/precision
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from _common import emit

from accuracy import run_one


def main() -> None:
    import yaml

    from _common import config_path

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/neumf.yaml")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    p.add_argument("--out", default="bench_out/precision")
    a = p.parse_args()
    epochs = yaml.safe_load(config_path(a.config).read_text())["trainer"]["max_epochs"]
    out = Path(a.out).resolve()
    res = {k: [] for k in a.precisions}
    for seed in range(a.seeds):
        for prec in a.precisions:
            r = run_one(a.config, seed, out / f"seed{seed}" / prec, ["--trainer.precision", prec])
            r["epoch_s"] = r["fit_s"] / epochs
            print(f"seed {seed} {prec}: test HR@10 {r['test_hr10']:.4f} NDCG@10 {r['test_ndcg10']:.4f} "
                  f"{r['epoch_s']:.2f} s/epoch", file=sys.stderr, flush=True)
            res[prec].append(r)
    line = {"config": a.config, "seeds": a.seeds, "device": "cpu"}
    for prec, rs in res.items():
        key = prec.replace("-", "_")
        line[key] = {
            "test_hr10": round(statistics.mean(r["test_hr10"] for r in rs), 4),
            "test_ndcg10": round(statistics.mean(r["test_ndcg10"] for r in rs), 4),
            "test_hr10_each": [round(r["test_hr10"], 4) for r in rs],
            "test_ndcg10_each": [round(r["test_ndcg10"], 4) for r in rs],
            "epoch_s": round(statistics.median(r["epoch_s"] for r in rs), 2),
            "best_epoch": [r["best_epoch"] for r in rs],
        }
    emit(line)


if __name__ == "__main__":
    main()
