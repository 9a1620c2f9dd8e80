"""The on-disk attribution record: open formats a researcher can load with pandas alone.

A record folder holds:

``manifest.json``
    model hyperparameters, methods and their settings, baseline, seed, the probe set (indices and the
    dataset's original ids), the recorded epochs, library versions.
``dims_epoch=E.parquet``
    long form, one row per (method, pair, embedding, dimension): ``epoch, method, pair, user_id,
    item_id, kind, embedding, dim, attribution`` (Parquet: quick to write, typed, and
    read by ``pandas.read_parquet``).
``pairs_epoch=E.parquet``
    one row per (method, pair): prediction, baseline prediction, completeness gap, group totals and
    shares, stability against the previous recorded epoch, agreement with the other methods, and the
    faithfulness figures.
``history_epoch=E.parquet`` (with ``history=True``)
    one row per (probe pair, training interaction of its user): this epoch's TracIn term
    (``contribution``: the epoch's learning rate times the gradient dot product over the embedding tables)
    and the ``running_total`` over the recorded epochs so far, the history influence as it accumulates.
``summary.csv``
    one row per (epoch, method): medians and means of the pair rows.
``evolution.csv``, ``evolution_pairs.parquet`` (written at the end of ``fit``)
    per epoch, and per (epoch, pair): similarity to the final epoch's explanation, flips of the top
    dimensions or history items, validation metrics (:mod:`explain.evolution`).
``report.html``
    the run's report, one self-contained page (:mod:`explain.html_report`).

Epoch ``-1`` is the model before training. Every file is written to a temporary name and renamed, so a kill
never leaves a half-written file, and each epoch's files are replaced, never appended: resuming cannot
record an epoch twice.

    >>> import pandas as pd, glob  # doctest: +SKIP
    >>> pairs = pd.read_parquet(glob.glob("runs/ml-100k/neumf/attributions/pairs_epoch=*.parquet"))  # doctest: +SKIP
"""
from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from ncf.contract import network_name
from ncf.files import atomic_write as _atomic, atomic_write_text  # the one atomic writer (checkpoints, records, recommendations)
from ncf.files import folder_label, move_aside as _move_aside  # the one mover (checkpoints, records)

__all__ = ["is_record", "write_atomic", "write_parquet", "write_epoch", "recorded_epochs", "latest_epoch_before",
           "read_epoch_file", "drop_epochs_after", "load_record", "summarize", "write_summary", "write_manifest",
           "read_features", "Record", "versions"]

FORMAT = "ncf-explain attribution record"
_EPOCH_RE = re.compile(r"pairs_epoch=(-?\d+)\.parquet$")


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    atomic_write_text(path, text)


