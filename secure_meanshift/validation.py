"""Input checks of the estimator, done in the caller's process before any party
process starts (and by the plaintext engine alike).

Every message names the party, the row and the column at fault (by its column
name where there is one), never a value from the data: in a deployment these
checks run on a party's own host, but the same rule as everywhere else holds
(an error message may reach a log).

What the estimator accepts as ``X`` (``as_parties``):

- a list (or tuple) of 2-D arrays or pandas DataFrames: one per party;
- a single 2-D array-like (ndarray, DataFrame, list of rows): the pooled data
  of a simulation, split into ``n_parties`` contiguous blocks of rows (party 0
  gets the first block), so that scikit-learn's conventions (and its checks)
  apply unchanged.

DataFrames are aligned by column name across parties: the same set of names in
another order is reordered to party 0's order (with a warning); different
names are an error. A party without names (a plain array) is taken in party
0's column order (with a warning).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .data import POINT_BITS
from .errors import InputError

# The secure engine shares points on a grid of 2^-16 of the widest feature's span
# (plaintext.POINT_BITS over params.scale). Relative to the bandwidth:
# Measured with the twin by benchmarks/grid_precision.py (blobs of sd h/2 within
# +-10 h, one outlier moved far out, every point a seed): scikit-learn's clusters
# up to a step of h/32, one cluster lost at h/20, two at h/8, 54 vs 14 at 1.5 h.
GRID_REFUSE = 1.0 / 32     # a grid step above h/32: the answer may be wrong; refuse
GRID_WARN = 1.0 / 100      # above h/100: centres near kernel edges may move; warn


class InputTypeError(InputError, TypeError):
    """A value that is not a number at all (e.g. a dict in an object array)."""


class PrecisionWarning(UserWarning):
    """The fixed-point grid is coarse relative to the bandwidth (see check_grid)."""


class ColumnOrderWarning(UserWarning):
    """A party's columns were reordered by name (or taken by position)."""


@dataclass
class PartyData:
    """Checked input: one float64 (n_i, d) array per party, column-aligned."""

    parties: list
    single: bool                        # X was one array, split into parties here
    names: Optional[list] = None        # column names (party 0's order) or None
    frames: list = field(default_factory=list)   # the DataFrame per party (or None)

    @property
    def n_features(self) -> int:
        return self.parties[0].shape[1]

    @property
    def n_samples(self) -> int:
        return sum(len(q) for q in self.parties)


def _is_frame(obj) -> bool:
    return hasattr(obj, "columns") and hasattr(obj, "iloc")


def _col(j: int, names: Optional[Sequence]) -> str:
    return f"column {j} ({names[j]!r})" if names is not None else f"column {j}"


def _ndim(obj) -> int:
    if _is_frame(obj):
        return 2
    shape = getattr(obj, "shape", None)
    if shape is not None:
        return len(shape)
    try:
        return np.asarray(obj, dtype=object).ndim
    except ValueError:          # ragged
        return -1


def _reject_sparse(obj, who: str) -> None:
    try:
        import scipy.sparse as sp  # loaded only for sparse input (start-up cost)
    except ImportError:         # pragma: no cover - scipy comes with scikit-learn
        return
    if sp.issparse(obj):
        raise InputTypeError(f"{who}: a sparse matrix was passed, but dense data is "
                             "required. Use X.toarray() to convert to a dense numpy array.")


def _float_cells(obj: np.ndarray, who: str, names) -> np.ndarray:
    """An object/str array to float64, naming the first cell that is not a number."""
    try:
        return obj.astype(np.float64)
    except (TypeError, ValueError):
        pass
    for (i, j), v in np.ndenumerate(obj):
        if v is None or (v.__class__.__name__ in ("NAType", "NaTType")):
            continue
        try:
            float(v)
        except TypeError:
            raise InputTypeError(
                f"{who}, row {i}, {_col(j, names)}: argument must be a string or a real "
                f"number, not {type(v).__name__!r}") from None
        except ValueError:
            raise InputError(f"{who}, row {i}, {_col(j, names)}: could not convert to a "
                             "number (not numeric)") from None
    out = np.empty(obj.shape)
    for idx, v in np.ndenumerate(obj):
        out[idx] = np.nan if v is None or v.__class__.__name__ in ("NAType", "NaTType") \
            else float(v)
    return out


