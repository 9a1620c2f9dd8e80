"""Synthetic implicit feedback with MovieLens-like skew, at any size up to ML-20M's shape.

* Item popularity follows a power law (Zipf, exponent ``item_exponent``; item ids are shuffled so that
  popularity does not follow the id).
* User activity is heavy-tailed (log-normal, at least ``min_per_user`` items each, at most half the
  catalogue), scaled to the requested number of interactions.
* Each user's items are distinct; each user has timestamps that increase from a random start.
* Default shape: ``n_interactions / 145`` users (ML-20M: 138k users for 20M) and
  ``27000 * sqrt(n_interactions / 20M)`` items (1.9k at 100k, close to ML-100k's 1.7k; 27k at 20M).

By default a user's items are drawn by popularity alone, in a random order: data with nothing to learn
about a user beyond it (ranking items by their counts is as good as any model there), for measuring speed
and scale. ``genres=G`` gives users a taste and an order to learn:

* each item belongs to one of ``G`` genres (at random; popularity stays a power law within each);
* each user prefers some genres (weights from a Dirichlet with ``concentration``) and draws each item's
  genre from them, then the item by popularity within the genre. With 20 genres and the default 0.3, a
  user's 3 favourite genres hold 54-57% of their items on average at 60k-200k interactions (26-27% with a
  concentration of 100, which is nearly no taste);
* each user watches a genre in one stretch of time: every (user, genre) gets a random moment, and an item's
  time is its genre's moment plus uniform noise of width ``order_noise``. The latest items then tell which
  genre comes next. With 20 genres, the next item shares the latest one's genre 25-28% of the time at the
  default 0.5, 91-92% at 0 (genre after genre) and 11-12.5% at 50 (nearly random order).

Everything is vectorized (no Python loop over users or interactions) and seeded: the same arguments
give the same data.

    python -m ncf.synthetic --interactions 1000000 --out synth-1m.csv
    python train.py fit --config configs/neumf.yaml --data.dataset synth-1m.csv

or in memory, without a file: ``--data.dataset synthetic:1000000`` (seed 0; ``synthetic:1000000:7`` for
seed 7), or :func:`generate` from Python.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Optional

import numpy as np

from .datasets import Interactions
from .errors import DataError
from .sampling import distinct_draws

__all__ = ["generate", "parse_spec", "write_csv", "main"]

PREFIX = "synthetic:"


def _default_shape(n: int) -> tuple[int, int]:
    return max(10, round(n / 145)), max(20, round(27_000 * math.sqrt(n / 20_000_000)))


def generate(n_interactions: int, n_users: Optional[int] = None, n_items: Optional[int] = None, seed: int = 0,
             item_exponent: float = 1.0, activity_sigma: float = 1.0, min_per_user: int = 5, genres: int = 0,
             concentration: float = 0.3, order_noise: float = 0.5) -> Interactions:
    """Interactions with power-law item popularity and heavy-tailed user activity; with ``genres`` > 0, users
    with a taste for a few genres who watch a genre in one stretch of time (see the module doc).

    Example:
        >>> data = generate(20_000, seed=1)
        >>> len(data), data.n_users, data.n_items
        (20000, 138, 854)
    """
    if not n_interactions >= 1:
        raise DataError(f"the number of interactions must be at least 1, not {n_interactions}.")
    du, di = _default_shape(n_interactions)
    n_users, n_items = du if n_users is None else n_users, di if n_items is None else n_items
    if n_users < 1 or n_items < 1:
        raise DataError(f"users and items must be at least 1 each, not {n_users} and {n_items}.")
    _check_genres(genres, concentration, order_noise, n_items)
    cap = max(min_per_user, n_items // 2)
    if n_interactions < n_users * min_per_user or n_interactions > n_users * cap:
        raise DataError(f"{n_interactions} interactions do not fit {n_users} users x {n_items} items with "
                        f"{min_per_user}..{cap} items per user; change the sizes.")
    rng = np.random.default_rng(seed)
    counts = _activity(rng, n_interactions, n_users, min_per_user, cap, activity_sigma)
    weights = 1.0 / np.arange(1, n_items + 1, dtype=np.float64) ** item_exponent
    cdf = np.cumsum(weights / weights.sum())
    item_of_rank = rng.permutation(n_items)
    # each user's distinct items by popularity (the few users who want most of the catalogue get the
    # rest uniformly), then put in a random order in time
    def by_popularity(who, r):
        return item_of_rank[np.minimum(np.searchsorted(cdf, r.random(len(who)), side="right"), n_items - 1)]

    if genres:
        taste = _Taste(rng, n_users, n_items, genres, concentration, weights[np.argsort(item_of_rank)])
        users, items = distinct_draws(counts, taste.draw, n_items, rng)
        moment = rng.random((n_users, genres))  # when each user watches each genre
        when = moment[users, taste.genre[items]] + order_noise * rng.random(len(users))
        order = np.lexsort((when, users))
    else:
        users, items = distinct_draws(counts, by_popularity, n_items, rng)
        order = np.lexsort((rng.random(len(users)), users))
    users, items = users[order], items[order]
    # per user: a start in the first half of a ~5-year span, then exponential gaps (seconds)
    start = rng.integers(0, 80_000_000, size=n_users)
    gaps = rng.exponential(86_400.0, size=len(users)).astype(np.int64) + 1
    csum = np.cumsum(gaps)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    offset = np.repeat(csum[first] - gaps[first], counts)
    ts = 800_000_000 + start[users] + (csum - offset)
    return Interactions(users.astype(np.int64), items.astype(np.int64), ts.astype(np.int64),
                        list(range(n_users)), list(range(n_items)), source=f"{PREFIX}{n_interactions}:{seed}")


def _check_genres(genres: int, concentration: float, order_noise: float, n_items: int) -> None:
    """A one-line DataError naming the setting that cannot give users a taste and an order."""
    if genres < 0:
        raise DataError(f"genres must be 0 (no taste) or more, not {genres}.")
    if not genres:
        return
    if genres > n_items // 2:
        raise DataError(f"{genres} genres for {n_items} items leave a genre one item or none, so users could not "
                        f"prefer any: use at most {max(n_items // 2, 1)} genres (e.g. 20), or more items.")
    if not (math.isfinite(concentration) and concentration > 0):
        raise DataError(f"concentration must be a positive number (0.3: a few favourite genres; 100: nearly no "
                        f"taste), not {concentration}.")
    if not (math.isfinite(order_noise) and order_noise >= 0):
        raise DataError(f"order_noise must be a number >= 0 (0: one genre after another; 50: nearly random "
                        f"order), not {order_noise}.")


class _Taste:
    """Genres of items and users' taste for them; :meth:`draw` picks one item per listed user: a genre by the
    user's taste, then an item of that genre by popularity."""

    CHUNK = 1 << 20  # draws at a time: [chunk, genres] of the users' cumulative tastes in memory

    def __init__(self, rng, n_users: int, n_items: int, genres: int, concentration: float, weight: np.ndarray):
        self.genre = rng.integers(0, genres, size=n_items)
        present = np.bincount(self.genre, minlength=genres) > 0  # a genre may be left without items
        taste = rng.dirichlet(np.full(genres, concentration), size=n_users) * present
        self.taste = np.cumsum(taste, axis=1) / taste.sum(axis=1, keepdims=True)  # each row's CDF over genres
        self.by_genre = np.argsort(self.genre, kind="stable")  # items grouped by genre
        g, w = self.genre[self.by_genre], weight[self.by_genre]
        total = np.bincount(g, weights=w, minlength=genres)
        before = np.cumsum(total) - total  # popularity of the genres before each
        # genre k's items span (k, k + 1]: k plus the cumulative share of the genre's popularity
        self.cdf = g + (np.cumsum(w) - before[g]) / total[g]

    def draw(self, users: np.ndarray, rng) -> np.ndarray:
        out = np.empty(len(users), dtype=np.int64)
        for s in range(0, len(users), self.CHUNK):
            u = users[s:s + self.CHUNK]
            g = (self.taste[u] < rng.random(len(u))[:, None]).sum(axis=1)
            g = np.minimum(g, self.taste.shape[1] - 1)
            at = np.searchsorted(self.cdf, g + rng.random(len(u)), side="right")
            out[s:s + self.CHUNK] = self.by_genre[np.minimum(at, len(self.cdf) - 1)]
        return out


