"""scikit-learn estimator: ``SecureMeanShift(bandwidth=...).fit(parties)``.

``fit`` runs a local simulation (one OS process per party and one for the
dealer, as run_simulation) or, with ``engine="plaintext"``, the plaintext twin.
The same parameters reach the CLI (``secure-meanshift simulate``) and the job
spec (meanshift_rpc/jobspec.py).

Every input is checked in the caller's process before any party process starts
(secure_meanshift/validation.py); both engines apply the same checks.

Labels follow scikit-learn's ``cluster_all`` semantics: every point gets the
index of its nearest centre (``cluster_all=True``) or -1 when no centre lies
within the bandwidth (``cluster_all=False``). Each party computes its own
points' labels LOCALLY from the revealed centres: nothing beyond the centres
is opened (a party that receives no centres gets no labels).
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from numbers import Integral, Real
from typing import Optional

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .simulate import estimate_bandwidth, start_fork_server
from .data import data_bounds
from .errors import InputError
from .privacy import PrivacySpec
from .binseeds import AUTO_BIN_WORK, BIN_SEEDING, MAX_BIN_SEEDS, auto_bin_work, n_bin_seeds
from .params import (AUTO_POINT_SEEDS_UP_TO, MAX_POINT_SEEDS, PARAMS, EstimateBandwidth,
                     MeanShiftParams, Param, bandwidth_value, default, resolve_seeding,
                     resolve_summary)
from .validation import (as_matrix, as_parties, check_bounds, check_finite_cells, check_grid,
                         check_inside)


class SeedingWarning(UserWarning):
    """seeding="auto" picked seeds other than every point (above the every-point limit)."""


def _warn_seeding(p: MeanShiftParams, n: int) -> None:
    """Say once per fit that "auto" switched away from every point as seed, and to what."""
    why = (f"{n:,} points{' summarised' if p.summary is not None else ''}, more than "
           f"{AUTO_POINT_SEEDS_UP_TO:,} in exact mode")
    if p.seeding == BIN_SEEDING:
        msg = (f"seeding: {why}, so 'auto' picked 'sklearn-bins' ({n_bin_seeds(p):,} candidate "
               "bins of side h), not every point as seed: centres are those of scikit-learn's "
               "MeanShift(bin_seeding=True), not MeanShift()'s. seeding='points' takes up to "
               f"{MAX_POINT_SEEDS:,} rows; the choice is in seeding_.")
    else:
        m = n_bin_seeds(p)
        bins = (f"{m:,} candidate bins, more than {MAX_BIN_SEEDS:,}" if m > MAX_BIN_SEEDS else
                f"{m:,} candidate bins: about {auto_bin_work(p, n, p.summary):,.0f} kernel "
                f"tests an iteration, more than 'auto' takes ({AUTO_BIN_WORK:,})")
        msg = (f"seeding: {why}, and scikit-learn's bin_seeding is out of reach ({bins}), so "
               f"'auto' picked {p.seeding!r} (dusts and every party's local modes): centres "
               "may differ from MeanShift()'s and MeanShift(bin_seeding=True)'s. "
               f"seeding='points' takes up to {MAX_POINT_SEEDS:,} rows; the choice is in "
               "seeding_.")
    warnings.warn(msg, SeedingWarning, stacklevel=5)   # the caller of fit


def assign_labels(points: np.ndarray, centres: np.ndarray, bandwidth: float,
                  cluster_all: bool = True) -> np.ndarray:
    """Index of the nearest centre per point (one tensor operation over all pairs)."""
    x = np.asarray(points, float)
    c = np.asarray(centres, float).reshape(-1, x.shape[1] if x.ndim == 2 else 1)
    if len(c) == 0:
        return np.full(len(x), -1)
    sq = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
    lab = np.argmin(sq, axis=1)
    if not cluster_all:
        lab = np.where(sq[np.arange(len(x)), lab] <= bandwidth**2, lab, -1)
    return lab


def sklearn_order(centres: np.ndarray, intensity: Optional[np.ndarray]) -> np.ndarray:
    """Row order of scikit-learn's ``cluster_centers_``: decreasing (intensity,
    centre coordinates) as tuples. Without intensities (the secure engine does
    not open them): decreasing coordinates, scikit-learn's tie order."""
    keys = [((0.0 if intensity is None else float(intensity[i])), tuple(map(float, c)))
            for i, c in enumerate(centres)]
    return np.asarray(sorted(range(len(centres)), key=lambda i: keys[i], reverse=True),
                      dtype=int)


