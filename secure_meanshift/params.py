"""Job parameters: one table (``PARAMS``), validated once, up front, in the data's own units.

Every job parameter has one row in ``PARAMS`` (name, kind, range or choices,
default, one-line doc, job-spec key, CLI flag), as scikit-learn's
``_parameter_constraints``. ``MeanShiftParams`` (the engine's record), the job
spec parser (meanshift_rpc/jobspec.py), the simulator's arguments
(meanshift_cli/simulate.py) and ``SecureMeanShift`` (estimator.py) all read
their checks and defaults from it. "Estimate the bandwidth first" is one typed
value, ``EstimateBandwidth``, accepted wherever a bandwidth is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional, Union

import numpy as np

from .binseeds import (AUTO_BIN_WORK, BIN_SEEDING, MAX_BIN_SEEDS, auto_bin_work,
                       check_bin_seeds, n_bin_seeds)
from .errors import InputError

from .kernels import DEFAULT_KERNEL, KERNEL_NAMES as KERNELS, get_kernel  # the one registry
from .privacy import PrivacySpec

MERGE_RULES = ("intensity", "first")
SCALINGS = ("none", "standard")    # scale: standard = pooled standardisation (moments.py)
SEEDINGS = ("dust", "bins", "both", "points", BIN_SEEDING, "auto", "grid")   # grid: DP only
MAX_POINT_SEEDS = 2000   # seeding="points": m x N work and memory per iteration (3,000: 10 s, 4 GB a party)
AUTO_POINT_SEEDS_UP_TO = 1000    # seeding="auto": every point a seed up to this N
AUTO_EXACT_UP_TO = 20_000
AUTO_CELL = 0.25
MAX_SEEDS_PER_PARTY = 1024
MAX_ITER = 10_000


@dataclass(frozen=True)
class Param:
    """One job parameter: its checks, default and names at every edge.

    ``kind``: "int", "float", "bool", "choice" (``choices``), "summary"
    (None, "auto" or a float in (low, high]) or "custom" (checked by its owner:
    bandwidth, bounds, reveal_to, privacy). ``low``/``high`` bound numbers
    (``low_open``: low itself is refused); ``none_ok``: None is allowed (it
    means "derived", see ``doc``). ``spec_key``: the job spec's key (None: not
    in the job spec); ``cli``: the simulator's flag (None: no flag).
    """

    name: str
    kind: str
    default: Any
    doc: str
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    choices: tuple = ()
    none_ok: bool = False
    spec_key: Optional[str] = None
    cli: Optional[str] = None

    def rule(self) -> str:
        """What a valid value is, as an error message says it."""
        if self.kind == "choice":
            return f"must be one of {', '.join(self.choices)}"
        if self.kind == "bool":
            return "must be true or false"
        if self.kind == "summary":
            return f"cell size must be in (0, {self.high:g}] bandwidths, 'auto', or null for exact"
        what = "an integer" if self.kind == "int" else "a number"
        if self.high is not None:
            return f"must be {what} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        if self.low == 0 and self.low_open:
            return f"must be a positive {'integer' if self.kind == 'int' else 'number'}"
        return f"must be {what} {'>' if self.low_open else '>='} {self.low:g}"

    def check(self, value: Any, label: Optional[str] = None) -> Any:
        """The value, normalised (int, float, bool, str or None), or an InputError
        starting with ``label`` (default: the name)."""
        label = label or self.name
        if value is None and (self.none_ok or self.kind == "summary"):
            return None
        if self.kind == "choice":
            if isinstance(value, str) and value in self.choices:
                return value
        elif self.kind == "bool":
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
        elif self.kind == "summary":
            if isinstance(value, str) and value.strip().lower() == "auto":
                return "auto"
            if _number(value) and self.low < float(value) <= self.high:
                return float(value)
        elif self.kind in ("int", "float") and _number(value):
            exact = isinstance(value, (int, np.integer))     # any size (e.g. a 64-bit seed)
            if self.kind == "int" and not exact and float(value) != int(value):
                raise InputError(f"{label}: {self.rule()}")
            try:
                v = int(value) if self.kind == "int" else float(value)
            except OverflowError:
                raise InputError(f"{label}: {self.rule()}") from None
            if self._in_range(v):
                return v
        else:
            raise ValueError(f"{self.name}: a {self.kind} parameter is checked by its owner")
        raise InputError(f"{label}: {self.rule()}")

    def _in_range(self, v: float) -> bool:
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            return False
        return self.high is None or v <= self.high


def _number(value: Any) -> bool:
    """A finite real number (bool is not a number here; an int of any size is)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, (float, np.floating)) and math.isfinite(float(value))


