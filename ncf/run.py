"""Run keeping: which training run a checkpoint or an attribution record belongs to, and what keeps runs apart.

Every run has an ``id`` (random, drawn when a fit starts fresh; kept by a resumed run) and a
``fingerprint``: a hash of what defines its result (the model and optimisation settings, the data
settings, the seed and the content of the split it trains and evaluates on). Both are saved in every
checkpoint (``checkpoint["ncf_run"]``) and in the attribution record's manifest.

* ``--ckpt_path`` resumes only a checkpoint whose fingerprint equals the new run's, else a one-line
  error names what differs (:func:`check_resume`).
* A fresh ``fit`` whose checkpoint folders hold another run's files moves them aside, to
  ``<run folder>/superseded/<their run id>/`` (:func:`ncf.files.move_aside`), and says so: nothing is lost and no
  checkpoint or record folder mixes two runs, so ``best.ckpt`` and ``last.ckpt`` are always this run's (the
  loggers' ``version_N`` folders, one per command, stay where they are).
* Trainer settings that change the weights (gradient clipping, gradient accumulation, precision, the
  share of training batches per epoch, deterministic algorithms, the number of processes) are part of
  it; those at their defaults are left out of the stored settings, so a setting that joins the
  fingerprint leaves the fingerprints of runs at its default unchanged.
* Settings that do not change the result (where data is read from, evaluation batch size, the full
  ranking, progress output, ``max_epochs``) are not part of the fingerprint: a run can be resumed to
  train longer, or from another working directory.
* A checkpoint without an identity cannot be resumed: nothing shows which settings made it.
* Every checkpoint carries a checksum of its weights and one of the training state a resume continues
  from (:mod:`ncf.checkpoint`), and the global random generators' state (dropout), so a resumed run equals
  an uninterrupted one.
* Files are written atomically (:func:`ncf.files.atomic_write`): a kill leaves the old file or the whole new one.

The LightningModule calls :func:`setup_run`, :func:`start_run`, :func:`save_run` and :func:`restore_run`
from its hooks of the same moments; the attribution callback asks :func:`run_identity` and
:func:`unfinished` what to do with a record it finds.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch

from .checkpoint import DIGEST_KEY, STATE_KEY, check_digest, check_state_digest, state_digest, weights_digest
from .errors import ConfigError
from .files import folder_label, move_aside, use_atomic_checkpoints

__all__ = ["RUN_KEY", "RNG_KEY", "NOT_DEFINING", "plain", "new_run_id", "trainer_settings", "defining", "run_defines",
           "fingerprint", "run_identity", "check_identity", "check_resume", "run_of", "setup_run", "start_run",
           "save_run", "restore_run", "checkpoint_folders", "unfinished", "move_checkpoints_aside",
           "remove_partial", "interrupted_start", "trainer_of", "same_data", "id_differences", "data_differences"]

RUN_KEY = "ncf_run"
RNG_KEY = "ncf_rng"  # the global random generators' state (dropout) at the checkpoint
log = logging.getLogger("ncf")

# Data-module settings that change where or how fast data is read, or what is reported, never the result.
NOT_DEFINING = {"root", "download", "eval_batch_size", "full_ranking", "verify", "item_names", "user_names",
                "names_id_col", "names_col", "names_encoding", "names_sep", "dataset"}
# Data-module settings whose default leaves the data as it is: part of the identity only when set, so a
# checkpoint that does not record them has the fingerprint of the same run with them off.
_OFF_BY_DEFAULT = {"min_user_interactions": 0, "min_item_interactions": 0, "recent_positives": 0, "recent_weight": 1}


# Trainer settings that change the weights a run ends with, at their defaults. ``max_epochs`` and ``max_steps``
# are not among them: training longer is a valid resume.
TRAINER_DEFAULTS = {"gradient_clip_val": None, "gradient_clip_algorithm": None, "accumulate_grad_batches": 1,
                    "precision": "32-true", "limit_train_batches": 1.0, "deterministic": False, "world_size": 1}


def trainer_settings(trainer) -> dict:
    """The trainer's settings that change the weights, those that differ from :data:`TRAINER_DEFAULTS` only
    (plain values)."""
    if trainer is None:
        return {}
    clip = getattr(trainer, "gradient_clip_val", None) or None  # 0 clips nothing
    algorithm = getattr(trainer, "gradient_clip_algorithm", None)
    now = {"gradient_clip_val": clip,
           "gradient_clip_algorithm": str(getattr(algorithm, "value", algorithm) or "norm") if clip else None,
           "accumulate_grad_batches": getattr(trainer, "accumulate_grad_batches", 1),
           "precision": str(getattr(trainer, "precision", "32-true")),
           "limit_train_batches": getattr(trainer, "limit_train_batches", 1.0),
           "deterministic": bool(torch.are_deterministic_algorithms_enabled()),
           "world_size": int(getattr(trainer, "world_size", 1))}
    return {k: v for k, v in plain(now).items() if not _same(v, TRAINER_DEFAULTS[k])}


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type (``limit_train_batches`` 1 is one batch, 1.0 all of them)."""
    return type(a) is type(b) and a == b


