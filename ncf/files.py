"""Files written so that nothing is lost: atomic writes (a kill leaves the old file or the whole new one, with
the mode a plain write gives) and moving an earlier run's files aside instead of overwriting or deleting them.
Used for checkpoints, attribution records, reports, recommendations and tuner output."""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch

__all__ = ["folder_label", "move_aside", "atomic_write", "atomic_write_text", "atomic_write_bytes", "use_atomic_checkpoints"]


# -- moving an earlier run's files aside ------------------------------------------------------------------
def folder_label(run_id: Optional[str]) -> str:
    """A run id as a folder name: letters and digits only (ids in files are data, not paths)."""
    return "".join(c for c in (run_id or "") if c.isalnum())[:32] or "unknown"


def move_aside(folders: Iterable[str | os.PathLike], files: Iterable[Path], label: str) -> Optional[Path]:
    """Move ``files`` (one run's, directly inside ``folders``) to ``<parent of the folders' common
    folder>/superseded/<label>/``, each under its folder's name (so a run's checkpoints and its record, moved
    one after the other, end up side by side); to ``<label>-2``, ``-3``, ... when a file of the same name is
    there already. Returns where, or None when there was nothing to move.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()).resolve()
    >>> (root / "ckpt").mkdir(); (root / "ckpt" / "best.ckpt").touch()
    >>> move_aside([root / "ckpt"], [root / "ckpt" / "best.ckpt"], "abc").relative_to(root).as_posix()
    'superseded/abc'
    >>> [p.relative_to(root).as_posix() for p in sorted(root.rglob("*.ckpt"))]
    ['superseded/abc/ckpt/best.ckpt']
    """
    folders = list(dict.fromkeys(Path(f).resolve() for f in folders if f and Path(f).is_dir()))
    files = [Path(f) for f in files]
    if not files:
        return None
    common = Path(os.path.commonpath([str(f) for f in folders]))
    rel = [f.resolve().parent.relative_to(common.parent) / f.name for f in files]
    base = common.parent / "superseded" / label
    dest, n = base, 1
    while any((dest / r).exists() for r in rel):
        n += 1
        dest = base.with_name(f"{label}-{n}")
    for f, r in zip(files, rel):
        (dest / r).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(f), str(dest / r))
    return dest


def _plain_write_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` leaves: an existing file keeps its own, a new one gets
    ``0o666`` less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Write a file so that ``path`` is either the old file or the whole new one: ``write(tmp)`` fills a
    hidden temporary file beside it (``.<name>.<random>.tmp``, never in the system temp folder), which is
    flushed to disk and renamed over ``path``. The file gets the mode a plain write would give it (the
    temporary file's own mode is owner-only)."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, _plain_write_mode(path))
        finally:
            os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` of ``text`` (records, tuner outputs, explain.py's JSON)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """:func:`atomic_write` of ``data`` (the checkpoint writer's)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    atomic_write(path, write)


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
