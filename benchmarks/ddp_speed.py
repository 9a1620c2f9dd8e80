"""DDP throughput: training samples per second with 1 and 2 CPU processes (4, oversubscribed, for correctness).

For each size (MovieLens-100k, 2M and 20M synthetic interactions with :mod:`ncf.synthetic`'s ML-like shape,
written once as CSV under ``--out``) and each number of processes, a fresh run trains ``configs/neumf.yaml``'s
model with its optimiser and batch (Adam, 1024 per process) through Lightning for ``--batches`` batches per
process (no validation, no checkpoints), as ``train.py fit --trainer.strategy ddp --trainer.devices N
--trainer.accelerator cpu`` would: one torch thread per process, Lightning starting the other processes.
1- and 2-process runs alternate ``--repeats`` times, so that drift in the machine's speed hits both.

* ``samples_per_s_N``: training samples per second of N processes (N x batch x batches over the wall time
  of the batches after the first ``--warmup``; every rank runs as many), the median over the repeats;
  ``speedup_2``: the median over the repeats of each 2-process run's rate over the 1-process run's just
  before it (a pair shares the machine's drift). The 4-process run on 2 cores is for correctness
  only (``ok_4``: every rank ran its batches with a finite loss, and the ranks' shares make up the epoch);
  its rate says nothing about 4 cores.
* ``ceiling_2``: two independent one-process runs started together (no communication), their summed rate
  over the 1-process run's of the same repeat, the median over the repeats: the most that 2 processes can
  get from this machine (memory bandwidth and caches are shared), against which ``speedup_2`` is read.
* ``bytes_per_step``: gradient bytes each process hands to the collectives per step (2 processes),
  against ``dense_bytes_per_step``: every parameter's gradient, what a dense all-reduce takes
  (``table_bytes`` of it the embedding tables).
* ``breakdown_ms_N``: median ms per batch on rank 0 from one more run per N with the communication
  waited for and timed (so that it is not hidden in the backward): ``data`` (the loader's next batch and
  the loop), ``forward``, ``backward`` (without communication), ``comm`` (the collectives, waiting for the
  other rank included), ``optimizer`` (densifying Adam's table gradients, the update, zeroing).
* ``cpu_ms_per_batch_N``: CPU time of one process (all its threads) per batch, and ``cpu_bound_speedup_2``
  = 2 x ``cpu_ms_per_batch_1 / cpu_ms_per_batch_2``: the speedup two idle cores would give if only CPU
  work counted (waiting for the other rank left out); steadier than wall time on a shared machine.
* ``startup_s_N``: from launching the command to the first batch (imports, the other process, data load
  and split; at 20M the data dominates).
* ``variants``: other ways to run 2 processes (``--variants``, see ``VARIANTS``), each run plainly and once
  profiled. Those that change one process's run too (larger batches, accumulation) alternate with one
  process running the same variant, ``--repeats`` times: ``speedup_2`` is against that, pair by pair, and
  ``vs_default_1`` against the default's one process, and (unless ``--no-ceiling``) ``ceiling_2``: two
  independent one-process runs of the variant; the others run once, against the default's.
* The last line, the communication model: on this machine's gloo, 2 processes, the time of an all-reduce
  of 64 KB .. 128 MB (DDP's dense gradients) and of an all-gather of 64 KB .. 16 MB per process (the
  sparse exchange), each fitted as ``latency + bytes / bandwidth``.

One JSON line per size, then the model's; ``loadavg`` is ``os.getloadavg()`` before and after each.

    python benchmarks/ddp_speed.py --sizes ml-100k 2M --repeats 3 --variants dense sparse_per_table sparse accumulate2 batch2x
    python benchmarks/ddp_speed.py --sizes 20M --repeats 2 --variants dense     # 20M: ~2 x 5 GB of memory
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, data_root, emit, timing_setup

PARTS = ("data", "forward", "backward", "comm", "optimizer")


# -- child: one run (one process per rank; Lightning starts the others with this same command) -----------
class _Comm:
    """State of the timing communication hook: seconds spent and bytes handed over."""

    def __init__(self):
        self.seconds, self.bytes = 0.0, 0


def _timed_all_reduce(state: _Comm, bucket):
    """DDP's own all-reduce of one bucket (dense, or one table's sparse gradient), waited for and timed."""
    import torch
    import torch.distributed as dist

    buf = bucket.buffer()
    if buf.is_sparse:  # its rows and their indices
        state.bytes += buf._nnz() * (buf._values()[0].numel() * buf.element_size() + 8 * buf.sparse_dim())
    else:
        state.bytes += buf.numel() * buf.element_size()
    t = time.perf_counter()
    fut = dist.all_reduce(buf, async_op=True).get_future()
    fut.wait()
    state.seconds += time.perf_counter() - t
    world = dist.get_world_size()
    done = torch.futures.Future()
    done.set_result(fut.value()[0].div_(world))
    return done


VARIANTS = {
    "default": "the module's choice: sparse table gradients in one all-gather per step where the tables have "
               "over 4 rows per batch sample, else DDP's own all-reduce of dense gradients",
    "dense": "DDP's own all-reduce of whole tables' dense gradients, one per bucket",
    "dense_gather": "dense table gradients in the one all-gather per step (the exchange's hook)",
    "sparse_per_table": "sparse table gradients, whatever the tables' size, through DDP's own all-reduce "
                        "(one per table; gloo: three all-gathers each)",
    "sparse": "sparse table gradients in one all-gather per step, whatever the tables' size",
    "accumulate2": "the default, synchronising every second batch (--trainer.accumulate_grad_batches 2)",
    "batch2x": "the default with batches twice as large and the learning rate doubled",
    "batch4x": "the default with batches four times as large and the learning rate four times as high",
    "batch8x": "the default with batches eight times as large and the learning rate eight times as high",
    "batch16x": "the default with batches 16 times as large and the learning rate 16 times as high",
    "batch16x_bf16": "batch16x with the gradients all-reduced in bfloat16 (torch's bf16_compress_hook)",
    "batch16x_view": "batch16x with DDP's gradient_as_bucket_view and static_graph (fewer copies per step)",
    "delayed": "dense tables, each step's all-reduce left running while the next batch computes: a step applies "
               "the previous step's averaged gradients (none at the first), so no process waits for the other",
    "batch16x_delayed": "batch16x with the all-reduce delayed by one step, as in delayed",
    "pinned": "the default with each process and its threads (gloo's included) pinned to one core of its own "
              "(rank 0 to the first, rank 1 to the second; one process to the first)",
    "batch16x_pinned": "batch16x with each process pinned to a core of its own, as in pinned",
    "localsgd4": "local SGD: dense tables, no gradient exchange; the processes average their parameters "
                 "every 4th step (torch's post-local-SGD hook and PeriodicModelAverager)",
    "localsgd8": "local SGD as localsgd4, averaging every 8th step",
    "sgd": "plain SGD at the config's learning rate: one process takes sparse table gradients too, so in both "
           "the update touches only the rows of the batch and no step costs whole tables",
}
# variants that change what one process does too: measured with 1 and with 2 processes, in pairs
ONE_PROCESS_VARIANTS = ("accumulate2", "batch2x", "batch4x", "batch8x", "batch16x", "batch16x_bf16", "batch16x_view",
                        "batch16x_delayed", "sgd", "pinned", "batch16x_pinned")


def _strategy(variant: str):
    """Lightning's DDP, with fewer gradient copies per step for the ``_view`` variants."""
    if not variant.endswith("_view"):
        return "ddp"
    from pytorch_lightning.strategies import DDPStrategy

    return DDPStrategy(gradient_as_bucket_view=True, static_graph=True)


