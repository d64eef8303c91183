"""``SecureStandardScaler``: scikit-learn's ``StandardScaler`` on the parties'
pooled data, without pooling it: the pooled mean and variance of every feature
under MPC (moments.py: the protocol, what it opens and its accuracy).

Two users, one protocol (``moments.secure_moments``): ``SecureStandardScaler``
(the estimator's side: fit the moments in a run of their own, then each party
transforms its rows and passes them to ``SecureMeanShift``; the centres come out
in standardised units, ``inverse_transform`` maps them back), and jobs with
``scale: standard`` (params.MeanShiftParams.scaling; job spec, simulator's
``--scale standard``): ``moments.standardise_party`` inside the job's own MPC
session, before the bandwidth estimate, seeding and summary; the job's lengths
are in standardised units, its bounds in data units (the run's are derived from
them), its centres reported in data units (``Moments.inverse``) and as opened.
The plaintext twin uses ``moments.plain_moments`` (float64) the same way.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from numbers import Real, Integral

from .errors import InputError
from .moments import plain_pooled, secure_moments, std_of
from .simulate import run_mpc_function
from .validation import as_matrix, as_parties, check_finite_cells


def _moments_job(rank: int, parties: list):
    return secure_moments(np.asarray(parties[rank], float))


def pooled_moments(parties: Sequence[np.ndarray], engine: str = "secure",
                   timeout_s: float = 120.0) -> tuple[int, np.ndarray, np.ndarray]:
    """(N, mean, variance) of the parties' rows pooled: under MPC (one spawned
    process per party) or, with engine="plaintext", in numpy."""
    if engine == "plaintext":
        return plain_pooled(parties)

    return run_mpc_function(_moments_job, len(parties), ([np.asarray(q, float) for q in parties],),
                            timeout_s=timeout_s)[0]


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
