"""The ONE registry of kernels: plaintext definition and secret-shared twin side by side.

Every other place (parameter checks, job spec, CLI choices, node policy
defaults, the protocol) takes kernel names and behaviour from ``KERNELS``.

Both act on squared distances in the unit box.
- flat:     w = [d^2 <= h^2]                      (one secure comparison each)
- gaussian: w = (1 - d^2/B)^(2^k)                 (k squarings, no comparison)
  with B = d (the unit box's squared diameter) and 2^k = round2(B / (2 h^2)),
  so w ~ exp(-d^2 / (2 h^2)) (Cheon, Kim, Park, SAC 2019). Its default tol is
  max(1e-4, 2^(k-17)) h, at most 1e-3 h: 1e-4 to 2.4e-4 h for k <= 5 (h >= about
  0.18 of a 2-D box), 1e-3 h from k = 7 (h = 0.1); the flat kernel's is scikit-learn's 1e-3 h
  (``Kernel.tol_h``).

A kernel with an ``edge`` (flat) is a sign test: the protocol batches
``edge(d^2) >= 0`` with its other comparisons into one secure comparison, and
evaluates it exactly on the integer encodings (``radius2``; protocol._exact_edge),
with each centroid rounded to the points' 2^-16 grid for the test
(``EDGE_GRID_BITS``, ``on_edge_grid``): T then fits in 35 bits at d = 2
instead of 43 (a fifth of a pass's bytes), and the test stays exact on what
it is given. A centroid moves by its full 2^-20 precision; only which points
it covers is decided at 2^-16 (a point within 2^-16 of the edge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .data import POINT_BITS
from .mpc.fixedpoint import BULK_BITS, ge_zero


@dataclass(frozen=True)
class Kernel:
    name: str
    summary: str
    plain: Callable          # (sq_dist ndarray, params) -> weights ndarray
    secure: Callable         # (sq_dist MPCTensor, params) -> weights MPCTensor
    edge: Optional[Callable] = None   # (sq_dist, params) -> term whose sign is the weight
    radius2: Optional[Callable] = None   # params -> squared radius r^2 of a sign-test kernel
    tol_h: Callable = lambda p: 1e-3   # params -> the default tol in units of h (params.tol_unit)


EDGE_GRID_BITS = POINT_BITS      # the points' grid: centroids rounded to it for the edge


def on_edge_grid(c: np.ndarray) -> np.ndarray:
    """Centroids (m, d), unit box, rounded half up to the edge test's grid (what
    protocol._on_grid computes exactly on shares)."""
    q = 2.0 ** EDGE_GRID_BITS
    return np.floor(np.asarray(c, np.float64) * q + 0.5) / q


def _flat_plain(sq, p):
    return (sq <= p.h_unit**2).astype(np.float64)


def _flat_edge(sq, p):
    return p.h_unit**2 - sq


def _flat_secure(sq, p):
    """0/1 integers (scale 1): multiplying them into fixed point needs no truncation."""
    return ge_zero(_flat_edge(sq, p))[0]


def _gauss_plain(sq, p):
    base = np.clip(1.0 - sq / p.distance_bound, 0.0, 1.0)
    for _ in range(p.gaussian_power):
        base = base * base
    return base


def _gauss_tol(p) -> float:
    """1e-4 h, but at least 2^(k - BULK_BITS - 1) h: a secure update's own noise
    grows with the 2^k of the squarings (measured about 0.05 2^(k-16) h: 1e-5 h
    at k = 4, 1e-4 h at k = 7), and a tol near it never stops (the floor keeps
    it about ten times above; 1e-4 h at k = 7 ran to max_iter in an emulation
    of the engine's roundings). Never looser than scikit-learn's 1e-3 h."""
    return min(1e-3, max(1e-4, 2.0 ** (p.gaussian_power - BULK_BITS - 1)))


def _gauss_secure(sq, p):
    base = 1.0 - sq * (1.0 / p.distance_bound)
    for _ in range(p.gaussian_power):
        base = base.square()
    return base


KERNELS: dict = {
    "flat": Kernel("flat", "weight 1 inside radius h, 0 outside (scikit-learn's)",
                   _flat_plain, _flat_secure, _flat_edge, lambda p: p.h_unit**2),
    # tol 1e-4 h where the noise allows (_gauss_tol): copies of one mode differ in
    # intensity only to second order in their distance, far below the fixed-point
    # error of a gaussian weight sum (intensity_error), so which copy the merge
    # keeps is a near-tie; scikit-learn's 1e-3 h left copies up to 1.3e-3 h apart,
    # 1e-4 h about 1.5e-4 h, for 3-5 more iterations (benchmarks/gaussian_bound.py)
    "gaussian": Kernel("gaussian", "comparison-free polynomial (1 - d^2/B)^(2^k) ~ "
                       "exp(-d^2 / 2h^2)", _gauss_plain, _gauss_secure, tol_h=_gauss_tol),
}
KERNEL_NAMES: tuple = tuple(KERNELS)
DEFAULT_KERNEL = "flat"


def get_kernel(name: str) -> Kernel:
    return KERNELS[name]


def plain_kernel(sq_dist: np.ndarray, p) -> np.ndarray:
    return KERNELS[p.kernel].plain(sq_dist, p)


def intensity_error(p, max_intensity: float) -> float:
    """A bound on |secure - exact| of a kernel weight sum (a merge intensity) of
    at most ``max_intensity``: 0 for the flat kernel (exact 0/1 counts); for the
    gaussian twice the relative error 2^k 2^-BULK_BITS of its k squarings at
    BULK_BITS (each rounding's error doubles with every later squaring),
    times the intensity. Measured (a numpy emulation of the engine's
    stochastic roundings, 1,000-20,000 points, k = 4-9): at most about one
    such relative error."""
    if KERNELS[p.kernel].edge is not None:
        return 0.0
    return 2.0 * 2.0 ** (p.gaussian_power - BULK_BITS) * float(max_intensity)
