"""Wall time and best validation NDCG@10 of an Optuna study (``tune.py``) against the shipped default.

Runs ``tune.py --config <config> --n-trials N`` in ``--workdir`` (a folder holding ``runs/ml-100k/gmf`` and
``runs/ml-100k/mlp`` for the pretrained NeuMF, e.g. one seed's folder of ``accuracy.py``), times it, then trains
the config itself once the same way (seed 42, as every trial) and prints one JSON line: trials complete
and pruned, wall and CPU seconds, the best trial's validation NDCG@10 and parameters, the default's.
The study's folder (``study.db``, ``best.yaml``, ``report.md``) is ``<workdir>/<out>``.

    python benchmarks/accuracy.py --seeds 1 --configs configs/gmf.yaml configs/mlp.yaml --out bench_out/accuracy
    python benchmarks/tune_study.py --workdir bench_out/accuracy/seed0 --n-trials 30   # ~15 min, one thread
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from _common import REPO, data_root, emit

import torch
import yaml


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--config", default="configs/neumf_pretrained.yaml")
    p.add_argument("--n-trials", type=int, default=30)
    p.add_argument("--out", default="tune_study", help="the study's folder inside --workdir (replaced)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    import optuna

    from ncf.tuning import _absolute_paths, main as tune_main, train_trial

    torch.set_num_threads(a.threads)
    os.environ["NCF_DATA_DIR"] = data_root()
    config = str((REPO / a.config).resolve())
    name = Path(config).stem
    os.chdir(a.workdir)
    shutil.rmtree(a.out, ignore_errors=True)  # a fresh study: its wall time is the figure
    t0, c0 = time.perf_counter(), time.process_time()
    if tune_main(["--config", config, "--n-trials", str(a.n_trials), "--out", a.out]) != 0:
        raise SystemExit("the study failed; see the log above")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{Path(a.out, 'study.db').resolve()}")
    states = [t.state for t in study.trials]
    # The default trained as a trial is: its own folder beside the trials', seed 42, no per-epoch checkpoints.
    base = yaml.safe_load(Path(config).read_text())
    _absolute_paths(base)
    default = train_trial(base, Path(a.out, "default").resolve())
    emit({"benchmark": "tune_study", "config": a.config, "space": f"configs/search/{name}.yaml",
          "trials": len(states), "complete": states.count(optuna.trial.TrialState.COMPLETE),
          "pruned": states.count(optuna.trial.TrialState.PRUNED), "wall_s": round(wall), "cpu_s": round(cpu),
          "threads": a.threads, "best_trial": study.best_trial.number, "best_val_ndcg10": round(study.best_value, 4),
          "best_params": {k: (round(v, 5) if isinstance(v, float) else v) for k, v in study.best_params.items()},
          "default_val_ndcg10": round(default, 4)})


if __name__ == "__main__":
    main()
