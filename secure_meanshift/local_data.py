"""A party's rows where they live (sources.py), checked and summarised without
loading them all: the numpy engine in chunks, DuckDB embedded over Parquet or
CSV, or a Dask cluster over Parquet row groups. Every engine builds the same exact
aggregate (summary.CellSums), so all give identical representatives.

Progress (``stage: "local"``) carries counts only: rows read, cells so far.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from typing import Callable, Optional

import numpy as np

from .data import to_unit
from .errors import InputError
from .sources import (Source, SourceError, column_names, csv_header, iter_chunks,
                      named_chunks, parquet_files, parquet_parts, read_all, read_part)
from .summary import MAX_REPRESENTATIVES, SUM_BITS, CellSums, SummaryInfo, cell_side

Progress = Optional[Callable[[dict], None]]
DUCKDB_MEMORY = "1GB"          # DuckDB spills beyond this (temp dir) instead of growing
DASK_CONNECT_S = 30            # how long to try reaching the Dask scheduler


class LocalData:
    """One party's data set: ``check`` (bounds, count), ``points`` (all rows in
    memory, when a job needs them) and ``summarize`` (out of core)."""

    def __init__(self, src: Source, progress: Progress = None):
        self.src = src
        self.progress = progress
        self.n: Optional[int] = None
        self._names: Optional[list] = None
        self._chunked = False           # DuckDB could not read it as Python does
        self._clip: Optional[tuple] = None   # (lo, hi): rows are clipped into the bounds

    @property
    def columns(self) -> list:
        if self._names is None:
            self._names = column_names(self.src)
        return self._names

    def _say(self, rows: int, cells: int, t0: float, done: bool = False) -> None:
        if self.progress:
            self.progress({"stage": "local", "rows": int(rows), "cells": int(cells),
                           "seconds": time.perf_counter() - t0, "done": done,
                           "engine": self.src.engine})

    def check(self, bounds, name: str = "points", clip: bool = False) -> int:
        """Every row finite and inside the public bounds; returns the row count.
        InputError names the row (1-based) and the column, never a value.
        ``clip``: rows outside the bounds are accepted and clipped into them by
        ``summarize`` and ``points`` (a party node: acceptance independent of where
        the data lie); only finiteness is checked."""
        lo, hi = np.asarray(bounds[0], float), np.asarray(bounds[1], float)
        self._clip = (lo, hi) if clip else None
        if clip:
            lo, hi = np.full_like(lo, -np.inf), np.full_like(hi, np.inf)
        if self.src.engine == "numpy":     # one pass: the names come with the first chunk
            n = self._numpy_check(lo, hi, name)
        else:
            _width(self.columns, lo, name)
            if self.src.engine == "duckdb":
                n = _duckdb_check(self.src, self.columns, lo, hi)
                if n is None:          # something is wrong: find the first row (or, for a
                    n = self._numpy_check(lo, hi, name)    # CSV DuckDB reads otherwise than
                    self._chunked = True                   # Python: summarise in chunks)
            else:
                n = _dask_check(self.src, self.columns, lo, hi, name)
        if n == 0:
            raise InputError(f"{name}: no points (an empty party cannot take part)")
        self.n = n
        return n

    def scan(self) -> int:
        """The node's standing check (no job, so no bounds): every chosen cell
        present and finite; the row count. DuckDB: one query (the Python reader
        names the first bad row); Dask: Parquet metadata only (the schema,
        numeric columns; rows are checked on the cluster for each job). Raises
        SourceError."""
        n = None
        if self.src.engine == "dask":
            _ = self.columns                        # the schema, every file
            n = sum(p[3] for p in parquet_parts(self.src))
        elif self.src.engine == "duckdb":
            inf = np.full(len(self.columns), np.inf)
            n = _duckdb_check(self.src, self.columns, -inf, inf)
        if n is None:
            n = 0
            for names, off, arr in named_chunks(self.src):
                self._names = names
                n = off + len(arr)
        return n

    def _numpy_check(self, lo, hi, name: str) -> int:
        n = 0
        for names, off, arr in named_chunks(self.src):
            if self._names is None:
                self._names = names
            if off == 0:
                _width(names, lo, name)
            problem = _outside(arr, lo, hi, names, off)
            if problem:
                raise InputError(f"{name}: {problem}")
            n = off + len(arr)
        return n

    def points(self) -> np.ndarray:
        """Every row in memory (exact mode, the secure bandwidth estimate),
        clipped into the bounds when the check was told to clip."""
        return self._clipped(read_all(self.src))

    def _clipped(self, arr: np.ndarray) -> np.ndarray:
        return arr if self._clip is None else np.clip(arr, self._clip[0], self._clip[1])

    def summarize(self, lo, scale: float, cell: float, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, SummaryInfo]:
        """summary.summarize of the unit-box rows, out of core by the source's engine."""
        lo = np.asarray(lo, float)
        d = len(self.columns)
        side = cell_side(cell, d)
        t0 = time.perf_counter()
        if self.n is not None and self.n <= MAX_REPRESENTATIVES:
            agg = CellSums.of(to_unit(self.points(), lo, scale), side)
        elif self.src.engine == "duckdb" and not self._chunked:
            agg = _duckdb_cells(self.src, self.columns, lo, scale, side, self._clip)
        elif self.src.engine == "dask":
            agg = _dask_cells(self.src, self.columns, lo, scale, side, self._clip)
        else:
            agg = CellSums(side, d)
            for off, arr in iter_chunks(self.src):
                agg = agg.merge(CellSums.of(to_unit(self._clipped(arr), lo, scale), side))
                self._say(off + len(arr), agg.cells, t0)
        if agg.n <= MAX_REPRESENTATIVES and agg.few is None:
            agg = replace(agg, few=to_unit(self.points(), lo, scale))
        if self.n is not None and agg.n != self.n or not _in_box(agg):
            raise InputError(f"data set {self.src.key!r}: the data changed between the check "
                             "and the summary; run the job again")
        out = agg.finish(seed)
        self._say(agg.n, agg.cells, t0, done=True)
        return out


