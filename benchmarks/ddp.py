"""DDP with 2 CPU processes against 1 process on ML-100k: accuracy and each rank's share of the epoch.

For each seed, ``configs/neumf.yaml`` (NeuMF from scratch) is trained twice with ``train.py fit``: once in
one process, once with ``--trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu`` (Lightning
starts the second process). Each run's best checkpoint (by validation NDCG@10) is then tested by
``train.py test`` in one process, so both are scored the same way on the same candidates. Each rank's
samples per epoch are those its :class:`~ncf.data.TrainLoader` draws (its own users' positives and
their negatives). Under DDP each step averages the two ranks' gradients: the same learning rate with
twice the samples per step and half the steps; the comparison shows what that does to accuracy.

Each process runs one torch thread (train.py's default). One JSON line: ``ddp_hr10``, ``single_hr10`` (means), the NDCG@10 likewise, per-seed lists, wall
seconds of each fit, ``ddp_per_rank_samples`` and ``single_samples``.

    python benchmarks/ddp.py --seeds 3 --out bench_out/ddp
    python benchmarks/ddp.py --seeds 3 --ddp-args "--data.batch_size 2048 --model.lr 0.002"   # a DDP recipe
"""
from __future__ import annotations

import argparse
import csv
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, data_root, emit


def _fit_and_test(config: str, seed: int, folder: Path, devices: int, extra: list[str] = ()) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NCF_DATA_DIR": data_root(), "PYTHONWARNINGS": "ignore"}
    common = ["--config", str(REPO / config), "--seed_everything", str(seed), "--trainer.enable_progress_bar", "false",
              "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu", *extra]
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", str(devices)] if devices > 1 else ["--trainer.devices", "1"]
    t = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "train.py"), "fit", *common, *ddp], cwd=folder, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    fit_s = time.perf_counter() - t
    name = Path(config).stem
    run = folder / "runs" / "ml-100k" / name
    ckpt = run / "checkpoints" / "best.ckpt"
    subprocess.run([sys.executable, str(REPO / "train.py"), "test", *common, "--trainer.devices", "1",
                    "--ckpt_path", str(ckpt)], cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
    versions = sorted(run.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    rows = [r for r in csv.DictReader(open(versions[-1] / "metrics.csv")) if r.get("test_hr10")]
    return {"hr10": float(rows[-1]["test_hr10"]), "ndcg10": float(rows[-1]["test_ndcg10"]), "fit_s": fit_s}


def _samples(config: str, world: int) -> list[int]:
    import yaml

    from ncf import NCFDataModule
    from ncf.loaders import TrainLoader

    with open(REPO / config) as fh:
        data = yaml.safe_load(fh)["data"]
    dm = NCFDataModule(root=data_root(), **data)
    dm.setup("fit")
    sp = dm.split
    return [TrainLoader(sp.train_users, sp.train_items, sp.n_items, dm.hparams.num_negatives, dm.hparams.batch_size,
                        rank=r, world_size=world).samples_per_epoch for r in range(world)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/neumf.yaml")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default="bench_out/ddp")
    p.add_argument("--ddp-args", default="", help="train.py options for the 2-process runs only, e.g. "
                   "'--data.batch_size 2048 --model.lr 0.002' (a DDP recipe against the config in one process)")
    a = p.parse_args()
    out = Path(a.out).resolve()
    runs = {"single": [], "ddp": []}
    for seed in range(a.seeds):
        for mode, devices in (("single", 1), ("ddp", 2)):  # alternating, so drift in machine speed hits both
            r = _fit_and_test(a.config, seed, out / f"seed{seed}" / mode, devices,
                              shlex.split(a.ddp_args) if mode == "ddp" else [])
            print(f"seed {seed} {mode}: test HR@10 {r['hr10']:.4f} NDCG@10 {r['ndcg10']:.4f} fit {r['fit_s']:.0f} s",
                  file=sys.stderr, flush=True)
            runs[mode].append(r)
    mean = lambda rs, k: round(statistics.mean(r[k] for r in rs), 4)  # noqa: E731
    spread = lambda rs, k: round(statistics.pstdev(r[k] for r in rs), 4)  # noqa: E731
    per_rank = _samples(a.config, 2)
    emit({
        "config": a.config, "ddp_args": a.ddp_args, "seeds": a.seeds, "threads_per_process": 1,
        "single_hr10": mean(runs["single"], "hr10"), "ddp_hr10": mean(runs["ddp"], "hr10"),
        "single_ndcg10": mean(runs["single"], "ndcg10"), "ddp_ndcg10": mean(runs["ddp"], "ndcg10"),
        "single_hr10_std": spread(runs["single"], "hr10"), "ddp_hr10_std": spread(runs["ddp"], "hr10"),
        "single_hr10_each": [round(r["hr10"], 4) for r in runs["single"]],
        "ddp_hr10_each": [round(r["hr10"], 4) for r in runs["ddp"]],
        "single_ndcg10_each": [round(r["ndcg10"], 4) for r in runs["single"]],
        "ddp_ndcg10_each": [round(r["ndcg10"], 4) for r in runs["ddp"]],
        "single_fit_s": [round(r["fit_s"], 1) for r in runs["single"]],
        "ddp_fit_s": [round(r["fit_s"], 1) for r in runs["ddp"]],
        "single_samples": _samples(a.config, 1)[0], "ddp_per_rank_samples": per_rank,
    })


if __name__ == "__main__":
    main()
