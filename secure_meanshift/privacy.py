"""Differential privacy for mean-shift: a noisy histogram on a PUBLIC grid, then
mean-shift on it as post-processing (docs/privacy.md has the argument).

- The grid is public: cells of side ``summary * h`` (default h/2) over the public
  bounds' unit box; every cell is a representative at its centre, empty or not.
- Each party clips its rows into the public bounds, counts them per cell (one
  record changes one count by 1: L2 sensitivity 1 under add/remove-one) and adds
  its OWN integer discrete-Gaussian noise of scale ``noise_scale(spec)`` to every
  cell (OpenDP's sampler; its bits from OpenSSL's RAND_priv_bytes in opendp
  0.16.0, docs/privacy.md), before sharing.
- Calibration and accounting are OpenDP's (zCDP, then conversion to
  (epsilon, delta)); nothing here is computed by hand.

Public API used by the node's budget ledger: :class:`PrivacySpec`,
:func:`noise_scale`, :func:`spent_epsilon`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterable, Optional, Sequence

import numpy as np

from .data import POINT_BITS, check_finite, quantise_points, to_unit
from .disclosure import disclose
from .errors import InputError
from .mpc._compat import import_crypten
from .mpc.fixedpoint import BULK_BITS, ge_zero, rescale

if TYPE_CHECKING:                      # params imports this module
    from .params import MeanShiftParams

MAX_EPSILON = 100.0
MAX_DELTA = 1e-2
DEFAULT_EPSILON = 1.0
DEFAULT_DELTA = 1e-6


@dataclass(frozen=True)
class PrivacySpec:
    """(epsilon, delta)-DP for one job, per record (add/remove one record of any party).

    epsilon in (0, 100], delta in (0, 1e-2). Raises InputError (a ValueError).
    """

    epsilon: float = DEFAULT_EPSILON
    delta: float = DEFAULT_DELTA

    def __post_init__(self) -> None:
        for name in ("epsilon", "delta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InputError(f"privacy.{name}: must be a finite number")
            object.__setattr__(self, name, float(v))
        if not 0 < self.epsilon <= MAX_EPSILON:
            raise InputError(f"privacy.epsilon: must be in (0, {MAX_EPSILON:g}] "
                             "(smaller is more private; 1 is the default)")
        if not 0 < self.delta < MAX_DELTA:
            raise InputError(f"privacy.delta: must be in (0, {MAX_DELTA:g}) "
                             "(e.g. 1e-6, well below 1 / the number of records)")

    @classmethod
    def coerce(cls, value) -> Optional["PrivacySpec"]:
        """None, a PrivacySpec, or a mapping {epsilon, delta} -> PrivacySpec or None."""
        if value is None or isinstance(value, PrivacySpec):
            return value
        if isinstance(value, dict):
            unknown = sorted(map(str, set(value) - {"epsilon", "delta"}))
            if unknown:
                raise InputError(f"privacy.{unknown[0][:64]}: unknown field "
                                 "(expected epsilon and delta)")
            return cls(**value)
        raise InputError("privacy: expected {epsilon: .., delta: ..} or null")

    def to_dict(self) -> dict:
        return {"epsilon": self.epsilon, "delta": self.delta}


# ---- calibration and accounting (OpenDP) -----------------------------------

def _opendp():
    import opendp.prelude as dp  # a large native library (seconds to load): DP jobs only

    dp.enable_features("contrib")
    return dp


def _space():
    dp = _opendp()
    return dp.vector_domain(dp.atom_domain(T=int)), dp.l2_distance(T=int)


def gaussian_measurement(scale: float):
    """OpenDP's discrete Gaussian on integer count vectors (zCDP, d_in = L2 = 1)."""
    dp = _opendp()
    return dp.m.make_gaussian(*_space(), scale=float(scale))


@functools.lru_cache(maxsize=256)
def _noise_scale(epsilon: float, delta: float) -> float:
    dp = _opendp()

    def approx(scale):
        return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(gaussian_measurement(scale)),
                                   delta)

    return float(dp.binary_search_param(approx, d_in=1, d_out=(epsilon, delta), T=float))