def new_run_id() -> str:
    """A fresh run id: 12 hex digits (drawn from the OS, not from the seeded generators)."""
    return uuid.uuid4().hex[:12]


def plain(value: Any) -> Any:
    """``value`` as JSON stores it: dicts, lists, strings, numbers (anything else by its ``str``)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def defining(model_hparams: dict, data_hparams: Optional[dict], data_sha256: Optional[str],
             seed: Optional[str], trainer: Optional[dict] = None) -> dict:
    """What defines a run's result, as plain values (saved in checkpoints, compared on resume). ``trainer``:
    :func:`trainer_settings` (absent when every one is at its default)."""
    data = {k: v for k, v in (data_hparams or {}).items() if k not in NOT_DEFINING and not k.startswith("_")
            and not (k in _OFF_BY_DEFAULT and v == _OFF_BY_DEFAULT[k])}
    out = {"model": dict(model_hparams), "data": data, "data_sha256": data_sha256, "seed": seed}
    if trainer:
        out["trainer"] = dict(trainer)
    return plain(out)


def trainer_of(module):
    """The Trainer ``module`` is attached to, or None (e.g. ``load_from_checkpoint``)."""
    try:
        return module.trainer
    except RuntimeError:  # Lightning's "not attached to a Trainer"
        return None


def run_defines(module) -> dict:
    """What defines the result of the run ``module`` trains in (:func:`defining`): its hyperparameters, its
    trainer's data settings and split, the seed and the trainer's settings."""
    trainer = trainer_of(module)
    dm = getattr(trainer, "datamodule", None) if trainer is not None else None
    data_hp = dict(dm.hparams) if dm is not None and hasattr(dm, "hparams") else None
    digest = dm.data_fingerprint() if dm is not None and hasattr(dm, "data_fingerprint") else None
    return defining(dict(module.hparams), data_hp, digest, os.environ.get("PL_GLOBAL_SEED"), trainer_settings(trainer))


def fingerprint(defines: dict) -> str:
    return hashlib.sha256(json.dumps(defines, sort_keys=True).encode()).hexdigest()[:16]


def run_identity(module) -> dict:
    """The id and fingerprint of the run ``module`` trains in, as a record's manifest stores them (both None
    for a module that keeps no run)."""
    if not hasattr(module, "run_id"):
        return {"id": None, "fingerprint": None}
    return {"id": module.run_id, "fingerprint": fingerprint(run_defines(module))}


def _differ(name: str, a: Any, b: Any, out: list[str]) -> None:
    """Append ``"<name> <a> there, <b> now"`` for each setting that differs, down to the nested one (e.g.
    ``model.network.init_args.factor 64 there, 32 now``); another class is one line, its class path."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.get("class_path") != b.get("class_path"):
            out.append(f"{name} {a.get('class_path')!r} there, {b.get('class_path')!r} now")
            return
        for key in sorted(set(a) | set(b)):
            _differ(f"{name}.{key}", a.get(key), b.get(key), out)
    elif not _same(a, b):  # a class on one side only: its class path (e.g. None there, 'ncf.objectives.BPR' now)
        shown = [repr(v["class_path"]) if isinstance(v, dict) and "class_path" in v else repr(v) for v in (a, b)]
        out.append(f"{name} {shown[0]} there, {shown[1]} now")


def id_differences(what: str, there, now) -> list[str]:
    """The ``what`` ids (``user`` / ``item``) of the data ``now`` that a checkpoint's id mapping ``there`` lacks,
    and the other way round, each as one phrase naming the first three.

    >>> id_differences("user", ["a", "b"], ["a", "c", "d"])
    ["user ids 'c', 'd' not in the checkpoint", "user id 'b' no longer in the data"]
    """
    new = sorted(set(map(str, now)) - set(map(str, there)))
    gone = sorted(set(map(str, there)) - set(map(str, now)))
    return [f"{what} id{'s' * (len(ids) > 1)} {', '.join(map(repr, ids[:3]))}{' and more' if len(ids) > 3 else ''} "
            f"{says}" for ids, says in ((new, "not in the checkpoint"), (gone, "no longer in the data")) if ids]