def write_parquet(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write ``frame`` to ``path`` as Parquet via a temporary file and an atomic rename."""
    _atomic(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))


def write_epoch(out_dir: str | os.PathLike, epoch: int, dims: pd.DataFrame, pairs: pd.DataFrame,
                extra: Optional[dict[str, pd.DataFrame]] = None) -> None:
    """Write one epoch's files (``extra``: more frames by name, e.g. ``history``). The pairs file is written
    last: its presence marks the epoch done."""
    _atomic(Path(out_dir) / f"dims_epoch={epoch}.parquet", lambda tmp: dims.to_parquet(tmp, index=False))
    for name, frame in (extra or {}).items():
        _atomic(Path(out_dir) / f"{name}_epoch={epoch}.parquet", lambda tmp, f=frame: f.to_parquet(tmp, index=False))
    _atomic(Path(out_dir) / f"pairs_epoch={epoch}.parquet", lambda tmp: pairs.to_parquet(tmp, index=False))


def recorded_epochs(out_dir: str | os.PathLike) -> list[int]:
    """Epochs whose record is complete, sorted."""
    out = []
    for f in glob.glob(os.path.join(str(out_dir), "pairs_epoch=*.parquet")):
        m = _EPOCH_RE.search(f)
        if m and os.path.exists(os.path.join(str(out_dir), f"dims_epoch={m.group(1)}.parquet")):
            out.append(int(m.group(1)))
    return sorted(out)


def latest_epoch_before(out_dir: str | os.PathLike, epoch: int) -> Optional[int]:
    """The latest recorded epoch before ``epoch``, None if there is none."""
    earlier = [e for e in recorded_epochs(out_dir) if e < epoch]
    return earlier[-1] if earlier else None


def read_epoch_file(out_dir: str | os.PathLike, kind: str, epoch: Optional[int]) -> Optional[pd.DataFrame]:
    """``<kind>_epoch=E.parquet`` (``kind``: ``dims``, ``pairs`` or ``history``) of an epoch, None where the
    file is not there (or ``epoch`` is None)."""
    path = Path(out_dir) / f"{kind}_epoch={epoch}.parquet"
    return pd.read_parquet(path) if epoch is not None and path.exists() else None


_OWN_FILE_RE = re.compile(r"^(dims|pairs|history)_epoch=(-?\d+)\.parquet$")
_OWN_TMP_RE = re.compile(r"^\.((dims|pairs|history)_epoch=-?\d+\.parquet|summary\.csv|manifest\.json|evolution\.csv|"
                         r"evolution_pairs\.parquet|report\.html)\..*\.tmp$")


def drop_epochs_after(out_dir: str | os.PathLike, epoch: int) -> list[int]:
    """Delete this record's files of epochs ``> epoch`` (recorded after the checkpoint a run resumes from)
    and the temporary files of writes a kill interrupted. Only files named as this module names them are
    touched: ``(dims|pairs|history)_epoch=E.parquet`` and their hidden ``.tmp`` siblings."""
    dropped = []
    folder = Path(out_dir)
    if not folder.is_dir():
        return dropped
    for f in folder.iterdir():
        m = _OWN_FILE_RE.match(f.name)
        if m and int(m.group(2)) > epoch:
            f.unlink()
            dropped.append(int(m.group(2)))
        elif _OWN_TMP_RE.match(f.name):
            f.unlink()
    return sorted(set(dropped))


_OWN_OTHER = ("manifest.json", "summary.csv", "group_shares.png", "stability.png", "agreement.png", "faithfulness.png",
              "evolution.csv", "evolution_pairs.parquet", "report.html")


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """A record's manifest ({} where there is none, or it cannot be read)."""
    try:
        manifest = json.loads((Path(out_dir) / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _run_field(out_dir: str | os.PathLike, key: str) -> Optional[str]:
    run = read_manifest(out_dir).get("run")
    value = run.get(key) if isinstance(run, dict) else None
    return value if isinstance(value, str) else None


def run_id_of(out_dir: str | os.PathLike) -> Optional[str]:
    """The run id in a record's manifest (None: no record, or one written before runs had an identity)."""
    return _run_field(out_dir, "id")


def fingerprint_of(out_dir: str | os.PathLike) -> Optional[str]:
    """The run fingerprint in a record's manifest (None: no record, or none recorded)."""
    return _run_field(out_dir, "fingerprint")


def move_aside(out_dir: str | os.PathLike) -> Optional[Path]:
    """Move a record of another run out of ``out_dir`` to ``<parent>/superseded/<its run id>/<name>/``
    (:func:`ncf.files.move_aside`); only the files this module writes are moved (and its interrupted writes
    removed). Returns where, or None."""
    folder = Path(out_dir)
    if not folder.is_dir():
        return None
    for f in folder.iterdir():
        if _OWN_TMP_RE.match(f.name):
            f.unlink()
    files = [f for f in folder.iterdir() if f.is_file() and (_OWN_FILE_RE.match(f.name) or f.name in _OWN_OTHER)]
    return _move_aside([folder], files, folder_label(run_id_of(folder)))


def remove(out_dir: str | os.PathLike) -> None:
    """Delete a record's own files (and its interrupted writes) from ``out_dir``; other files stay."""
    folder = Path(out_dir)
    if folder.is_dir():
        for f in folder.iterdir():
            if f.is_file() and (_OWN_FILE_RE.match(f.name) or _OWN_TMP_RE.match(f.name) or f.name in _OWN_OTHER):
                f.unlink()


def load_record(out_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(dims, pairs)`` data frames of every recorded epoch."""
    epochs = recorded_epochs(out_dir)
    if not epochs:
        raise FileNotFoundError(f"No attribution record in {out_dir}.")
    dims = pd.concat([pd.read_parquet(Path(out_dir) / f"dims_epoch={e}.parquet") for e in epochs], ignore_index=True)
    pairs = pd.concat([pd.read_parquet(Path(out_dir) / f"pairs_epoch={e}.parquet") for e in epochs], ignore_index=True)
    return dims, pairs


def summarize(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per (epoch, method): medians of stability/agreement, means of the rest."""
    median_cols = [c for c in pairs.columns if c == "stability" or c.startswith("agreement_")]
    mean_cols = [c for c in pairs.columns if c.startswith(("share_", "deletion_", "insertion_", "infidelity", "prediction"))]
    g = pairs.groupby(["epoch", "method"], sort=True)
    out = pd.concat([g[median_cols].median(), g[mean_cols].mean(),
                     g["completeness_gap"].max().rename("completeness_gap_max")], axis=1)
    return out.reset_index()


def write_summary(out_dir: str | os.PathLike, pairs: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Write ``summary.csv`` from the record's pairs files (or ``pairs``, already read) and return it."""
    if pairs is None:
        _, pairs = load_record(out_dir)
    summary = summarize(pairs)
    write_atomic(Path(out_dir) / "summary.csv", summary.to_csv(index=False, float_format="%.7g"))
    return summary


def is_record(out_dir: str | os.PathLike) -> bool:
    """Whether ``out_dir`` holds an attribution record (a manifest written by this module)."""
    path = Path(out_dir) / "manifest.json"
    try:
        return path.is_file() and str(json.loads(path.read_text()).get("format", "")).startswith(FORMAT)
    except (OSError, ValueError, AttributeError):
        return False


def write_manifest(out_dir: str | os.PathLike, manifest: dict) -> None:
    write_atomic(Path(out_dir) / "manifest.json", json.dumps(manifest, indent=2, default=str))


def note_validation(out_dir: str | os.PathLike, validation: dict) -> None:
    """Keep ``validation`` (every epoch validated so far) in the manifest as epochs are recorded, so that a
    run killed before the end of ``fit`` still shows its whole validation curve."""
    path = Path(out_dir) / "manifest.json"
    if not validation or not path.is_file():
        return
    manifest = json.loads(path.read_text())
    manifest["validation"] = {str(e): m for e, m in sorted(validation.items(), key=lambda kv: int(kv[0]))}
    write_manifest(out_dir, manifest)


def mark_finished(out_dir: str | os.PathLike, validation: Optional[dict] = None,
                  cut_short: Optional[dict] = None) -> None:
    """Set ``finished`` in the manifest: the run's ``fit`` ended (a record without it is partial). ``validation``:
    ``{epoch: {metric: value}}`` of every epoch the run validated, recorded or not; ``cut_short``: the last epoch
    when training stopped within it."""
    path = Path(out_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["finished"] = True
    if validation:
        manifest["validation"] = {str(e): m for e, m in sorted(validation.items(), key=lambda kv: int(kv[0]))}
    # ``{"epoch", "batches", "of"}``: training stopped within its last epoch (max_time, max_steps)
    manifest["last_epoch_cut_short"] = cut_short
    manifest["epochs_recorded"] = recorded_epochs(out_dir)
    write_manifest(out_dir, manifest)


def read_features(out_dir: str | os.PathLike, epoch: int, methods, n_pairs: int
                  ) -> dict[str, tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """Each method's ``(features, inactive)`` recorded at ``epoch``: ``[pairs, D]`` dimensions in model order
    with their ``at_baseline`` flags, or ``[pairs, E]`` embedding totals (no flags) for group-level methods; the
    epoch's attributions read back from disk."""
    dims = pd.read_parquet(os.path.join(str(out_dir), f"dims_epoch={epoch}.parquet"))
    pairs = pd.read_parquet(os.path.join(str(out_dir), f"pairs_epoch={epoch}.parquet"))
    out = {}
    for m in methods:
        d = dims[dims["method"] == m]
        if len(d):
            order = {e: k for k, e in enumerate(pd.unique(d["embedding"]))}  # embeddings in model order
            d = d.assign(_e=d["embedding"].map(order)).sort_values(["pair", "_e", "dim"], kind="stable")
            base = torch.tensor(d["at_baseline"].to_numpy(dtype=bool)).view(n_pairs, -1) if "at_baseline" in d else None
            out[m] = (torch.tensor(d["attribution"].to_numpy(), dtype=torch.float32).view(n_pairs, -1), base)
        else:
            p = pairs[pairs["method"] == m]
            cols = [c for c in p.columns if c.startswith("total_")]
            if len(p):
                out[m] = (torch.tensor(p[cols].to_numpy(), dtype=torch.float32), None)
    return out


@dataclass(eq=False)
class Record:
    """One attribution record read back (:meth:`read`): its folder, manifest and frames (``history`` empty
    without it)."""
    folder: Path
    manifest: dict
    pairs: pd.DataFrame
    dims: pd.DataFrame
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    _matrices: dict = field(default_factory=dict, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def read(cls, folder: str | os.PathLike) -> "Record":
        """Read a record folder (raises ``FileNotFoundError`` when it holds no record)."""
        folder = Path(folder)
        if not is_record(folder):
            raise FileNotFoundError(f"{folder} is not an attribution record (no ncf-explain manifest.json).")
        manifest = json.loads((folder / "manifest.json").read_text())
        if not recorded_epochs(folder):
            return cls(folder, manifest, pd.DataFrame(columns=["epoch", "method", "pair"]),
                       pd.DataFrame(columns=["epoch", "method", "pair"]))
        dims, pairs = load_record(folder)
        lacking = [c for c in ("epoch", "method", "pair") if c not in pairs or c not in dims]
        if lacking:
            raise ValueError(f"its epoch files lack the columns {lacking} (not written by the callback)")
        hist_files = sorted(folder.glob("history_epoch=*.parquet"))
        epochs = set(recorded_epochs(folder))
        hist = [pd.read_parquet(f) for f in hist_files if int(f.stem.split("=")[1]) in epochs]
        return cls(folder, manifest, pairs, dims, pd.concat(hist, ignore_index=True) if hist else pd.DataFrame())

    def matrices(self, method: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """``{epoch: (attributions [pairs, D], at_baseline [pairs, D])}`` of one method, pairs in order,
        embeddings in model order, computed once (one sort of the long frame)."""
        if method not in self._matrices:
            d = self.dims[self.dims["method"] == method] if len(self.dims) else self.dims
            self._matrices[method] = _split_matrices(d)
        return self._matrices[method]

    @property
    def epochs(self) -> list[int]:
        return sorted(int(e) for e in self.pairs["epoch"].unique())

    @property
    def method(self) -> str:
        """The method the evolution is read from: the first one recorded per dimension (else the first)."""
        methods = list(self.manifest.get("methods") or pd.unique(self.pairs["method"]))
        with_dims = set(self.dims["method"].unique()) if len(self.dims) else set()
        return next((m for m in methods if m in with_dims), methods[0])

    @property
    def partial(self) -> bool:
        """Whether the run that wrote the record ended before ``fit`` finished (killed, or still running)."""
        return not self.manifest.get("finished", False)

    @property
    def missing_epochs(self) -> list[int]:
        """Epochs the finished run recorded (its manifest lists them) whose files are no longer in the folder."""
        listed = self.manifest.get("epochs_recorded")
        present = set(recorded_epochs(self.folder))
        return sorted(int(e) for e in listed if int(e) not in present) if isinstance(listed, list) else []

    @property
    def pretrained(self) -> bool:
        """Whether the run started from pretrained GMF and MLP runs."""
        model = self.manifest.get("model") or {}
        return bool(model.get("pretrained_gmf") or model.get("pretrained_mlp"))

    @property
    def run_id(self) -> Optional[str]:
        """The id of the run that wrote the record (None for records older than run identities)."""
        run = self.manifest.get("run") or {}
        return run.get("id") if isinstance(run.get("id"), str) else None

    @property
    def run_folder(self) -> Path:
        """The run's folder (the record's parent when the record is the run's ``attributions/``)."""
        return self.folder.parent if self.folder.name == "attributions" else self.folder

    def pretrained_source(self, stage: str) -> dict:
        """``{"run_id", "path", ...}`` of the ``gmf`` or ``mlp`` run this one started from: the run ids as the
        callback recorded them, else (older records) the checkpoint path the settings name; ``{}`` if none."""
        rec = (self.manifest.get("pretrained_from") or {}).get(stage)
        if isinstance(rec, dict):
            return rec
        path = (self.manifest.get("model") or {}).get(f"pretrained_{stage}")
        return {"path": path} if isinstance(path, str) else {}

    @property
    def model(self) -> str:
        """The run's model, lower case (``gmf``, ``neumf``, ``mf``): its network's class name
        (:func:`ncf.contract.network_name`)."""
        return network_name(self.manifest.get("model") or {}) or "model"

    @property
    def stage_name(self) -> str:
        """A short name for the run's stage: the network's class name, and ``pretrained`` when it started from
        GMF/MLP."""
        net = (self.manifest.get("model") or {}).get("network")
        name = str(net["class_path"]).rpartition(".")[2] if isinstance(net, dict) and net.get("class_path") else \
            {"gmf": "GMF", "mlp": "MLP", "neumf": "NeuMF"}.get(self.model, self.model)
        return name + (" pretrained" if self.pretrained else "")


def _split_matrices(d: pd.DataFrame) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    if d.empty:
        return {}
    order = {e: k for k, e in enumerate(pd.unique(d["embedding"]))}
    d = d.assign(_e=pd.Categorical(d["embedding"], categories=list(order)).codes)
    d = d.sort_values(["epoch", "pair", "_e", "dim"], kind="stable")
    values = d["attribution"].to_numpy(dtype=np.float64, copy=True)
    base = d["at_baseline"].to_numpy(dtype=bool, copy=True) if "at_baseline" in d else np.zeros(len(d), bool)
    epochs = d["epoch"].to_numpy()
    out = {}
    bounds = np.flatnonzero(np.diff(epochs)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(d)]):
        n = d["pair"].iloc[lo:hi].nunique()
        out[int(epochs[lo])] = (values[lo:hi].reshape(n, -1), base[lo:hi].reshape(n, -1))
    return out


def versions() -> dict[str, str]:
    """The library versions a record or an explanation was made with."""
    import platform

    import captum
    import pytorch_lightning

    return {"torch": torch.__version__, "pytorch_lightning": pytorch_lightning.__version__,
            "captum": captum.__version__, "python": platform.python_version()}