def noise_scale(spec: PrivacySpec) -> float:
    """sigma: the discrete Gaussian's scale each party adds to each cell count so
    that one job is (epsilon, delta)-DP (OpenDP's binary search over its own
    zCDP -> approx-DP conversion; deterministic)."""
    return _noise_scale(spec.epsilon, spec.delta)


def spent_epsilon(scales: Sequence[float], delta: float) -> float:
    """epsilon at ``delta`` of all these sensitivity-1 discrete-Gaussian
    mechanisms composed: OpenDP's composition in zCDP, then its conversion."""
    scales = [float(s) for s in scales]
    if not scales:
        return 0.0
    if not 0 < delta < 1:
        raise InputError("privacy.delta: must be in (0, 1)")
    if any(not (math.isfinite(s) and s > 0) for s in scales):
        raise InputError("privacy: noise scales must be positive numbers")
    dp = _opendp()
    composed = dp.c.make_composition([gaussian_measurement(s) for s in scales])
    return float(dp.c.make_zCDP_to_approxDP(composed).map(1).epsilon(delta))


# ---- the public grid ---------------------------------------------------------

MAX_DP_DIM = 3
MAX_CELLS = 40_000          # cells of the noisy histogram (each is a representative)
MAX_GRID_SEEDS = 1024       # seeds of the public seed grid (m x cells work per iteration)
# Noise alone must rarely make a cluster. Over a 1,600-cell grid (h/4 cells), 3 standard
# deviations let ~2 noise cells per run through (~10 at epsilon 10, where the
# discrete noise is coarse); an intensity threshold of 6 let two such cells
# within h make a spurious centre (benchmarks/dp_utility.py); 10 needs three.
# Clamping at 4 instead lost more real clusters at 1,000 points (17 of 50 vs 6).
CLAMP_STDS = 3.0            # tau = CLAMP_STDS * sqrt(k) * sigma: joint counts below -> 0
KEEP_STDS = 10.0            # intensity below KEEP_STDS * sqrt(k) * sigma: not a cluster


def default_cell_fraction(dim: int) -> float:
    """Cell side in bandwidths: h/2. Measured (benchmarks/dp_utility.py, 5 blobs,
    epsilon 1): as accurate as h/4 at 10,000 points (largest offset 0.023 h both),
    better at 1,000 (more records per cell stand out of the noise), and 4 times
    fewer cells to pay for in every iteration."""
    return 0.5


def _extent(p: "MeanShiftParams") -> np.ndarray:
    """Each feature's span in the unit box (the largest is 1)."""
    return (np.asarray(p.bounds[1], float) - p.lo) / p.scale


def _axis_counts(extent: np.ndarray, side: float) -> np.ndarray:
    return np.maximum(1, np.ceil(extent / side - 1e-9)).astype(np.int64)


def grid_shape(p: "MeanShiftParams") -> tuple:
    """Cells per feature of the public histogram grid (side summary * h)."""
    return tuple(int(n) for n in _axis_counts(_extent(p), p.h_unit * float(p.summary)))


def check_grid(p: "MeanShiftParams") -> None:
    """Refuse, before any process starts, a DP job whose grid is too large."""
    if p.dim > MAX_DP_DIM:
        raise InputError(f"privacy: DP mode takes at most {MAX_DP_DIM} features (the job has "
                         f"{p.dim}); use fewer features")
    cells = int(np.prod(grid_shape(p), dtype=np.float64))
    if cells > MAX_CELLS:
        raise InputError(f"privacy: the public grid would have {cells} cells (at most "
                         f"{MAX_CELLS}); use a larger bandwidth, a larger cell (summary), "
                         "tighter bounds or fewer features")