def as_matrix(obj, who: str, n_features: Optional[int] = None,
              finite: bool = True) -> tuple[np.ndarray, Optional[list]]:
    """One 2-D numeric block: (float64 array, column names or None). Checks the
    type, the dimensions, dtype, emptiness and (``finite``) NaN and infinity,
    in that order."""
    _reject_sparse(obj, who)
    names = None
    if _is_frame(obj):
        cols = list(obj.columns)
        names = [str(c) for c in cols] if all(isinstance(c, str) for c in cols) else None
        raw = obj.to_numpy(dtype=object) if any(
            str(t) in ("object", "category", "string", "str") or "string" in str(t)
            for t in obj.dtypes) else None
        if raw is None:
            try:
                arr = obj.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError):
                raw = obj.to_numpy(dtype=object)
        if raw is not None:
            arr = _float_cells(raw, who, names)
    else:
        try:
            a = np.asarray(obj)
        except ValueError:
            raise InputError(f"{who}: rows of different lengths (not a 2-D array)") from None
        if a.ndim != 2:
            _wrong_ndim(a, who)
        if np.iscomplexobj(a):
            raise InputError(f"{who}: Complex data not supported")
        if a.dtype.kind in "Mm":
            raise InputError(f"{who}: dtype {a.dtype} is not numeric (convert dates and "
                             "durations to numbers first)")
        arr = _float_cells(a, who, None) if a.dtype.kind in "OUSV" else None
        if arr is None:
            try:
                arr = a.astype(np.float64)
            except (TypeError, ValueError):
                raise InputError(f"{who}: dtype {a.dtype} is not numeric") from None
    if arr.ndim != 2:
        _wrong_ndim(arr, who)
    if arr.shape[1] == 0:
        raise InputError(f"{who}: 0 feature(s) (shape={arr.shape}) while a minimum of 1 "
                         "is required.")
    if arr.shape[0] == 0:
        raise InputError(f"{who}: found 0 sample(s) (shape={arr.shape}) while a minimum of "
                         "1 is required (an empty party cannot take part).")
    if n_features is not None and arr.shape[1] != n_features:
        raise InputError(f"{who}: has {arr.shape[1]} features (columns), expected "
                         f"{n_features}")
    if finite:
        check_finite_cells(arr, who, names)
    return arr, names


def _wrong_ndim(a: np.ndarray, who: str) -> None:
    if a.ndim == 1:
        raise InputError(
            f"{who}: expected a 2-D array (rows = points, columns = features), got a 1-D "
            f"array of shape {a.shape}. Reshape your data either using array.reshape(-1, 1) "
            "if your data has a single feature or array.reshape(1, -1) if it contains a "
            "single sample.")
    raise InputError(f"{who}: expected a 2-D array (rows = points, columns = features), "
                     f"got {a.ndim} dimension(s) (shape {a.shape})")


def check_finite_cells(arr: np.ndarray, who: str, names=None) -> None:
    """Name the first cell (row, column) holding NaN or infinity."""
    bad = ~np.isfinite(arr)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        kind = "NaN (a missing value)" if np.isnan(arr[i, j]) else "infinity (inf)"
        raise InputError(f"{who}, row {i}, {_col(j, names)}: contains {kind}; every "
                         "value must be a finite number (impute or drop the row first)")


