"""A node's data sets, checked when the node starts, on reload and before every
job: a CSV with a header (or a .npy array), every cell a finite number.

Problems are reported twice: ``problem`` names the data set key, the line and
the column, never a local path nor a value (it may leave the node: refusals,
heartbeats); ``local`` adds the file's path, for the node's own log only."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from secure_meanshift.data import PointsFileError, read_csv_points


class DatasetError(ValueError):
    """``str(exc)`` is the path-free problem; ``exc.local`` also names the file."""

    def __init__(self, key: str, what: str, path: str):
        self.key, self.what, self.path = key, what, path
        super().__init__(f"data set {key!r}: {what}")

    @property
    def local(self) -> str:
        return f"data set {self.key!r} ({self.path}): {self.what}"


@dataclass
class Loaded:
    points: np.ndarray
    columns: list = field(default_factory=list)     # names for the result's header


def load(key: str, path: str, columns: Optional[Sequence[str]] = None) -> Loaded:
    """Read and check one data set; raises DatasetError naming line and column."""
    if not os.path.isfile(path):
        raise DatasetError(key, "file not found", path)
    if path.endswith(".npy"):
        return _load_npy(key, path, columns)
    return _load_csv(key, path, columns)


def _load_npy(key: str, path: str, columns) -> Loaded:
    if columns:
        raise DatasetError(key, "'columns' only applies to CSV files", path)
    try:
        arr = np.load(path, allow_pickle=False)
        arr = np.asarray(arr, dtype=np.float64)
    except Exception:          # noqa: BLE001 - never echo the file's content
        raise DatasetError(key, "not a readable numeric .npy array", path) from None
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise DatasetError(key, "expected a non-empty 2-D array", path)
    bad = np.argwhere(~np.isfinite(arr))
    if len(bad):
        r, c = bad[0]
        raise DatasetError(key, f"row {r + 1}, column {c + 1}: not a finite number", path)
    return Loaded(arr, [f"x{i}" for i in range(arr.shape[1])])


def _load_csv(key: str, path: str, columns) -> Loaded:
    try:
        points, names = read_csv_points(path, columns, finite=True,
                                        columns_from="the node config")
    except PointsFileError as exc:      # names line, column and rule: no path, no value
        raise DatasetError(key, str(exc), path) from None
    if not len(points):
        raise DatasetError(key, "no data rows after the header", path)
    return Loaded(points, names)


@dataclass
class Status:
    name: str
    available: bool
    problem: str = ""          # path-free
    local: str = ""            # with the path: the node's own log only
    columns: list = field(default_factory=list)
    stamp: tuple = ()          # (mtime_ns, size) when checked: a change means "check again"


def stamp(path: str) -> tuple:
    try:
        st = os.stat(path)
        return (st.st_mtime_ns, st.st_size)
    except OSError:
        return ()


def check(name: str, path: str, columns: Optional[Sequence[str]] = None) -> Status:
    """Check one data set; never raises."""
    st = stamp(path)
    try:
        loaded = load(name, path, columns)
    except DatasetError as exc:
        return Status(name, False, str(exc), exc.local, stamp=st)
    return Status(name, True, columns=loaded.columns, stamp=st)


def check_all(datasets: dict) -> dict:
    """{name: Status} for a node config's ``datasets`` ({name: Dataset(path, columns)})."""
    return {name: check(name, ds.path, ds.columns) for name, ds in sorted(datasets.items())}
