"""Training under DDP (2 CPU processes): sparse embedding gradients give one process's update on the union of
the ranks' batches, a killed run resumes exactly, and a short ML-100k run is as accurate as one process's."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ncf import NCFModule
from ncf.module import sparse_embeddings

SCRIPT = Path(__file__).with_name("_ddp_train_script.py")
REPO = Path(__file__).resolve().parents[2]


def _run(out: Path, devices: int, batch: int, optimizer: str, mode: str, expect: int = 0) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([sys.executable, str(SCRIPT), str(out), str(devices), str(batch), optimizer, mode], env=env,
                         timeout=300, capture_output=True, text=True)
    assert run.returncode == expect, f"{devices} {batch} {optimizer} {mode} exited {run.returncode}:\n{run.stderr[-4000:]}"


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """An uninterrupted 3-epoch Adam run on 2 processes, batches of 10 (60 table rows: sparse gradients)."""
    out = tmp_path_factory.mktemp("ddp")
    _run(out, 2, 10, "adam", "straight")
    return out


def _union_update(out: Path, tag: str, optimizer: str) -> dict:
    """The weights after one process takes the same steps, each on the union of the ranks' batches."""
    init = torch.load(out / f"{tag}_init.pt", weights_only=True)
    ranks = [torch.load(out / f"{tag}_batches_{r}.pt", weights_only=True) for r in (0, 1)]
    module = NCFModule("neumf", 20, 40, factor=4, num_layers=2, lr=0.01, optimizer=optimizer)
    module.load_state_dict(init)
    assert not any(m.sparse for m in module.modules() if isinstance(m, torch.nn.Embedding))  # dense, as one process
    opt = module.configure_optimizers()
    for k, (b0, b1) in enumerate(zip(*ranks)):
        assert len(b0[0]) == len(b1[0])  # equal batches: the mean over the union is the mean of the ranks' means
        batch = [torch.cat([x, y]) for x, y in zip(b0, b1)]
        module.training_step(batch, k).backward()
        opt.step()
        opt.zero_grad()
    return {k: v.detach() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_sparse_ddp_update_equals_one_process_on_the_union_of_batches(straight, tmp_path, optimizer):
    out = straight
    if optimizer == "sgd":
        out = tmp_path
        _run(out, 2, 10, "sgd", "steps")
    tag = f"2_10_{optimizer}"
    assert json.loads((out / f"{tag}_sparse.json").read_text()) == [True] * 4
    want = _union_update(out, tag, optimizer)
    got = torch.load(out / f"{tag}_after3.pt", weights_only=True)
    init = torch.load(out / f"{tag}_init.pt", weights_only=True)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)
    moved = [n for n in want if not torch.equal(got[n], init[n])]
    assert len(moved) == len(want)  # every tensor trained (Adam moves every row of a dense gradient's table)


def test_sparse_ddp_resume_equals_an_uninterrupted_run(straight):
    _run(straight, 2, 10, "adam", "kill", expect=3)
    _run(straight, 2, 10, "adam", "resume")
    want = torch.load(straight / "2_10_adam_straight.pt", weights_only=True)
    got = torch.load(straight / "2_10_adam_resume.pt", weights_only=True)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0, msg=name)


def test_sparse_gradients_under_ddp_only_where_they_pay():
    # one process: SGD alone (Adam's moments need every row); several: any optimiser, with gloo
    assert sparse_embeddings("sgd", 165_000, 1024) and not sparse_embeddings("adam", 165_000, 1024)
    assert sparse_embeddings("adam", 165_000, 1024, world=2)
    assert not sparse_embeddings("adam", 165_000, 1024, world=2, sparse_all_reduce=False)  # NCCL: dense
    assert not sparse_embeddings("adam", 2625, 1024, world=2)  # ML-100k's tables: dense
    assert not sparse_embeddings("adam", 165_000, 1024, world=2, clipping=1.0)