def data_differences(saved_defines: dict, data_hparams: dict) -> list[str]:
    """The data settings (``data.<key> <there> there, <now> now``) a run was defined with that differ from
    ``data_hparams`` (a data module's); paths and settings that do not change the data are left out."""
    out: list[str] = []
    a, b = (saved_defines or {}).get("data") or {}, defining({}, data_hparams, None, None)["data"]
    a, b = {**_OFF_BY_DEFAULT, **a}, {**_OFF_BY_DEFAULT, **b}  # a setting at its default is not stored
    for key in sorted((set(a) | set(b)) - {"dataset", "root", "item_names", "user_names"}):
        _differ(f"data.{key}", a.get(key), b.get(key), out)
    return out


def _differences(saved: dict, now: dict) -> list[str]:
    out: list[str] = []
    for part in ("model", "data", "trainer"):
        a, b = saved.get(part) or {}, now.get(part) or {}
        if part == "trainer":  # only settings away from their defaults are stored
            a, b = {**TRAINER_DEFAULTS, **a}, {**TRAINER_DEFAULTS, **b}
        for key in (list(a) if part == "trainer" else sorted(set(a) | set(b))):  # trainer: the clip value first
            _differ(f"{part}.{key}", a.get(key), b.get(key), out)
    if saved.get("seed") != now.get("seed"):
        out.append(f"seed {saved.get('seed')!r} there, {now.get('seed')!r} now")
    if saved.get("data_sha256") != now.get("data_sha256"):
        out.append("the training data differs (its content hash)")
    return out


def check_identity(saved: Any, path: str = "the checkpoint") -> None:
    """Raise :class:`ConfigError` unless ``saved`` (a checkpoint's ``ncf_run``) is a run identity: a
    checkpoint without one cannot be resumed, nothing shows which settings trained it."""
    if not isinstance(saved, dict) or not isinstance(saved.get("defines"), dict) \
            or not isinstance(saved.get("fingerprint"), str):
        raise ConfigError(f"{path} carries no run identity ('{RUN_KEY}'), so nothing shows which settings trained it "
                          f"and it cannot be resumed; start a fresh run without --ckpt_path.")


def check_resume(saved: Optional[dict], defines: dict, path: str = "the checkpoint") -> None:
    """Raise :class:`ConfigError` unless ``saved`` (a checkpoint's ``ncf_run``) is a run identity made by the
    same run settings as ``defines``."""
    check_identity(saved, path)
    if saved.get("fingerprint") == fingerprint(defines):
        return
    diff = _differences(saved["defines"], defines) or ["its fingerprint"]
    raise ConfigError(f"{path} belongs to another run (run {saved.get('id')}): {'; '.join(diff[:4])}"
                      f"{' ...' if len(diff) > 4 else ''}. Resume it with the settings it was trained with, or "
                      f"start a fresh run without --ckpt_path (its checkpoints are then moved aside).")


def dataset_of(folders: Iterable[str | os.PathLike]) -> Optional[str]:
    """The dataset the checkpoints in ``folders`` were trained on (``last.ckpt`` first), as their data
    settings name it; None when none says."""
    files = [f for folder in folders if Path(folder).is_dir() for f in sorted(Path(folder).glob("*.ckpt"))]
    for f in sorted(files, key=lambda p: p.name != "last.ckpt"):
        hp = _entry(f, "datamodule_hyper_parameters")
        if isinstance(hp, dict) and isinstance(hp.get("dataset"), str):
            return hp["dataset"]
    return None


def same_data(a: str, b: str) -> Optional[bool]:
    """Whether two dataset settings name the same data: the same name, or paths of the same file."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return None if not (pa.exists() or pb.exists()) else False


def _entry(path: str | os.PathLike, key: str) -> Any:
    """One top-level entry of a checkpoint file, or None when unreadable or absent (read with
    ``weights_only=True``, memory-mapped: the weights are not read)."""
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a damaged or foreign file: it names nothing
        return None
    return ckpt.get(key) if isinstance(ckpt, dict) else None


def run_of(path: str | os.PathLike) -> Optional[dict]:
    """The ``ncf_run`` entry of a checkpoint file, or None when unreadable or absent."""
    run = _entry(path, RUN_KEY)
    return run if isinstance(run, dict) and isinstance(run.get("id"), str) else None


# -- a run's life in a fit: called from the LightningModule's hooks of the same moments ------------------------
def setup_run(module, stage: str) -> Optional[str]:
    """``setup``: checkpoints are written atomically, and a fit is given a new run id (a resumed fit takes its
    own back from the checkpoint, :func:`restore_run`). Returns the module's run id."""
    trainer = trainer_of(module)
    if trainer is not None:
        use_atomic_checkpoints(trainer)
    return new_run_id() if stage == "fit" else module.run_id


