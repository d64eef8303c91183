"""The ONE registry of kernels: plaintext definition and secret-shared twin side by side.

Every other place (parameter checks, job spec, CLI choices, node policy
defaults, the protocol) takes kernel names and behaviour from ``KERNELS``.

Both act on squared distances in the unit box.
- flat:     w = [d^2 <= h^2]                      (one secure comparison each)
- gaussian: w = (1 - d^2/B)^(2^k)                 (k squarings, no comparison)
  with B = d (the unit box's squared diameter) and 2^k = round2(B / (2 h^2)),
  so w ~ exp(-d^2 / (2 h^2)) (Cheon, Kim, Park, SAC 2019).

A kernel with an ``edge`` (flat) is a sign test: the protocol batches
``edge(d^2) >= 0`` with its other comparisons into one secure comparison, and
evaluates it exactly on the integer encodings (``radius2``; protocol._exact_edge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .mpc.fixedpoint import ge_zero


@dataclass(frozen=True)
class Kernel:
    name: str
    summary: str
    plain: Callable          # (sq_dist ndarray, params) -> weights ndarray
    secure: Callable         # (sq_dist MPCTensor, params) -> weights MPCTensor
    edge: Optional[Callable] = None   # (sq_dist, params) -> term whose sign is the weight
    radius2: Optional[Callable] = None   # params -> squared radius r^2 of a sign-test kernel


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


def _gauss_secure(sq, p):
    base = 1.0 - sq * (1.0 / p.distance_bound)
    for _ in range(p.gaussian_power):
        base = base.square()
    return base


KERNELS: dict = {
    "flat": Kernel("flat", "weight 1 inside radius h, 0 outside (scikit-learn's)",
                   _flat_plain, _flat_secure, _flat_edge, lambda p: p.h_unit**2),
    "gaussian": Kernel("gaussian", "comparison-free polynomial (1 - d^2/B)^(2^k) ~ "
                       "exp(-d^2 / 2h^2)", _gauss_plain, _gauss_secure),
}
KERNEL_NAMES: tuple = tuple(KERNELS)
DEFAULT_KERNEL = "flat"


def get_kernel(name: str) -> Kernel:
    return KERNELS[name]


def plain_kernel(sq_dist: np.ndarray, p) -> np.ndarray:
    return KERNELS[p.kernel].plain(sq_dist, p)