def sklearn_n_iter(iterations: int, max_iter: int) -> int:
    """scikit-learn counts the updates before the one that did not move (its
    last update is not counted), and max_iter when the limit was reached; the
    engine counts every update it made (the non-moving one included)."""
    return max_iter if iterations >= max_iter else max(0, iterations - 1)


#: the estimator's keyword arguments that are rows of the parameter table
TABLE_PARAMS = ("kernel", "merge", "merge_radius", "seeding", "seeds_per_party",
                "min_bin_freq", "n_dust",
                "min_weight", "max_iter", "tol", "oblivious", "seed", "summary",
                "precision_bits", "quantile", "n_samples")
_CLOSED = {(False, True): "both", (False, False): "left", (True, True): "right",
           (True, False): "neither"}       # (low open, has high) -> Interval's closed


def _constraints(row: Param) -> list:
    """scikit-learn's constraints of one table row."""
    if row.kind == "choice":
        return [StrOptions(set(row.choices))]
    if row.kind == "bool":
        return ["boolean"]
    if row.kind == "summary":
        return [Interval(Real, row.low, row.high, closed="right"),
                StrOptions({"auto", "exact"}), None]
    kind = Integral if row.kind == "int" else Real
    out: list = [Interval(kind, row.low, row.high,
                          closed=_CLOSED[(row.low_open, row.high is not None)])]
    return out + [None] if row.none_ok else out


