"""One collective per DDP step for sparse embedding gradients.

DDP all-reduces a sparse gradient per parameter, and gloo does each as three all-gathers (sizes, indices,
values) and a sum: NeuMF's four tables cost twelve round trips a step, each a wait for the other
processes. :func:`exchange_gradients` is a DDP communication hook that instead packs every bucket of a
step (the tables' sparse rows with their indices, the dense parameters' flat gradients) into one byte
buffer and all-gathers it once: a sparse table's gradient becomes the rows of every rank (uncoalesced:
the sum is taken where it is used), a dense bucket the sum over ranks in rank order, both divided by the
number of processes as DDP's own all-reduce does. Every rank adds the same numbers in the same order, so
the ranks stay identical, and the result is DDP's average of the ranks' gradients up to float rounding.

Each rank's share of the buffer has room for ``capacity`` rows per table (a batch's: one lookup per
sample); a rank with more (gradient accumulation) sends the rest in a second all-gather, and the room
grows to what was needed, the same on every rank (each reads every rank's row counts).

    >>> import torch
    >>> _pack([torch.tensor([1, 2]), torch.tensor([0.5])]).numel()  # each part starts 8-byte aligned
    24
"""
# No `from __future__ import annotations`: DDP checks the hook's return annotation is the Future type itself.

import torch
import torch.distributed as dist

__all__ = ["SparseExchange", "exchange_gradients"]


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(-1).view(torch.uint8)


def _pack(parts: list[torch.Tensor]) -> torch.Tensor:
    """The parts' bytes, each padded to a multiple of 8 bytes (so each can be viewed back as its dtype)."""
    out = []
    for p in parts:
        b = _bytes(p)
        out.append(b)
        if b.numel() % 8:
            out.append(b.new_zeros(8 - b.numel() % 8))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.uint8)


class _Reader:
    """Reads back what :func:`_pack` wrote, part by part."""

    def __init__(self, buf: torch.Tensor):
        self.buf, self.at = buf, 0

    def take(self, n: int, dtype: torch.dtype) -> torch.Tensor:
        size = n * torch.empty(0, dtype=dtype).element_size()
        part = self.buf[self.at:self.at + size].view(dtype)
        self.at += size + (-size) % 8
        return part


class SparseExchange:
    """State of :func:`exchange_gradients`: the step's buckets so far and the rows per table each rank sends.

    Args:
        capacity: rows of a sparse gradient that travel in the single all-gather (the batch size).
    """

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self.pending: list[tuple[torch.Tensor, torch.futures.Future]] = []


def exchange_gradients(state: "SparseExchange", bucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook (``ddp.register_comm_hook(SparseExchange(batch_size), exchange_gradients)``):
    collects a step's buckets and, at the last, exchanges them all in one all-gather (see the module doc)."""
    fut: torch.futures.Future = torch.futures.Future()
    state.pending.append((bucket.buffer(), fut))
    if not bucket.is_last():
        return fut
    pending, state.pending = state.pending, []
    try:
        results = _exchange(state, [buf for buf, _ in pending])
    except Exception as err:  # every waiting bucket learns of it, not only the last
        for _, f in pending:
            f.set_exception(err)
        return fut
    for (_, f), res in zip(pending, results):
        f.set_result(res)
    return fut


def _gather(buf: torch.Tensor, state: SparseExchange) -> list[torch.Tensor]:
    """Every rank's ``buf`` (the same size on all), in rank order."""
    got = [torch.empty_like(buf) for _ in range(dist.get_world_size())]
    dist.all_gather(got, buf)
    return got


def _rows(sparse: list[torch.Tensor], start: int, n: int) -> list[torch.Tensor]:
    """Indices and values of rows ``start .. start + n`` of each sparse gradient, padded with zeros to ``n``."""
    parts = []
    for b in sparse:
        idx, val = b._indices()[:, start:start + n], b._values()[start:start + n]
        pad = n - val.shape[0]
        parts += [torch.cat([idx, idx.new_zeros(idx.shape[0], pad)], 1),
                  torch.cat([val, val.new_zeros((pad,) + val.shape[1:])])]
    return parts


def _read_rows(reader: _Reader, sparse: list[torch.Tensor], n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """What :func:`_rows` packed, as ``(indices, values)`` per sparse gradient."""
    out = []
    for b in sparse:
        row = b._values().shape[1:]
        idx = reader.take(b.sparse_dim() * n, torch.int64).view(b.sparse_dim(), n)
        val = reader.take(n * row.numel(), b.dtype).view((n,) + row)
        out.append((idx, val))
    return out


def _exchange(state: SparseExchange, bufs: list[torch.Tensor]) -> list[torch.Tensor]:
    cap = state.capacity
    sparse = [b for b in bufs if b.is_sparse]
    counts = torch.tensor([b._nnz() for b in sparse], dtype=torch.int64)
    packed = _pack([counts] + _rows(sparse, 0, cap) + [b.reshape(-1) for b in bufs if not b.is_sparse])
    readers = [_Reader(g) for g in _gather(packed, state)]
    every = [r.take(len(sparse), torch.int64).tolist() for r in readers]  # [rank][table]: its rows
    got = [_read_rows(r, sparse, cap) for r in readers]
    most = max((n for c in every for n in c), default=0)
    if most > cap:  # some rank had more rows than fit: the rest, padded to the largest rest
        more = [_read_rows(_Reader(g), sparse, most - cap) for g in _gather(_pack(_rows(sparse, cap, most - cap)), state)]
        got = [[(torch.cat([i, i2], 1), torch.cat([v, v2])) for (i, v), (i2, v2) in zip(a, b)]
               for a, b in zip(got, more)]
        state.capacity = most
    world = len(readers)
    out, k = [], 0
    for b in bufs:
        if b.is_sparse:  # every rank's rows, in rank order
            idx = torch.cat([got[r][k][0][:, :every[r][k]] for r in range(world)], 1)
            val = torch.cat([got[r][k][1][:every[r][k]] for r in range(world)]).div_(world)
            out.append(torch.sparse_coo_tensor(idx, val, b.shape, check_invariants=False))
            k += 1
        else:  # the sum over ranks, in rank order
            total = readers[0].take(b.numel(), b.dtype).clone()
            for reader in readers[1:]:
                total += reader.take(b.numel(), b.dtype)
            out.append(b.copy_(total.view_as(b).div_(world)))
    return out