def _bf16(state: _Comm, bucket):
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import bf16_compress_hook

    return bf16_compress_hook(None, bucket)


def _timed_bf16(state: _Comm, bucket):
    """torch's bfloat16 all-reduce of one bucket, waited for and timed."""
    state.bytes += bucket.buffer().numel() * 2
    t = time.perf_counter()
    fut = _bf16(state, bucket)
    fut.wait()
    state.seconds += time.perf_counter() - t
    return fut


class _Delay:
    """State of :func:`_delayed`: each bucket's all-reduce still running, with its buffer."""

    def __init__(self, comm: _Comm | None):
        self.running: dict = {}
        self.comm = comm


def _delayed(state: _Delay, bucket):
    """Starts this step's all-reduce of the bucket and hands back the previous step's, waited for (timed when
    profiled): one step stale, so a process that arrives first computes on instead of waiting."""
    import torch
    import torch.distributed as dist

    cur = bucket.buffer().clone()  # DDP reuses the bucket's buffer next step
    work = dist.all_reduce(cur, async_op=True)
    prev = state.running.get(bucket.index())
    state.running[bucket.index()] = (work, cur)
    done = torch.futures.Future()
    if prev is None:  # the first step has nothing exchanged yet
        done.set_result(torch.zeros_like(cur))
        return done
    t = time.perf_counter()
    prev[0].wait()
    if state.comm is not None:
        state.comm.seconds += time.perf_counter() - t
        state.comm.bytes += cur.numel() * cur.element_size()
    done.set_result(prev[1].div_(dist.get_world_size()))
    return done


