"""Child process of ``benchmarks/reliability.py``: runs ``train.py`` and kills itself with SIGKILL in the
middle of the N-th checkpoint or attribution-record write (half the bytes of the temporary file written,
as a power cut or an OOM kill would leave it).

    python benchmarks/_kill_child.py checkpoint:3 -- fit --config trial.yaml
    python benchmarks/_kill_child.py none -- fit --config trial.yaml --ckpt_path last
"""
from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _die_inside(path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, _ = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.write(fd, data[: max(1, len(data) // 2)])
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    spec, rest = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
    kind, _, n = spec.partition(":")
    count = {"n": 0}
    if kind == "checkpoint":
        import ncf.files as run  # the one atomic writer: checkpoints go through it

        real = run.atomic_write_bytes

        def patched(data, path):
            count["n"] += 1
            if count["n"] == int(n):
                _die_inside(path, bytes(data))
            return real(data, path)

        run.atomic_write_bytes = patched
    elif kind == "record":
        import explain.record as record

        real_atomic = record._atomic

        def patched_atomic(path, write):
            count["n"] += 1
            if count["n"] == int(n):
                _die_inside(path, b"x" * 4096)
            return real_atomic(path, write)

        record._atomic = patched_atomic
    elif kind == "count":  # write how many checkpoint and record writes a whole run makes to the file n
        import atexit
        import json

        import explain.record as record
        import ncf.files as run  # the one atomic writer: checkpoints go through it

        real_bytes, real_atomic = run.atomic_write_bytes, record._atomic
        counts = {"checkpoint": 0, "record": 0}

        def counting_bytes(data, path):
            counts["checkpoint"] += 1
            return real_bytes(data, path)

        def counting_atomic(path, write):
            counts["record"] += 1
            return real_atomic(path, write)

        run.atomic_write_bytes, record._atomic = counting_bytes, counting_atomic
        atexit.register(lambda: Path(n).write_text(json.dumps(counts)))
    from ncf.cli import main as cli_main

    cli_main(rest)


if __name__ == "__main__":
    main()
