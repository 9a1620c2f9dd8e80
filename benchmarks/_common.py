"""Helpers shared by the benchmark scripts (run them from the repository root)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def data_root() -> str:
    """The folder holding ml-100k/: $NCF_DATA_DIR, else ../shared/data beside the repo, else ./data."""
    for cand in (os.environ.get("NCF_DATA_DIR"), str(REPO.parent / "shared" / "data"), str(REPO / "data")):
        if cand and (Path(cand) / "ml-100k" / "u.data").exists():
            return str(Path(cand).resolve())
    return str(REPO / "data")


def timing_setup(config: str, threads: int) -> dict:
    """Settings as ``train.py`` has them (``threads`` torch threads, float32 denormals flushed) and the
    config as a dict, without pretrained checkpoints: an epoch's cost does not depend on the weights'
    values, so the network starts from the usual initialisation."""
    import torch
    import yaml

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    with open(REPO / config) as fh:
        cfg = yaml.safe_load(fh)
    for key in ("pretrained_gmf", "pretrained_mlp"):
        cfg["model"].pop(key, None)
    return cfg


def emit(result: dict) -> None:
    """Print the one JSON line a benchmark reports."""
    print(json.dumps(result, sort_keys=True))


def trained_checkpoint(name: str, out_dir: str, seed: int = 0, epochs: int | None = None, args=()) -> str:
    """Best checkpoint of ``configs/<name>.yaml`` trained in ``out_dir`` (reused when already there);
    ``args``: more ``train.py`` options."""
    import torch

    from ncf.cli import main as cli_main

    work = Path(out_dir).resolve()
    ckpt = work / "runs" / "ml-100k" / name / "checkpoints" / "best.ckpt"
    if ckpt.exists():
        return str(ckpt)
    work.mkdir(parents=True, exist_ok=True)
    os.environ["NCF_DATA_DIR"] = data_root()
    cwd = os.getcwd()
    os.chdir(work)
    try:
        extra = ["--trainer.max_epochs", str(epochs)] if epochs else []
        cli = cli_main(["--config", str(REPO / "configs" / f"{name}.yaml"), "--seed_everything", str(seed),
                        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", *extra,
                        *args],
                       run=False)
        cli.trainer.fit(cli.model, cli.datamodule)
    finally:
        os.chdir(cwd)
    torch.set_grad_enabled(True)
    return str(ckpt)


def probe_pairs(num_users: int = 64, seed: int = 0):
    """The callback's default probe set on ML-100k: validation users with their item and one negative."""
    import torch

    from ncf import NCFDataModule

    dm = NCFDataModule("ml-100k", root=data_root())
    dm.setup("fit")
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(dm.split.val_users), generator=gen)[:num_users].sort().values
    users = dm.split.val_users[rows].repeat_interleave(2)
    items = torch.stack([dm.split.val_candidates[rows, 0], dm.split.val_candidates[rows, 1]], 1).reshape(-1)
    return users, items