def _pin(rank: int) -> None:
    """Every thread of this process (gloo's too) on core ``rank`` of those this process may use (shifted by
    ``DDP_SPEED_CORE``, which gives each of two independent one-process runs a core of its own)."""
    cores = sorted(os.sched_getaffinity(0))
    core = {cores[(rank + int(os.environ.get("DDP_SPEED_CORE", "0"))) % len(cores)]}
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), core)
        except OSError:  # a thread that ended meanwhile
            pass


def _local_sgd_class():
    import pytorch_lightning as pl

    class LocalSGD(pl.Callback):
        """Each process steps on its own gradients (post-local-SGD hook with no gradient all-reduce after the
        first step); every ``period`` steps the processes average their parameters."""

        def __init__(self, period: int, comm=None):
            self.period, self.averager, self.comm = period, None, comm

        def on_train_start(self, trainer, module):
            if trainer.world_size < 2:
                return
            from torch.distributed.algorithms.ddp_comm_hooks import post_localSGD_hook as local
            from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager

            state = local.PostLocalSGDState(process_group=None, subgroup=None, start_localSGD_iter=1,
                                            post_local_gradient_allreduce=False)
            trainer.strategy.model.register_comm_hook(state, local.post_localSGD_hook)
            self.averager = PeriodicModelAverager(period=self.period, warmup_steps=0)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if self.averager is None:
                return
            t, averaging = time.perf_counter(), self.averager.step % self.period == 0
            self.averager.average_parameters(module.parameters())
            if self.comm is not None and averaging:  # the parameters' all-reduce, as the comm part of the step
                self.comm.seconds += time.perf_counter() - t
                self.comm.bytes += sum(p.numel() * p.element_size() for p in module.parameters())

    return LocalSGD


def _LocalSGD(period: int, comm=None):
    return _local_sgd_class()(period, comm)