def checkpoint_folders(trainer) -> list[str]:
    """The fixed folders this trainer's checkpoint callbacks write to, each once."""
    return list(dict.fromkeys(cb.dirpath for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)))


def start_run(module) -> Optional[str]:
    """``on_fit_start``, after any restore. A fit that resumed a checkpoint continues its run (the temporary
    files of writes a kill interrupted are removed). Any other fit is a new run, with one id on every process,
    that never mixes with another run's checkpoints in its fixed folders: those are moved aside, and those of
    an interrupted start of this same run (which it writes again) removed. Returns the run's id."""
    trainer = module.trainer
    folders = checkpoint_folders(trainer)
    if trainer.ckpt_path is not None:  # restored from a checkpoint
        if trainer.is_global_zero:
            remove_partial(folders)
        return module.run_id
    run_id = trainer.strategy.broadcast(module.run_id, src=0)
    if trainer.is_global_zero and folders:
        partial = interrupted_start(folders, fingerprint(run_defines(module)))
        for f in partial:  # this same run, killed in its first epoch: its files are written again
            f.unlink()
        if partial:
            log.info("Removed %d checkpoint(s) of an interrupted start of this same run (no last.ckpt to "
                     "resume from).", len(partial))
        before = dataset_of(folders)
        moved = move_checkpoints_aside(folders)
        if moved is not None:
            _move_record_with(folders, moved)
            _move_outputs_with(folders, moved)
            now = getattr(getattr(trainer.datamodule, "hparams", None), "dataset", None)
            other = ""
            if isinstance(before, str) and isinstance(now, str) and same_data(before, now) is False:
                other = (f" That run trained on {before}, this one on {now}: files of one name share a run folder, "
                         f"so give each its own with --run_name NAME (or name the files apart).")
            log.warning("%s held checkpoints of an earlier run; moved them to %s so that this run (%s) starts "
                        "clean.%s", ", ".join(map(str, folders)), moved, run_id, other)
    trainer.strategy.barrier("ncf_run_start")
    return run_id


def _move_record_with(folders: list, moved: Path) -> None:
    """The attribution record beside the checkpoint folder (``<run>/attributions``, the callback's default) of
    the run whose checkpoints were just moved to ``moved`` goes with them, when its manifest names that run:
    a fit without the callback would otherwise leave the earlier run's record beside its own checkpoints."""
    common = Path(os.path.commonpath([str(Path(f).resolve()) for f in folders]))
    record = common.parent / "attributions"
    try:
        run = json.loads((record / "manifest.json").read_text()).get("run") or {}
    except (OSError, ValueError, AttributeError):
        return
    if not isinstance(run.get("id"), str) or moved.name.split("-")[0] != folder_label(run["id"]):
        return
    files = [f for f in record.iterdir() if f.is_file()]
    dest = move_aside([record], files, moved.name)
    if not any(record.iterdir()):
        record.rmdir()
    if dest is not None:
        log.info("Moved the earlier run's attribution record %s with its checkpoints, to %s.", record, dest)


def _move_outputs_with(folders: list, moved: Path) -> None:
    """``predict``'s list in the run folder (its default output, written from that run's checkpoints) goes with
    the checkpoints moved to ``moved``: beside the new run's checkpoints it would read as the new run's."""
    common = Path(os.path.commonpath([str(Path(f).resolve()) for f in folders]))
    for name in ("recommendations.csv", "recommendations.parquet"):
        src = common.parent / name
        if src.is_file() and not (moved / name).exists():
            shutil.move(str(src), str(moved / name))
            log.info("Moved the earlier run's %s with its checkpoints, to %s.", name, moved)


def save_run(module, checkpoint: dict) -> None:
    """``on_save_checkpoint``, last: the weights' checksum, the run identity, the global random generators'
    state and, over all of the checkpoint, the checksum of its training state."""
    checkpoint[DIGEST_KEY] = weights_digest(checkpoint["state_dict"])  # checked whenever it is loaded
    defines = run_defines(module)
    checkpoint[RUN_KEY] = {"id": module.run_id, "fingerprint": fingerprint(defines), "defines": defines}
    checkpoint[RNG_KEY] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        checkpoint[RNG_KEY]["cuda"] = torch.cuda.get_rng_state_all()
    trainer = trainer_of(module)
    if trainer is not None and trainer.world_size > 1:  # every rank's own generators (its dropout masks)
        checkpoint[RNG_KEY]["ranks"] = _every_rank_rng(module)
    checkpoint[STATE_KEY] = state_digest(checkpoint)  # last: over everything above; checked on resume


