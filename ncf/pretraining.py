"""Starting a network from trained GMF and MLP runs (the paper's pretrained NeuMF): the checkpoints are
loaded safely, checked to be trained on this run's data (the same id mapping and split), and recorded (which
runs, at which epoch, with which weights), so that history influence can follow the embeddings back into
those runs' epoch checkpoints (:func:`explain.history.load_pretraining`)."""
from __future__ import annotations

import os

from .checkpoint import DIGEST_KEY, load_network
from .errors import ConfigError
from .run import RUN_KEY, run_defines, trainer_of

__all__ = ["load_pretrained", "check_pretrained_data", "checkpoint_record"]


def checkpoint_record(path: str, ckpt: dict) -> dict:
    """Plain values naming a checkpoint: its path, run id, epoch and weights digest."""
    run = ckpt.get(RUN_KEY) if isinstance(ckpt.get(RUN_KEY), dict) else {}
    epoch = ckpt.get("epoch")
    return {"path": str(path), "run_id": run.get("id") if isinstance(run.get("id"), str) else None,
            "epoch": epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
            "weights_sha256": ckpt.get(DIGEST_KEY) if isinstance(ckpt.get(DIGEST_KEY), str) else None}


def load_pretrained(module, gmf_path: str, mlp_path: str) -> dict:
    """Initialise ``module``'s network from the GMF and MLP checkpoints (``network.load_pretrained(gmf, mlp,
    alpha)``), each checked to be trained on the module's data; returns the record of which runs, at which
    epoch, with which weights (saved in the module's checkpoints)."""
    for key, path, config in (("pretrained_gmf", gmf_path, "gmf"), ("pretrained_mlp", mlp_path, "mlp")):
        if not os.path.isfile(str(path)):
            raise ConfigError(f"model.{key}: {path} not found. Train it first on the same data (python train.py "
                              f"fit --config configs/{config}.yaml with the same --data.dataset; runs are kept "
                              f"per dataset under runs/<dataset>/), or pass --model.{key} PATH.")
    gmf, gmf_ckpt = load_network(gmf_path)
    mlp, mlp_ckpt = load_network(mlp_path)
    for option, path, ckpt in (("pretrained_gmf", gmf_path, gmf_ckpt), ("pretrained_mlp", mlp_path, mlp_ckpt)):
        check_pretrained_data(module, f"{path} (--model.{option})", ckpt)
    try:
        module.net.load_pretrained(gmf, mlp, module.hparams.alpha)
    except ValueError as err:
        raise ConfigError(f"--model.pretrained_gmf {gmf_path} and --model.pretrained_mlp {mlp_path} do not fit this "
                          f"{type(module.net).__name__} ({err}); train them on the same data with the same factor, "
                          f"num_layers and mlp_embedding.") from None
    # Which runs, at which epoch, with which weights: history influence follows the embeddings back into
    # those runs' epoch checkpoints and checks they are the ones (explain.history.load_pretraining).
    return {stage: checkpoint_record(path, ckpt) for stage, path, ckpt in
            (("gmf", gmf_path, gmf_ckpt), ("mlp", mlp_path, mlp_ckpt))}

def check_pretrained_data(module, label: str, ckpt: dict) -> None:
    """Raise unless a pretrained checkpoint was trained on the data this run trains on: the same id
    mapping (index k is the same user or item) and the same split (its content hash)."""
    trainer = trainer_of(module)
    dm = getattr(trainer, "datamodule", None) if trainer is not None else None
    if dm is None or not hasattr(dm, "data_fingerprint"):
        return  # no data module: no id mapping or split to compare with
    fix = "pretrain it on this run's data with the same data settings."
    ids, run = ckpt.get("NCFDataModule"), ckpt.get(RUN_KEY)
    if not isinstance(ids, dict) or not isinstance(run, dict) or not isinstance(run.get("defines"), dict):
        raise ConfigError(f"{label} carries no id mapping or run identity, so nothing shows it was trained on this "
                          f"run's data; {fix}")
    inter = dm.interactions
    for side, there, now in (("user", ids.get("user_ids"), inter.user_ids), ("item", ids.get("item_ids"), inter.item_ids)):
        there, now = list(there or []), list(now)
        if there != now:
            if len(there) != len(now):
                what = f"{len(there)} {side}s there, {len(now)} now"
            else:
                k = next(k for k, (a, b) in enumerate(zip(there, now)) if a != b)
                what = f"{side} index {k} is id {there[k]!r} there, {now[k]!r} now"
            raise ConfigError(f"{label} was trained with another id mapping than this run's data ({what}); {fix}")
    saved = run["defines"]
    if saved.get("data_sha256") != dm.data_fingerprint():
        data_now = run_defines(module)["data"]
        sampling = ("batch_size", "num_negatives", "negatives_seed")  # training draws, not the split
        diff = [f"data.{k} {saved.get('data', {}).get(k)!r} there, {data_now.get(k)!r} now"
                for k in sorted(set(saved.get("data") or {}) | set(data_now))
                if k not in sampling and (saved.get("data") or {}).get(k) != data_now.get(k)]
        raise ConfigError(f"{label} was trained on another split than this run's "
                          f"({'; '.join(diff[:3]) if diff else 'other training rows or candidate lists'}); {fix}")
