"""Child process of ``benchmarks/peers.py``, run by the RecBole interpreter (never by the project's): trains
one RecBole model on a split exported by ``ncf.export`` and scores it on that split's own candidates.

RecBole trains as it always does (its Trainer, data loaders, negative sampler, early stopping, defaults),
from the exported benchmark files. Only what it is scored on changes: validation (which picks the epoch
and stops early) ranks each user's held-out item among the exported 1 + 99 candidates, the project's
sampled protocol, instead of RecBole's own lists. For the best epoch's weights the child writes the scores
of those candidates and of every item, and the parent computes every reported metric with the project's
code (``ncf.metrics``, the full-ranking rule of ``ncf.data``), checking this file's validation NDCG@10 on
the way. Needs only RecBole, torch and numpy.

    python benchmarks/_recbole_runner.py --data EXPORT/ncf --model NeuMF --seed 0 --out RUN_DIR
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

T_START = None  # set in main, before RecBole reads its configuration

# The name a result carries -> RecBole's model and the settings that make it so (RecBole has no GMF of its
# own: its NeuMF with the MLP tower off is GMF). Any other RecBole general model runs under its own name.
MODELS = {"GMF": ("NeuMF", {"mlp_train": False}), "NeuMF": ("NeuMF", {}), "BPR": ("BPR", {}),
          "LightGCN": ("LightGCN", {})}

# the model settings a result records (each model's defaults in RecBole's properties/model/*.yaml)
MODEL_KEYS = ("embedding_size", "mf_embedding_size", "mlp_embedding_size", "mlp_hidden_size", "dropout_prob",
              "mf_train", "mlp_train", "n_layers", "reg_weight")

# RecBole's defaults, except what the comparison fixes: 4 uniform negatives per positive, batch 1024,
# early stopping on NDCG@10 (Adam at 1e-3, 300 epochs, stopping after 10 epochs without a better score,
# one evaluation per epoch are its defaults).
SETTINGS = {
    "train_neg_sample_args": {"distribution": "uniform", "sample_num": 4, "alpha": 1.0, "dynamic": False,
                              "candidate_num": 0},
    "train_batch_size": 1024, "valid_metric": "NDCG@10", "metrics": ["Hit", "NDCG"], "topk": [10],
    "use_gpu": False, "show_progress": False, "benchmark_filename": ["train", "valid", "test"],
    "load_col": {"inter": ["user_id", "item_id"], "user": ["user_id"], "item": ["item_id"]},
}


def read_rows(path: Path, columns: int):
    import numpy as np

    return np.loadtxt(path, dtype=np.int64, delimiter="\t", skiprows=1, ndmin=2).reshape(-1, columns)


def candidates(path: Path):
    """``users [U]`` and ``candidates [U, C]`` (held-out item first) of an exported ``.candidates`` file."""
    rows = read_rows(path, 3)
    starts = (rows[:, 2] == 1).nonzero()[0]
    return rows[starts, 0], rows[:, 1].reshape(len(starts), -1)


def scorer(model):
    """``score(users, items) -> [N]`` with the model's own scoring. NeuMF's ``predict`` is the sigmoid of its
    logit, which rounds to exactly 1.0 for large logits in float32; ranking on the logit itself gives the
    same order without those ties (which the protocol counts against the held-out item)."""
    import torch
    from recbole.data.interaction import Interaction
    from recbole.model.general_recommender.neumf import NeuMF

    uid, iid = model.USER_ID, model.ITEM_ID

    @torch.no_grad()
    def score(users, items):
        if isinstance(model, NeuMF):
            return model.forward(users, items)
        return model.predict(Interaction({uid: users, iid: items}))

    return score


def score_pairs(model, users, items, chunk: int = 1 << 20):
    """Scores of ``users[:, None]`` against ``items [U, C]``: ``[U, C]``, in chunks of at most ``chunk`` pairs."""
    import torch

    score = scorer(model)
    model.eval()
    out = torch.empty(items.shape, dtype=torch.float32)
    rows = max(1, chunk // items.shape[1])
    for s in range(0, len(users), rows):
        it = items[s:s + rows]
        u = users[s:s + rows, None].expand_as(it)
        out[s:s + rows] = score(u.reshape(-1), it.reshape(-1)).view(it.shape).float()
    return out


def sampled_metrics(scores):
    """Mean HR@10 and NDCG@10 of column 0 among each row (ties against it): the rule of ``ncf.metrics``,
    which the parent applies again to the best epoch's scores and checks against this."""
    import torch

    rank = (scores[:, 1:] >= scores[:, :1]).sum(1)
    hit = (rank < 10).double()
    ndcg = hit / torch.log2(rank.double() + 2.0)
    return float(hit.mean()), float(ndcg.mean())


