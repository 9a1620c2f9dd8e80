"""The callback's probe set: the (user, item) pairs it attributes every epoch, fixed for the whole run.

Drawn once from the validation users with the callback's seed (each user's validation item and one of its
sampled validation negatives), plus pairs listed by original id; kept as primitives so that it travels in
the checkpoint and a resumed run attributes the same pairs.
"""
from __future__ import annotations

import logging
from typing import Union

import pandas as pd
import torch

from ncf.errors import ConfigError

__all__ = ["make_probe", "probe_frame"]


def _lookup(index: dict, key, what: str) -> int:
    if key in index:
        return index[key]
    for cast in (str, int):  # YAML may give 196 where the ids are "196", or the reverse
        try:
            if cast(key) in index:
                return index[cast(key)]
        except (TypeError, ValueError):
            pass
    raise ConfigError(f"Unknown {what} id {key!r} in the probe pairs; it is not in the training data.")


def make_probe(split, interactions, num_probe_users: int, seed: int,
               pairs: list[list[Union[str, int]]]) -> dict[str, list]:
    """The probe set of a data module's ``split`` and ``interactions``: ``num_probe_users`` validation users
    drawn with ``seed`` (each with its validation item and its first sampled negative), then ``pairs`` given as
    ``[user_id, item_id]`` in original ids. Indices, kinds, original ids and, where the data has them, names."""
    users, cands = (split.val_users, split.val_candidates) if split.val_users is not None else (None, None)
    u_idx: list[int] = []
    i_idx: list[int] = []
    kind: list[str] = []
    if users is not None and num_probe_users > 0:
        gen = torch.Generator().manual_seed(seed)
        rows = torch.randperm(len(users), generator=gen)[:num_probe_users].sort().values
        if num_probe_users > len(users):
            logging.getLogger("ncf").info(f"num_probe_users {num_probe_users}: the data has {len(users)} validation "
                                          f"users; the probe set takes them all.")
        for r in rows.tolist():
            u = int(users[r])
            u_idx += [u, u]
            i_idx += [int(cands[r, 0]), int(cands[r, 1])]
            kind += ["validation_positive", "sampled_negative"]
    user_pos = {uid: k for k, uid in enumerate(interactions.user_ids)}
    item_pos = {iid: k for k, iid in enumerate(interactions.item_ids)}
    for p in pairs:
        if len(p) != 2:
            raise ConfigError(f"Probe pair {p} must be [user_id, item_id].")
        u, i = _lookup(user_pos, p[0], "user"), _lookup(item_pos, p[1], "item")
        if (u, i) in zip(u_idx, i_idx):  # one pair, one row: a second would count twice in every median
            k = list(zip(u_idx, i_idx)).index((u, i))
            logging.getLogger("ncf").info(f"probe pair {list(p)} is already in the probe set (pair {k}, "
                                          f"{kind[k].replace('_', ' ')}); recorded once.")
            continue
        u_idx.append(u)
        i_idx.append(i)
        kind.append("listed")
    if not u_idx:
        raise ConfigError("The probe set is empty: set num_probe_users > 0 (with validation on) or list pairs.")
    probe = {
        "user_index": u_idx, "item_index": i_idx, "kind": kind,
        "user_id": [interactions.user_ids[u] for u in u_idx], "item_id": [interactions.item_ids[i] for i in i_idx],
    }
    # Names as explain.py shows them: MovieLens titles, or the names files given to the data module.
    if interactions.item_titles:
        probe["item_name"] = [interactions.item_titles[i] for i in i_idx]
    if interactions.user_names:
        probe["user_name"] = [interactions.user_names[u] for u in u_idx]
    return probe


def probe_frame(probe: dict[str, list]) -> pd.DataFrame:
    """One row per probe pair: ``pair``, original ids, indices, kind and names (the record's pair columns)."""
    meta = {"pair": range(len(probe["user_index"])), "user_id": probe["user_id"], "item_id": probe["item_id"],
            "user_index": probe["user_index"], "item_index": probe["item_index"], "kind": probe["kind"]}
    meta.update({k: probe[k] for k in ("item_name", "user_name") if k in probe})
    return pd.DataFrame(meta)