def _rows(*rows: Param) -> dict:
    return {r.name: r for r in rows}


#: The job parameters, one row each (README "Parameters"; docs/operating.md for the job spec).
PARAMS: dict = _rows(
    Param("bandwidth", "custom", None, "kernel radius h in data units, or auto: estimated "
          "first (EstimateBandwidth: scikit-learn's estimate_bandwidth under MPC)",
          spec_key="bandwidth", cli="--bandwidth"),
    Param("bounds", "custom", None, "public (lo, hi) per feature; every point lies inside",
          spec_key="bounds", cli="--bounds"),
    Param("n_dust", "int", 8, "number of dust seeds (public random rows) with seeding "
          "dust/both", low=1, spec_key="dust", cli="--dust"),
    Param("kernel", "choice", DEFAULT_KERNEL, "flat (scikit-learn's) or gaussian (a "
          "comparison-free polynomial)", choices=KERNELS, spec_key="kernel", cli="--kernel"),
    Param("max_iter", "int", 300, "largest number of mean-shift updates (the exact number "
          "with oblivious)", low=1, high=MAX_ITER, spec_key="max_iter", cli="--max-iter"),
    Param("tol", "float", None, "a seed stops once an update moves it by at most this "
          "(Euclidean, per seed, as scikit-learn); default 1e-3 * bandwidth (gaussian "
          "kernel: down to 1e-4 * bandwidth)", low=0,
          low_open=True, none_ok=True, spec_key="tol", cli="--tol"),
    Param("oblivious", "bool", False, "run exactly max_iter updates, reveal nothing before "
          "the end", spec_key="oblivious", cli="--oblivious"),
    Param("seed", "int", 0, "public seed of the dust rows and the bandwidth sample", low=0,
          cli="--seed"),
    Param("merge_radius", "float", None, "centres closer than this collapse; default h "
          "(intensity) or h/2 (first)", low=0, none_ok=True, spec_key="merge_radius",
          cli="--merge-radius"),
    Param("merge", "choice", "intensity", "intensity (scikit-learn's rule) or first (the "
          "lowest seed index wins)", choices=MERGE_RULES, spec_key="merge", cli="--merge"),
    Param("seeding", "choice", "auto", "initial centres: auto (points up to "
          f"{AUTO_POINT_SEEDS_UP_TO:,} points in exact mode, else sklearn-bins while at "
          f"most {MAX_BIN_SEEDS:,} bins and {AUTO_BIN_WORK:,} kernel tests an iteration, "
          "else both; grid in DP mode), points, sklearn-bins (scikit-learn's "
          "bin_seeding=True), dust, bins, both, grid (DP mode)", choices=SEEDINGS,
          spec_key="seeding", cli="--seeding"),
    Param("seeds_per_party", "int", 32, "per-party seed budget of seeding bins/both",
          low=1, high=MAX_SEEDS_PER_PARTY, spec_key="seeds_per_party",
          cli="--seeds-per-party"),
    Param("min_bin_freq", "int", 1, "seeding sklearn-bins: a bin seeds only with at least "
          "this many points (scikit-learn's min_bin_freq)", low=1, cli="--min-bin-freq"),
    Param("min_weight", "float", 0.0, "centres with fewer points within h are dropped "
          "(0: only empty ones)", low=0, spec_key="min_weight", cli="--min-weight"),
    Param("reveal_to", "custom", None, "who receives the centres (default: every party)",
          spec_key="reveal_to", cli="--reveal-to"),
    Param("export_shares", "bool", False, "every party also exports its share of the "
          "output (analyst receivers)"),
    Param("return_sizes", "bool", False, "also reveal how many points are nearest to each "
          "centre", spec_key="return_sizes", cli="--sizes"),
    Param("summary", "summary", "auto", "exact (null), a local summary's cell in "
          f"bandwidths, or auto (exact up to {AUTO_EXACT_UP_TO:,} points, else "
          f"{AUTO_CELL:g})", low=0, high=2, spec_key="summary", cli="--summary"),
    Param("precision_bits", "int", 20, "fixed-point fractional bits of centres, sums and "
          "the division", low=16, high=24),
    Param("chunk_elements", "int", 1 << 20, "cap on m x rows handled at once (bounds "
          "memory)", low=1024),
    Param("min_cluster_size", "int", 1, "centres of smaller clusters are suppressed on "
          "shares (1: off; a job spec without it gets "
          "jobspec.DEFAULT_MIN_CLUSTER_SIZE)", low=1, spec_key="min_cluster_size"),
    Param("privacy", "custom", None, "null (exact results) or {epsilon, delta}: DP mode",
          spec_key="privacy"),
    Param("scaling", "choice", "none", "none, or standard: the pooled per-feature mean and "
          "std are computed under MPC (opened) and every party standardises its own rows; "
          "bandwidth, tol and merge_radius are then in standardised units, bounds stay in "
          "data units and the centres are reported in data units (moments.py)",
          choices=SCALINGS, spec_key="scale", cli="--scale"),
    Param("quantile", "float", 0.3, "estimate_bandwidth's quantile (bandwidth estimated)",
          low=0, high=1, low_open=True, spec_key="quantile", cli="--quantile"),
    Param("n_samples", "int", 300, "rows sampled for the bandwidth estimate (null: all, "
          "as scikit-learn; n_samples^2 work)", low=1, none_ok=True),
)