def _activity(rng, n: int, n_users: int, low: int, high: int, sigma: float) -> np.ndarray:
    """Per-user counts: log-normal shape, within [low, high], summing to exactly ``n``."""
    raw = rng.lognormal(0.0, sigma, size=n_users)
    counts = np.clip(np.floor(low + raw / raw.sum() * (n - low * n_users)), low, high).astype(np.int64)
    short = n - int(counts.sum())
    while short != 0:  # spread the rounding remainder over users with room, heaviest first
        room = (counts < high) if short > 0 else (counts > low)
        idx = np.flatnonzero(room)
        idx = idx[np.argsort(-raw[idx], kind="stable")][: abs(short)]
        counts[idx] += 1 if short > 0 else -1
        short = n - int(counts.sum())
    return counts


def parse_spec(spec: str) -> tuple[int, int]:
    """``synthetic:N[:SEED]`` -> ``(N, SEED)``; N may be written ``1000000``, ``1e6``, ``1M`` or ``500k``."""
    parts = spec[len(PREFIX):].split(":")
    try:
        text = parts[0].strip().lower()
        scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
        n = int(float(text[:-1] if scale > 1 else text) * scale)
        seed = int(parts[1]) if len(parts) > 1 else 0
    except (ValueError, IndexError):
        raise DataError(f"{spec!r}: write synthetic:N or synthetic:N:SEED (e.g. synthetic:1M, synthetic:500k:3).") from None
    if n < 1 or len(parts) > 2:
        raise DataError(f"{spec!r}: write synthetic:N or synthetic:N:SEED with N >= 1.")
    return n, seed