def _party_list(X) -> Optional[list]:
    """X as a list of party blocks, or None when X is one 2-D array-like."""
    if _is_frame(X) or isinstance(X, np.ndarray) or not isinstance(X, (list, tuple)):
        return None
    if len(X) == 0:
        raise InputError("X: an empty list; expected one 2-D array (or DataFrame) per party, "
                         "or a single 2-D array")
    dims = [_ndim(q) for q in X]
    if all(d == 2 for d in dims):
        return list(X)
    if all(d in (0, 1) for d in dims):
        sizes = [np.size(q) for q in X]
        if len(set(sizes)) == 1:
            return None                # a list of rows: one 2-D array
        odd = next(i for i, n in enumerate(sizes) if n != sizes[0])
        raise InputError(f"X: row {odd} has {sizes[odd]} values, row 0 has {sizes[0]}; "
                         "expected a 2-D array (or a list with one 2-D array per party)")
    odd = next(i for i, d in enumerate(dims) if d != 2)
    raise InputError(
        f"party {odd}: expected a 2-D array (rows = points, columns = features), got "
        f"{'a ragged or ' if dims[odd] < 0 else ''}{max(dims[odd], 0)}-D input; give one "
        "2-D array per party (reshape a single feature with array.reshape(-1, 1))")


def as_parties(X, n_parties: int = 2, min_parties: int = 1) -> PartyData:
    """Check ``X`` (see the module docstring) and return it as aligned parties."""
    if X is None:
        raise InputError("X: None; expected one 2-D array per party or a single 2-D array")
    blocks = _party_list(X)
    if blocks is None:
        arr, names = as_matrix(X, "X")
        if len(arr) < n_parties:
            raise InputError(
                f"X: {len(arr)} sample(s) cannot be split among {n_parties} parties "
                f"(n_samples = {len(arr)}; need at least one row per party)")
        parts = [arr[idx] for idx in np.array_split(np.arange(len(arr)), n_parties)]
        return PartyData(parts, True, names)
    if len(blocks) < min_parties:
        raise InputError(f"X: {len(blocks)} part(y/ies) given; at least {min_parties} "
                         "parties are needed")
    checked = [as_matrix(q, f"party {i}") for i, q in enumerate(blocks)]
    return PartyData(*_align(blocks, checked))


def _align(blocks: list, checked: list) -> tuple:
    """Align the parties' columns by name; returns PartyData's fields."""
    ref = next((n for _, n in checked if n is not None), None)
    ref_party = next((i for i, (_, n) in enumerate(checked) if n is not None), None)
    d0 = checked[0][0].shape[1]
    parts = []
    for i, (arr, names) in enumerate(checked):
        if names is not None and ref is not None:
            if len(set(names)) != len(names):
                dup = next(n for n in names if names.count(n) > 1)
                raise InputError(f"party {i}: column {dup!r} appears twice")
            if names != ref:
                missing = [n for n in ref if n not in names]
                extra = [n for n in names if n not in ref]
                if missing or extra:
                    what = (f"has no column {missing[0]!r}" if missing
                            else f"has a column {extra[0]!r}")
                    raise InputError(
                        f"party {i}: {what} that party {ref_party} "
                        f"{'has' if missing else 'does not have'}; the parties' columns "
                        f"cannot be aligned by name (party {ref_party}: {ref}; party {i}: "
                        f"{names})")
                warnings.warn(f"party {i}: its columns are in another order than party "
                              f"{ref_party}'s; reordered by name to {ref}",
                              ColumnOrderWarning, stacklevel=4)
                arr = arr[:, [names.index(n) for n in ref]]
        elif arr.shape[1] != d0:
            raise InputError(f"party {i}: has {arr.shape[1]} features (columns), party 0 "
                             f"has {d0}; every party must hold the same features")
        elif ref is not None:
            warnings.warn(f"party {i}: no column names; its columns are taken in party "
                          f"{ref_party}'s order {ref}", ColumnOrderWarning, stacklevel=4)
        if arr.shape[1] != d0:
            raise InputError(f"party {i}: has {arr.shape[1]} features (columns), party 0 "
                             f"has {d0}; every party must hold the same features")
        parts.append(arr)
    return parts, False, ref, [q if _is_frame(q) else None for q in blocks]


