"""Loading, checking and scaling a party's own points (all local, in the clear).

Error messages name files, rows and columns, never values: a value of a
private point must not reach a log.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Optional, Sequence

import numpy as np

from .errors import InputError


class PointsFileError(InputError):
    """A CSV point file broke a rule. ``str(exc)`` names the line, the column (with
    its header name) and the rule broken, never the file's path nor a value from it:
    callers add the path where it may be shown (a party node's refusals leave the
    node, so it adds only the data set's key there)."""


def read_csv_points(path: str, columns: Optional[Sequence[str]] = None, finite: bool = False,
                    columns_from: str = "") -> tuple[np.ndarray, list]:
    """Read a CSV point file with a header line: (points (n, d) float64, the names of
    the d columns). Raises PointsFileError.

    ``columns`` picks columns by header name (default: all), ``columns_from`` says
    where they came from in the message for a missing one. Blank lines are skipped;
    no data line at all gives an (0, d) array. ``finite``: NaN and infinity are
    errors here (by line and column) rather than the caller's (see check_finite).
    """
    names, parts = [], []
    for names, _, arr in iter_csv_points(path, columns, finite, columns_from):
        parts.append(arr)
    return np.concatenate(parts), names


def iter_csv_points(path: str, columns: Optional[Sequence[str]] = None, finite: bool = False,
                    columns_from: str = "", chunk_rows: int = 0):
    """:func:`read_csv_points` in chunks of ``chunk_rows`` rows (0: one chunk):
    yields (names, offset of the chunk's first row, (m, d) float64), at least once."""
    try:
        with open(path, newline="") as fh:
            yield from _parse_csv(csv.reader(fh), columns, finite, columns_from, chunk_rows)
    except UnicodeDecodeError:
        raise PointsFileError("not a text (UTF-8) CSV file") from None
    except csv.Error:
        raise PointsFileError("not a well-formed CSV file") from None
    except OSError as exc:
        raise PointsFileError(f"cannot be read ({exc.strerror or type(exc).__name__})") \
            from None


def _parse_csv(reader, columns, finite: bool, columns_from: str, chunk_rows: int = 0):
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise PointsFileError("line 1: empty file (a header line is required)") from None
    if columns:
        missing = [c for c in columns if c not in header]
        if missing:
            origin = f" (from {columns_from})" if columns_from else ""
            raise PointsFileError(f"line 1: column {missing[0]!r}{origin} is not in the "
                                  "header")
        pick = [header.index(c) for c in columns]
    else:
        pick = list(range(len(header)))
    names = [header[i] for i in pick]
    rows, done = [], 0
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        rows.append(_csv_row(row, lineno, header, pick, finite))
        if chunk_rows and len(rows) == chunk_rows:
            yield names, done, np.asarray(rows, dtype=np.float64)
            done, rows = done + len(rows), []
    if rows or not done:
        yield names, done, np.asarray(rows, dtype=np.float64).reshape(len(rows), len(pick))


def _csv_row(row: list, lineno: int, header: list, pick: list, finite: bool) -> list:
    if len(row) != len(header):
        raise PointsFileError(f"line {lineno}: {len(row)} fields, the header has "
                              f"{len(header)}")
    vals = []
    for i in pick:
        cell = row[i].strip()
        try:
            v = float(cell)
        except ValueError:
            v = None
        if v is None or (finite and not math.isfinite(v)):
            kind = "empty" if not cell else ("not a number" if v is None
                                             else "not a finite number")
            raise PointsFileError(f"line {lineno}, column {i + 1} ({header[i]!r}): {kind}")
        vals.append(v)
    return vals


def load_points(path: str, columns: Optional[Sequence[str]] = None) -> np.ndarray:
    """Read an (n, d) float array from a ``.npy`` file or a CSV file with a header.

    ``columns`` picks CSV columns by header name (default: all columns).
    """
    if not os.path.exists(path):
        raise InputError(f"data file {path!r} does not exist")
    if path.endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception:
            raise InputError(f"{path}: not a readable .npy array") from None
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2:
            raise InputError(f"{path}: expected a 2-D array, got {arr.ndim} dimensions")
        if columns:
            raise InputError(f"{path}: 'columns' only applies to CSV files")
        try:
            return arr.astype(np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{path}: array is not numeric") from None
    try:
        return read_csv_points(path, columns, columns_from="--columns")[0]
    except PointsFileError as exc:
        raise InputError(f"{path}: {exc}") from None


def check_finite(points: np.ndarray, name: str = "points",
                 features: Optional[int] = None) -> np.ndarray:
    """Reject an empty array, a wrong column count, or a row with NaN/infinity."""
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"{name}: expected a 2-D array of points")
    if x.shape[0] == 0:
        raise InputError(f"{name}: no points (an empty party cannot take part)")
    if features is not None and x.shape[1] != features:
        raise InputError(
            f"{name}: {x.shape[1]} columns but the job has {features} features")
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise InputError(f"{name}: row {row} contains NaN or infinity")
    return x


def check_points(points: np.ndarray, bounds: tuple, name: str = "points") -> np.ndarray:
    """Reject bad rows before any sharing: shape, NaN/inf, outside the public bounds."""
    lo = np.asarray(bounds[0], float)
    hi = np.asarray(bounds[1], float)
    x = check_finite(points, name, lo.size)
    inside = ((x >= lo) & (x <= hi)).all(axis=1)
    if not inside.all():
        row = int(np.argmin(inside))
        col = int(np.argmax((x[row] < lo) | (x[row] > hi)))
        raise InputError(
            f"{name}: row {row} is outside the public bounds in feature {col}")
    return x


def clip_to_bounds(points: np.ndarray, bounds: tuple, name: str = "points"
                   ) -> tuple[np.ndarray, int]:
    """Rows clipped into the public bounds, and how many rows were outside them.
    Shape and finiteness are checked as in :func:`check_points`; a row outside
    the bounds is moved onto them instead of failing the job, so whether a job
    runs never depends on where the data lie (the count is for the owner's own
    log only)."""
    lo = np.asarray(bounds[0], float)
    hi = np.asarray(bounds[1], float)
    x = check_finite(points, name, lo.size)
    outside = int((~((x >= lo) & (x <= hi)).all(axis=1)).sum())
    return np.clip(x, lo, hi), outside


def to_unit(points: np.ndarray, lo: np.ndarray, scale: float) -> np.ndarray:
    return (np.asarray(points, float) - lo) / scale


def from_unit(unit: np.ndarray, lo: np.ndarray, scale: float) -> np.ndarray:
    return np.asarray(unit, float) * scale + lo


POINT_BITS = 16       # the secure engine shares unit-box points on a 2^-16 grid


def quantise_points(unit_points) -> np.ndarray:
    """Points on the 2^-16 grid the secure engine shares them on (protocol.py)."""
    q = 2.0**POINT_BITS
    return np.round(np.asarray(unit_points, dtype=np.float64) * q) / q


def synthetic_blobs(n_points: int, n_centers: int, dim: int = 2, spread: float = 0.03,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The report's generator: uniform centres in the unit box, Gaussian points
    around them, clipped to the box. Returns (points (n, dim), centres (c, dim))."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.1, 0.9, size=(n_centers, dim))
    labels = rng.integers(0, n_centers, size=n_points)
    pts = centres[labels] + rng.normal(0.0, spread, size=(n_points, dim))
    return np.clip(pts, 0.0, 1.0), centres


def separated_blobs(n_points: int, n_centers: int, dim: int = 2, spread: float = 0.02,
                    min_gap: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`synthetic_blobs`, with centres at least ``min_gap`` apart."""
    rng = np.random.default_rng(seed)
    centres: list = []
    while len(centres) < n_centers:
        c = rng.uniform(0.1, 0.9, size=dim)
        if all(np.linalg.norm(c - o) >= min_gap for o in centres):
            centres.append(c)
        elif len(centres) and rng.random() < 1e-4:
            min_gap *= 0.9
    cs = np.asarray(centres)
    labels = rng.integers(0, n_centers, size=n_points)
    pts = cs[labels] + rng.normal(0.0, spread, size=(n_points, dim))
    return np.clip(pts, 0.0, 1.0), cs


def split_even(points: np.ndarray, parties: int, seed: int = 0) -> list:
    """Shuffle and split rows as evenly as possible among the parties."""
    if parties < 1 or parties > len(points):
        raise InputError("parties: need between 1 and the number of points")
    idx = np.random.default_rng(seed + 1).permutation(len(points))
    return [points[np.sort(part)] for part in np.array_split(idx, parties)]


def data_bounds(parties: Sequence[np.ndarray], pad: float = 0.0) -> tuple:
    """Bounds covering every party's points (local simulation only: in a
    deployment the bounds are public knowledge agreed up front). A data set
    with no spread at all gets a unit box, so that some hi > lo."""
    x = np.concatenate([np.asarray(q, float) for q in parties])
    lo, hi = x.min(0), x.max(0)
    span = float(np.max(hi - lo))
    if span <= 0:
        return lo.tolist(), (hi + 1.0).tolist()
    return (lo - pad * span).tolist(), (hi + pad * span).tolist()
