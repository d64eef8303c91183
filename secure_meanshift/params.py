"""Job parameters: validated once, up front, in the data's own units."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np

from .binseeds import (AUTO_BIN_WORK, BIN_SEEDING, MAX_BIN_SEEDS, auto_bin_work,
                       check_bin_seeds, n_bin_seeds)
from .errors import InputError

from .kernels import KERNEL_NAMES as KERNELS  # the one registry
from .privacy import PrivacySpec


@dataclass(frozen=True)
class MeanShiftParams:
    """Everything the parties agree on before a run.

    Lengths (``bandwidth``, ``tol``, ``merge_radius``, ``bounds``) are in the
    data's own units; the engine maps them into the unit box internally.

    Attributes:
        bandwidth: kernel radius h (> 0).
        n_dust: number m of dust points used as initial centroids (1 <= m <= N).
        kernel: ``"flat"`` (weight 1 inside radius h, as scikit-learn) or
            ``"gaussian"`` (comparison-free polynomial (1 - d^2/B)^(2^k)).
        max_iter: iteration limit (and the exact count when ``oblivious``).
        tol: a centroid has moved if any coordinate changed by more than tol.
            Default 1e-3 * bandwidth, floored at the fixed-point resolution.
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
        seeding: initial centroids (default: "dust", in DP mode "grid").
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
            ``"both"`` (resolve_seeding, once the public N is known); ``"grid"`` (DP mode only): the public
            seed grid of privacy.grid_seeds.
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
    """

    bandwidth: float
    bounds: tuple
    n_dust: int = 8
    kernel: str = "flat"
    max_iter: int = 30
    tol: Optional[float] = None
    oblivious: bool = False
    seed: int = 0
    merge_radius: Optional[float] = None
    merge: str = "intensity"
    seeding: Optional[str] = None      # None: "dust", or "grid" in DP mode
    seeds_per_party: int = 32
    min_bin_freq: int = 1
    min_weight: float = 0.0
    reveal_to: Optional[tuple] = None
    export_shares: bool = False
    return_sizes: bool = False
    summary: Optional[float] = None
    precision_bits: int = 20
    chunk_elements: int = 1 << 20
    min_cluster_size: int = 1
    privacy: Optional[PrivacySpec] = None
    extra: dict = field(default_factory=dict, compare=False)

    # ---- derived, unit-box quantities -------------------------------------
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
        return self.bandwidth / self.scale

    @property
    def tol_unit(self) -> float:
        floor = 16.0 * 2.0 ** -self.precision_bits
        tol = self.tol if self.tol is not None else 1e-3 * self.bandwidth
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
        d.pop("extra")
        d["privacy"] = None if self.privacy is None else self.privacy.to_dict()
        return d

    # ---- validation --------------------------------------------------------
    def __post_init__(self) -> None:
        def bad(field_name: str, why: str) -> InputError:
            return InputError(f"{field_name}: {why}")

        try:
            lo = np.asarray(self.bounds[0], dtype=np.float64).reshape(-1)
            hi = np.asarray(self.bounds[1], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError, IndexError):
            raise bad("bounds", "expected (lo, hi), two lists of numbers") from None
        if lo.size == 0 or lo.shape != hi.shape:
            raise bad("bounds", "lo and hi must be non-empty and of equal length")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise bad("bounds", "must be finite")
        if np.any(hi < lo) or np.max(hi - lo) <= 0:
            raise bad("bounds", "need hi >= lo for every feature and some hi > lo")
        object.__setattr__(self, "bounds", (tuple(lo.tolist()), tuple(hi.tolist())))
        if not (isinstance(self.bandwidth, (int, float)) and math.isfinite(self.bandwidth)
                and self.bandwidth > 0):
            raise bad("bandwidth", "must be a positive number")
        if self.h_unit > 1.0 * math.sqrt(self.dim):
            raise bad("bandwidth", "is larger than the whole bounded domain")
        if not isinstance(self.n_dust, int) or self.n_dust < 1:
            raise bad("n_dust", "must be an integer >= 1")
        if self.kernel not in KERNELS:
            raise bad("kernel", f"must be one of {', '.join(KERNELS)}")
        if not isinstance(self.max_iter, int) or not 1 <= self.max_iter <= 10_000:
            raise bad("max_iter", "must be an integer in [1, 10000]")
        if self.tol is not None and not (math.isfinite(self.tol) and self.tol > 0):
            raise bad("tol", "must be a positive number")
        if self.merge_radius is not None and not (
            math.isfinite(self.merge_radius) and self.merge_radius >= 0
        ):
            raise bad("merge_radius", "must be a number >= 0")
        if self.merge not in MERGE_RULES:
            raise bad("merge", f"must be one of {', '.join(MERGE_RULES)}")
        if self.seeding is None:
            object.__setattr__(self, "seeding", "dust" if self.privacy is None else "grid")
        if self.seeding not in SEEDINGS:
            raise bad("seeding", f"must be one of {', '.join(SEEDINGS)}")
        if not (isinstance(self.min_weight, (int, float)) and math.isfinite(self.min_weight)
                and self.min_weight >= 0):
            raise bad("min_weight", "must be a number >= 0")
        if not isinstance(self.seeds_per_party, int) or not 1 <= self.seeds_per_party <= 1024:
            raise bad("seeds_per_party", "must be an integer in [1, 1024]")
        if isinstance(self.min_bin_freq, bool) or not isinstance(self.min_bin_freq, int) \
                or self.min_bin_freq < 1:
            raise bad("min_bin_freq", "must be an integer >= 1")
        if self.reveal_to is not None:
            r = tuple(self.reveal_to)
            if not (r or self.export_shares) or \
                    not all(isinstance(x, int) and x >= 0 for x in r):
                raise bad("reveal_to", "must be a non-empty list of party ranks (empty only "
                          "with export_shares)")
            object.__setattr__(self, "reveal_to", tuple(sorted(set(r))))
        if self.summary == "auto":
            pass          # resolved by the runtime once the (public) total N is known
        elif self.summary is not None and not (
                isinstance(self.summary, (int, float)) and 0 < float(self.summary) <= 2):
            raise bad("summary", "cell size must be in (0, 2] bandwidths, 'auto', "
                      "or null for exact")
        if not 16 <= self.precision_bits <= 24:
            raise bad("precision_bits", "must be in [16, 24]")
        if self.chunk_elements < 1024:
            raise bad("chunk_elements", "must be >= 1024")
        if isinstance(self.min_cluster_size, bool) or not isinstance(self.min_cluster_size, int) \
                or self.min_cluster_size < 1:
            raise bad("min_cluster_size", "must be an integer >= 1")
        self._check_privacy()
        if self.seeding == BIN_SEEDING:         # (DP mode refused it above)
            check_bin_seeds(self)

    def _check_privacy(self) -> None:
        """DP mode: public grid seeds and cells only (nothing data-dependent)."""
        object.__setattr__(self, "privacy", PrivacySpec.coerce(self.privacy))
        if self.privacy is None:
            if self.seeding == "grid":
                raise InputError("seeding: 'grid' is the seeding of DP mode (set privacy)")
            return
        from .privacy import check_grid, default_cell_fraction

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


MERGE_RULES = ("intensity", "first")
SEEDINGS = ("dust", "bins", "both", "points", BIN_SEEDING, "auto", "grid")   # grid: DP only
MAX_POINT_SEEDS = 2000   # seeding="points": m x N work and memory per iteration (3,000: 10 s, 4 GB a party)
AUTO_POINT_SEEDS_UP_TO = 1000    # seeding="auto": every point a seed up to this N
AUTO_EXACT_UP_TO = 20_000
AUTO_CELL = 0.25


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
    if params is not None and params.merge == "intensity" \
            and n_bin_seeds(params) <= MAX_BIN_SEEDS \
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


def as_params(bandwidth: float, bounds: Sequence, **kw) -> MeanShiftParams:
    return MeanShiftParams(bandwidth=float(bandwidth), bounds=tuple(bounds), **kw)