def check_bounds(bounds, n_features: int, names=None) -> tuple:
    """Explicit public bounds (lo, hi): the data's width, finite, hi >= lo, some
    hi > lo. Returns (lo list, hi list)."""
    try:
        lo = np.asarray(bounds[0], dtype=np.float64).reshape(-1)
        hi = np.asarray(bounds[1], dtype=np.float64).reshape(-1)
        if len(bounds) != 2:
            raise ValueError
    except (TypeError, ValueError, IndexError):
        raise InputError("bounds: expected (lo, hi), two lists of numbers") from None
    for side, v in (("lo", lo), ("hi", hi)):
        if v.size != n_features:
            raise InputError(f"bounds: {side} has {v.size} value(s) but the data has "
                             f"{n_features} feature(s) (columns)")
        if not np.isfinite(v).all():
            j = int(np.argmin(np.isfinite(v)))
            raise InputError(f"bounds: {side}[{j}] ({_col(j, names)}) is not finite")
    if (hi < lo).any():
        j = int(np.argmax(hi < lo))
        raise InputError(f"bounds: hi < lo for {_col(j, names)}")
    if not (hi > lo).any():
        raise InputError("bounds: every feature has hi == lo; at least one must have hi > lo")
    return lo.tolist(), hi.tolist()


def check_inside(parties: Sequence[np.ndarray], bounds, names=None) -> None:
    """Every row inside the public bounds (a party would refuse it later)."""
    lo, hi = np.asarray(bounds[0], float), np.asarray(bounds[1], float)
    for p, x in enumerate(parties):
        out = (x < lo) | (x > hi)
        if out.any():
            i, j = (int(v) for v in np.argwhere(out)[0])
            raise InputError(f"party {p}, row {i}, {_col(j, names)}: outside the public "
                             "bounds (widen the bounds, or clip or drop the row)")


def grid_step(bounds) -> float:
    """The data-unit step of the grid the secure engine shares points on."""
    span = np.subtract(np.asarray(bounds[1], float), np.asarray(bounds[0], float))
    return float(np.max(span)) * 2.0 ** -POINT_BITS


def check_grid(bounds, bandwidth: float, names=None) -> float:
    """Refuse (InputError) when the fixed-point grid is coarser than h/32, warn
    (PrecisionWarning) above h/100. Returns step / h. The message gives ratios
    and thresholds only, never the span itself (derived from the data)."""
    span = np.subtract(np.asarray(bounds[1], float), np.asarray(bounds[0], float))
    j = int(np.argmax(span))
    ratio = grid_step(bounds) / float(bandwidth)
    widest = (f"the widest feature ({_col(j, names)}) spans more than "
              f"{math.floor((GRID_REFUSE if ratio > GRID_REFUSE else GRID_WARN) * 2**POINT_BITS):,} "
              "bandwidths")
    advice = ("Give tighter bounds, clip or remove outliers, or standardise the features "
              "so that no feature's range dwarfs the bandwidth")
    if ratio > GRID_REFUSE:
        raise InputError(
            f"bandwidth/bounds: {widest}, so the engine's fixed-point grid (2^-{POINT_BITS} "
            f"of that span) is coarser than 1/{int(1 / GRID_REFUSE)} of the bandwidth and "
            f"the clusters would be wrong. {advice}.")
    if ratio > GRID_WARN:
        warnings.warn(
            f"bandwidth/bounds: {widest}; the engine's fixed-point grid (2^-{POINT_BITS} of "
            f"that span) is coarser than 1/{int(1 / GRID_WARN)} of the bandwidth: centres "
            f"and points near a kernel's edge may differ from scikit-learn's. {advice}.",
            PrecisionWarning, stacklevel=3)
    return ratio


def refuse_coarse_grid(bounds, names, bandwidth: float) -> None:
    """check_grid's refusal only (its PrecisionWarning is left to the caller):
    for where the bandwidth becomes known inside the parties' session (an
    estimate), so that a coarse grid stops the job before the clustering."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        check_grid(bounds, bandwidth, names)