def _in_box(agg: CellSums) -> bool:
    """Every cell inside the unit box (the checked rows' cells are)."""
    if not agg.cells:
        return True
    top = int(np.floor(1.0 / (agg.side * 2**agg.level)))
    return bool(agg.keys.min() >= 0 and agg.keys.max() <= top)


def _width(names: list, lo: np.ndarray, name: str) -> None:
    if len(names) != lo.size:
        raise InputError(f"{name}: {len(names)} columns but the job has {lo.size} features")


def _outside(arr: np.ndarray, lo, hi, names, offset: int) -> str:
    inside = (arr >= lo) & (arr <= hi)
    if inside.all():
        return ""
    r, c = np.argwhere(~inside)[0]
    return f"row {offset + r + 1} is outside the public bounds in column {names[c]!r}"


# ------------------------------------------------------------------------ DuckDB

def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _duckdb(src: Source):
    import duckdb  # loaded only for the data sources that use it (start-up cost)

    tmp = os.path.join(tempfile.gettempdir(), "sms-duckdb")
    os.makedirs(tmp, mode=0o700, exist_ok=True)
    return duckdb.connect(config={"memory_limit": DUCKDB_MEMORY, "temp_directory": tmp,
                                  "threads": max(1, min(4, os.cpu_count() or 1))})


def _duckdb_from(src: Source, names: list) -> tuple[str, list, dict]:
    """(FROM clause, a DOUBLE expression per chosen column, parameters). A CSV is
    read as text with the header skipped and plain positional names, each cell
    trimmed and TRY_CAST (a cell DuckDB cannot read is NULL: the check fails and
    the Python reader names the line)."""
    if src.kind == "parquet":
        return "read_parquet($files)", [f"{_q(c)}::DOUBLE" for c in names], \
            {"files": parquet_files(src)}
    header, pick = csv_header(src)
    cols = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(header))) + "}"
    frm = (f"read_csv($path, header=false, skip=1, delim=',', quote='\"', escape='\"', "
           f"columns={cols}, auto_detect=false, null_padding=false)")
    return frm, [f"TRY_CAST(trim(c{i}) AS DOUBLE)" for i in pick], {"path": src.path}


def _duckdb_check(src: Source, names, lo, hi) -> Optional[int]:
    """Row count if every row is fine, None if some is not (the numpy pass then
    names the first one) or DuckDB cannot read the data."""
    import duckdb  # loaded only for the data sources that use it (start-up cost)

    frm, exprs, params = _duckdb_from(src, names)
    conds = []
    for j, x in enumerate(exprs):
        conds.append(f"coalesce({x} IS NOT NULL AND isfinite({x}) AND {x} >= $lo{j} "
                     f"AND {x} <= $hi{j}, false)")
        params[f"lo{j}"], params[f"hi{j}"] = float(lo[j]), float(hi[j])
    sql = f"SELECT count(*), count(*) FILTER (WHERE NOT ({' AND '.join(conds)})) FROM {frm}"
    con = _duckdb(src)
    try:
        n, bad = con.execute(sql, params).fetchone()
    except duckdb.Error:       # never shown: its message may quote the data
        return None
    finally:
        con.close()
    return None if bad else int(n)


