"""Run identity: which training run a checkpoint or an attribution record belongs to.

Every run has an ``id`` (random, drawn when a fit starts fresh; kept by a resumed run) and a
``fingerprint``: a hash of what defines its result (the model and optimisation settings, the data
settings, the seed and the content of the split it trains and evaluates on). Both are saved in every
checkpoint (``checkpoint["ncf_run"]``) and in the attribution record's manifest.

* ``--ckpt_path`` resumes only a checkpoint whose fingerprint equals the new run's, else a one-line
  error names what differs (:func:`check_resume`).
* A fresh ``fit`` whose checkpoint folders hold another run's files moves them aside, to
  ``<run folder>/superseded/<their run id>/`` (:func:`move_aside`), and says so: nothing is lost and no
  folder mixes two runs, so ``best.ckpt`` and ``last.ckpt`` are always this run's.
* Settings that do not change the result (where data is read from, evaluation batch size, the full
  ranking, progress output, ``max_epochs``) are not part of the fingerprint: a run can be resumed to
  train longer, or from another working directory.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from .errors import ConfigError

__all__ = ["RUN_KEY", "new_run_id", "defining", "fingerprint", "check_resume", "move_aside", "remove_partial", "run_of", "interrupted_start"]

RUN_KEY = "ncf_run"
log = logging.getLogger("ncf")

# Data-module settings that change where or how fast data is read, or what is reported, never the result.
_NOT_DEFINING = {"root", "download", "eval_batch_size", "full_ranking", "verify", "item_names", "user_names",
                 "names_id_col", "names_col", "names_encoding", "names_sep", "dataset"}
# Data-module settings whose default leaves the data as it is: part of the identity only when set, so the runs
# and checkpoints made before they existed keep their fingerprints.
_OFF_BY_DEFAULT = {"min_user_interactions": 0, "min_item_interactions": 0}


def new_run_id() -> str:
    """A fresh run id: 12 hex digits (drawn from the OS, not from the seeded generators)."""
    return uuid.uuid4().hex[:12]


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def defining(model_hparams: dict, data_hparams: Optional[dict], data_sha256: Optional[str],
             seed: Optional[str]) -> dict:
    """What defines a run's result, as plain values (saved in checkpoints, compared on resume)."""
    data = {k: v for k, v in (data_hparams or {}).items() if k not in _NOT_DEFINING and not k.startswith("_")
            and not (k in _OFF_BY_DEFAULT and v == _OFF_BY_DEFAULT[k])}
    return _plain({"model": dict(model_hparams), "data": data, "data_sha256": data_sha256, "seed": seed})


def fingerprint(defines: dict) -> str:
    return hashlib.sha256(json.dumps(defines, sort_keys=True).encode()).hexdigest()[:16]


def _differences(saved: dict, now: dict) -> list[str]:
    out = []
    for part in ("model", "data"):
        a, b = saved.get(part) or {}, now.get(part) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(f"{part}.{key} {a.get(key)!r} there, {b.get(key)!r} now")
    if saved.get("seed") != now.get("seed"):
        out.append(f"seed {saved.get('seed')!r} there, {now.get('seed')!r} now")
    if saved.get("data_sha256") != now.get("data_sha256"):
        out.append("the training data differs (its content hash)")
    return out


def check_resume(saved: Optional[dict], defines: dict, path: str = "the checkpoint") -> None:
    """Raise :class:`ConfigError` unless ``saved`` (a checkpoint's ``ncf_run``) was made by the same run
    settings as ``defines``. Checkpoints written before runs had an identity are accepted."""
    if not isinstance(saved, dict) or not isinstance(saved.get("defines"), dict):
        return
    if saved.get("fingerprint") == fingerprint(defines):
        return
    diff = _differences(saved["defines"], defines) or ["its fingerprint"]
    raise ConfigError(f"{path} belongs to another run (run {saved.get('id')}): {'; '.join(diff[:4])}"
                      f"{' ...' if len(diff) > 4 else ''}. Resume it with the settings it was trained with, or "
                      f"start a fresh run without --ckpt_path (its checkpoints are then moved aside).")