def write_csv(data: Interactions, path: str) -> None:
    """``user,item,timestamp`` with a header, written with pyarrow (fast at any size)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from pathlib import Path

    table = pa.table({"user": data.users, "item": data.items, "timestamp": data.timestamps})
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # as any writer of a named file would
    pacsv.write_csv(table, path)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ncf.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--interactions", type=float, required=True, help="how many (e.g. 1e6)")
    p.add_argument("--users", type=int, help="default: interactions / 145")
    p.add_argument("--items", type=int, help="default: 27000 * sqrt(interactions / 20M)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--item-exponent", type=float, default=1.0, help="Zipf exponent of item popularity")
    p.add_argument("--genres", type=int, default=0, help="give users a taste for a few of this many genres, "
                   "each watched in one stretch of time (default 0: popularity alone, in random order)")
    p.add_argument("--concentration", type=float, help="with --genres: Dirichlet concentration of each user's "
                   "taste (default 0.3; smaller: fewer genres per user)")
    p.add_argument("--order-noise", type=float, help="with --genres: how much a user's genres mix in time "
                   "(default 0.5; 0: one genre after another)")
    p.add_argument("--out", required=True, help="CSV file to write")
    a = p.parse_args(argv)
    try:
        if not a.genres and (a.concentration is not None or a.order_noise is not None):
            raise DataError("--concentration and --order-noise shape the genres: give --genres too (e.g. --genres 20).")
        if not (math.isfinite(a.interactions) and a.interactions >= 1):
            raise DataError(f"--interactions must be a number of at least 1, not {a.interactions}.")
        taste = {k: v for k, v in (("concentration", a.concentration), ("order_noise", a.order_noise)) if v is not None}
        data = generate(int(a.interactions), a.users, a.items, a.seed, a.item_exponent, genres=a.genres, **taste)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_csv(data, a.out)
    print(f"{a.out}: {len(data)} interactions, {data.n_users} users, {data.n_items} items", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