class SecureMeanShift(ClusterMixin, BaseEstimator):
    """Mean-shift clustering over several parties' data under MPC, as
    scikit-learn's ``MeanShift``.

    Only the final centres are revealed (to the ranks in ``reveal_to``); each
    party labels its own points locally from them. ``fit`` runs a local
    simulation (``engine="secure"``: one OS process per party plus the
    dealer's) or the plaintext twin (``engine="plaintext"``).

    Standardising the features: fit ``SecureStandardScaler`` on the parties
    first and pass each party's transformed rows (README); it runs the same
    protocol as a job's ``scale: standard`` (params.PARAMS "scaling", which is
    not a parameter here: the scaler keeps the moments, its
    ``inverse_transform`` maps the centres back to data units).

    Parameters
    ----------
    bandwidth : float, "auto", EstimateBandwidth or None, default=None
        Kernel radius h in the data's units. None or "auto": estimated first
        with scikit-learn's ``estimate_bandwidth`` formula under MPC (only h is
        revealed; by the clustering's own party processes, in the same
        session), from ``n_samples`` rows picked by ``seed`` and ``quantile``
        (an ``EstimateBandwidth(quantile, n_samples)`` says both at once).

    kernel : {"flat", "gaussian"}, default="flat"
        "flat" is scikit-learn's (weight 1 within h); "gaussian" is a
        comparison-free polynomial approximation of exp(-d^2 / 2h^2).

    merge : {"intensity", "first"}, default="intensity"
        How near-duplicate centres are merged: "intensity" is scikit-learn's
        rule (of centres within ``merge_radius`` keep the one with the most
        points within h); "first" keeps the lowest seed index.

    merge_radius : float or None, default=None
        Centres closer than this collapse; None: h ("intensity") or h/2 ("first").

    seeding : {"auto", "points", "sklearn-bins", "dust", "bins", "both"}, default="auto"
        Initial centres. "points": every row is a seed (scikit-learn's default,
        exact semantics, O(N^2) per iteration, at most 2,000 rows);
        "sklearn-bins": scikit-learn's ``bin_seeding=True`` (seeds at the
        centres of the bins of side h holding at least ``min_bin_freq`` points;
        every candidate bin inside the bounds iterates, which bins are occupied
        stays secret; at most 4,096 candidate bins); "dust": ``n_dust`` rows
        picked by ``seed``; "bins": every party's own binned local modes;
        "both": dusts then binned modes; "auto": "points" up to 1,000 rows in
        exact mode, above that (and in summary mode) "sklearn-bins" (a
        SeedingWarning says so: the centres are then
        ``MeanShift(bin_seeding=True)``'s), or "both" when the candidate bins
        exceed the cap or their work (bins x rows, at most 8,000,000 kernel
        tests an iteration) (a SeedingWarning: the centres may then differ
        from scikit-learn's). The choice made is in ``seeding_``.

    min_bin_freq : int, default=1
        "sklearn-bins": only bins holding at least this many points (over all
        parties, counted on shares) seed, as scikit-learn's ``min_bin_freq``.

    seeds_per_party : int, default=32
        Seeds each party contributes with "bins"/"both" (a fixed budget).

    n_dust : int, default=8
        Number of dust seeds with "dust"/"both".

    min_weight : float, default=0.0
        With ``merge="intensity"``: centres with fewer points than this within
        h are dropped on shares (e.g. 5 keeps a lone record from becoming a
        revealed centre); 0 drops only empty ones.

    max_iter : int, default=300
        Largest number of mean-shift updates (the run stops once no seed
        moves; with ``oblivious`` exactly max_iter updates run).

    tol : float or None, default=None
        A seed stops once an update moves it by at most tol (Euclidean,
        each seed on its own, as scikit-learn's stop_thresh); None:
        1e-3 h (scikit-learn's threshold; gaussian kernel:
        max(1e-4, 2^(k-17)) h up to 1e-3 h, kernels.Kernel.tol_h), floored at
        the fixed-point resolution.

    oblivious : bool, default=False
        Run exactly ``max_iter`` updates and reveal nothing before the end
        (hides the iteration count).

    seed : int, default=0
        Public seed for the dust rows and the bandwidth sample (no secret
        depends on it).

    summary : float, "auto", "exact" or None, default="auto"
        None/"exact": every point takes part; a float: each party first
        summarises its points in cells of that many bandwidths; "auto": exact
        (scikit-learn's semantics) up to 20,000 points, else cells of h/4.

    reveal_to : list of int or None, default=None
        Ranks that receive the centres (default: every party). Parties not
        listed get no centres and so no labels.

    precision_bits : int, default=20
        Fixed-point fractional bits of centres, sums and the division (16-24).

    cluster_all : bool, default=True
        True: every point gets the nearest centre's label; False: points
        farther than h from every centre get -1 (scikit-learn's semantics).

    bounds : (lo, hi) or None, default=None
        Public bounds per feature (two sequences of n_features numbers). Every
        point must lie inside. None: the data's range (a simulation
        convenience; in a deployment the bounds are agreed up front). The
        secure engine shares points on a grid of 2^-16 of the widest span:
        a fit whose grid is coarser than h/32 is refused before anything starts
        (h/100: a PrecisionWarning).

    quantile : float, default=0.3
        ``estimate_bandwidth``'s quantile (bandwidth None/"auto").

    n_samples : int or None, default=300
        Rows sampled for the bandwidth estimate (None: all rows, as
        scikit-learn; the work is n_samples^2).

    n_parties : int, default=2
        Only when X is a single array: it is split into this many contiguous
        blocks of rows, one per party (party 0 gets the first rows).

    engine : {"secure", "plaintext"}, default="secure"
        "secure": spawned party processes and a dealer over TLS on loopback;
        "plaintext": the numpy twin (same checks, same arithmetic grid).

    timeout_s : float, default=120.0
        A silent peer is given up after this long, and a run fails when the
        parties report no progress for 3 x this long; it does not bound a run
        that keeps progressing.

    privacy : dict, PrivacySpec or None, default=None
        None: exact results. ``{"epsilon": e, "delta": d}``: DP mode
        (docs/privacy.md): the whole output is (epsilon, delta)-DP per record;
        needs public ``bounds`` and a numeric bandwidth; seeding "auto" becomes
        the public grid.

    verbose : int, default=1
        0: silent; 1: a progress line (stage, iteration, elapsed, time left at
        most) on stderr once a secure fit has run for 3 s; 2: from the start.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        The centres, in scikit-learn's order with ``engine="plaintext"``
        (decreasing intensity, then decreasing coordinates). The secure engine
        does not open intensities, so its centres are in decreasing
        coordinate order (scikit-learn's tie order).

    labels_ : list of ndarray, or ndarray
        X a list of parties: one int array per party (None for a party that
        received no centres). X a single array: one array of n_samples labels
        (-1 for rows of a party that received no centres).

    n_iter_ : int
        As scikit-learn counts: the updates before the first that did not move
        (max_iter when the limit was reached).

    n_features_in_ : int
        Number of features seen during fit.

    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names seen during fit (DataFrames with string column names only).

    bandwidth_ : float
        The bandwidth used (given or estimated).

    seeding_ : str
        The seeding rule used ("auto" resolved).

    summary_ : float or None
        The summary cell (in bandwidths) used, None for exact ("auto" resolved).

    params_ : MeanShiftParams
        Everything the parties agreed on.

    outcomes_ : list of PartyOutcome or None
        Per party (secure engine): timings, communication, iterations.

    Notes
    -----
    ``X`` is a list with one 2-D array or DataFrame per party, or a single 2-D
    array that is split into ``n_parties`` parties (see validation.py). With
    scikit-learn's ``check_estimator`` (``engine="plaintext"``) every check
    passes except those listed in the README ("scikit-learn's checks").
    """

    _parameter_constraints: dict = {
        **{name: _constraints(PARAMS[name]) for name in TABLE_PARAMS},
        "bandwidth": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"}),
                      EstimateBandwidth, None],
        "reveal_to": ["array-like", None],
        "cluster_all": ["boolean"],
        "bounds": ["array-like", None],
        "n_parties": [Interval(Integral, 1, None, closed="left")],
        "engine": [StrOptions({"secure", "plaintext"})],
        "timeout_s": [Interval(Real, 0, None, closed="neither")],
        "verbose": ["verbose"],
        "privacy": [dict, PrivacySpec, None],
    }

    def __init__(
        self,
        bandwidth=default("bandwidth"),
        *,
        kernel: str = default("kernel"),
        merge: str = default("merge"),
        merge_radius: Optional[float] = default("merge_radius"),
        seeding: str = default("seeding"),
        seeds_per_party: int = default("seeds_per_party"),
        min_bin_freq: int = default("min_bin_freq"),
        n_dust: int = default("n_dust"),
        min_weight: float = default("min_weight"),
        max_iter: int = default("max_iter"),
        tol: Optional[float] = default("tol"),
        oblivious: bool = default("oblivious"),
        seed: int = default("seed"),
        summary=default("summary"),
        reveal_to=None,
        precision_bits: int = default("precision_bits"),
        cluster_all: bool = True,
        bounds=None,
        quantile: float = default("quantile"),
        n_samples: Optional[int] = default("n_samples"),
        n_parties: int = 2,
        engine: str = "secure",
        timeout_s: float = 120.0,
        verbose: int = 1,
        privacy=None,
    ):
        self.bandwidth = bandwidth
        self.kernel = kernel
        self.merge = merge
        self.merge_radius = merge_radius
        self.seeding = seeding
        self.seeds_per_party = seeds_per_party
        self.min_bin_freq = min_bin_freq
        self.n_dust = n_dust
        self.min_weight = min_weight
        self.max_iter = max_iter
        self.tol = tol
        self.oblivious = oblivious
        self.seed = seed
        self.summary = summary
        self.reveal_to = reveal_to
        self.precision_bits = precision_bits
        self.cluster_all = cluster_all
        self.bounds = bounds
        self.quantile = quantile
        self.n_samples = n_samples
        self.n_parties = n_parties
        self.engine = engine
        self.timeout_s = timeout_s
        self.verbose = verbose
        self.privacy = privacy

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.non_deterministic = self.engine == "secure"   # fixed-point truncation noise
        return tags

    def estimate(self) -> EstimateBandwidth:
        """How the bandwidth is estimated when it is None or "auto"."""
        if isinstance(self.bandwidth, EstimateBandwidth):
            return self.bandwidth
        return EstimateBandwidth(quantile=self.quantile, n_samples=self.n_samples)

    def make_params(self, bandwidth, bounds,
                    total_points: Optional[int] = None) -> MeanShiftParams:
        """The engine's parameters (bandwidth: a number, or EstimateBandwidth).
        total_points: resolves summary and seeding "auto" now (else the run
        resolves them)."""
        kw = {name: getattr(self, name) for name in TABLE_PARAMS
              if name in MeanShiftParams.__dataclass_fields__}
        summary = None if self.summary == "exact" else self.summary
        if total_points is not None:
            summary = resolve_summary(summary, total_points)
        p = MeanShiftParams(
            **{**kw, "summary": summary},
            bandwidth=bandwidth_value(bandwidth, estimate=self.estimate()),
            bounds=tuple(bounds), privacy=self.privacy,
            reveal_to=None if self.reveal_to is None else tuple(int(r) for r in self.reveal_to))
        if total_points is None or self.privacy is not None:
            return p
        # 'auto' with the bounds and h known (scikit-learn's bins when they fit)
        return replace(p, seeding=resolve_seeding(self.seeding, total_points, summary, p))

    # ---- fit: every check first, then the run ------------------------------
    def _check_fit_input(self, X):
        """(PartyData, bounds): everything checked before any process starts."""
        secure = self.engine == "secure"
        if secure and self.n_parties < 2:
            raise InputError("n_parties: the secure engine needs at least 2 parties")
        data = as_parties(X, self.n_parties, min_parties=2 if secure else 1)
        if self.privacy is not None:
            self._check_dp_inputs()
        names_from = next((f for f in data.frames if f is not None), None) \
            if data.names is not None else None
        validate_data(self, X if data.single else
                      (names_from if names_from is not None else data.parties[0]),
                      reset=True, skip_check_array=True)
        if data.names is not None and not data.single:     # reordered: party 0's order
            self.feature_names_in_ = np.asarray(data.names, dtype=object)
        if self.bounds is not None:
            bounds = check_bounds(self.bounds, data.n_features, data.names)
            if self.privacy is None:        # DP mode clips rows into the bounds instead
                check_inside(data.parties, bounds, data.names)
        else:
            bounds = data_bounds(data.parties)
        if self.reveal_to is not None:
            bad = [r for r in self.reveal_to if not 0 <= int(r) < len(data.parties)]
            if bad:
                raise InputError(f"reveal_to: party {bad[0]} does not exist "
                                 f"({len(data.parties)} parties)")
        return data, bounds

    def _resolve(self, data, bounds) -> MeanShiftParams:
        """The bandwidth (estimated if asked) and the agreed parameters, checked.
        Secure engine with a bandwidth to estimate: the parameters with the
        EstimateBandwidth and the seeding as given; the parties estimate h in
        the clustering's own session and resolve "auto" with it (_fit_secure)."""
        n = data.n_samples
        world = max(2, len(data.parties))
        p = self.make_params(self.bandwidth, bounds, n)
        p.check_world(world, n)                   # before anything is spawned
        if p.estimates_bandwidth and self.engine == "secure" and self.privacy is None:
            return replace(p, seeding=self.seeding)
        if p.estimates_bandwidth:
            h = estimate_bandwidth(data.parties, quantile=p.bandwidth.quantile,
                                   n_samples=p.bandwidth.n_samples, seed=self.seed,
                                   bounds=bounds, engine=self.engine, timeout_s=self.timeout_s)
            if not h > 0:
                raise InputError("bandwidth: the estimate is 0 (too few distinct points, "
                                 f"n_samples = {n}); give a bandwidth")
        else:
            h = p.bandwidth
        return self._with_bandwidth(h, data, bounds)

    def _with_bandwidth(self, h: float, data, bounds) -> MeanShiftParams:
        """The agreed parameters once h is known: the grid checked (refused or
        warned), "auto" resolved, a switch away from every point said."""
        n = data.n_samples
        check_grid(bounds, float(h), data.names)
        p = self.make_params(h, bounds, n)
        p.check_world(max(2, len(data.parties)), n)
        if self.seeding == "auto" and p.seeding != "points":
            _warn_seeding(p, n)
        return p

    def _check_dp_inputs(self) -> None:
        """DP mode needs values that do not depend on the data."""
        if self.bounds is None:
            raise InputError("bounds: DP mode needs public bounds (the data's own range "
                             "would depend on the data)")
        if isinstance(bandwidth_value(self.bandwidth), EstimateBandwidth):
            raise InputError("bandwidth: 'auto' is refused in DP mode (the estimate would "
                             "reveal a value computed from the data); give a number")

    def fit(self, X, y=None):
        """Cluster the parties' points.

        Parameters
        ----------
        X : list of array-like of shape (n_i, n_features), or array-like of shape (n_samples, n_features)
            One 2-D array or DataFrame per party, or a single array split into
            ``n_parties`` parties.
        y : Ignored

        Returns
        -------
        self : SecureMeanShift
        """
        self._validate_params()
        data, bounds = self._check_fit_input(X)
        p = self._resolve(data, bounds)
        if self.engine == "plaintext":
            self._set_params(p)
            received = self._fit_plaintext(data, p)
        else:
            received = self._fit_secure(data, p, bounds)
        labels = [None if not got else assign_labels(q, self.cluster_centers_, p.bandwidth,
                                                     self.cluster_all)
                  for q, got in zip(data.parties, received)]
        if data.single:
            labels = np.concatenate([np.full(len(q), -1) if lab is None else lab
                                     for q, lab in zip(data.parties, labels)])
        self.labels_ = labels
        return self

    def _set_params(self, p: MeanShiftParams) -> None:
        self.bandwidth_ = p.bandwidth
        self.params_ = p
        self.seeding_ = p.seeding
        self.summary_ = p.summary

    def _fit_plaintext(self, data, p: MeanShiftParams) -> list:
        from .plaintext import reference_meanshift

        ref = reference_meanshift(data.parties, p)
        cents = ref.centroids
        intensity = None
        if len(cents) and ref.intensity is not None:   # a kept centre is an unmerged row
            d2 = ((cents[:, None, :] - ref.unmerged[None, :, :]) ** 2).sum(-1)
            intensity = ref.intensity[np.argmin(d2, axis=1)]
        self.cluster_centers_ = cents[sklearn_order(cents, intensity)]
        self.n_iter_ = sklearn_n_iter(ref.iterations, p.max_iter)
        self.outcomes_ = None
        self.reference_ = ref
        return [True] * len(data.parties)

    def _fit_secure(self, data, p: MeanShiftParams, bounds) -> list:
        """The secure run. A bandwidth to estimate is estimated by the same party
        processes in the same session (one set of processes, not two: the
        1,000,000-point memory bound of issue 18); a grid too coarse for it is
        refused there, before the clustering (validation.refuse_coarse_grid)."""
        from functools import partial

        from .progress import ProgressLine
        from .simulate import run_simulation
        from .validation import refuse_coarse_grid

        start_fork_server()     # every check passed: its engine import starts now

        estimating = p.estimates_bandwidth
        if not estimating:
            self._set_params(p)
        line = ProgressLine(int(self.verbose), p.max_iter, header=self._header(data, p),
                            announce_seeding=estimating and self.seeding == "auto")
        check = partial(refuse_coarse_grid, bounds, data.names) if estimating else None
        try:
            run = run_simulation(data.parties, p, timeout_s=self.timeout_s, progress=line,
                                 check_bandwidth=check)
        finally:
            line.close()
        if estimating:           # the same resolution as the parties' (public h, bounds, N)
            self._set_params(self._with_bandwidth(run.outcomes[0].params.bandwidth, data,
                                                  bounds))
        self.outcomes_ = run.outcomes
        cents = run.receiver.centroids
        self.cluster_centers_ = cents[sklearn_order(cents, None)]
        self.n_iter_ = sklearn_n_iter(run.receiver.iterations, p.max_iter)
        return [o.centroids is not None for o in run.outcomes]

    def _header(self, data, p: MeanShiftParams) -> str:
        """The choices of this fit, in one line (public parameters only)."""
        estimated = isinstance(bandwidth_value(self.bandwidth), EstimateBandwidth)
        summary = "exact" if p.summary is None else f"cells of {p.summary:g} h"
        if p.estimates_bandwidth:        # estimated by the parties first: said when known
            how = p.bandwidth
            rows = "every row" if how.n_samples is None else f"{how.n_samples:,} rows"
            width = f"estimated under MPC first (quantile {how.quantile:g} of {rows})"
        else:
            width = f"{p.bandwidth:.6g}{' (estimated)' if estimated else ''}"
        seeding = "auto (picked once h is known)" if p.seeding == "auto" else \
            f"{p.seeding}{' (auto)' if self.seeding == 'auto' else ''}"
        return (f"{len(data.parties)} parties, {data.n_samples:,} points, {data.n_features} "
                f"features; bandwidth {width}, "
                f"kernel {p.kernel}, seeding {seeding}, summary {summary}"
                f"{' (auto)' if self.summary == 'auto' else ''}, max_iter {p.max_iter}")

    def predict(self, X) -> np.ndarray:
        """Index of the nearest centre for each row of X (one party's or pooled
        data, array-like of shape (n_samples, n_features))."""
        check_is_fitted(self)
        arr, names = as_matrix(X, "X", finite=False)
        validate_data(self, X, reset=False, skip_check_array=True)   # width and names
        check_finite_cells(arr, "X", names)
        return assign_labels(arr, self.cluster_centers_, self.bandwidth_, self.cluster_all)

    def fit_predict(self, X, y=None, **kwargs):
        """``fit(X).labels_``: a list with one label array per party when X is a
        list of parties, else one array of n_samples labels."""
        return self.fit(X).labels_
