"""scikit-learn-style entry point: ``SecureMeanShift(bandwidth=...).fit(parties)``.

``fit`` runs a local simulation (one OS process per party, as run_simulation)
or, with ``engine="plaintext"``, the plaintext twin. The same parameters reach
the CLI (``secure-meanshift simulate``) and the job spec (meanshift_rpc/jobspec.py).

Labels follow scikit-learn's ``cluster_all`` semantics: every point gets the
index of its nearest centre (``cluster_all=True``) or -1 when no centre lies
within the bandwidth (``cluster_all=False``). Each party computes its own
points' labels LOCALLY from the revealed centres: nothing beyond the centres
is opened (a party that receives no centres gets no labels).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .kernels import DEFAULT_KERNEL
from .params import MeanShiftParams, resolve_seeding


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


def data_bounds(parties: Sequence[np.ndarray], pad: float = 0.0) -> tuple:
    """Bounds covering every party's points (local simulation only: in a
    deployment the bounds are public knowledge agreed up front)."""
    x = np.concatenate([np.asarray(q, float) for q in parties])
    lo, hi = x.min(0), x.max(0)
    span = float(np.max(hi - lo)) or 1.0
    return (lo - pad * span).tolist(), (hi + pad * span).tolist()


class SecureMeanShift:
    """Mean-shift over several parties' data under MPC, in scikit-learn's style.

    Parameters (all reach ``MeanShiftParams``; see its docstring):
        bandwidth: h in data units, or "auto" (secure estimate_bandwidth with
            ``quantile`` / ``n_samples``; only the bandwidth is revealed).
        seeding: as in MeanShiftParams; default "auto": "points" (every point a
            seed, scikit-learn's own default and exact semantics) up to
            AUTO_POINT_SEEDS_UP_TO points in total (exact mode), else "both".
        max_iter: 300 as in scikit-learn (the run stops once every seed has
            converged; with ``oblivious`` all max_iter iterations run: lower it).
        kernel, merge, merge_radius, seeds_per_party, n_dust, min_weight,
        tol, oblivious, seed, summary, reveal_to, precision_bits: as in MeanShiftParams.
        cluster_all: labels semantics (see module docstring).
        bounds: public (lo, hi); default: the data's range (simulation only).
        engine: "secure" (spawned party processes) or "plaintext" (the twin).
        privacy: None (exact results) or {epsilon, delta} (a PrivacySpec also
            works): DP mode (docs/privacy.md): the whole output is
            (epsilon, delta)-DP per record; needs public ``bounds`` and a numeric
            bandwidth; seeding "auto" becomes the public grid.

    Attributes after fit: ``cluster_centers_`` (k, d), ``labels_`` (list: one
    array per party), ``n_iter_``, ``params_``, ``bandwidth_``, ``outcomes_``.
    """

    def __init__(self, bandwidth=None, *, kernel: str = DEFAULT_KERNEL,
                 merge: str = "intensity", merge_radius: Optional[float] = None,
                 seeding: str = "auto", seeds_per_party: int = 32, n_dust: int = 8,
                 min_weight: float = 0.0,
                 max_iter: int = 300, tol: Optional[float] = None, oblivious: bool = False,
                 seed: int = 0, summary=None, reveal_to=None, precision_bits: int = 20,
                 cluster_all: bool = True, bounds=None, quantile: float = 0.3,
                 n_samples: Optional[int] = 300, engine: str = "secure",
                 timeout_s: float = 120.0, privacy=None):
        self.bandwidth = bandwidth
        self.kernel, self.merge, self.merge_radius = kernel, merge, merge_radius
        self.seeding, self.seeds_per_party, self.n_dust = seeding, seeds_per_party, n_dust
        self.min_weight = min_weight
        self.max_iter, self.tol, self.oblivious, self.seed = max_iter, tol, oblivious, seed
        self.summary, self.reveal_to, self.precision_bits = summary, reveal_to, precision_bits
        self.cluster_all, self.bounds = cluster_all, bounds
        self.quantile, self.n_samples = quantile, n_samples
        self.engine, self.timeout_s = engine, timeout_s
        self.privacy = privacy

    def get_params(self, deep: bool = True) -> dict:
        import inspect

        names = [p for p in inspect.signature(self.__init__).parameters if p != "self"]
        return {k: getattr(self, k) for k in names}

    def set_params(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)
        return self

    def make_params(self, bandwidth: float, bounds,
                    total_points: Optional[int] = None) -> MeanShiftParams:
        """total_points: resolves seeding "auto" now (else the run resolves it;
        in DP mode MeanShiftParams makes it "grid")."""
        seeding = self.seeding
        if self.privacy is None and total_points is not None:
            seeding = resolve_seeding(self.seeding, total_points, self.summary)
        return MeanShiftParams(
            bandwidth=float(bandwidth), bounds=tuple(bounds), n_dust=self.n_dust,
            kernel=self.kernel, max_iter=self.max_iter, tol=self.tol, oblivious=self.oblivious,
            seed=self.seed, merge_radius=self.merge_radius, merge=self.merge,
            seeding=seeding, seeds_per_party=self.seeds_per_party,
            min_weight=self.min_weight, reveal_to=None if self.reveal_to is None else tuple(self.reveal_to),
            summary=self.summary, precision_bits=self.precision_bits, privacy=self.privacy)

    def fit(self, parties: Sequence[np.ndarray], y=None):
        parties = [np.asarray(q, float) for q in parties]
        if self.privacy is not None:
            self._check_dp_inputs()
        bounds = self.bounds if self.bounds is not None else data_bounds(parties)
        h = self.bandwidth
        if h is None or h == "auto":
            from .bandwidth import estimate_bandwidth

            h = estimate_bandwidth(parties, quantile=self.quantile, n_samples=self.n_samples,
                                   seed=self.seed, bounds=bounds, engine=self.engine,
                                   timeout_s=self.timeout_s)
        self.bandwidth_ = float(h)
        p = self.make_params(h, bounds, sum(len(q) for q in parties))
        self.params_ = p
        if self.engine == "plaintext":
            from .plaintext import reference_meanshift

            ref = reference_meanshift(parties, p)
            self.cluster_centers_, self.n_iter_ = ref.centroids, ref.iterations
            self.outcomes_ = None
            self.reference_ = ref
            got_centres = [ref.centroids] * len(parties)
        elif self.engine == "secure":
            from .simulate import run_simulation

            run = run_simulation(parties, p, timeout_s=self.timeout_s)
            self.outcomes_ = run.outcomes
            self.cluster_centers_ = run.receiver.centroids
            self.n_iter_ = run.receiver.iterations
            got_centres = [o.centroids for o in run.outcomes]
        else:
            raise ValueError("engine: 'secure' or 'plaintext'")
        # each party labels its own points from the centres it received
        self.labels_ = [None if c is None else assign_labels(q, c, p.bandwidth, self.cluster_all)
                        for q, c in zip(parties, got_centres)]
        return self

    def _check_dp_inputs(self) -> None:
        """DP mode needs values that do not depend on the data."""
        from .errors import InputError

        if self.bounds is None:
            raise InputError("bounds: DP mode needs public bounds (the data's own range "
                             "would depend on the data)")
        if self.bandwidth is None or self.bandwidth == "auto":
            raise InputError("bandwidth: 'auto' is refused in DP mode (the estimate would "
                             "reveal a value computed from the data); give a number")

    def predict(self, X) -> np.ndarray:
        return assign_labels(X, self.cluster_centers_, self.bandwidth_, self.cluster_all)

    def fit_predict(self, parties, y=None) -> list:
        return self.fit(parties).labels_
