"""Local weighted summaries: each party compresses its own points in the clear
(its own data: nothing leaks) into weighted representatives before sharing.

The secure algorithm then runs weighted mean-shift on (representative, count)
pairs: centroid = sum(w k x) / sum(w k).

Every path goes through one exact, mergeable aggregate (:class:`CellSums`): per
occupied grid cell, its integer key, its point count and the sum of its points
on a 2^-30 grid (``floor(u * 2^30)``, int64). Integer sums add up exactly in any
order, so a summary computed in one piece (numpy), in chunks (SQL, Parquet row
groups), by DuckDB or by a Dask cluster (per-partition sums added up) is
*identical*, bit for bit; representatives are ``sum / count * 2^-30``, within
2^-30 of the points' float mean (far below the engine's 2^-16 grid).

- d <= 3: cells of side ``cell`` (unit-box units); one representative per
  occupied cell, at the mean of its points, weighted by their count.
- n <= MAX_REPRESENTATIVES points (and no small grid): the points themselves.
- d > 3, or a d <= 3 grid with too many occupied cells: the cells (side
  ``cell / 2`` for d > 3) are the input of a weighted k-means (Lloyd passes
  over the cells, nearest centre by a k-d tree) with at most
  MAX_REPRESENTATIVES centres; each representative is the exact mean of the
  points of its cells. The k-means never rereads the data: it costs
  O(cells), not O(points) (10^6 points in 4-D: seconds).

Error: d <= 3 grid: a point is replaced by a representative at most one cell
diagonal (cell * sqrt(d)) away, and the summary keeps every cell's exact sum,
so a neighbourhood that contains whole cells has the exact mean. Only cells
cut by a kernel's edge move a centroid; with cell = h / 4 the offset stays
well below h / 10 (measured by benchmarks/scale_report.py). k-means: a point is
at most ``SummaryInfo.radius`` (computed and reported: the largest distance of
a cell's mean to its representative plus the cell diagonal) from its
representative.

Memory is bounded whatever N: a streaming aggregate holds at most CELL_CAP
cells; beyond, it coarsens its grid by 2 per axis (exactly: floor(floor(y)/2)
== floor(y/2)), which the reported radius includes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

MAX_REPRESENTATIVES = 20_000
GRID_MAX_DIM = 3
SUM_BITS = 30                 # cell sums of floor(u * 2^30): exact in int64 up to 2^33 points/cell
CELL_CAP = 2_000_000          # cells a streaming aggregate holds before it coarsens
KMEANS_PASSES = 8             # Lloyd passes over the cells


def cell_side(cell: float, dim: int) -> float:
    """The grid side the aggregate uses: ``cell`` up to 3 features, ``cell / 2``
    above (a finer pre-aggregation for the k-means)."""
    return float(cell) if dim <= GRID_MAX_DIM else float(cell) / 2


@dataclass
class SummaryInfo:
    """What a summary did (counts and public sizes only, never a value)."""

    method: str = "exact"      # "grid" | "points" | "kmeans"
    points: int = 0
    cells: int = 0
    representatives: int = 0
    radius: float = 0.0        # bound on |point - its representative| (unit box)


def _group(keys: np.ndarray, counts: np.ndarray, sums: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add up rows with equal keys (exact int64); rows come out in lexicographic key order."""
    if not len(keys):
        return keys, counts, sums
    lo = keys.min(axis=0)
    span = keys.max(axis=0) - lo + 1
    if np.prod(span.astype(float)) < 2**62:
        flat = np.ravel_multi_index((keys - lo).T, span)
    else:
        flat = np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)
    order = np.argsort(flat, kind="stable")
    fs = flat[order]
    starts = np.flatnonzero(np.r_[True, fs[1:] != fs[:-1]])
    return (keys[order[starts]], np.add.reduceat(counts[order], starts),
            np.add.reduceat(sums[order], starts, axis=0))