def _child(dataset: str, world: int, out: str, batches: int, warmup: int, config: str, profile: bool,
           launched: float, variant: str) -> None:
    import math

    import pytorch_lightning as pl
    import torch

    import ncf.distributed
    import ncf.module
    from ncf import NCFDataModule, NCFModule

    cfg = timing_setup(config, 1)
    data = {k: v for k, v in cfg["data"].items() if k != "dataset"}
    model = dict(cfg["model"])
    accumulate = 2 if variant == "accumulate2" else 1
    if variant in ("dense", "dense_gather") or variant.endswith("delayed"):
        ncf.module.SPARSE_ROWS_PER_SAMPLE = float("inf")
    if variant == "dense_gather":  # the exchange's hook on dense gradients too
        NCFModule.on_train_start = lambda self: self.trainer.strategy.model.register_comm_hook(
            ncf.distributed.SparseExchange(self.trainer.datamodule.hparams.batch_size),
            ncf.distributed.exchange_gradients)
    elif variant == "sparse":
        ncf.module.SPARSE_ROWS_PER_SAMPLE = 0
    elif variant == "sparse_per_table":
        ncf.module.SPARSE_ROWS_PER_SAMPLE = 0
        NCFModule.on_train_start = lambda self: None  # no exchange hook: DDP's own sparse all-reduce
    elif variant == "sgd":  # sparse table gradients in one process too (ncf.module.sparse_embeddings)
        model["optimizer"] = "sgd"
    elif variant.startswith("batch"):
        times = int(variant[len("batch"):].split("_")[0][:-1])
        data["batch_size"] *= times
        model["lr"] = model.get("lr", 1e-3) * times
    comm = _Comm()
    callbacks = []
    if variant.startswith("localsgd"):
        ncf.module.SPARSE_ROWS_PER_SAMPLE = float("inf")  # dense tables: no gradient travels anyway
        callbacks.append(_LocalSGD(int(variant[len("localsgd"):]), comm if profile else None))
    marks: dict = {part: [] for part in PARTS}
    state: dict = {"losses": [], "n": 0, "end": None}

    class Clock(pl.Callback):
        def on_train_start(self, trainer, module):
            if "pinned" in variant:
                _pin(trainer.global_rank)
            sparse = any(getattr(m, "sparse", False) for m in module.modules())
            exchange = (sparse and variant != "sparse_per_table") or variant == "dense_gather"
            if profile and trainer.world_size > 1 and exchange:
                gather = ncf.distributed._gather  # the module's exchange: time its all-gathers

                def timed_gather(buf, exchange):
                    t = time.perf_counter()
                    got = gather(buf, exchange)
                    comm.seconds += time.perf_counter() - t
                    comm.bytes += buf.numel() * buf.element_size()
                    return got

                ncf.distributed._gather = timed_gather
            elif variant.endswith("delayed") and trainer.world_size > 1:
                trainer.strategy.model.register_comm_hook(_Delay(comm if profile else None), _delayed)
            elif variant.endswith("_bf16") and trainer.world_size > 1:
                trainer.strategy.model.register_comm_hook(comm, _timed_bf16 if profile else _bf16)
            elif profile and trainer.world_size > 1 and not variant.startswith("localsgd"):  # DDP's all-reduce
                trainer.strategy.model.register_comm_hook(comm, _timed_all_reduce)
            state["first"] = time.time()

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            now = time.perf_counter()
            if state["n"] == warmup:
                state["t0"], state["cpu0"], state["comm0"] = now, time.process_time(), comm.bytes
            if state["end"] is not None and state["n"] > warmup:
                marks["data"].append(now - state["end"])
            state["start"], state["comm_at_start"] = now, comm.seconds

        def on_before_backward(self, trainer, module, loss):
            state["fwd"] = time.perf_counter()
            state["losses"].append(loss.detach())

        def on_after_backward(self, trainer, module):
            state["bwd"] = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            now = state["end"] = state["t1"] = time.perf_counter()
            state["cpu1"] = time.process_time()
            if state["n"] >= warmup:
                c = comm.seconds - state["comm_at_start"]
                marks["forward"].append(state["fwd"] - state["start"])
                marks["backward"].append(state["bwd"] - state["fwd"] - c)
                marks["comm"].append(c)
                marks["optimizer"].append(now - state["bwd"])
            state["n"] += 1

    pl.seed_everything(0, verbose=False)
    dm = NCFDataModule(dataset, root=data_root(), **data)
    module = NCFModule(n_users=dm.num_users, n_items=dm.num_items, **model)
    trainer = pl.Trainer(max_epochs=-1, max_steps=batches // accumulate, limit_val_batches=0, num_sanity_val_steps=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=world,
                         strategy=_strategy(variant) if world > 1 else "auto", accumulate_grad_batches=accumulate,
                         callbacks=[*callbacks, Clock()])
    trainer.fit(module, dm)
    timed = state["n"] - warmup
    wall = state["t1"] - state["t0"]
    loader = trainer.train_dataloader
    n = len(dm.interactions)
    params = list(module.parameters())
    tables = [m.weight for m in module.modules() if isinstance(m, torch.nn.Embedding)]
    syncs = timed / accumulate
    result = {
        "rank": trainer.global_rank, "world": world, "dataset": dataset, "interactions": n, "variant": variant,
        "users": dm.num_users, "items": dm.num_items, "batch_size": dm.hparams.batch_size, "batches": state["n"],
        "timed_batches": timed, "wall_s": round(wall, 3),
        "cpu_ms_per_batch": round(1000 * (state["cpu1"] - state["cpu0"]) / timed, 3),
        "samples_per_s": round(world * loader.batch_size * timed / wall),
        "startup_s": round(state["first"] - launched, 1), "profile": profile,
        "loss_finite": bool(all(math.isfinite(float(x)) for x in state["losses"])),
        "rank_samples_per_epoch": loader.samples_per_epoch, "total_positives": loader.total,
        "sparse_embedding_grads": any(getattr(m, "sparse", False) for m in module.modules()),
        "table_bytes": sum(t.numel() * t.element_size() for t in tables),
        "dense_bytes_per_step": sum(p.numel() * p.element_size() for p in params),
        "bytes_per_step": round((comm.bytes - state["comm0"]) / syncs) if profile and world > 1 else 0,
        **{f"{part}_ms": round(1000 * statistics.median(v), 3) if v else 0.0 for part, v in marks.items()},
    }
    Path(out, f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


# -- the communication model ------------------------------------------------------------------------------
def _comm_model_rank(rank: int, world: int, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)

    def timed(fn, repeats=15):
        ts = []
        for _ in range(repeats):
            dist.barrier()
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    reduce, gather = [], []
    for nbytes in (2 ** 16, 2 ** 20, 2 ** 22, 2 ** 24, 2 ** 26, 2 ** 27):
        buf = torch.randn(nbytes // 4)
        reduce.append({"bytes": nbytes, "ms": round(1000 * timed(lambda: dist.all_reduce(buf)), 3)})
    for nbytes in (2 ** 16, 2 ** 18, 2 ** 20, 2 ** 22, 2 ** 24):  # the sparse exchange: one all-gather of bytes
        buf = torch.zeros(nbytes, dtype=torch.uint8)
        got = [torch.empty_like(buf) for _ in range(world)]
        gather.append({"bytes": nbytes, "ms": round(1000 * timed(lambda: dist.all_gather(got, buf)), 3)})
    if rank == 0:
        Path(out).write_text(json.dumps({"all_reduce": reduce, "all_gather": gather}))
    dist.destroy_process_group()


def _fit(points: list[dict]) -> dict:
    """Least-squares ``ms = latency + bytes / bandwidth``."""
    import numpy as np

    x = np.array([p["bytes"] for p in points], dtype=float)
    y = np.array([p["ms"] for p in points], dtype=float) / 1000
    slope, intercept = np.polyfit(x, y, 1)
    return {"latency_ms": round(1000 * max(float(intercept), 0.0), 3),
            "gb_per_s": round(1 / float(slope) / 1e9, 3) if slope > 0 else None}


def comm_model(folder: Path) -> dict:
    import torch.multiprocessing as mp

    out = folder / "comm_model.json"
    mp.spawn(_comm_model_rank, args=(2, 29400 + os.getpid() % 500, str(out)), nprocs=2)
    res = json.loads(out.read_text())
    return {"comm_model": "gloo, 2 processes, bytes per process", "all_reduce": res["all_reduce"],
            "all_gather": res["all_gather"], "all_reduce_fit": _fit(res["all_reduce"]),
            "all_gather_fit": _fit(res["all_gather"]), "loadavg": os.getloadavg()}


# -- parent -------------------------------------------------------------------------------------------------
def _dataset(size: str, folder: Path) -> str:
    """``ml-100k``, or the path of a synthetic CSV of that many interactions, written once."""
    if size == "ml-100k":
        return size
    from ncf.synthetic import parse_spec

    n = parse_spec("synthetic:" + size)[0]
    csv = folder / f"synthetic-{n}.csv"
    if not csv.exists():
        subprocess.run([sys.executable, "-m", "ncf.synthetic", "--interactions", str(n), "--out", str(csv)],
                       check=True, cwd=REPO)
    return str(csv)


def _run(dataset: str, world: int, folder: Path, a, profile: bool = False, variant: str = "default") -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("rank*.json"):
        old.unlink()
    env = {**os.environ, "NCF_DATA_DIR": data_root(), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", dataset, str(world), str(folder),
           "--batches", str(a.batches), "--warmup", str(a.warmup), "--config", a.config, "--variant", variant,
           "--launched", repr(time.time())] + (["--profile"] if profile else [])
    run = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{dataset} with {world} processes ({variant}) failed:\n{run.stderr[-3000:]}")
    ranks = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(world)]
    print(f"{Path(dataset).name} x{world} {variant}{' profiled' if profile else ''}: {ranks[0]['samples_per_s']} "
          f"samples/s (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    return ranks


def _two_alone(dataset: str, folder: Path, a, variant: str = "default") -> float:
    """Samples per second of two independent one-process runs started together, summed: what two processes
    that never talk to each other get from this machine (its ceiling for 2 processes)."""
    folders = [folder / "a", folder / "b"]
    env = {**os.environ, "NCF_DATA_DIR": data_root(), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    procs = []
    for core, f in enumerate(folders):
        f.mkdir(parents=True, exist_ok=True)
        for old in f.glob("rank*.json"):
            old.unlink()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", dataset, "1", str(f), "--batches",
               str(a.batches), "--warmup", str(a.warmup), "--config", a.config, "--variant", variant,
               "--launched", repr(time.time())]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env={**env, "DDP_SPEED_CORE": str(core)},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{dataset}: an independent one-process run failed:\n{err[-3000:]}")
    rates = [json.loads((f / "rank0.json").read_text())["samples_per_s"] for f in folders]
    print(f"{Path(dataset).name} 2 x1 {variant} at once: {sum(rates)} samples/s (load {os.getloadavg()[0]:.1f})",
          file=sys.stderr, flush=True)
    return sum(rates)


def _breakdown(r: dict) -> dict:
    return {part: r[f"{part}_ms"] for part in PARTS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["ml-100k", "2M", "20M"])
    p.add_argument("--config", default="configs/neumf.yaml")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batches", type=int, default=300, help="training batches per process")
    p.add_argument("--warmup", type=int, default=20, help="first batches left out of the timing")
    p.add_argument("--variants", nargs="*", default=[], choices=sorted(set(VARIANTS) - {"default"}),
                   help="other ways to run 2 processes, measured once each beside the default")
    p.add_argument("--oversubscribed", type=int, default=4, help="processes of the correctness run (0: none)")
    p.add_argument("--oversubscribed-sizes", nargs="*", default=["ml-100k", "2M"],
                   help="sizes that get it (4 processes at 20M would need ~4 x 5 GB)")
    p.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                   help="skip the two independent one-process runs (the machine's ceiling)")
    p.add_argument("--out", default="bench_out/ddp_speed")
    p.add_argument("--child", nargs=3, metavar=("DATASET", "WORLD", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="default", help=argparse.SUPPRESS)
    p.add_argument("--launched", type=float, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.batches <= a.warmup + 1:
        p.error("--batches must exceed --warmup by at least 2")
    if a.child:
        _child(a.child[0], int(a.child[1]), a.child[2], a.batches, a.warmup, a.config, a.profile,
               a.launched or time.time(), a.variant)
        return
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for size in a.sizes:
        load_before = os.getloadavg()
        dataset = _dataset(size, out)
        runs: dict[int, list[dict]] = {1: [], 2: []}
        alone: list[float] = []
        for k in range(a.repeats):  # alternating, so that drift in the machine's speed hits both
            for world in (1, 2):
                runs[world].append(_run(dataset, world, out / f"{size}_{world}_{k}", a)[0])
            if a.ceiling:
                alone.append(_two_alone(dataset, out / f"{size}_alone_{k}", a))
        prof = {w: _run(dataset, w, out / f"{size}_{w}_profile", a, profile=True)[0] for w in (1, 2)}
        rate = {w: statistics.median(r["samples_per_s"] for r in runs[w]) for w in (1, 2)}
        variants = {}
        for v in a.variants:
            pairs, v_alone = [], []
            for k in range(a.repeats if v in ONE_PROCESS_VARIANTS else 1):
                one = _run(dataset, 1, out / f"{size}_1_{v}_{k}", a, variant=v)[0] if v in ONE_PROCESS_VARIANTS else None
                pairs.append((one, _run(dataset, 2, out / f"{size}_2_{v}_{k}", a, variant=v)[0]))
                if one is not None and a.ceiling:  # two independent runs of the variant: its own ceiling
                    v_alone.append(_two_alone(dataset, out / f"{size}_alone_{v}_{k}", a, v) / one["samples_per_s"])
            profiled = _run(dataset, 2, out / f"{size}_2_{v}_profile", a, profile=True, variant=v)[0]
            two = [b for _, b in pairs]
            entry = {"samples_per_s_2": round(statistics.median(b["samples_per_s"] for b in two)),
                     "cpu_ms_per_batch_2": round(statistics.median(b["cpu_ms_per_batch"] for b in two), 2),
                     # against the default's one process (the same batches only where the variant keeps them)
                     "vs_default_1": round(statistics.median(b["samples_per_s"] for b in two) / rate[1], 3),
                     "bytes_per_step": profiled["bytes_per_step"], "breakdown_ms_2": _breakdown(profiled),
                     "what": VARIANTS[v]}
            if v in ONE_PROCESS_VARIANTS:  # against one process running the variant itself, pair by pair
                entry["samples_per_s_1"] = round(statistics.median(o["samples_per_s"] for o, _ in pairs))
                entry["speedup_2"] = round(statistics.median(b["samples_per_s"] / o["samples_per_s"] for o, b in pairs), 3)
                entry["ceiling_2"] = round(statistics.median(v_alone), 3) if v_alone else None
            else:
                entry["speedup_2"] = entry["vs_default_1"]
            variants[v] = entry
        over = []
        if a.oversubscribed and size in a.oversubscribed_sizes:
            over = _run(dataset, a.oversubscribed, out / f"{size}_{a.oversubscribed}", a)
        first = runs[1][0]
        emit({
            "size": size, "interactions": first["interactions"], "users": first["users"], "items": first["items"],
            "config": a.config, "batch_size": first["batch_size"], "batches": a.batches, "warmup": a.warmup,
            "samples_per_s_1": round(rate[1]), "samples_per_s_2": round(rate[2]),
            # each 2-process run against the 1-process run just before it (drift hits a pair alike)
            "speedup_2": round(statistics.median(r2["samples_per_s"] / r1["samples_per_s"]
                                                 for r1, r2 in zip(runs[1], runs[2])), 3),
            "samples_per_s_1_each": [r["samples_per_s"] for r in runs[1]],
            # two one-process runs at once, no communication: the most 2 processes can get here
            "samples_per_s_two_alone_each": [round(x) for x in alone],
            "ceiling_2": round(statistics.median(x / r1["samples_per_s"] for r1, x in zip(runs[1], alone)), 3)
            if alone else None,
            # CPU time per batch of one process (all its threads): waiting excluded, so steadier under load
            "cpu_ms_per_batch_1": round(statistics.median(r["cpu_ms_per_batch"] for r in runs[1]), 2),
            "cpu_ms_per_batch_2": round(statistics.median(r["cpu_ms_per_batch"] for r in runs[2]), 2),
            "cpu_bound_speedup_2": round(2 * statistics.median(r["cpu_ms_per_batch"] for r in runs[1])
                                         / statistics.median(r["cpu_ms_per_batch"] for r in runs[2]), 3),
            "samples_per_s_2_each": [r["samples_per_s"] for r in runs[2]],
            "bytes_per_step": prof[2]["bytes_per_step"], "dense_bytes_per_step": first["dense_bytes_per_step"],
            "table_bytes": first["table_bytes"], "sparse_embedding_grads_2": runs[2][0]["sparse_embedding_grads"],
            "breakdown_ms_1": _breakdown(prof[1]), "breakdown_ms_2": _breakdown(prof[2]),
            "samples_per_s_2_profiled": prof[2]["samples_per_s"],
            "startup_s_1": [r["startup_s"] for r in runs[1]], "startup_s_2": [r["startup_s"] for r in runs[2]],
            "rank_samples_per_epoch_1": first["rank_samples_per_epoch"],
            "rank_samples_per_epoch_2": runs[2][0]["rank_samples_per_epoch"],
            "variants": variants,
            f"samples_per_s_{a.oversubscribed}_oversubscribed": over[0]["samples_per_s"] if over else None,
            # every rank ran its batches with a finite loss, and the ranks' shares make up the epoch
            f"ok_{a.oversubscribed}": (all(r["batches"] == a.batches and r["loss_finite"] for r in over)
                                       and sum(r["rank_samples_per_epoch"] for r in over)
                                       == first["rank_samples_per_epoch"]) if over else None,
            "threads_per_process": 1, "loadavg": [load_before, os.getloadavg()],
        })
        sys.stdout.flush()
    emit(comm_model(out))


if __name__ == "__main__":
    main()