#: why a DP job cannot standardise (params, job spec and simulator say the same)
SCALE_DP_REFUSAL = (
    "scale: 'standard' is refused with privacy (DP): the noise's sensitivity is derived "
    "from the stated bounds, which standardised rows no longer keep (their bounds would "
    "depend on the data through the pooled moments, which are opened exactly, not DP); "
    "scale the features by public constants before the job instead")


def default(name: str) -> Any:
    """The one default of a job parameter."""
    return PARAMS[name].default


@dataclass(frozen=True)
class EstimateBandwidth:
    """"Estimate the bandwidth first": scikit-learn's ``estimate_bandwidth``
    under MPC (bandwidth.py; only h is opened), from ``n_samples`` rows picked
    by the public seed (None: every row) and ``quantile``."""

    quantile: float = PARAMS["quantile"].default
    n_samples: Optional[int] = PARAMS["n_samples"].default

    def __post_init__(self) -> None:
        object.__setattr__(self, "quantile", PARAMS["quantile"].check(self.quantile))
        object.__setattr__(self, "n_samples", PARAMS["n_samples"].check(self.n_samples))

    def to_dict(self) -> dict:
        return {"quantile": self.quantile, "n_samples": self.n_samples}


Bandwidth = Union[float, EstimateBandwidth]
AUTO_WORDS = ("auto",)


def bandwidth_value(value: Any, label: str = "bandwidth",
                    estimate: Optional[EstimateBandwidth] = None) -> Bandwidth:
    """The one normalisation of a bandwidth: a positive float, or EstimateBandwidth
    for None or "auto" (``estimate``, default EstimateBandwidth()), an
    EstimateBandwidth, or a mapping {quantile, n_samples}."""
    if isinstance(value, EstimateBandwidth):
        return value
    if value is None or (isinstance(value, str) and value.strip().lower() in AUTO_WORDS):
        return estimate if estimate is not None else EstimateBandwidth()
    if isinstance(value, dict):
        unknown = sorted(set(map(str, value)) - {"quantile", "n_samples"})
        if unknown:
            raise InputError(f"{label}: unknown key {unknown[0][:40]!r} (a number, 'auto', "
                             "or {quantile: q})")
        return EstimateBandwidth(**value)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InputError(f"{label}: a positive number or 'auto'") from None
    if not (_number(value) and float(value) > 0):
        raise InputError(f"{label}: must be a positive number (or 'auto')")
    return float(value)


