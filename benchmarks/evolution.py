"""What the attribution record shows on MovieLens-100k, and what recording costs.

Trains the README's default pipeline (``--configs``, default GMF, MLP, NeuMF from them) twice, alternating,
without and with the ``AttributionCallback`` at its defaults on every stage (each stage's wall time through
``train.py``'s own CLI, as the README runs it), then a model from scratch (``--scratch``, default NeuMF) with
the callback and ``history: true``; builds the HTML report of all the records and renders it in headless
Chromium. Prints one JSON line:

* ``stages``: the recorded stages of the default pipeline, in order;
* ``randomisation_spearman``: median per-pair rank correlation of DeepLift per dimension between epoch -1
  (untrained) and the final epoch, the model from scratch (the model-randomisation check);
* ``settle_epoch`` / ``best_val_epoch``: per run, the first epoch from which the median basis-free similarity
  to the final epoch stays >= 0.9, and the epoch of best validation NDCG@10;
* ``pipeline_overhead``: (pipeline with the callback - without) / without, wall time;
  ``callback_share``: the callback's own measured time over the rest of the pipeline with it (immune to drift
  between the two runs);
* ``report`` and ``browser_rendered``: the HTML's path, and whether Chromium rendered it (no console message,
  screenshot not blank).

    python benchmarks/evolution.py [--out DIR] [--repeats 1]
    python benchmarks/evolution.py --epochs 1      # every run one epoch: a quick look
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import add_configs, config_name, config_path, data_root, emit

STAGES = ("configs/gmf.yaml", "configs/mlp.yaml", "configs/neumf_pretrained.yaml")
CALLBACK = "--trainer.callbacks+=explain.AttributionCallback"


def fit(config: str, work: Path, extra: list[str]) -> tuple[float, float]:
    """Train ``config`` in ``work`` as ``train.py fit`` does; (wall seconds, callback seconds)."""
    import torch

    from explain import AttributionCallback
    from ncf.cli import main as cli_main

    config = config_path(config)  # before the folder changes
    cwd = os.getcwd()
    os.chdir(work)
    try:
        t0 = time.perf_counter()
        cli = cli_main(["fit", "--config", str(config),
                        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", *extra])
        wall = time.perf_counter() - t0
    finally:
        os.chdir(cwd)
        torch.set_grad_enabled(True)
    cb = [c for c in cli.trainer.callbacks if isinstance(c, AttributionCallback)]
    return wall, sum(c.total_seconds for c in cb)


def pipeline(configs: list[str], work: Path, watched: bool, extra: list[str]) -> dict[str, tuple[float, float]]:
    work.mkdir(parents=True, exist_ok=True)
    return {config_name(c): fit(c, work, ([CALLBACK] if watched else []) + extra) for c in configs}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None, help="folder for the runs and the report (default: a temporary one)")
    p.add_argument("--repeats", type=int, default=1, help="pipelines of each kind, alternating")
    add_configs(p, STAGES, "the pipeline, trained in order")
    p.add_argument("--scratch", default="configs/neumf.yaml", help="the model recorded from scratch with history")
    p.add_argument("--epochs", type=int, help="max_epochs of every run (default: the configs' own)")
    a = p.parse_args()
    if a.repeats < 1 or (a.epochs is not None and a.epochs < 1):
        p.error("--repeats and --epochs must be at least 1")
    extra = ["--trainer.max_epochs", str(a.epochs)] if a.epochs else []
    os.environ["NCF_DATA_DIR"] = data_root()
    base = Path(a.out or tempfile.mkdtemp(prefix="evolution-")).resolve()
    without, with_cb, cb_s = [], [], []
    for k in range(a.repeats):
        order = (False, True) if k % 2 == 0 else (True, False)
        for watched in order:
            times = pipeline(a.configs, base / f"{'with' if watched else 'without'}-{k}", watched, extra)
            wall = sum(t for t, _ in times.values())
            (with_cb if watched else without).append(wall)
            if watched:
                cb_s.append(sum(c for _, c in times.values()))
                stage_times = {s: round(t, 2) for s, (t, _) in times.items()}
                stage_cb = {s: round(c, 2) for s, (_, c) in times.items()}
    runs = base / "with-0"
    fit(a.scratch, runs, [CALLBACK, "--trainer.callbacks.init_args.history", "true", *extra])
    scratch_run = runs / "runs" / "ml-100k" / config_name(a.scratch)

    from explain import evolution as ev
    from explain.browser import blank, chromium, render
    from explain.html_report import pipeline_stages
    from explain.record import Record
    from explain.report_command import find_records
    from explain.report_command import main as report_main

    records = find_records(runs)
    report = runs / "report.html"
    assert report_main([str(runs), "--out", str(report)]) == 0
    loaded = [Record.read(r) for r in records]
    stages = [r.stage_name for r in pipeline_stages(loaded)]
    settle, best, random, flip_rate, movement = {}, {}, {}, {}, {}
    for r in loaded:
        scratch = r.folder.resolve().is_relative_to(scratch_run)
        name = f"{r.stage_name} (scratch)" if scratch else r.stage_name
        sim, fl = ev.similarity_to_final(r), ev.flips(r)
        settle[name] = ev.settle_epoch(sim, "totals_cosine")
        best[name] = ev.best_val_epoch(r.pairs)
        random[name] = {m: round(v, 3) for m, v in ev.randomisation_check(sim).items()}
        flip_rate[name] = {c: round(float(fl[c].mean()), 3) for c in ("flip_dims", "flip_history") if c in fl}
        first = sim[sim["epoch"] == r.epochs[0]]
        movement[name] = round(1 - float(first["totals_cosine"].median()), 3)
        if scratch:
            scratch_name = name
            settle_history = ev.settle_epoch(sim, "history_spearman")
            settle_dims = ev.settle_epoch(sim, "dims_spearman")
    rendered, console = False, None
    if chromium():
        shot = runs / "report.png"
        console = render(report, shot, 1200, 3000)
        rendered = not console and not blank(shot)
    wo, wi = statistics.median(without), statistics.median(with_cb)
    emit({"benchmark": "evolution", "stages": stages,
          "randomisation_spearman": random[scratch_name].get("dims_spearman"),
          "randomisation": random, "settle_epoch": settle, "best_val_epoch": best,
          "settle_epoch_scratch_history": settle_history, "settle_epoch_scratch_dims": settle_dims,
          "flip_rate": flip_rate, "movement_first_to_final": movement,
          "pipeline_s_without": round(wo, 2), "pipeline_s_with": round(wi, 2),
          "pipeline_overhead": round(wi / wo - 1, 3),
          "callback_share": round(statistics.median(c / (w - c) for c, w in zip(cb_s, with_cb)), 3),
          "stage_s_with": stage_times, "stage_callback_s": stage_cb, "repeats": a.repeats,
          "report": str(report), "browser_rendered": rendered, "console": console})


if __name__ == "__main__":
    main()