def _duckdb_cells(src: Source, names, lo, scale: float, side: float,
                  clip: Optional[tuple] = None) -> CellSums:
    """GROUP BY cell in DuckDB: the same float64 expressions as the numpy path
    ((x - lo) / scale, then / side and * 2^30, floored), integer sums; ``clip``
    (lo, hi): each value clipped into [lo, hi] first, as np.clip does."""
    frm, exprs, params = _duckdb_from(src, names)
    params.update({"scale": float(scale), "side": float(side), "q": float(2.0**SUM_BITS)})
    keys, sums = [], []
    for j, x in enumerate(exprs):
        if clip is not None:
            x = f"greatest(least({x}, $chi{j}), $clo{j})"
            params[f"clo{j}"], params[f"chi{j}"] = float(clip[0][j]), float(clip[1][j])
        u = f"(({x} - $lo{j}) / $scale)"
        params[f"lo{j}"] = float(lo[j])
        keys.append(f"floor({u} / $side)::BIGINT AS k{j}")
        sums.append(f"sum(floor({u} * $q)::BIGINT)::BIGINT AS s{j}")
    group = ", ".join(f"k{j}" for j in range(len(names)))
    sql = (f"SELECT {', '.join(keys)}, count(*) AS n, {', '.join(sums)} "
           f"FROM {frm} GROUP BY {group}")
    con = _duckdb(src)
    try:
        res = con.execute(sql, params).fetchnumpy()
    finally:
        con.close()
    d = len(names)
    k = np.stack([np.asarray(res[f"k{j}"], np.int64) for j in range(d)], axis=1)
    s = np.stack([np.asarray(res[f"s{j}"], np.int64) for j in range(d)], axis=1)
    return CellSums.from_cells(side, d, k, np.asarray(res["n"], np.int64), s).bounded()


# -------------------------------------------------------------------------- Dask

def part_cells(src: Source, names: list, part: tuple, lo, scale: float, side: float,
               clip: Optional[tuple] = None) -> CellSums:
    """One row group's cell sums (runs on a Dask worker; also the unit of the map);
    ``clip`` (lo, hi): rows clipped into the bounds first."""
    arr = read_part(src, part, names)
    if clip is not None:
        arr = np.clip(arr, clip[0], clip[1])
    return CellSums.of(to_unit(arr, lo, scale), side)


def part_problem(src: Source, names: list, part: tuple, lo, hi) -> tuple:
    """(rows, first problem or ""): a row group checked on a Dask worker. The
    problem names a row and a column, never a value."""
    try:
        arr = read_part(src, part, names)
    except SourceError as exc:
        return part[3], exc.what
    return len(arr), _outside(arr, lo, hi, names, part[2])


def _merge(a: CellSums, b: CellSums) -> CellSums:
    return a.merge(b)


def _client(src: Source):
    from distributed import Client  # optional dependency (dask): only for its data sets

    try:
        return Client(src.dask_scheduler, timeout=DASK_CONNECT_S, set_as_default=False)
    except Exception as exc:    # noqa: BLE001 - the address is configuration, not data
        raise SourceError(src.key, "cannot reach the Dask scheduler "
                          f"({type(exc).__name__})", src.dask_scheduler) from None


def _dask_check(src: Source, names, lo, hi, name: str) -> int:
    parts = parquet_parts(src)
    with _client(src) as client:
        futs = client.map(part_problem, [src] * len(parts), [names] * len(parts), parts,
                          [lo] * len(parts), [hi] * len(parts), pure=False)
        results = client.gather(futs)
    for rows, problem in results:
        if problem:
            raise InputError(f"{name}: {problem}")
    return int(sum(r for r, _ in results))


def _dask_cells(src: Source, names, lo, scale: float, side: float,
                clip: Optional[tuple] = None) -> CellSums:
    """Map: per row group cell sums on the workers; reduce: pairwise merges in
    row order on the workers; only the final aggregate comes back."""
    parts = parquet_parts(src)
    k = len(parts)
    with _client(src) as client:
        futs = client.map(part_cells, [src] * k, [names] * k, parts, [lo] * k, [scale] * k,
                          [side] * k, [clip] * k, pure=False)
        while len(futs) > 1:
            nxt = [client.submit(_merge, futs[i], futs[i + 1], pure=False)
                   for i in range(0, len(futs) - 1, 2)]
            futs = nxt + ([futs[-1]] if len(futs) % 2 else [])
        return futs[0].result() if futs else CellSums(side, len(names))
