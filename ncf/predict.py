"""Recommendations out: ``python train.py predict`` writes each user's top-N unseen items to CSV or Parquet.

The model scores every item for a batch of users on the device it runs on; the user's candidates (items
they never interacted with: training rows and held-out items alike are excluded) are ranked by
:mod:`ncf.candidates`, the rule ``explain.py --top-n`` follows too, and only the top-N leave the device.
Ids are the dataset's own, names come from the data (MovieLens titles or ``--data.item_names``). Equal
scores are ordered by item index; ``rank`` is the position in the user's list.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Union

import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from .candidates import top_candidates
from .run import same_data
from .data import dropping_filters
from .errors import ConfigError
from .files import atomic_write

__all__ = ["RecommendationWriter", "read_user_list"]

log = logging.getLogger("ncf")

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def read_user_list(users: Union[str, list, None], known: list) -> Optional[torch.Tensor]:
    """Indices of ``users``: a list of original ids, or the path of a file with one id per line (a header
    line ``user`` is allowed). ``None``: every user.

    >>> read_user_list([3, "1"], [1, 2, 3])
    tensor([2, 0])
    >>> read_user_list('[3, "1"]', ["1", "2", "3", "01"])  # the command line's text: each id as typed
    tensor([2, 0])
    """
    if users is None:
        return None
    lookup = {str(v): k for k, v in enumerate(known)}
    text = str(users).strip() if isinstance(users, str) else ""
    if text.startswith("[") and text.endswith("]"):  # a list as typed on the command line: ids as written
        users = [t.strip().strip("'\"") for t in text[1:-1].split(",") if t.strip()]
    elif isinstance(users, (str, os.PathLike)):
        path = Path(users)
        given = [t.strip() for t in str(users).split(",")]
        path_like = any(os.sep in t or "." in t for t in given)
        if not path.is_file() and (all(t in lookup for t in given) or not path_like):  # ids without brackets: 196,42
            users = given
        elif not path.is_file():
            raise ConfigError(f"{path}: no such user list file; --recommend.users takes a file of ids or a list of "
                              f"ids, e.g. --recommend.users \"[{', '.join(map(str, known[:2]))}]\".")
        else:
            lines = [ln.split(",")[0].split("\t")[0].strip() for ln in path.read_text().splitlines() if ln.strip()]
            users = lines[1:] if lines and lines[0].lower() == "user" else lines
    for u in users:  # a number the list's YAML made of what was typed ([007] -> 7): it may name another user
        if isinstance(u, (int, float)) and not isinstance(u, bool):
            spelt = [k for k in lookup if k != str(u) and _as_number(k) == u]
            if spelt:
                raise ConfigError(f"--recommend.users: {u} was read as a number, and the data has ids that are that "
                                  f"number written otherwise ({', '.join(map(repr, spelt[:3]))}); quote ids in the "
                                  f"list (--recommend.users '[\"{spelt[0]}\"]') or give them without brackets "
                                  f"({spelt[0]},...).")
    missing = [u for u in users if str(u).strip() not in lookup]
    if missing:
        raise ConfigError(f"Unknown user id(s) {missing[:5]} in --recommend.users; ids are the dataset's own "
                          f"(e.g. {', '.join(map(str, known[:3]))}).")
    if not users:
        raise ConfigError("--recommend.users is empty; give ids, or leave it out to recommend for every user.")
    index = list(dict.fromkeys(lookup[str(u).strip()] for u in users))  # each user once, in the order given
    if len(index) < len(users):
        log.info(f"--recommend.users lists {len(users) - len(index)} id(s) more than once; each user's list is "
                 f"written once.")
    return torch.tensor(index, dtype=torch.int64)


def _as_number(text: str):
    """``text`` as the number a YAML list would make of it (``007`` 7, ``0x10`` 16, ``1e3`` 1000.0), else None."""
    import yaml

    try:
        value = yaml.safe_load(f"[{text}]")[0]
    except (yaml.YAMLError, IndexError, TypeError):
        return None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class RecommendationWriter(BasePredictionWriter):
    """Writes the top-``top_n`` unseen items per user during ``trainer.predict``.

    Args:
        output: ``.csv`` or ``.parquet`` path; columns ``user_id, [user_name,] rank, item_id, [item_name,]
            score`` (sigmoid of the logit) and ``logit`` (names when the data has them). Written atomically when prediction ends.
        top_n: items per user.
        users: original user ids, or a file of them (one per line); default every user.

    Example:
        ``python train.py predict --config configs/neumf_pretrained.yaml --ckpt_path runs/ml-100k/neumf_pretrained/checkpoints/best.ckpt --recommend.output recs.parquet --recommend.top_n 20``
    """

    def __init__(self, output: str = "recommendations.csv", top_n: int = 10,
                 users: Union[list[Union[str, int, float]], str, None] = None):
        super().__init__(write_interval="batch")
        if top_n < 1:
            raise ConfigError(f"top_n must be at least 1, not {top_n} (--recommend.top_n).")
        if Path(output).suffix.lower() not in FORMATS:
            raise ConfigError(f"{output}: write .csv or .parquet (--recommend.output).")
        self.output, self.top_n, self.users = str(output), int(top_n), users
        self._parts: list[tuple[torch.Tensor, ...]] = []

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage != "predict":
            return
        dm = trainer.datamodule
        if dm is None or getattr(dm, "interactions", None) is None:
            raise ConfigError("Recommendations need the NCF data module (train.py predict --config ...).")
        if Path(self.output).is_dir():
            raise ConfigError(f"{self.output} is a folder; --recommend.output takes a file path.")
        hp = dict(getattr(dm, "hparams", {}) or {})
        inputs = {"--data.dataset": getattr(dm, "dataset", None), "--data.item_names": hp.get("item_names"),
                  "--data.user_names": hp.get("user_names"),
                  "--recommend.users": self.users if isinstance(self.users, str) else None}
        for option, path in inputs.items():
            if isinstance(path, str) and same_data(path, self.output):
                raise ConfigError(f"--recommend.output {self.output} is the file {option} reads; writing the "
                                  f"recommendations there would replace it. Give another path (e.g. recommendations.csv).")
        try:
            dm.predict_users = read_user_list(self.users, dm.interactions.user_ids)
        except ConfigError as err:
            filters = dropping_filters(dict(getattr(dm, "hparams", {}) or {}))
            if not str(err).startswith("Unknown user") or not filters:
                raise
            raise ConfigError(f"{str(err).rstrip('.')}; {', '.join(filters)} dropped users with too few interactions "
                              f"from the data, so a user of the file may be one of them.") from None
        self._parts = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        # the user's candidates ranked by the one rule explain.py's --top-n also follows
        items, values, count = top_candidates(prediction, batch[2], self.top_n)
        self._parts.append((batch[0].cpu(), items.cpu(), values.cpu(), count.cpu()))

    def on_predict_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if getattr(trainer, "ckpt_path", None) is None:
            raise ConfigError("Recommendations need a trained model: pass --ckpt_path (e.g. "
                              "runs/ml-100k/neumf_pretrained/checkpoints/best.ckpt); without it they would come from an "
                              "untrained network.")
        # Each batch's scores cover the whole catalogue: keep only the top-N here, not every score in memory.
        trainer.predict_loop.return_predictions = False

    def on_predict_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        inter = trainer.datamodule.interactions
        users = torch.cat([p[0] for p in self._parts]) if self._parts else torch.zeros(0, dtype=torch.int64)
        items = torch.cat([p[1] for p in self._parts]) if self._parts else torch.zeros(0, 0, dtype=torch.int64)
        logits = torch.cat([p[2] for p in self._parts]) if self._parts else torch.zeros(0, 0)
        count = torch.cat([p[3] for p in self._parts]) if self._parts else torch.zeros(0, dtype=torch.int64)
        self._parts = []
        n = items.shape[1]
        # a user who has interacted with almost everything gets fewer rows
        valid = (torch.arange(n)[None, :] < count[:, None]).reshape(-1)
        u = users.repeat_interleave(n)[valid].tolist()
        i = items.reshape(-1)[valid].tolist()
        lg = logits.reshape(-1)[valid]
        frame = {"user_id": [inter.user_ids[k] for k in u]}
        if inter.user_names:
            frame["user_name"] = [inter.user_names[k] for k in u]
        frame["rank"] = (torch.arange(n).repeat(len(users))[valid] + 1).tolist()
        frame["item_id"] = [inter.item_ids[k] for k in i]
        if inter.item_titles:  # as user_name: only when the data names them
            frame["item_name"] = [inter.item_titles[k] for k in i]
        frame["score"] = torch.sigmoid(lg).tolist()
        frame["logit"] = lg.tolist()
        _write_frame(pd.DataFrame(frame), Path(self.output))
        pl.utilities.rank_zero_info(f"wrote {len(u)} recommendations for {len(users)} users to {self.output}")


def _write_frame(df: pd.DataFrame, path: Path) -> None:
    """CSV or Parquet by suffix, written to a temporary file beside ``path`` and renamed into place."""
    def write(tmp: str) -> None:
        if FORMATS[path.suffix.lower()] == "csv":
            df.to_csv(tmp, index=False, float_format="%.9g")  # float32 in full: close scores stay apart
        else:
            df.to_parquet(tmp, index=False)

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)
