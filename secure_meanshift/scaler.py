"""Federated standardisation: the pooled mean and variance of every feature,
computed under MPC, as scikit-learn's ``StandardScaler``.

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
Reveals the pooled mean and variance of every feature and nothing else.

Two users, one protocol (``secure_moments``): ``SecureStandardScaler`` (the
estimator's side: fit the moments in a run of their own, then each party
transforms its rows and passes them to ``SecureMeanShift``; the centres come out
in standardised units, ``inverse_transform`` maps them back), and jobs with
``scale: standard`` (params.MeanShiftParams.scaling; job spec, simulator's
``--scale standard``): ``standardise_party`` inside the job's own MPC session,
before the bandwidth estimate, seeding and summary; the job's lengths are in
standardised units, its bounds in data units (the run's are derived from them),
its centres reported in data units (``Moments.inverse``) and as opened. The
plaintext twin uses ``plain_moments`` (float64) the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from numbers import Real, Integral

from .disclosure import disclose
from .errors import InputError
from .mpc._compat import import_crypten
from .params import MeanShiftParams
from .validation import as_matrix, as_parties, check_finite_cells

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


def _moments_job(rank: int, parties: list):
    return secure_moments(np.asarray(parties[rank], float))


def pooled_moments(parties: Sequence[np.ndarray], engine: str = "secure",
                   timeout_s: float = 120.0) -> tuple[int, np.ndarray, np.ndarray]:
    """(N, mean, variance) of the parties' rows pooled: under MPC (one spawned
    process per party) or, with engine="plaintext", in numpy."""
    if engine == "plaintext":
        x = np.concatenate(parties)
        return len(x), x.mean(0), x.var(0)

    from .simulate import run_mpc_function    # (simulate -> runtime -> this module)

    return run_mpc_function(_moments_job, len(parties), ([np.asarray(q, float) for q in parties],),
                            timeout_s=timeout_s)[0]


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


def plain_moments(parties: Sequence[np.ndarray]) -> Moments:
    """The twin's moments: float64 over the pooled rows (pooled_moments, plaintext)."""
    _, mean, var = pooled_moments(parties, engine="plaintext")
    return Moments.of(mean, var)


class SecureStandardScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Standardise features by the parties' pooled mean and standard deviation,
    as scikit-learn's ``StandardScaler`` on the pooled data, without pooling it.

    Parameters
    ----------
    with_mean : bool, default=True
        Centre the data (on the pooled mean).

    with_std : bool, default=True
        Scale to unit pooled (population) variance.

    n_parties : int, default=2
        Only when X is a single array: it is split into this many parties.

    engine : {"secure", "plaintext"}, default="secure"
        "secure": one spawned process per party (plus the dealer's), only the
        pooled mean and variance are opened; "plaintext": numpy.

    timeout_s : float, default=120.0
        Limit for the secure computation.

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,) or None
    var_ : ndarray of shape (n_features,) or None
    scale_ : ndarray of shape (n_features,) or None
        sqrt(var_), with 1.0 for a constant feature (as scikit-learn).
    n_samples_seen_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray (DataFrames with string column names only)

    Each party then applies ``transform`` to its own rows locally; X may be a
    list of parties (a list of arrays is returned) or one array.

    Relation to jobs: a job spec's ``scale: standard`` (and the simulator's
    ``--scale standard``) runs the same protocol (``secure_moments``) inside the
    job's own session instead of a run of its own; there the job reports its
    centres in data units itself, here pass ``SecureMeanShift``'s
    ``cluster_centers_`` through ``inverse_transform``.
    """

    _parameter_constraints: dict = {
        "with_mean": ["boolean"],
        "with_std": ["boolean"],
        "n_parties": [Interval(Integral, 1, None, closed="left")],
        "engine": [StrOptions({"secure", "plaintext"})],
        "timeout_s": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        *,
        with_mean: bool = True,
        with_std: bool = True,
        n_parties: int = 2,
        engine: str = "secure",
        timeout_s: float = 120.0,
    ):
        self.with_mean = with_mean
        self.with_std = with_std
        self.n_parties = n_parties
        self.engine = engine
        self.timeout_s = timeout_s

    def fit(self, X, y=None):
        """Compute the pooled mean and variance (see the class docstring)."""
        self._validate_params()
        secure = self.engine == "secure"
        if secure and self.n_parties < 2:
            raise InputError("n_parties: the secure engine needs at least 2 parties")
        data = as_parties(X, self.n_parties, min_parties=2 if secure else 1)
        first = X if data.single else next((f for f in data.frames if f is not None),
                                           data.parties[0])
        validate_data(self, first, reset=True, skip_check_array=True)
        if data.names is not None and not data.single:
            self.feature_names_in_ = np.asarray(data.names, dtype=object)
        n, mean, var = pooled_moments(data.parties, self.engine, self.timeout_s)
        self.n_samples_seen_ = int(n)
        self.mean_ = np.asarray(mean, float) if self.with_mean else None
        self.var_ = np.asarray(var, float) if self.with_std else None
        self.scale_ = std_of(self.var_) if self.with_std else None
        return self

    def _one(self, X, forward: bool) -> np.ndarray:
        arr, names = as_matrix(X, "X", finite=False)
        validate_data(self, X, reset=False, skip_check_array=True)
        check_finite_cells(arr, "X", names)
        if forward:
            arr = arr - self.mean_ if self.mean_ is not None else arr.copy()
            return arr / self.scale_ if self.scale_ is not None else arr
        arr = arr * self.scale_ if self.scale_ is not None else arr.copy()
        return arr + self.mean_ if self.mean_ is not None else arr

    def _apply(self, X, forward: bool):
        check_is_fitted(self, "n_samples_seen_")
        if isinstance(X, (list, tuple)) and X and all(
                hasattr(q, "columns") or np.ndim(q) == 2 for q in X):
            return [self._one(q, forward) for q in X]       # each party its own rows
        return self._one(X, forward)

    def transform(self, X, copy: Optional[bool] = None):
        """Standardise one party's rows (or a list of parties' rows, each alone)."""
        return self._apply(X, True)

    def inverse_transform(self, X, copy: Optional[bool] = None):
        """Back to the data's units (e.g. the clustering's centres)."""
        return self._apply(X, False)