@dataclass(frozen=True)
class MeanShiftParams:
    """Everything the parties agree on before a run.

    Lengths (``bandwidth``, ``tol``, ``merge_radius``, ``bounds``) are in the
    data's own units; the engine maps them into the unit box internally.

    Attributes:
        bandwidth: kernel radius h (> 0), or EstimateBandwidth (also given as
            None, "auto" or {quantile, n_samples}): estimated first under MPC
            (bandwidth.run_party_auto / estimate_bandwidth).
        n_dust: number m of dust points used as initial centroids (1 <= m <= N).
        kernel: ``"flat"`` (weight 1 inside radius h, as scikit-learn) or
            ``"gaussian"`` (comparison-free polynomial (1 - d^2/B)^(2^k)).
        max_iter: iteration limit (and the exact count when ``oblivious``).
        tol: a seed stops once an update moves it by at most tol (Euclidean,
            per seed, as scikit-learn's; its intensity is then that update's
            weight sum).
            Default 1e-3 * bandwidth (gaussian kernel: max(1e-4, 2^(k-17)) *
            bandwidth, at most 1e-3 * bandwidth, so that copies of a mode end
            closer than the secure engine can order them while staying above its
            update noise:
            kernels.Kernel.tol_h), floored at the fixed-point resolution.
        oblivious: run exactly ``max_iter`` iterations and reveal nothing
            before the end (hides the iteration count).
        seed: shared public seed; picks the dust indices and nothing else.
        merge: how close centroids are merged (both on shares, nothing extra opened):
            ``"intensity"`` (default, scikit-learn's rule): of centroids within
            ``merge_radius`` (default h) keep the one with the highest intensity
            (its kernel weight sum), greedily in intensity order, and drop
            centroids whose neighbourhood is empty; ``"first"`` (the old rule):
            drop a centroid within ``merge_radius`` (default h / 2) of one with a
            lower seed index.
        merge_radius: centroids closer than this collapse (default: see ``merge``).
        seeding: initial centroids (default: "auto", in DP mode "grid").
            ``"dust"``: n_dust rows picked by the public
            seed; ``"bins"``: each party contributes ``seeds_per_party``
            secret-shared seeds at its own binned local density peaks (seeds.py);
            ``"both"``: dusts first, then the binned seeds; ``"points"``: every
            (shared) row is a seed, scikit-learn's default (``bin_seeding=False``)
            and its exact semantics, at O(N^2) cost per iteration (at most
            MAX_POINT_SEEDS rows in total); ``"sklearn-bins"``: scikit-learn's
            ``bin_seeding=True`` (binseeds.py): every candidate bin of side h
            inside the bounds is a public seed (at most binseeds.MAX_BIN_SEEDS),
            bins with fewer than ``min_bin_freq`` points (counted on shares)
            count as empty at the merge; ``"auto"``: ``"points"`` up to
            AUTO_POINT_SEEDS_UP_TO points in exact mode, above it (and in
            summary mode) ``"sklearn-bins"`` when the candidate bins fit the
            cap and their work per iteration binseeds.AUTO_BIN_WORK, else
            ``"both"`` (resolve_seeding, once the public N is known); ``"grid"``
            (DP mode only): the public seed grid of privacy.grid_seeds.
        min_bin_freq: seeding "sklearn-bins": a bin's seed counts only if the
            bin holds at least this many points (scikit-learn's min_bin_freq).
        min_weight: with ``merge="intensity"``, centroids whose kernel weight sum
            (points within h, flat kernel) is below this are dropped on shares;
            0 drops only empty ones. E.g. 5 keeps a lone record from being
            revealed as its own centroid (docs/leakage.md).
        seeds_per_party: the per-party seed budget for binned seeding (fixed,
            independent of N; padded so the count reveals nothing).
        reveal_to: ranks that receive the merged centroids (default: all).
        export_shares: every party also exports its own re-randomised share of
            the output, for receivers outside the parties (secure_meanshift.
            output); then reveal_to may be empty (no rank opens anything).
        bounds: public (lo, hi) per feature, each of shape (d,). Every party's
            points must lie inside; one common scale maps them to the unit box.
        return_sizes: also reveal how many points are nearest to each centroid.
        summary: ``None`` for exact mode, else the cell size of each party's
            local weighted summary as a fraction of the bandwidth; ``"auto"``:
            exact up to AUTO_EXACT_UP_TO points in total, else AUTO_CELL.
        precision_bits: fixed-point fractional bits of centroids, sums and the
            division (the m x N distance and kernel work always uses 16).
        chunk_elements: cap on m x rows handled at once (bounds memory).
        min_cluster_size: centroids whose cluster (points nearest to them) has
            fewer than this many points are suppressed on shares before anything
            is opened; receivers learn only how many were suppressed. 1 = off.
        privacy: None (exact results), or a PrivacySpec / {epsilon, delta}: the
            whole output is (epsilon, delta)-DP per record (privacy.py,
            docs/privacy.md). Implies seeding "grid" ("auto" becomes "grid"; any
            other seeding is refused) and ``summary`` = the public grid's cell side
            in bandwidths (None/"auto": privacy.default_cell_fraction, h/2); the grid
            may have at most privacy.MAX_CELLS cells and 3 features. Only the
            flat kernel.
        scaling: ``"none"``, or ``"standard"``: federated standardisation
            (moments.standardise_party): inside the job, before the bandwidth
            estimate, seeding and summary, the pooled per-feature mean and
            standard deviation are computed under MPC and opened (docs/leakage.md
            [pooled-moments]); every party standardises its own rows. Then
            ``bandwidth``, ``tol`` and ``merge_radius`` are in standardised units,
            while ``bounds`` stay in data units (each party checks or clips its
            rows against them before anything runs; the run's bounds are derived:
            (bounds - mean) / std, public once the moments are). The run goes on
            with the derived parameters (moments.standardised_params: scaling
            "none", derived bounds); results are reported in data units (centre *
            std + mean) and, as opened, in standardised units. Refused with
            ``privacy``.
    """

    bandwidth: Bandwidth
    bounds: tuple
    n_dust: int = default("n_dust")
    kernel: str = default("kernel")
    max_iter: int = default("max_iter")
    tol: Optional[float] = default("tol")
    oblivious: bool = default("oblivious")
    seed: int = default("seed")
    merge_radius: Optional[float] = default("merge_radius")
    merge: str = default("merge")
    seeding: str = default("seeding")
    seeds_per_party: int = default("seeds_per_party")
    min_bin_freq: int = default("min_bin_freq")
    min_weight: float = default("min_weight")
    reveal_to: Optional[tuple] = default("reveal_to")
    export_shares: bool = default("export_shares")
    return_sizes: bool = default("return_sizes")
    summary: Union[None, float, str] = default("summary")
    precision_bits: int = default("precision_bits")
    chunk_elements: int = default("chunk_elements")
    min_cluster_size: int = default("min_cluster_size")
    privacy: Optional[PrivacySpec] = default("privacy")
    scaling: str = default("scaling")

    # ---- derived, unit-box quantities -------------------------------------
    @property
    def estimates_bandwidth(self) -> bool:
        """The bandwidth is still to be estimated (EstimateBandwidth)."""
        return isinstance(self.bandwidth, EstimateBandwidth)

    @property
    def standardises(self) -> bool:
        """Scale "standard" still to be applied: the bounds are in data units, the
        lengths (bandwidth, tol, merge_radius) in standardised units."""
        return self.scaling == "standard"

    @property
    def dim(self) -> int:
        return len(self.bounds[0])

    @property
    def lo(self) -> np.ndarray:
        return np.asarray(self.bounds[0], dtype=np.float64)

    @property
    def scale(self) -> float:
        """One common scale for all features, so Euclidean geometry is kept."""
        return float(np.max(np.asarray(self.bounds[1], float) - self.lo))

    @property
    def h_unit(self) -> float:
        if self.estimates_bandwidth:
            raise ValueError("bandwidth: still to be estimated (EstimateBandwidth)")
        return self.bandwidth / self.scale

    @property
    def tol_unit(self) -> float:
        floor = 16.0 * 2.0 ** -self.precision_bits
        tol = self.tol if self.tol is not None else \
            get_kernel(self.kernel).tol_h(self) * self.bandwidth
        return max(tol / self.scale, floor)

    @property
    def merge_unit(self) -> float:
        default = self.bandwidth if self.merge == "intensity" else self.bandwidth / 2
        r = self.merge_radius if self.merge_radius is not None else default
        return r / self.scale

    @property
    def distance_bound(self) -> float:
        """B: public bound on squared distances inside the unit box."""
        return float(self.dim)

    @property
    def gaussian_power(self) -> int:
        """k with (1 - d^2/B)^(2^k) ~ exp(-d^2 / (2 h^2))."""
        return max(0, int(round(math.log2(self.distance_bound / (2 * self.h_unit**2)))))

    @property
    def keep_threshold(self) -> float:
        """Smallest intensity a kept centroid may have (intensity merge)."""
        from .mpc.division import EMPTY_BELOW

        return max(EMPTY_BELOW, float(self.min_weight))

    @property
    def dp(self) -> bool:
        """Differentially private mode (a noisy histogram on the public grid)."""
        return self.privacy is not None

    @property
    def uses_dust(self) -> bool:
        return self.seeding in ("dust", "both")

    @property
    def uses_bins(self) -> bool:
        return self.seeding in ("bins", "both")

    def n_seeds(self, world_size: int, total_rows: int) -> int:
        """m: the (public) number of initial centroids."""
        if self.seeding == "auto":
            raise ValueError("seeding 'auto' must be resolved first (resolve_seeding)")
        if self.seeding == "points":
            return total_rows
        if self.seeding == BIN_SEEDING:
            return n_bin_seeds(self)
        if self.seeding == "grid":
            from .privacy import n_grid_seeds

            return n_grid_seeds(self)
        return (self.n_dust if self.uses_dust else 0) + \
            (self.seeds_per_party * world_size if self.uses_bins else 0)

    def receivers(self, world_size: int) -> tuple:
        return tuple(range(world_size)) if self.reveal_to is None else tuple(self.reveal_to)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bounds"] = [list(map(float, self.bounds[0])), list(map(float, self.bounds[1]))]
        d["privacy"] = None if self.privacy is None else self.privacy.to_dict()
        return d

    # ---- validation (the rules are PARAMS') ---------------------------------
    def __post_init__(self) -> None:
        self._check_bounds()
        object.__setattr__(self, "bandwidth", bandwidth_value(self.bandwidth))
        checks_h = not (self.estimates_bandwidth or self.standardises)
        if checks_h and self.h_unit > 1.0 * math.sqrt(self.dim):
            raise InputError("bandwidth: is larger than the whole bounded domain")
        if self.seeding is None:        # "the default" (DP mode turns "auto" into "grid")
            object.__setattr__(self, "seeding", default("seeding"))
        for row in PARAMS.values():
            if row.kind != "custom" and row.name in _FIELDS:
                object.__setattr__(self, row.name, row.check(getattr(self, row.name)))
        if self.reveal_to is not None:
            r = tuple(self.reveal_to)
            if not (r or self.export_shares) or \
                    not all(isinstance(x, int) and x >= 0 for x in r):
                raise InputError("reveal_to: must be a non-empty list of party ranks (empty "
                                 "only with export_shares)")
            object.__setattr__(self, "reveal_to", tuple(sorted(set(r))))
        self._check_privacy()
        if self.seeding == BIN_SEEDING and checks_h:   # DP refused it; scaling: once derived
            check_bin_seeds(self)

    def _check_bounds(self) -> None:
        """bounds: two equal-length lists of finite numbers, hi >= lo, some hi > lo."""
        def bad(why: str) -> InputError:
            return InputError(f"bounds: {why}")

        try:
            lo = np.asarray(self.bounds[0], dtype=np.float64).reshape(-1)
            hi = np.asarray(self.bounds[1], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError, IndexError):
            raise bad("expected (lo, hi), two lists of numbers") from None
        if lo.size == 0 or lo.shape != hi.shape:
            raise bad("lo and hi must be non-empty and of equal length")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise bad("must be finite")
        if np.any(hi < lo) or np.max(hi - lo) <= 0:
            raise bad("need hi >= lo for every feature and some hi > lo")
        object.__setattr__(self, "bounds", (tuple(lo.tolist()), tuple(hi.tolist())))

    def _check_privacy(self) -> None:
        """DP mode: public grid seeds and cells only (nothing data-dependent)."""
        object.__setattr__(self, "privacy", PrivacySpec.coerce(self.privacy))
        if self.privacy is None:
            if self.seeding == "grid":
                raise InputError("seeding: 'grid' is the seeding of DP mode (set privacy)")
            return
        from .privacy import check_grid, default_cell_fraction

        if self.standardises:
            raise InputError(SCALE_DP_REFUSAL)
        if self.estimates_bandwidth:
            raise InputError("bandwidth: 'auto' is refused in DP mode (the estimate would "
                             "reveal a value computed from the data); give a number")
        if self.seeding == "auto":
            object.__setattr__(self, "seeding", "grid")
        if self.seeding != "grid":
            raise InputError(f"seeding: DP mode (privacy) seeds from a public grid only; "
                             f"'{self.seeding}' would depend on the data: use 'grid' or 'auto'")
        if self.kernel != "flat":
            raise InputError("kernel: DP mode (privacy) supports the flat kernel only")
        if self.summary in (None, "auto"):
            object.__setattr__(self, "summary", default_cell_fraction(self.dim))
        check_grid(self)

    def check_world(self, world_size: int, total_points: int) -> None:
        """Checks that need the party count and the (public) total size N."""
        if world_size < 2:
            raise InputError("parties: at least 2 parties are needed")
        if total_points < 1:
            raise InputError("points: the parties hold no points at all")
        if self.uses_dust and self.n_dust > total_points:
            raise InputError(
                f"n_dust: {self.n_dust} dusts requested but only {total_points} points "
                "(or summary representatives) in total; need n_dust <= N")
        if self.seeding == "points" and total_points > MAX_POINT_SEEDS:
            raise InputError(
                f"seeding: 'points' makes every row a seed (N^2 work per iteration) and "
                f"takes at most {MAX_POINT_SEEDS} rows in total; there are {total_points}. "
                "Use 'both' (or a summary)")
        bad = [r for r in self.receivers(world_size) if r >= world_size]
        if bad:
            raise InputError(f"reveal_to: rank {bad[0]} does not exist (world size {world_size})")


