"""The pooled mean and variance of every feature under MPC, and the public map
they give between data units and standardised units (federated standardisation).

Standardising each party's data alone is wrong when the parties' populations
differ, and no party may pool the data. Here every party secret-shares two
per-feature sums of its own rows, the shares are added, and only the pooled
totals are opened (to every party):

1. the row counts (public anyway: every job reveals each party's N);
2. sum_i x_i / N per feature -> the pooled mean (opened);
3. sum_i (x_i - mean)^2 / N per feature -> the pooled (population) variance
   (opened). Two passes, so no precision is lost to E[x^2] - mean^2.

Each party's contribution is encoded as an integer (its value times 2^32,
rounded) and shared with CrypTen at precision 0: sums of shares need no
truncation, and the opened totals are decoded in float64 (CrypTen's own
decoder returns float32). Accuracy: each party's contribution is rounded once, so
the opened mean and variance are within (number of parties) x 2^-33 of float64.
Reveals the pooled mean and variance of every feature and nothing else
(docs/leakage.md [pooled-moments]).

Users: ``scaler.SecureStandardScaler`` (the estimator's side, a run of its
own) and jobs with ``scale: standard`` (``standardise_party`` inside the job's
session; the twin: ``plain_moments``). No process starting here (runtime.py
imports this module).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np
import torch

from .disclosure import disclose
from .errors import InputError
from .mpc._compat import import_crypten
from .params import MeanShiftParams

FRACTION_BITS = 32
MAX_MAGNITUDE = 2.0 ** 29      # |contribution| per feature: 2^29 * 2^32 * parties < 2^63


def _encode(values: np.ndarray, what: str) -> np.ndarray:
    if np.abs(values).max(initial=0.0) >= MAX_MAGNITUDE:
        j = int(np.argmax(np.abs(values) >= MAX_MAGNITUDE))
        raise InputError(f"column {j}: the {what} is too large for the fixed-point encoding "
                         f"(2^29); divide the feature by a public constant first")
    return np.round(values * 2.0 ** FRACTION_BITS).astype(np.int64)


def _secure_sum(local: np.ndarray, rank: int, world: int) -> np.ndarray:
    """sum over parties of each party's (d,) contribution; only the total is opened."""
    crypten = import_crypten()
    enc = torch.from_numpy(local)
    total = None
    for src in range(world):
        t = crypten.cryptensor(enc if src == rank else torch.zeros_like(enc), src=src,
                               precision=0)
        total = t if total is None else total + t
    opened = disclose(total, "pooled-moments").numpy().astype(np.int64)
    return opened.astype(np.float64) / 2.0 ** FRACTION_BITS


def secure_moments(x: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Run inside an MPC session by every party on its own (n_i, d) rows:
    (pooled N, pooled mean (d,), pooled population variance (d,)), on every rank."""
    crypten = import_crypten()
    comm = crypten.comm.get()
    rank, world = comm.get_rank(), comm.get_world_size()
    sizes = comm.all_gather(torch.tensor([len(x)], dtype=torch.long))
    n = int(sum(int(s[0]) for s in sizes))
    mean = _secure_sum(_encode(x.sum(0) / n, "mean"), rank, world)
    var = _secure_sum(_encode(((x - mean) ** 2).sum(0) / n, "variance"), rank, world)
    return n, mean, np.maximum(var, 0.0)


def std_of(var: np.ndarray) -> np.ndarray:
    """sqrt(var), with 1.0 for a constant feature (as scikit-learn's StandardScaler)."""
    scale = np.sqrt(np.asarray(var, float))
    return np.where(scale < 10 * np.finfo(float).eps, 1.0, scale)


@dataclass(frozen=True)
class Moments:
    """The pooled mean and standard deviation per feature (public once opened):
    the public map between data units and standardised units."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, mean, var) -> "Moments":
        return cls(np.asarray(mean, float), std_of(var))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Data units -> standardised units (each party, its own rows)."""
        return (np.asarray(x, float) - self.mean) / self.std

    def inverse(self, z: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """Standardised units -> data units (e.g. revealed centres): z * std + mean."""
        return None if z is None else np.asarray(z, float) * self.std + self.mean

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


def standardised_params(params: MeanShiftParams, moments: Moments) -> MeanShiftParams:
    """The run's parameters on standardised rows: bounds derived from the job's
    (data units) as (bounds - mean) / std, which holds every standardised row
    (the map is increasing per feature); scaling "none" (applied); the lengths
    were given in standardised units already. Checks the bandwidth against the
    derived domain (InputError)."""
    lo, hi = (moments.forward(np.asarray(b, float)[None, :])[0] for b in params.bounds)
    return replace(params, bounds=(lo, hi), scaling="none")


def standardise_party(x: np.ndarray, params: MeanShiftParams
                      ) -> tuple[np.ndarray, MeanShiftParams, Moments]:
    """Inside the job's MPC session, by every party on its own checked rows (data
    units, inside the bounds): the pooled moments (secure_moments: only they are
    opened), then this party's rows standardised, the derived parameters and the
    moments (the same on every rank)."""
    _, mean, var = secure_moments(np.asarray(x, float))
    m = Moments.of(mean, var)
    return m.forward(x), standardised_params(params, m), m


def plain_pooled(parties: Sequence[np.ndarray]) -> tuple[int, np.ndarray, np.ndarray]:
    """(N, mean, population variance) of the pooled rows in float64 (the twin's)."""
    x = np.concatenate([np.asarray(q, float) for q in parties])
    return len(x), x.mean(0), x.var(0)


def plain_moments(parties: Sequence[np.ndarray]) -> Moments:
    """The twin's moments: float64 over the pooled rows."""
    _, mean, var = plain_pooled(parties)
    return Moments.of(mean, var)
