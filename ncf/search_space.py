"""A search space for the tuner: a YAML file of dotted CLI keys (``configs/search/*.yaml``)::

    model.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    model.network.init_args.factor: {type: categorical, choices: [32, 64, 128]}
    data.batch_size: {type: categorical, choices: [256, 512, 1024]}

and the nested-config helpers that set, read and flatten such keys.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["KINDS", "SPLIT_KEYS", "load_space", "suggest", "markers", "tokens", "set_dotted", "get_dotted", "flatten"]

KINDS = ("float", "int", "categorical")
# What the objective is measured on: searching them would compare scores of different validation sets.
SPLIT_KEYS = ("data.dataset", "data.validation", "data.validation_item", "data.holdout", "data.split_seed",
              "data.num_eval_negatives", "data.drop_short_users")


def load_space(path: str | os.PathLike) -> dict[str, dict]:
    """Read and check a search space: ``{dotted.key: {type, low, high[, log, step] | choices}}``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such search space file; name one with --space (e.g. --space "
                          f"configs/search/mf.yaml), or write one like those in configs/search/.")
    space = yaml.safe_load(path.read_text()) or {}
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{path}: a search space is a mapping of keys like model.lr to their ranges.")
    for key, spec in space.items():
        if not isinstance(spec, dict) or spec.get("type") not in KINDS or "." not in str(key):
            raise ConfigError(f"{path}: {key!r} needs a dotted key (model.lr) and a type among {KINDS}.")
        if key in SPLIT_KEYS:
            raise ConfigError(f"{path}: {key!r} changes the validation set itself, so the trials' scores would not "
                              f"be comparable; set it in the config and search the model and training keys.")
        if spec["type"] == "categorical" and not spec.get("choices"):
            raise ConfigError(f"{path}: {key!r} is categorical and needs choices.")
        if spec["type"] != "categorical" and not ("low" in spec and "high" in spec and spec["low"] <= spec["high"]):
            raise ConfigError(f"{path}: {key!r} needs low <= high.")
    return space


def suggest(trial, space: dict[str, dict]) -> dict[str, Any]:
    """The trial's value for every key of the space."""
    out = {}
    for key, spec in space.items():
        if spec["type"] == "float":
            out[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))
        elif spec["type"] == "int":
            out[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)))
        else:
            out[key] = trial.suggest_categorical(key, list(spec["choices"]))
    return out


def set_dotted(cfg: dict, dotted: str, value) -> None:
    node = cfg
    *parents, leaf = dotted.split(".")
    for p in parents:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[leaf] = value


def get_dotted(cfg: dict, dotted: str, default=None):
    node = cfg
    for p in dotted.split("."):
        if not isinstance(node, dict) or p not in node:
            return default
        node = node[p]
    return node


def flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value for every leaf of a nested config (a list is a leaf)."""
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def markers(space: dict[str, dict]) -> tuple[dict, dict]:
    """Two values of every searched key (its bounds or first two choices), distinct where the space allows."""
    a, b = {}, {}
    for key, spec in space.items():
        lo, hi = (spec["choices"][0], spec["choices"][-1]) if spec["type"] == "categorical" else (spec["low"], spec["high"])
        if spec["type"] == "float":
            lo, hi = float(lo), float(hi)
        elif spec["type"] == "int":
            lo, hi = int(lo), int(hi)
        a[key], b[key] = lo, hi
    return a, b


def tokens(values: dict[str, Any]) -> list[str]:
    return [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items()]