def main() -> None:
    global T_START
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, help="the export's folder NAME/, holding NAME.train.inter, ...")
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for RecBole's logs and checkpoint, and the results")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON", help="more RecBole settings")
    a = p.parse_args()
    sys.argv[1:] = []  # RecBole's Config reads settings from the command line too

    import os

    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)  # RecBole writes its log/ and log_tensorboard/ folders in the working directory
    data = Path(a.data).resolve()

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    T_START = time.perf_counter()
    model_name, own = MODELS.get(a.model, (a.model, {}))
    settings = {**SETTINGS, **own, "data_path": str(data.parent), "dataset": data.name, "seed": a.seed,
                "checkpoint_dir": str(out / "saved")}
    for kv in a.set:
        key, _, value = kv.partition("=")
        settings[key] = json.loads(value)
    config = Config(model=model_name, dataset=data.name, config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])

    def ids(field, tokens):
        return torch.as_tensor(dataset.token2id(field, [str(t) for t in tokens.reshape(-1)]),
                               dtype=torch.int64).view(tokens.shape)

    uf, itf = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    val_users, val_cands = candidates(data / f"{data.name}.valid.candidates")
    test_users, test_cands = candidates(data / f"{data.name}.test.candidates")
    val_u, val_c = ids(uf, val_users), ids(itf, val_cands)
    n_items = len(read_rows(data / f"{data.name}.item", 1))
    trainer_cls = get_trainer(config["MODEL_TYPE"], config["model"])

    class OnTheExportedCandidates(trainer_cls):
        """RecBole's trainer, validating on the exported candidates and keeping the best epoch's weights
        (in memory: nothing is unpickled) and wall time."""

        epoch, at, best = -1, {}, None

        def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
            self.epoch = epoch_idx
            return super()._train_epoch(train_data, epoch_idx, *args, **kwargs)

        def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
            self.val_scores = score_pairs(self.model, val_u, val_c)
            hr, ndcg = sampled_metrics(self.val_scores)
            return {"hit@10": hr, "ndcg@10": ndcg}

        def _valid_epoch(self, valid_data, show_progress=False):
            result = super()._valid_epoch(valid_data, show_progress)
            self.at[self.epoch] = (time.perf_counter() - T_START, result[1])
            return result

        def _save_checkpoint(self, epoch, verbose=True, **kwargs):
            super()._save_checkpoint(epoch, verbose=verbose, **kwargs)  # RecBole's own write, as by default
            self.best = (epoch, copy.deepcopy(self.model.state_dict()), self.val_scores)

    trainer = OnTheExportedCandidates(config, model)
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    fit_s = time.perf_counter() - T_START
    best_epoch, state, best_val_scores = trainer.best
    model.load_state_dict(state)
    model.eval()
    test_scores = score_pairs(model, ids(uf, test_users), ids(itf, test_cands))
    # RecBole's own full-ranking test of the same weights (its history: training and validation items), which
    # the parent's full ranking should match but for ties
    own = trainer_cls.evaluate(trainer, test_data, load_best_model=False)
    # every item for each test user, in the project's item order: [U, n_items], written row block by row block
    all_items = ids(itf, np.arange(n_items))
    full = np.lib.format.open_memmap(out / "full_scores.npy", mode="w+", dtype=np.float32,
                                     shape=(len(test_users), n_items))
    tu = ids(uf, test_users)
    block = max(1, (1 << 22) // n_items)
    for s in range(0, len(tu), block):
        u = tu[s:s + block]
        full[s:s + block] = score_pairs(model, u, all_items[None, :].expand(len(u), -1)).numpy()
    full.flush()
    np.save(out / "val_scores.npy", best_val_scores.numpy())
    np.save(out / "test_scores.npy", test_scores.numpy())
    seconds_to_best, best_val = trainer.at[best_epoch]
    result = {
        "model": a.model, "recbole_model": model_name, "seed": a.seed, "best_epoch": best_epoch,
        "epochs_run": trainer.epoch + 1, "seconds_to_best": seconds_to_best, "fit_seconds": fit_s,
        "best_val_ndcg10": best_val["ndcg@10"], "best_val_hr10": best_val["hit@10"],
        "recbole_own_full_hr10": float(own["hit@10"]), "recbole_own_full_ndcg10": float(own["ndcg@10"]),
        "train_rows": len(train_data._dataset.inter_feat), "n_users": dataset.user_num - 1,
        "n_items": dataset.item_num - 1, "threads": torch.get_num_threads(),
        "settings": {k: config[k] for k in ("learner", "learning_rate", "train_batch_size", "epochs",
                                            "stopping_step", "valid_metric", "train_neg_sample_args", "weight_decay")},
        "model_settings": {k: config[k] for k in MODEL_KEYS if k in config.final_config_dict},
        "recbole_version": __import__("recbole").__version__, "torch_version": torch.__version__,
    }
    if not math.isfinite(best_val["ndcg@10"]):
        raise SystemExit("validation NDCG@10 is not finite")
    (out / "result.json").write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
