"""Run folders: ``runs/<dataset>/<run name>/``, so runs of different data never share a folder.

Configs name their folders with two placeholders, filled in by train.py before anything is built:
``{runs}`` is ``runs/<dataset>`` and ``{name}`` the run's name (``--run_name``, default the name of the config file
that sets ``model``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError

__all__ = ["RUNS_ROOT", "PLACEHOLDERS", "dataset_label", "check_run_name", "run_folder", "fill_placeholders"]

RUNS_ROOT = "runs"
PLACEHOLDERS = ("{runs}", "{name}")


def dataset_label(dataset: str) -> str:
    """A dataset as a folder name: a MovieLens name stays, a file or a paper-split prefix is its name
    without the suffix, ``synthetic:N[:SEED]`` becomes ``synthetic-N[-SEED]``.

    A compressed file (``my.csv.gz``, read as pandas infers it) is named as the file inside.

    >>> [dataset_label(d) for d in ("ml-100k", "data/my.csv", "splits/ml-1m", "synthetic:20000:3", "ml-100k.csv")]
    ['ml-100k', 'my', 'ml-1m-file', 'synthetic-20000-3', 'ml-100k-csv']
    >>> dataset_label("data/my.tsv.gz")
    'my'
    """
    text = str(dataset).strip()
    if text.startswith("synthetic:"):
        label = text.replace(":", "-")
    else:
        path = Path(text.rstrip("/\\"))
        if path.suffix.lower() in (".gz", ".bz2", ".xz", ".zst", ".zip") and Path(path.stem).suffix:
            path = path.with_name(path.stem)
        label = path.stem if path.suffix.lower() in (".csv", ".tsv", ".txt", ".dat") else path.name
        if text != label and label.lower() in ("ml-100k", "ml-1m"):  # a file named like MovieLens: its own folder
            label = path.name.replace(".", "-") + ("-file" if path.name == label else "")
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in label).strip(".")
    return label or "data"


def check_run_name(name: str) -> str:
    """``name`` if it can be a run's folder name (letters, digits, ``-``, ``_``, ``.``), else a ConfigError."""
    if not name or name.strip(".") == "" or any(not (c.isalnum() or c in "-_.") for c in name):
        raise ConfigError(f"--run_name {name!r} is not a folder name: use letters, digits, '-', '_' or '.' "
                          f"(e.g. --run_name gmf_factor16).")
    return name


def run_folder(dataset: str, name: str, root: str = RUNS_ROOT) -> str:
    """Where a run named ``name`` on ``dataset`` keeps its checkpoints, logs and record.

    >>> run_folder("data/my.csv", "gmf")
    'runs/my/gmf'
    """
    return f"{root}/{dataset_label(dataset)}/{check_run_name(name)}"


def fill_placeholders(value: Any, dataset: str, name: str, root: str = RUNS_ROOT, label: Optional[str] = None) -> Any:
    """``value`` (a string, or a config's nested namespaces, dicts and lists, changed in place) with
    ``{runs}`` replaced by ``<root>/<dataset label>`` (``label`` when given: a checkpoint's own dataset folder)
    and ``{name}`` by ``name``; other braces (Lightning's ``{epoch}`` filename templates) are left alone.

    >>> fill_placeholders({"dirpath": "{runs}/{name}/checkpoints", "filename": "{epoch}"}, "my.csv", "gmf")
    {'dirpath': 'runs/my/gmf/checkpoints', 'filename': '{epoch}'}
    """
    if isinstance(value, str):
        if "{name}" in value:
            check_run_name(name)
        return value.replace("{runs}", f"{root}/{label or dataset_label(dataset)}").replace("{name}", name)
    if isinstance(value, list):
        for i, v in enumerate(value):
            value[i] = fill_placeholders(v, dataset, name, root, label)
        return value
    from jsonargparse import Namespace

    items = value if isinstance(value, dict) else vars(value) if isinstance(value, Namespace) else None
    if items is not None:
        for k, v in list(items.items()):
            items[k] = fill_placeholders(v, dataset, name, root, label)
    return value
