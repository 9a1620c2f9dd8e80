"""Helpers shared by the benchmark scripts (run them from the repository root)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def data_root() -> str:
    """The folder holding ml-100k/: $NCF_DATA_DIR, else ../shared/data beside the repo, else ./data."""
    for cand in (os.environ.get("NCF_DATA_DIR"), str(REPO.parent / "shared" / "data"), str(REPO / "data")):
        if cand and (Path(cand) / "ml-100k" / "u.data").exists():
            return str(Path(cand).resolve())
    return str(REPO / "data")


def emit(result: dict) -> None:
    """Print the one JSON line a benchmark reports."""
    print(json.dumps(result, sort_keys=True))
