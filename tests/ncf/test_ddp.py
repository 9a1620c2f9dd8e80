"""Training under DDP (2 CPU processes): sparse embedding gradients give one process's update on the union of
the ranks' batches, a killed run resumes exactly, and a short ML-100k run is as accurate as one process's."""
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch


from ncf.module import sparse_embeddings
from tests.helpers import module as make_module

pytestmark = pytest.mark.slow  # trains through the CLI or several processes: pytest -m "not slow" skips it

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
    module = make_module("neumf", 20, 40, factor=4, num_layers=2, lr=0.01, optimizer=optimizer)
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
    assert not sparse_embeddings("adam", 165_000, 1024, world=2, gloo=False)  # NCCL: dense
    assert not sparse_embeddings("adam", 2625, 1024, world=2)  # ML-100k's tables: dense
    assert not sparse_embeddings("adam", 165_000, 1024, world=2, clipping=1.0)


def _exchange_rank(rank: int, port: int, out: str) -> None:
    """Rank ``rank`` of 2: a table and a layer under DDP with the exchange hook (capacity 4 rows) beside
    the same under DDP's own dense all-reduce; rank 1 looks up 7 rows in the first step (more than fit)."""
    import torch.distributed as dist
    from torch import nn

    from ncf.distributed import SparseExchange, exchange_gradients

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=120))
    torch.manual_seed(0)
    nets = {}
    for sparse in (True, False):
        torch.manual_seed(0)
        nets[sparse] = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Embedding(50, 3, sparse=sparse),
                                                                         nn.Linear(3, 1)))
    state = SparseExchange(capacity=4)
    nets[True].register_comm_hook(state, exchange_gradients)
    res = {"capacity": [], "max_diff": []}
    for step, ids in enumerate([[[1, 2, 2], [2, 3, 4, 5, 6, 7, 49]], [[0, 9, 9, 1], [1, 1]]]):
        mine = torch.tensor(ids[rank])
        grads = {}
        for sparse, ddp in nets.items():
            ddp.zero_grad()
            ddp(mine).sum().mul(step + 1).backward()
            grads[sparse] = [p.grad.to_dense() if p.grad.is_sparse else p.grad for p in ddp.parameters()]
        res["capacity"].append(state.capacity)
        res.setdefault("others_rows", bool(grads[True][0][49].abs().sum() > 0))  # rank 1's row, on rank 0 too
        res["max_diff"].append(max(float((a - b).abs().max()) for a, b in zip(grads[True], grads[False])))
    res["sparse_grad"] = nets[True].module[0].weight.grad.is_sparse
    if rank == 0:
        Path(out).write_text(json.dumps(res))
    # DDP's reducers hold the process group: freed after it is destroyed (or while the other rank has gone),
    # their teardown can wait for ever. Free them first, and leave together.
    del nets, ddp
    dist.barrier()
    dist.destroy_process_group()


def test_exchange_gives_ddp_average_with_uneven_and_overflowing_rows(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "exchange.json"
    mp.spawn(_exchange_rank, args=(29300 + os.getpid() % 600, str(out)), nprocs=2)
    res = json.loads(out.read_text())
    assert res["sparse_grad"] and res["others_rows"]  # the table's gradient stays sparse (SGD takes it so; Adam's is made dense)
    assert res["max_diff"][0] < 1e-6 and res["max_diff"][1] < 1e-6, res  # DDP's dense average, every parameter
    assert res["capacity"] == [7, 7]  # grown to the most rows a rank sent, the same on every rank


def test_short_ml100k_run_under_sparse_ddp_is_as_accurate_as_one_process(ml_root, tmp_path, monkeypatch):
    """Batches of 512 against ML-100k's 2,625 table rows: 2 processes take the sparse exchange, one process
    dense Adam; after the same epochs both rank the held-out items alike (random ranking: HR@10 0.10)."""
    monkeypatch.setenv("NCF_DATA_DIR", str(ml_root))
    for devices in (1, 2):
        _run(tmp_path, devices, 512, "adam", "ml-100k")
    one, two = (json.loads((tmp_path / f"ml100k_{d}.json").read_text()) for d in (1, 2))
    assert not one["sparse"] and two["sparse"]
    assert one["test_hr10"] > 0.5 and two["test_hr10"] > 0.5, (one, two)
    assert abs(one["test_hr10"] - two["test_hr10"]) < 0.04 and abs(one["test_ndcg10"] - two["test_ndcg10"]) < 0.03, (one, two)


def test_more_processes_than_users_to_evaluate_is_one_clear_error():
    from ncf.datasets import DataError
    from ncf.loaders import EvalLoader

    users, cands = torch.tensor([0, 1]), torch.tensor([[3, 4], [5, 6]])
    with pytest.raises(DataError, match=r"3 processes need at least as many users to evaluate; this data has 2: "
                                        r"use --trainer.devices 2 or fewer"):
        EvalLoader(users, cands, rank=2, world_size=3)
    assert len(EvalLoader(users, cands, rank=1, world_size=2)) == 1  # as many as users: each rank has one
