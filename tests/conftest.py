"""Shared fixtures: tiny interaction files made here, and the real MovieLens-100k when NCF_DATA_DIR has it."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def ml100k_root() -> Path | None:
    for cand in (os.environ.get("NCF_DATA_DIR"), str(SHARED)):
        if cand and (Path(cand) / "ml-100k" / "u.data").exists():
            return Path(cand).resolve()
    return None


@pytest.fixture(scope="session")
def ml_root() -> Path:
    root = ml100k_root()
    if root is None:
        pytest.skip("MovieLens-100k not found: set NCF_DATA_DIR to the folder that holds ml-100k/")
    return root


def write_tiny(path: Path, n_users: int = 12, n_items: int = 30, per_user: int = 8, seed: int = 0) -> Path:
    """A CSV of random interactions with string ids and timestamps: every user has ``per_user`` items."""
    rng = np.random.default_rng(seed)
    lines = ["user,item,rating,timestamp"]
    for u in range(n_users):
        items = rng.choice(n_items, size=per_user, replace=False)
        for k, i in enumerate(items):
            lines.append(f"u{u},m{i},{rng.integers(1, 6)},{1000 + 10 * k + int(rng.integers(0, 3))}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def tiny_csv(tmp_path) -> Path:
    return write_tiny(tmp_path / "tiny.csv")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield
