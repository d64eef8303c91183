"""Kernel weights: the plaintext definition and its secret-shared twin, side by side.

Both act on squared distances in the unit box.
- flat:     w = [d^2 <= h^2]                      (one secure comparison each)
- gaussian: w = (1 - d^2/B)^(2^k)                 (k squarings, no comparison)
  with B = d (the unit box's squared diameter) and 2^k = round2(B / (2 h^2)),
  so w ~ exp(-d^2 / (2 h^2)) (Cheon, Kim, Park, SAC 2019).
"""

from __future__ import annotations

import numpy as np

from .params import MeanShiftParams


def plain_kernel(sq_dist: np.ndarray, p: MeanShiftParams) -> np.ndarray:
    if p.kernel == "flat":
        return (sq_dist <= p.h_unit**2).astype(np.float64)
    base = np.clip(1.0 - sq_dist / p.distance_bound, 0.0, 1.0)
    for _ in range(p.gaussian_power):
        base = base * base
    return base


def secure_kernel(sq_dist, p: MeanShiftParams):
    """Returns an MPCTensor of weights. Flat weights are 0/1 integers (scale 1):
    multiplying them into fixed-point tensors needs no truncation."""
    if p.kernel == "flat":
        return sq_dist.le(p.h_unit**2)
    base = 1.0 - sq_dist * (1.0 / p.distance_bound)
    for _ in range(p.gaussian_power):
        base = base.square()
    return base