def resolve_seeding(seeding: str, total_points: int, summary,
                    params: Optional["MeanShiftParams"] = None) -> str:
    """'auto' -> 'points' (every point a seed: scikit-learn's default and exact
    semantics) for at most AUTO_POINT_SEEDS_UP_TO points in exact mode; above it
    and in summary mode 'sklearn-bins' (scikit-learn's bin_seeding=True) when
    ``params`` (bounds, h) give at most binseeds.MAX_BIN_SEEDS candidate bins;
    and binseeds.auto_bin_work (m x rows per iteration) stays within
    AUTO_BIN_WORK; else (or without ``params``) 'both' (dusts and every
    party's local modes). Any other rule as it is. (Summary mode too: on
    scikit-learn's generators its answer is closer to scikit-learn's than
    'both', with fewer seeds: benchmarks/bin_seeds.py.)"""
    if seeding != "auto":
        return seeding
    if summary is None and total_points <= AUTO_POINT_SEEDS_UP_TO:
        return "points"
    if params is not None and not params.estimates_bandwidth \
            and params.merge == "intensity" and n_bin_seeds(params) <= MAX_BIN_SEEDS \
            and auto_bin_work(params, total_points, summary) <= AUTO_BIN_WORK:
        return BIN_SEEDING
    return "both"


def resolve_summary(value, total_points: int):
    """'exact'/None -> None, 'auto' -> exact for small N else a cell of h/4, or a float."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("exact", "none", "off"):
        return None
    if text == "auto":
        return None if total_points <= AUTO_EXACT_UP_TO else AUTO_CELL
    try:
        return float(text)
    except ValueError:
        raise InputError("summary: expected a number, 'exact' or 'auto'") from None


def dust_indices(seed: int, total: int, n_dust: int) -> np.ndarray:
    """Public choice of dust rows in the concatenation of all parties' rows."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=n_dust, replace=False))


_FIELDS = frozenset(MeanShiftParams.__dataclass_fields__)
