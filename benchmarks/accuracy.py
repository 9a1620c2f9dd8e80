"""Test HR@10 / NDCG@10 of each config's model on MovieLens-100k (default: GMF, MLP, NeuMF and pretrained NeuMF).

For each seed, every config in ``--configs`` trains (the epoch kept is the best on validation NDCG@10,
never on test), then the best checkpoint is tested. Each seed runs in its own folder under ``--out`` so
the pretrained NeuMF of a seed starts from that seed's GMF and MLP (a config that starts from other runs
comes after them). Results are reported under each config's name (``gmf`` for configs/gmf.yaml): the mean
and standard deviation over seeds, for the paper's sampled evaluation (1 + 99 candidates) and beside it
the full ranking (the held-out item against every item the user has not interacted with:
``test_full_hr10``, ``test_full_ndcg10``), which can order models differently.

    python benchmarks/accuracy.py --seeds 5           # ~12 min on one core
    ATEN_CPU_CAPABILITY=avx2 python benchmarks/accuracy.py --seeds 5   # other CPU kernels, other rounding
    python benchmarks/accuracy.py --seeds 1 --configs configs/gmf.yaml
    python benchmarks/accuracy.py --configs configs/neumf_pretrained.yaml --data.batch_size 1024 --model.lr 0.001   # train.py options
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from _common import add_configs, config_name, config_path, data_root, emit, pretraining_runs

import pytorch_lightning as pl
import torch

from ncf.cli import main as cli_main


class EpochClock(pl.Callback):
    """Wall seconds from the start of ``fit`` to the end of each epoch's validation."""

    def __init__(self, t0: float):
        self.t0, self.at = t0, {}

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.at[trainer.current_epoch] = time.perf_counter() - self.t0


def run_one(config: str | Path, seed: int, workdir: Path, extra: list[str]) -> dict:
    """Train ``config`` in ``workdir`` as train.py would, then test its best epoch. Training validates on the
    sampled candidates only, as the configs do; the full ranking is added for the test."""
    config = config_path(config)
    workdir.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        t0 = time.perf_counter()
        cli = cli_main(["--config", str(config), "--seed_everything", str(seed),
                        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                        *extra], run=False)
        clock = EpochClock(t0)
        cli.trainer.callbacks.append(clock)
        cli.trainer.fit(cli.model, cli.datamodule)
        fit_s = time.perf_counter() - t0
        best_epoch = int(torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=True)["epoch"])
        cli.datamodule.hparams.full_ranking = True
        res = cli.trainer.test(cli.model, cli.datamodule, ckpt_path="best", verbose=False)[0]
        return {"test_hr10": res["test_hr10"], "test_ndcg10": res["test_ndcg10"], "best_epoch": best_epoch,
                "test_full_hr10": res["test_full_hr10"], "test_full_ndcg10": res["test_full_ndcg10"],
                "best_val_ndcg10": float(cli.trainer.checkpoint_callback.best_model_score),
                "fit_s": fit_s, "to_best_s": clock.at.get(best_epoch, fit_s),
                "split_sha256": cli.datamodule.data_fingerprint()}
    finally:
        os.chdir(cwd)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=3)
    add_configs(p)
    p.add_argument("--out", default="bench_out/accuracy")
    p.add_argument("--threads", type=int, default=1)
    a, extra = p.parse_known_args()
    torch.set_num_threads(a.threads)
    os.environ["NCF_DATA_DIR"] = data_root()
    out = Path(a.out).resolve()
    names = {config_name(c): c for c in a.configs}
    if len(names) != len(a.configs):
        p.error("--configs: two configs of the same file name would share a run folder")
    runs: dict[str, list[dict]] = {m: [] for m in names}
    for seed in range(a.seeds):
        for name, config in names.items():
            runs[name].append(run_one(config, seed, out / f"seed{seed}", extra))
            r = runs[name][-1]
            # the pipeline's wall time to the selected epoch: its own, plus whole pretraining runs before it
            pre = pretraining_runs(config)  # this seed's runs it started from, when trained here
            r["to_quality_s"] = r["to_best_s"] + (sum(runs[m][-1]["fit_s"] for m in pre)
                                                  if all(len(runs.get(m, ())) == seed + 1 for m in pre) else 0.0)
            print(f"seed {seed} {name}: test HR@10 {r['test_hr10']:.4f} NDCG@10 {r['test_ndcg10']:.4f} "
                  f"(epoch {r['best_epoch']}, {r['to_quality_s']:.0f} s to it)", file=sys.stderr, flush=True)
    models = {}
    for name, rs in runs.items():
        hr, nd = [r["test_hr10"] for r in rs], [r["test_ndcg10"] for r in rs]
        models[name] = {
            "test_hr10": round(statistics.mean(hr), 4), "test_ndcg10": round(statistics.mean(nd), 4),
            "test_hr10_std": round(statistics.pstdev(hr), 4), "test_ndcg10_std": round(statistics.pstdev(nd), 4),
            "val_ndcg10": round(statistics.mean(r["best_val_ndcg10"] for r in rs), 4),
            "test_full_hr10": round(statistics.mean(r["test_full_hr10"] for r in rs), 4),
            "test_full_ndcg10": round(statistics.mean(r["test_full_ndcg10"] for r in rs), 4),
            "best_epochs": [r["best_epoch"] for r in rs], "fit_s_mean": round(statistics.mean(r["fit_s"] for r in rs), 1),
            "test_hr10_each": [round(r["test_hr10"], 4) for r in rs],
            "test_ndcg10_each": [round(r["test_ndcg10"], 4) for r in rs],
            "time_to_quality_s": round(statistics.mean(r["to_quality_s"] for r in rs), 1),
        }
    result = {"benchmark": "accuracy", "dataset": "ml-100k", "seeds": a.seeds, "selection": "best val_ndcg10 epoch",
              # the kernel set torch runs ("AVX2", "DEFAULT" for scalar...), and the variable that chose it
              "capability": torch.backends.cpu.get_cpu_capability(),
              "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY", "unset"), "threads": a.threads,
              "time_to_quality": "wall seconds from the start of fit to the end of the selected epoch's validation, "
                                 "plus the whole GMF and MLP runs for the pretrained NeuMF",
              "full_ranking": "held-out item vs every item the user has not interacted with", "models": models}
    if extra:
        result["overrides"] = " ".join(extra)  # command-line settings on top of the configs
    emit(result)


if __name__ == "__main__":
    main()
