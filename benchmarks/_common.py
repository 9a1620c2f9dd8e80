"""Helpers shared by the benchmark scripts (run them from the repository root)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# The configs the model-by-model benchmarks run by default, in training order: a config that starts from
# others' checkpoints (configs/neumf_pretrained.yaml) comes after them. A new model needs only its config.
DEFAULT_CONFIGS = ("configs/gmf.yaml", "configs/mlp.yaml", "configs/neumf.yaml", "configs/neumf_pretrained.yaml")


def add_configs(parser, default=DEFAULT_CONFIGS, what: str = "trained and measured in this order") -> None:
    """``--configs FILE ...``: the train.py configs a benchmark runs, each named by its file (``gmf.yaml``:
    ``gmf``, the run's folder ``runs/ml-100k/gmf``, as ``train.py`` names it)."""
    parser.add_argument("--configs", nargs="+", default=list(default), metavar="CONFIG",
                        help=f"train.py configs, {what} (default: {' '.join(default)})")


def config_path(config: str | os.PathLike) -> Path:
    """A config file as given, else relative to the repository (``configs/gmf.yaml`` from any folder)."""
    path = Path(config)
    if not path.exists() and (REPO / path).exists():
        path = REPO / path
    if not path.is_file():
        raise SystemExit(f"error: config {config} not found; give a train.py config file, e.g. configs/gmf.yaml.")
    return path.resolve()


def config_name(config: str | os.PathLike) -> str:
    """The run name ``train.py`` gives a config (its file name): the folder its runs go to, and the
    name its results are reported under."""
    return Path(config).stem


def pretrained_options(config: str | os.PathLike) -> dict[str, str]:
    """The checkpoints a config starts from, among the runs beside it: ``{"pretrained_gmf":
    "{runs}/gmf/checkpoints/best.ckpt", ...}`` (its ``model.pretrained_*`` paths under ``{runs}``)."""
    import yaml

    model = yaml.safe_load(config_path(config).read_text()).get("model") or {}
    return {k: v for k, v in model.items() if k.startswith("pretrained_") and isinstance(v, str)
            and v.startswith("{runs}/")}


def pretraining_runs(config: str | os.PathLike) -> list[str]:
    """Names of the runs a config starts from (``["gmf", "mlp"]`` for configs/neumf_pretrained.yaml)."""
    return [Path(v).parts[1] for v in pretrained_options(config).values()]


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
    with open(config_path(config)) as fh:
        cfg = yaml.safe_load(fh)
    for key in ("pretrained_gmf", "pretrained_mlp"):
        cfg["model"].pop(key, None)
    return cfg


def emit(result: dict) -> None:
    """Print the one JSON line a benchmark reports."""
    print(json.dumps(result, sort_keys=True))


def trained_checkpoint(config: str, out_dir: str, seed: int = 0, epochs: int | None = None, args=()) -> str:
    """Best checkpoint of ``config`` (a train.py config file) trained in ``out_dir`` (reused when already
    there); ``args``: more ``train.py`` options. Checkpoints it starts from (``model.pretrained_*``) are
    those of ``out_dir``'s runs, recorded by their absolute paths so the run can be read from any folder."""
    import torch

    from ncf.cli import main as cli_main

    config = config_path(config)
    work = Path(out_dir).resolve()
    runs = work / "runs" / "ml-100k"
    ckpt = runs / config_name(config) / "checkpoints" / "best.ckpt"
    if ckpt.exists():
        return str(ckpt)
    work.mkdir(parents=True, exist_ok=True)
    os.environ["NCF_DATA_DIR"] = data_root()
    cwd = os.getcwd()
    os.chdir(work)
    try:
        extra = ["--trainer.max_epochs", str(epochs)] if epochs else []
        for key, path in pretrained_options(config).items():
            extra += [f"--model.{key}", path.replace("{runs}", str(runs))]
        cli = cli_main(["--config", str(config), "--seed_everything", str(seed),
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
