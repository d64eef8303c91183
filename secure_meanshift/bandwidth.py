"""Secure bandwidth estimation: scikit-learn's ``estimate_bandwidth`` under MPC.

scikit-learn: take a sample of the points, and return the mean over the sample
of the distance from each sampled point to its k-th nearest neighbour within
the sample (itself included), k = max(1, int(quantile * sample size)).

Here (every step one tensor operation over the S x S sample pairs, all exact
integer arithmetic on the fixed-point encodings, no truncation):
1. the public seed picks S row indices of the joint data (like the dusts);
   their shares are sliced from the shared points (x = X 2^-16);
2. D_ij = |X_i - X_j|^2 exactly (one Beaver matmul of integer views);
3. per row, a bisection on the radius, L_i (secret) and W (public, halving):
   M_i = L_i + W/2; b_i = [#{j: D_ij <= M_i^2} >= k]; L_i += (1 - b_i) W/2;
   after log2(W0) steps the k-th distance r_i lies in (L_i, L_i + 1] (units 2^-16);
4. only sum_i L_i is opened: bandwidth = (sum_i L_i / S + 1/2) 2^-16 * scale.

Reveals the bandwidth and nothing else (the sum is the bandwidth times a public
constant). Accuracy: within 2^-17 (unit box) of scikit-learn's value on the
same (2^-16-grid) points and sample.

The caller's side (one process per party: ``estimate_bandwidth``) is in
simulate.py, which runs processes; this module runs inside them.
"""

from __future__ import annotations

import math
from dataclasses import replace as _replace
from typing import Callable, Optional, Sequence

import numpy as np

from .data import POINT_BITS, quantise_points, to_unit
from .errors import InputError
from .params import EstimateBandwidth, MeanShiftParams, default, dust_indices

DEFAULT_SAMPLES = default("n_samples")   # S: S x S work per bisection step; sklearn's: all N
DEFAULT_QUANTILE = default("quantile")


def sample_size(n_samples: Optional[int], total: int) -> int:
    return total if n_samples is None else max(1, min(int(n_samples), total))


def sample_indices(seed: int, total: int, n_samples: Optional[int]) -> np.ndarray:
    """The public choice of sampled rows (sorted) in the concatenation of all parties' rows."""
    return dust_indices(seed + 1, total, sample_size(n_samples, total))


def plain_bandwidth(parties: Sequence[np.ndarray], bounds, quantile: float = DEFAULT_QUANTILE,
                    n_samples: Optional[int] = DEFAULT_SAMPLES, seed: int = 0) -> float:
    """The plaintext twin (scikit-learn's formula on the engine's 2^-16-grid points)."""
    lo, scale = np.asarray(bounds[0], float), float(np.max(np.subtract(bounds[1], bounds[0])))
    x = np.concatenate([quantise_points(to_unit(np.asarray(q, float), lo, scale))
                        for q in parties])
    s = x[sample_indices(seed, len(x), n_samples)]
    k = max(1, int(len(s) * quantile))
    d = np.sqrt(np.maximum(((s[:, None, :] - s[None, :, :]) ** 2).sum(-1), 0))
    return float(np.sort(d, axis=1)[:, k - 1].mean() * scale)


def secure_bandwidth_unit(unit_points: np.ndarray, quantile: float, n_samples: Optional[int],
                          seed: int) -> float:
    """Run inside an MPC session by every party; returns h in unit-box units (all ranks)."""

    from .mpc._compat import import_crypten
    from .disclosure import disclose
    from .protocol import _exchange_sizes, _int_view, _share_rows

    crypten = import_crypten()
    comm = crypten.comm.get()
    rank = comm.get_rank()
    x = quantise_points(unit_points)
    rows, _ = _exchange_sizes(comm, len(x), len(x))
    idx = sample_indices(seed, sum(rows), n_samples)         # sorted, public
    # only the sampled rows are shared (in party order = the sorted global order):
    # each party's own sampled rows, not all N (memory and traffic O(S), not O(N))
    starts = np.cumsum([0] + rows)
    own = [idx[(idx >= starts[r]) & (idx < starts[r + 1])] - starts[r]
           for r in range(len(rows))]
    xs = _int_view(_share_rows(x[own[rank]], [len(o) for o in own], x.shape[1], rank))
    # xs: (S, d) integers X (16-bit: exactly X 2^-16)
    s = xs.size(0)
    k = max(1, int(s * quantile))
    xx = (xs * xs).sum(dim=1, keepdim=True)                  # exact: integer views
    dist = xx + xx.t() - 2 * xs.matmul(xs.t())               # (S, S) |X_i - X_j|^2
    max_int = math.sqrt(x.shape[1]) * 2.0**POINT_BITS
    w = 2 ** int(math.ceil(math.log2(max_int)))              # public bracket width
    low = dist[:, :1] * 0                                    # (S, 1) L_i = 0
    while w > 1:
        half = w // 2
        mid = low + half
        inside = _ge_zero_int(mid * mid - dist)              # [D_ij <= M_i^2], scale 1
        enough = _ge_zero_int(inside.sum(dim=1, keepdim=True) - k)
        low = low + (1 - enough) * half
        w = half
    total_low = float(disclose(low.sum(), "bandwidth").item())   # the one opened value
    return (total_low / s + 0.5) / 2.0**POINT_BITS


def _ge_zero_int(t):
    """[t >= 0] for integer (scale 1) shares: relabel (same shares, same sign) and compare."""
    from crypten.encoder import FixedPointEncoder

    from .mpc.fixedpoint import BULK_BITS, ge_zero

    y = t.clone()
    y.encoder = FixedPointEncoder(precision_bits=BULK_BITS)
    return ge_zero(y)[0]


def run_party_auto(points: np.ndarray, params: MeanShiftParams, mpc, progress=None,
                   name: str = "points", clip: bool = False, min_bandwidth: float = 0.0,
                   check: Optional[Callable[[float], None]] = None, transport=None):
    """One party's side of a job whose bandwidth is EstimateBandwidth (party node
    worker, simulator): in one MPC session, first the bandwidth estimate (only h
    is opened, to every party, as it is a job parameter), then mean-shift with it.
    With ``scaling`` "standard" the rows are standardised first
    (runtime.run_party) and h is estimated on them (standardised units).
    ``min_bandwidth``: this party's policy floor (in the bounds' units,
    runtime.run_party): a smaller estimate aborts the job before any centroid is
    computed. ``check(h)``, if given, runs next with the estimate and may refuse
    it (InputError; every party computes the same h, so all refuse alike).
    ``clip``: rows outside the bounds are clipped into them (runtime.run_party).
    ``transport``: links already made (runtime.run_party). Returns (PartyOutcome, h)."""
    if not params.estimates_bandwidth:
        raise ValueError("run_party_auto: the bandwidth is given; use runtime.run_party")
    how: EstimateBandwidth = params.bandwidth

    def estimate(p: MeanShiftParams, x: np.ndarray) -> MeanShiftParams:
        h = secure_bandwidth_unit(to_unit(x, p.lo, p.scale), how.quantile, how.n_samples,
                                  p.seed) * p.scale
        if check is not None:
            check(h)
        if progress:
            progress({"stage": "bandwidth", "seconds": 0.0})
        return _replace(p, bandwidth=h)

    from .runtime import run_party     # torch and CrypTen: loaded by the party process only

    out = run_party(points, params, mpc, progress, name, before=estimate, clip=clip,
                    min_bandwidth=min_bandwidth, transport=transport)
    return out, out.params.bandwidth