def run_of(path: str | os.PathLike) -> Optional[dict]:
    """The ``ncf_run`` entry of a checkpoint file, or None when unreadable or absent (read with
    ``weights_only=True``)."""
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a damaged or foreign file: it has no run we can name
        return None
    run = ckpt.get(RUN_KEY) if isinstance(ckpt, dict) else None
    return run if isinstance(run, dict) and isinstance(run.get("id"), str) else None


def folder_label(run_id: Optional[str]) -> str:
    """A run id as a folder name: letters and digits only (ids in files are data, not paths)."""
    return "".join(c for c in (run_id or "") if c.isalnum())[:32] or "unknown"


def _label(files: list[Path]) -> str:
    for f in sorted(files, key=lambda p: p.name != "last.ckpt"):  # last.ckpt first
        run = run_of(f)
        if run is not None:
            return folder_label(run["id"])
    return "unknown-" + time.strftime("%Y%m%d-%H%M%S")


def move_aside(folders: Iterable[str | os.PathLike], pattern: str = "*.ckpt") -> Optional[Path]:
    """Move the files matching ``pattern`` directly inside ``folders`` (one run's checkpoint folders) to
    ``<parent of their common folder>/superseded/<run id>/``, keeping their layout; returns where, or None
    when there was nothing to move. Stale temporary files of interrupted writes there are removed."""
    folders = list(dict.fromkeys(Path(f).resolve() for f in folders if f and Path(f).is_dir()))
    remove_partial(folders)
    files = [f for folder in folders for f in sorted(folder.glob(pattern)) if f.is_file()]
    if not files:
        return None
    common = Path(os.path.commonpath([str(f.resolve()) for f in folders]))
    label = _label(files)
    rel = [f.resolve().parent.relative_to(common.parent) / f.name for f in files]
    base = common.parent / "superseded" / label
    dest, n = base, 1
    while any((dest / r).exists() for r in rel):  # shared with the run's record (moved by the callback)
        n += 1
        dest = base.with_name(f"{label}-{n}")
    for f, r in zip(files, rel):
        (dest / r).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(f), str(dest / r))
    return dest


def interrupted_start(folders: Iterable[str | os.PathLike], fingerprint_now: str) -> list[Path]:
    """Checkpoint files in ``folders`` left by an earlier start of the *same* run (same fingerprint) that
    was killed before it wrote ``last.ckpt``, its resume point: a fresh start replaces them (it writes the
    same files again). Empty when anything there belongs to another run or can be resumed."""
    folders = list(dict.fromkeys(Path(f).resolve() for f in folders if f and Path(f).is_dir()))
    files = [f for folder in folders for f in sorted(folder.glob("*.ckpt")) if f.is_file()]
    if not files or any(f.name.startswith("last") for f in files):
        return []
    runs = [run_of(f) for f in files]
    if all(r is not None and r.get("fingerprint") == fingerprint_now for r in runs):
        return files
    return []


def remove_partial(folders: Iterable[str | os.PathLike]) -> None:
    """Remove the temporary files that interrupted checkpoint writes left in ``folders`` (only ours:
    ``.<name>.ckpt.<random>.tmp``)."""
    for folder in folders:
        if folder and Path(folder).is_dir():
            for tmp in Path(folder).glob(".*.ckpt.*.tmp"):
                tmp.unlink(missing_ok=True)


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write ``data`` to ``path`` so that the file is either the old one or the whole new one: a hidden
    temporary file in the same folder, flushed to disk, then renamed over it."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_io():
    from pytorch_lightning.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        """Lightning's checkpoint writer, made atomic for local files: a temporary file beside the checkpoint
        renamed over it (Lightning's own writer stages local files in the system temp folder, where an
        interrupted save leaves them behind). Other filesystems go through Lightning's writer."""

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            if storage_options is not None or "://" in str(path):
                return super().save_checkpoint(checkpoint, path, storage_options)
            import io

            buf = io.BytesIO()
            torch.save(checkpoint, buf)
            atomic_write_bytes(buf.getbuffer(), path)

    return AtomicCheckpointIO


def use_atomic_checkpoints(trainer) -> None:
    """Give ``trainer`` the atomic writer when it uses Lightning's default one."""
    from pytorch_lightning.plugins.io import TorchCheckpointIO

    strategy = trainer.strategy
    io = getattr(strategy, "checkpoint_io", None)
    if type(io) is TorchCheckpointIO:
        strategy.checkpoint_io = _atomic_io()()