def _centres(extent: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Centres of the regular grid with counts[j] cells tiling [0, extent[j]]."""
    axes = [(np.arange(n) + 0.5) * (e / n) for n, e in zip(counts, extent)]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


def grid_cells(p: "MeanShiftParams") -> np.ndarray:
    """(cells, d) cell centres in the unit box (public), in C order of grid_shape."""
    return _centres(_extent(p), np.asarray(grid_shape(p)))


def grid_seeds(p: "MeanShiftParams") -> np.ndarray:
    """(m, d) public seeds: centres of a coarser grid of side h (every point of the
    box is within 0.71 h of one in 2-D), the side grown until m <= MAX_GRID_SEEDS."""
    ext = _extent(p)
    side = p.h_unit
    counts = _axis_counts(ext, side)
    while np.prod(counts, dtype=np.float64) > MAX_GRID_SEEDS:
        side *= 1.1
        counts = _axis_counts(ext, side)
    return _centres(ext, counts)


def n_grid_seeds(p: "MeanShiftParams") -> int:
    return len(grid_seeds(p))


def cell_index(unit_points: np.ndarray, p: "MeanShiftParams") -> np.ndarray:
    """Flat cell index of each (already clipped) unit-box point."""
    shape = np.asarray(grid_shape(p))
    ext = _extent(p)
    side = np.where(ext > 0, ext / shape, 1.0)
    idx = np.clip(np.floor(unit_points / side).astype(np.int64), 0, shape - 1)
    return np.ravel_multi_index(tuple(idx.T), tuple(shape))


def local_counts(points: np.ndarray, p: "MeanShiftParams") -> np.ndarray:
    """This party's exact (int64) count per public cell, rows clipped into the public
    bounds first: one record always changes exactly one count by one."""
    return count_cells([points], p)[0]


def count_cells(chunks: Iterable[np.ndarray], p: "MeanShiftParams") -> tuple:
    """(exact int64 count per public cell, rows): local_counts over row chunks, so
    a data set read where it lives (local_data.LocalData.chunks) never has to
    fit in memory: only one chunk and the grid's counts do."""
    total = np.zeros(int(np.prod(grid_shape(p))), np.int64)
    hi, rows = np.asarray(p.bounds[1], float), 0
    for arr in chunks:
        x = np.clip(check_finite(arr, "points", p.dim), p.lo, hi)
        total += np.bincount(cell_index(to_unit(x, p.lo, p.scale), p), minlength=len(total))
        rows += len(arr)
    return total, rows


@functools.lru_cache(maxsize=16)
def _sampler(scale: float):
    return gaussian_measurement(scale)


def add_noise(counts: np.ndarray, scale: float) -> np.ndarray:
    """counts + this party's own discrete-Gaussian noise of ``scale`` per cell
    (OpenDP's sampler, OpenSSL's CSPRNG; no floating-point sampling)."""
    return np.asarray(_sampler(float(scale))([int(v) for v in counts]), dtype=np.int64)


@dataclass
class NoisyHistogram:
    """One party's DP release: public cell centres, its noisy counts; ``noise``
    is the party's own noise (kept only for tests that compare with the twin)."""

    cells: np.ndarray        # (cells, d) unit box, public
    counts: np.ndarray       # (cells,) int64 noisy counts
    points: int              # this party's row count (never sent anywhere)
    noise: Optional[np.ndarray] = None


def local_release(points, p: "MeanShiftParams", keep_noise: bool = False
                  ) -> NoisyHistogram:
    """The local mechanism every party runs before sharing anything in DP mode.
    ``points``: an (n, d) array, or rows where they live (anything with a
    ``chunks()`` method yielding (m, d) arrays: local_data.LocalData)."""
    exact, rows = count_cells([points] if isinstance(points, np.ndarray)
                              else points.chunks(), p)
    noisy = add_noise(exact, noise_scale(p.privacy))
    return NoisyHistogram(grid_cells(p), noisy, rows, noisy - exact if keep_noise else None)


def clamp_threshold(p: "MeanShiftParams", world: int) -> int:
    """tau (an integer): a joint noisy count below it is set to 0 (public: from
    sigma and the number of parties k, as the joint noise has std sqrt(k) sigma)."""
    return int(math.ceil(CLAMP_STDS * math.sqrt(world) * noise_scale(p.privacy)))


def dp_params(p: "MeanShiftParams", world: int) -> "MeanShiftParams":
    """The parameters the DP run uses: min_weight raised to KEEP_STDS joint noise
    standard deviations, so noise alone rarely makes a cluster."""
    keep = KEEP_STDS * math.sqrt(world) * noise_scale(p.privacy)
    return replace(p, min_weight=max(float(p.min_weight), keep))


def clamp(joint: np.ndarray, tau: float) -> np.ndarray:
    """w = n [n >= tau] (the secure engine computes the same on shares)."""
    joint = np.asarray(joint, np.int64)
    return np.where(joint >= tau, joint, 0)


# ---- the plaintext twin's DP inputs -------------------------------------------

def twin_inputs(parts: Sequence[np.ndarray], p: "MeanShiftParams",
                noise: Optional[np.ndarray] = None):
    """What the secure DP run computes on shares, in the clear: (cell centres
    (cells, d) on the engine's 2^-16 grid, clamped joint weights (cells,), public
    seeds (m, d), the DP run's parameters). ``noise``: the parties' total noise
    per cell (from a secure run, to compare); default: fresh noise from each party."""
    world = len(parts)
    exact = np.sum([local_counts(q, p) for q in parts], axis=0)
    if noise is None:
        sigma = noise_scale(p.privacy)
        noise = np.sum([add_noise(np.zeros_like(exact), sigma) for _ in parts], axis=0)
    noise = np.asarray(noise, np.int64).reshape(exact.shape)
    w = clamp(exact + noise, clamp_threshold(p, world)).astype(np.float64)
    # cells of weight 0 add nothing to any sum, intensity or size: the twin skips them
    # (the secure run cannot: which cells are 0 is secret); at least one row stays
    used = np.flatnonzero(w) if w.any() else np.arange(1)
    return (quantise_points(grid_cells(p))[used], w[used], quantise_points(grid_seeds(p)),
            dp_params(p, world))


# ---- the secure engine's DP inputs (inside an MPC session) -------------------

@dataclass
class SharedHistogram:
    """The DP run's inputs on shares, named as in protocol.run_protocol."""

    x: np.ndarray            # (R, d) public cell centres on the 2^-16 grid
    pts: object              # (R, d) MPCTensor of x (public values, dealt by rank 0)
    sqn: object              # (R, 1) |x|^2
    upd: object              # (R, d + 1) [w x, w] at 16 bits, w the clamped joint counts
    total: int               # the opened sum of w (DP: a function of the noisy counts)
    params: "MeanShiftParams"


def _public(values: np.ndarray):
    """Public values as shares (rank 0 shares them; everyone knows them)."""
    import torch     # not at import: params imports this module (the CLI's caller has no torch)

    return import_crypten().cryptensor(torch.from_numpy(np.ascontiguousarray(values)).float(),
                                       src=0)


def share_histogram(cells: np.ndarray, counts: np.ndarray, p: "MeanShiftParams",
                    rank: int, world: int) -> SharedHistogram:
    """Every party secret-shares its own noisy count vector; the joint counts are
    their (local) sum; w = n [n >= tau] in one batched comparison; then [w x, w]
    exactly (w times the public integer encodings of x: no truncation). One value
    is opened: sum(w), the public bound of the division (post-processing)."""
    import torch
    from crypten.encoder import FixedPointEncoder  # CrypTen: loaded late (start-up cost)

    crypten = import_crypten()
    x = quantise_points(cells)
    r = len(x)
    joint = None
    for src in range(world):
        mine = torch.from_numpy(np.asarray(counts, np.int64).reshape(r, 1)) if src == rank \
            else torch.zeros(r, 1, dtype=torch.long)
        part = crypten.cryptensor(mine, src=src, precision=0)
        joint = part if joint is None else joint + part
    (big,) = ge_zero(joint - clamp_threshold(p, world))
    w = joint * big                                           # integers, scale 1
    xint = np.round(x * 2.0**POINT_BITS).astype(np.int64)
    wx = w * torch.from_numpy(xint)                           # exact: w X, scale 1
    wx.encoder = FixedPointEncoder(precision_bits=BULK_BITS)  # = w x at 16 bits
    upd = crypten.cat([wx, rescale(w, BULK_BITS)], dim=1)
    total = int(round(float(disclose(w.sum(), "dp-total").item())))
    sq = (x * x).sum(1, keepdims=True)
    return SharedHistogram(x, _public(x), _public(sq), upd, total, dp_params(p, world))


def shared_grid_seeds(p: "MeanShiftParams"):
    """(m, d) public seeds (grid_seeds on the 2^-16 grid) as shares, 16 bits."""
    return _public(quantise_points(grid_seeds(p)))