def _every_rank_rng(module) -> list[dict]:
    """Each rank's random generator states, in rank order (a collective: every rank saves a checkpoint, as
    Lightning requires): rank 1's dropout then resumes where rank 1's was, not where rank 0's was."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and module.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(module.device)
    gathered = {k: module.all_gather(v.to(module.device)) for k, v in states.items()}  # [world, n] each
    world = gathered["torch"].shape[0]
    return [{k: v[r].to("cpu", torch.uint8).clone() for k, v in gathered.items()} for r in range(world)]


def restore_run(module, checkpoint: dict) -> Optional[str]:
    """``on_load_checkpoint``, before the weights are loaded: their checksum is checked. When a fit resumes the
    checkpoint, also its run identity, its training state's checksum and that it is this run (the same
    settings); then the global random generators continue where they were (dropout), so a resumed run equals
    an uninterrupted one. Returns the checkpoint's run id (the module's own when it carries none)."""
    check_digest(checkpoint, "the checkpoint")
    run = checkpoint.get(RUN_KEY)
    trainer = trainer_of(module)
    if trainer is not None and trainer.state.fn == "fit":
        path = str(trainer.ckpt_path or "the checkpoint")
        check_identity(run, path)  # first: a checkpoint from before identities has no state checksum either
        check_state_digest(checkpoint, path)
        check_resume(run, run_defines(module), path)
        rng = checkpoint.get(RNG_KEY)
        ranks = rng.get("ranks") if isinstance(rng, dict) else None
        if isinstance(ranks, list) and len(ranks) == trainer.world_size > 1:  # this rank's own, under DDP
            mine = ranks[trainer.global_rank]
            torch.set_rng_state(mine["torch"])
            if "cuda" in mine and torch.cuda.is_available():
                torch.cuda.set_rng_state(mine["cuda"])
        elif rng:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(rng["cuda"])
    return run["id"] if isinstance(run, dict) and isinstance(run.get("id"), str) else module.run_id


def _has_checkpoints(trainer, run_id: str, last_only: bool = False) -> bool:
    """Whether this trainer's checkpoint folders hold a checkpoint of run ``run_id`` (``last_only``: its
    resume point, ``last*.ckpt``)."""
    for folder in checkpoint_folders(trainer):
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if last_only and not name.startswith("last"):
                    continue
                if name.endswith(".ckpt") and (run_of(os.path.join(folder, name)) or {}).get("id") == run_id:
                    return True
    return False


def unfinished(trainer, earlier: dict, fingerprint_now: Optional[str]) -> bool:
    """Whether nothing can continue the run ``earlier`` (its id and fingerprint, e.g. from a record's manifest)
    from this trainer's checkpoint folders, so that its files are what a kill left: it has no checkpoint
    there, or it is an earlier start of this same run (same fingerprint) without its resume point
    (``last.ckpt``)."""
    return not _has_checkpoints(trainer, earlier["id"]) or (
        earlier.get("fingerprint") == fingerprint_now and not _has_checkpoints(trainer, earlier["id"], last_only=True))


# -- moving an earlier run's checkpoints aside ------------------------------------------------------
def move_checkpoints_aside(folders: Iterable[str | os.PathLike]) -> Optional[Path]:
    """Move the checkpoints in ``folders`` (one run's checkpoint folders) aside (:func:`move_aside`), under
    the run id of the first that names one (``last.ckpt`` first); stale temporary files of interrupted
    writes there are removed. Returns where, or None when there was nothing to move."""
    folders = list(dict.fromkeys(Path(f).resolve() for f in folders if f and Path(f).is_dir()))
    remove_partial(folders)
    files = [f for folder in folders for f in sorted(folder.glob("*.ckpt")) if f.is_file()]
    runs = (run_of(f) for f in sorted(files, key=lambda p: p.name != "last.ckpt"))
    run = next((r for r in runs if r is not None), None)
    label = folder_label(run["id"]) if run is not None else "unknown-" + time.strftime("%Y%m%d-%H%M%S")
    return move_aside(folders, files, label)


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


# -- atomic writes ---------------------------------------------------------------------------------------
