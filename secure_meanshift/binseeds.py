"""scikit-learn's bin seeding (``MeanShift(bin_seeding=True)``), seeding "sklearn-bins".

scikit-learn bins the points on a grid of side h in DATA units (bin index
``round(x / h)``), counts the points per bin and seeds at ``index * h`` for
every bin holding at least ``min_bin_freq`` points. Which bins are occupied is
private here, so every CANDIDATE bin is seeded: each feature's bin indices run
from ``round(lo / h)`` to ``round(hi / h)`` (every in-bounds point falls in one
of them), a public set of m seeds fixed by the bounds and h alone. Each party
counts its own rows per candidate bin (exact integers, in the clear, its own
data), secret-shares the counts; the joint count is their sum on shares and
``occupied = [count >= min_bin_freq]`` one batched sign test; nothing is
opened. All m seeds iterate; at the merge a seed whose bin is unoccupied
counts as empty (its intensity times ``occupied``), so it is never kept and
never suppresses another seed: scikit-learn's answer from its own seeds.

In summary mode the parties count their representatives' weights per bin (a
representative is a cell mean, so a cell across a bin edge counts in one bin).
Seeding "auto" picks this rule above the every-point limit while the bins fit
MAX_BIN_SEEDS and their work AUTO_BIN_WORK (params.resolve_seeding).

Two differences from scikit-learn, both documented in the README:
- a seed centre outside the unit box by more than BOX_SLACK is moved onto that
  margin (the protocol's range test catches corrupted centroids outside the box
  plus a slack; an empty seed keeps its position); only bins on the bounds'
  edge with h / 2 above that slack are affected, and only their first window;
- scikit-learn falls back to every point as seed when every bin holds one point
  (a warning there); here the bins stay the seeds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import numpy as np

from .data import from_unit, quantise_points
from .errors import InputError

if TYPE_CHECKING:       # params imports this module
    from .params import MeanShiftParams

BIN_SEEDING = "sklearn-bins"
MAX_BIN_SEEDS = 4096     # m x N work per iteration and an m x m merge
# seeding "auto" picks these bins only while m x rows per iteration stays below this
# (about 4x the work of "both" at 20,000 exact points; ~40 s an iteration at 2 parties)
AUTO_BIN_WORK = 8_000_000
BOX_SLACK = 0.04         # below protocol.RANGE_SLACK (0.05)


def bin_index_range(p: "MeanShiftParams") -> tuple[np.ndarray, np.ndarray]:
    """Per feature, the first and last candidate bin index (data units / h)."""
    lo = np.round(np.asarray(p.bounds[0], float) / p.bandwidth).astype(np.int64)
    hi = np.round(np.asarray(p.bounds[1], float) / p.bandwidth).astype(np.int64)
    return lo, hi


def n_bin_seeds(p: "MeanShiftParams") -> int:
    """m: the number of candidate bins (public: from the bounds and h); computed
    in floating point, so a tiny h on wide bounds gives a huge number, not an
    int64 overflow (capped at 2^62)."""
    h = p.bandwidth
    per = np.round(np.asarray(p.bounds[1], float) / h) - np.round(p.lo / h) + 1.0
    total = float(np.prod(per))
    return int(total) if total < 2.0**62 else 2**62


def auto_bin_work(p: "MeanShiftParams", total_points: int, summary) -> float:
    """Public estimate of m x rows (kernel tests per iteration) for "auto": rows
    = N in exact mode; with a summary of cells of ``summary`` h, at most N and
    at most (1 / summary + 1)^d cells per candidate bin."""
    m = n_bin_seeds(p)
    rows = float(total_points)
    if summary is not None:
        rows = min(rows, m * (1.0 / float(summary) + 1.0) ** p.dim)
    return m * rows


def check_bin_seeds(p: "MeanShiftParams") -> None:
    """InputError (before anything starts) when the candidate bins exceed the cap."""
    m = n_bin_seeds(p)
    if m > MAX_BIN_SEEDS:
        raise InputError(
            f"seeding: '{BIN_SEEDING}' seeds every candidate bin of side h inside the "
            f"bounds: {m:,} bins here, at most {MAX_BIN_SEEDS:,}. Use a larger bandwidth, "
            "tighter bounds or fewer features (or seeding 'both')")
    if p.merge != "intensity":
        raise InputError(f"seeding: '{BIN_SEEDING}' needs merge 'intensity' "
                         "(scikit-learn's), which drops the unoccupied bins' seeds")


def bin_seeds(p: "MeanShiftParams") -> np.ndarray:
    """(m, d) the candidate bin centres k h in the unit box (row-major over k),
    kept within BOX_SLACK of the box, on the engine's 2^-16 grid."""
    lo, hi = bin_index_range(p)
    axes = [np.arange(a, b + 1, dtype=np.float64) * p.bandwidth for a, b in zip(lo, hi)]
    grid = np.stack([g.reshape(-1) for g in np.meshgrid(*axes, indexing="ij")], axis=1)
    unit = (grid - p.lo) / p.scale
    return quantise_points(np.clip(unit, -BOX_SLACK, 1.0 + BOX_SLACK))


def local_bin_counts(unit_points: np.ndarray, weights: Optional[np.ndarray],
                     p: "MeanShiftParams") -> np.ndarray:
    """(m,) int64: this party's rows (or summary weights) per candidate bin, bin
    index round(x / h) in data units as scikit-learn's get_bin_seeds."""
    lo, hi = bin_index_range(p)
    shape = tuple(int(b - a) + 1 for a, b in zip(lo, hi))
    x = np.asarray(unit_points, float).reshape(-1, p.dim)
    k = np.round(from_unit(x, p.lo, p.scale) / p.bandwidth).astype(np.int64)
    k = np.clip(k, lo, hi) - lo          # in-bounds rows: only float rounding is clipped
    flat = np.ravel_multi_index(tuple(k.T), shape) if len(k) else np.zeros(0, np.int64)
    w = None if weights is None else np.asarray(weights, float).reshape(-1)
    counts = np.bincount(flat, weights=w, minlength=math.prod(shape))
    return np.round(counts).astype(np.int64)


def occupied_bins(units, weights, p: "MeanShiftParams") -> np.ndarray:
    """(m,) 0/1 float: joint count >= min_bin_freq (the plaintext twin)."""
    total = sum(local_bin_counts(u, None if weights is None else weights[i], p)
                for i, u in enumerate(units))
    return (total >= p.min_bin_freq).astype(np.float64)


def shared_occupancy(unit_points: np.ndarray, weights, p: "MeanShiftParams", rank: int,
                     world: int):
    """(m, 1) 0/1 shares (scale 1): [joint count >= min_bin_freq]. Every party
    shares its own exact counts (integers, precision 0); the joint count is their
    sum; one batched sign test; nothing is opened."""
    import torch

    from .mpc._compat import import_crypten
    from .mpc.fixedpoint import ge_zero

    crypten = import_crypten()
    mine = local_bin_counts(unit_points, weights, p)
    joint = None
    for src in range(world):
        data = (torch.from_numpy(mine).reshape(-1, 1) if src == rank
                else torch.zeros(len(mine), 1, dtype=torch.long))
        part = crypten.cryptensor(data, src=src, precision=0)
        joint = part if joint is None else joint + part
    (occupied,) = ge_zero(joint - int(p.min_bin_freq))
    return occupied


def shared_bin_seeds(p: "MeanShiftParams"):
    """(m, d) the public candidate seeds as shares (rank 0 shares them), 16 bits."""
    import torch

    from .mpc._compat import import_crypten

    return import_crypten().cryptensor(torch.from_numpy(bin_seeds(p)).float(), src=0)