def _group_rows(keys: np.ndarray, q: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_group` for rows (count 1 each), without a sort when the chunk's
    cells fit a dense table. Sums by float bincounts of 15-bit halves of q:
    exact while every partial sum stays below 2^53 in magnitude (n times the
    largest half; checked, else _group)."""
    n = len(keys)
    if not n or n * max(int(np.abs(q).max()) >> 15 | 1, 2**15) >= 2**53:
        return _group(keys, np.ones(n, np.int64), q)
    lo = keys.min(axis=0)
    span = keys.max(axis=0) - lo + 1
    size = float(np.prod(span.astype(float)))
    if size >= 2**62:
        return _group(keys, np.ones(n, np.int64), q)
    flat = np.ravel_multi_index((keys - lo).T, span)
    if size <= max(2**22, 2 * n):             # dense: no sort at all
        counts = np.bincount(flat, minlength=int(size))
        cell = np.flatnonzero(counts)
        inv, m = flat, int(size)
    else:
        cell, inv = np.unique(flat, return_inverse=True)
        m = len(cell)
        counts = np.bincount(inv, minlength=m)
    hi, low = q >> 15, q & 0x7FFF
    sums = np.empty((len(cell), q.shape[1]), np.int64)
    for j in range(q.shape[1]):
        h = np.bincount(inv, weights=hi[:, j], minlength=m)
        w = np.bincount(inv, weights=low[:, j], minlength=m)
        if m != len(cell):
            h, w = h[cell], w[cell]
        sums[:, j] = (h.astype(np.int64) << 15) + w.astype(np.int64)
    keys_out = np.stack(np.unravel_index(cell, span), axis=1).astype(np.int64) + lo
    return keys_out, counts[cell] if m != len(cell) else counts, sums


@dataclass
class CellSums:
    """The exact, mergeable per-cell aggregate of one party's points (unit box).

    ``side``: the grid side at level 0; ``level``: how often the grid was
    coarsened by 2. ``few`` keeps the points themselves while there are at most
    MAX_REPRESENTATIVES of them (the "points" summary needs them)."""

    side: float
    dim: int
    level: int = 0
    n: int = 0
    keys: np.ndarray = field(default=None)      # (s, d) int64
    counts: np.ndarray = field(default=None)    # (s,) int64
    sums: np.ndarray = field(default=None)      # (s, d) int64, units 2^-30
    few: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        if self.keys is None:
            self.keys = np.zeros((0, self.dim), np.int64)
            self.counts = np.zeros(0, np.int64)
            self.sums = np.zeros((0, self.dim), np.int64)
            self.few = np.zeros((0, self.dim))

    @classmethod
    def of(cls, unit: np.ndarray, side: float) -> "CellSums":
        """The aggregate of one chunk of unit-box points."""
        x = np.asarray(unit, dtype=np.float64)
        keys = np.floor(x / side).astype(np.int64)
        q = np.floor(x * 2.0**SUM_BITS).astype(np.int64)
        k, c, s = _group_rows(keys, q)
        return cls(side, x.shape[1], 0, len(x), k, c, s,
                   x.copy() if len(x) <= MAX_REPRESENTATIVES else None)

    @classmethod
    def from_cells(cls, side: float, dim: int, keys, counts, sums, few=None) -> "CellSums":
        """An aggregate from per-cell (keys, counts, sums) computed elsewhere (DuckDB, Dask)."""
        k, c, s = _group(np.asarray(keys, np.int64).reshape(-1, dim),
                         np.asarray(counts, np.int64).reshape(-1),
                         np.asarray(sums, np.int64).reshape(-1, dim))
        n = int(c.sum())
        if few is None and n == 0:
            few = np.zeros((0, dim))
        return cls(side, dim, 0, n, k, c, s, few if n <= MAX_REPRESENTATIVES else None)

    @property
    def cells(self) -> int:
        return len(self.counts)

    def merge(self, other: "CellSums") -> "CellSums":
        """Both aggregates added up (exact); the result is coarsened to the
        coarser level, and again while it holds more than CELL_CAP cells."""
        a, b = self, other
        while a.level < b.level:
            a = a.coarsened()
        while b.level < a.level:
            b = b.coarsened()
        k, c, s = _group(np.concatenate([a.keys, b.keys]), np.concatenate([a.counts, b.counts]),
                         np.concatenate([a.sums, b.sums]))
        n = a.n + b.n
        few = None
        if n <= MAX_REPRESENTATIVES and a.few is not None and b.few is not None:
            few = np.concatenate([a.few, b.few])
        return CellSums(a.side, a.dim, a.level, n, k, c, s, few).bounded()

    def coarsened(self) -> "CellSums":
        k, c, s = _group(self.keys // 2, self.counts, self.sums)
        return CellSums(self.side, self.dim, self.level + 1, self.n, k, c, s, self.few)

    def bounded(self) -> "CellSums":
        out = self
        while out.cells > CELL_CAP:
            out = out.coarsened()
        return out

    def means(self) -> np.ndarray:
        return self.sums / self.counts[:, None] * 2.0**-SUM_BITS

    def finish(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray, SummaryInfo]:
        """(representatives (s, d), weights (s,), what was done), by the rules above."""
        agg = self.bounded()
        diag = agg.side * 2**agg.level * np.sqrt(agg.dim)
        if agg.dim <= GRID_MAX_DIM and agg.cells <= MAX_REPRESENTATIVES:
            return agg.means(), agg.counts.astype(np.float64), \
                SummaryInfo("grid", agg.n, agg.cells, agg.cells, float(diag))
        if agg.n <= MAX_REPRESENTATIVES and agg.few is not None:
            return agg.few.copy(), np.ones(agg.n), \
                SummaryInfo("points", agg.n, agg.cells, agg.n, 0.0)
        if agg.cells <= MAX_REPRESENTATIVES:
            return agg.means(), agg.counts.astype(np.float64), \
                SummaryInfo("grid", agg.n, agg.cells, agg.cells, float(diag))
        reps, w, spread = _weighted_kmeans(agg, MAX_REPRESENTATIVES, seed)
        return reps, w, SummaryInfo("kmeans", agg.n, agg.cells, len(w), float(spread + diag))


def _weighted_kmeans(agg: CellSums, k: int, seed: int
                     ) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd over the cells (weights: counts). Starts from the cells of a grid
    coarse enough to have at most k / 2 of them (they cover the whole data)
    plus cells drawn in proportion to their counts (seeded: deterministic).
    Returns (representatives: exact means of their cells' points, counts,
    largest distance of a cell's mean to its representative)."""
    from scipy.spatial import cKDTree  # loaded only for this summary (start-up cost)

    x = agg.means()
    w = agg.counts.astype(np.float64)
    coarse = agg
    while coarse.cells > k // 2:
        coarse = coarse.coarsened()
    rng = np.random.default_rng(seed)
    extra = rng.choice(len(x), size=k - coarse.cells, replace=False, p=w / w.sum())
    centres = np.concatenate([coarse.means(), x[np.sort(extra)]])
    for _ in range(KMEANS_PASSES):
        label = cKDTree(centres).query(x)[1]
        cnt = np.bincount(label, weights=w, minlength=len(centres))
        keep = cnt > 0
        sums = np.stack([np.bincount(label, weights=w * x[:, j], minlength=len(centres))
                         for j in range(agg.dim)], axis=1)
        centres = sums[keep] / cnt[keep, None]
    label = cKDTree(centres).query(x)[1]
    k_eff = len(centres)
    counts = np.bincount(label, minlength=k_eff)   # cells per centre, to drop empty ones
    keep = counts > 0
    pts = np.zeros(k_eff, np.int64)
    np.add.at(pts, label, agg.counts)
    isum = np.zeros((k_eff, agg.dim), np.int64)
    np.add.at(isum, label, agg.sums)
    reps = isum[keep] / pts[keep, None] * 2.0**-SUM_BITS
    remap = np.cumsum(keep) - 1
    spread = float(np.max(np.linalg.norm(x - reps[remap[label]], axis=1))) if len(x) else 0.0
    return reps, pts[keep].astype(np.float64), spread


def summarize_info(unit_points: np.ndarray, cell: float, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, SummaryInfo]:
    """:func:`summarize` plus what it did (method, cells, bound)."""
    x = np.asarray(unit_points, dtype=np.float64)
    return CellSums.of(x, cell_side(cell, x.shape[1])).finish(seed)


def summarize(unit_points: np.ndarray, cell: float, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) points -> (s, d) representatives and (s,) positive weights (counts).

    Deterministic for the same input, so the plaintext twin can reproduce it;
    identical to the streaming engines' result on the same points (sources.py).
    """
    reps, w, _ = summarize_info(unit_points, cell, seed)
    return reps, w
