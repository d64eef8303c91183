"""A party's data where it lives: CSV, .npy, Parquet (a file, a directory or a
glob, via Arrow) and SQL (a query against a database URL, streamed with a
server-side cursor; PostgreSQL through SQLAlchemy + psycopg 3).

Rows are read in chunks and never all at once unless a job needs them in
memory (exact mode, a secure bandwidth estimate): the local summary
(summary.CellSums) is an exact aggregate that chunks, DuckDB or a Dask cluster
add up. Errors name the data set key, the column and the row (1-based), never a
value, a path or a database URL: ``str(exc)`` may leave the node; ``exc.local``
adds where the data is (password hidden), for the node's own log only.

A data set is described by a mapping (the node config's ``datasets`` entries,
or a YAML file given to ``simulate --party-data``)::

    path: data/patients.csv              # CSV with header | .npy | Parquet file,
                                         # directory or glob ("lake/tx/*.parquet")
    format: parquet                      # optional: csv | npy | parquet (else from path)
    columns: [age, bmi]                  # by name (default: all)
    sql: "SELECT age, bmi FROM patients" # instead of path: a query ...
    url: postgresql+psycopg://analyst@db:5432/clinic   # ... against this URL (no password)
    password_file: secrets/db-password   # mode 0600 (else refused); or password_env: NAME
    summary_engine: auto                 # auto | numpy | duckdb (Parquet, CSV) | dask
    dask_scheduler: tcp://10.0.0.9:8786  # with summary_engine: dask
    chunk_rows: 1000000                  # rows per chunk (numpy engine, SQL)
"""

from __future__ import annotations

import csv
import glob
import numbers
import os
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Iterator, Optional

import numpy as np
import yaml

from .data import PointsFileError, iter_csv_points
from .errors import InputError

KINDS = ("csv", "npy", "parquet", "sql")
ENGINES = ("auto", "numpy", "duckdb", "dask")
KEYS = {"path", "format", "columns", "sql", "url", "password_file", "password_env",
        "summary_engine", "dask_scheduler", "chunk_rows"}
DEFAULT_CHUNK = 1_000_000


class SourceError(InputError):
    """``str(exc)``: the path-free problem (key, row, column); ``exc.local`` also
    says where the data is, for the node's own log."""

    def __init__(self, key: str, what: str, where: str = ""):
        self.key, self.what, self.where = key, what, where
        super().__init__(f"data set {key!r}: {what}")

    @property
    def local(self) -> str:
        return f"data set {self.key!r} ({self.where}): {self.what}" if self.where else str(self)


@dataclass(frozen=True)
class Source:
    """One data set's description (no secret in it: a password is read from
    ``password_file`` or the environment variable ``password_env`` when used)."""

    key: str
    kind: str
    path: str = ""
    columns: Optional[tuple] = None
    sql: str = ""
    url: str = ""
    password_file: str = ""
    password_env: str = ""
    summary_engine: str = "auto"
    dask_scheduler: str = ""
    chunk_rows: int = DEFAULT_CHUNK

    @property
    def where(self) -> str:
        """Where the data is, for the local log only (a URL without its password)."""
        return self.path if self.kind != "sql" else _redacted(self.url)

    @property
    def engine(self) -> str:
        """The summary engine in use: ``auto`` is DuckDB for Parquet, numpy otherwise
    (a CSV is read whole with ``auto``, in chunks with ``numpy`` or ``duckdb``)."""
        if self.summary_engine != "auto":
            return self.summary_engine
        return "duckdb" if self.kind == "parquet" else "numpy"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["columns"] = list(self.columns) if self.columns else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Source":
        d = dict(d)
        d["columns"] = tuple(d["columns"]) if d.get("columns") else None
        return cls(**d)


def _redacted(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url  # per data-source kind (start-up cost)

        return make_url(url).render_as_string(hide_password=True)
    except Exception:          # noqa: BLE001 - an unparsable URL is shown as a kind only
        return "a database URL"


def _kind_of(path: str) -> str:
    low = path.lower()
    if low.endswith(".npy"):
        return "npy"
    if low.endswith((".parquet", ".pq")) or os.path.isdir(path) or glob.has_magic(path):
        return "parquet"
    return "csv"


def parse_source(key: str, d: dict, base_dir: str = "") -> Source:
    """A Source from a config mapping; InputError naming ``datasets.<key>.<setting>``."""
    where = f"datasets.{key}"
    if not isinstance(d, dict):
        raise InputError(f"{where}: expected a mapping (path: ... or sql: ...)")
    unknown = sorted(set(map(str, d)) - KEYS)
    if unknown:
        raise InputError(f"{where}.{unknown[0]}: unknown setting (known: "
                         f"{', '.join(sorted(KEYS))})")
    if ("path" in d) == ("sql" in d):
        raise InputError(f"{where}: needs a 'path' (CSV, .npy, Parquet) or an 'sql' query "
                         "with a 'url', not both")
    cols = d.get("columns")
    if cols is not None and (not isinstance(cols, list) or not cols
                             or not all(isinstance(c, str) for c in cols)):
        raise InputError(f"{where}.columns: a non-empty list of column names")
    engine = d.get("summary_engine", "auto")
    if engine not in ENGINES:
        raise InputError(f"{where}.summary_engine: one of {', '.join(ENGINES)}")
    chunk = d.get("chunk_rows", DEFAULT_CHUNK)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise InputError(f"{where}.chunk_rows: an integer >= 1")
    common = dict(columns=tuple(cols) if cols else None, summary_engine=engine,
                  dask_scheduler=str(d.get("dask_scheduler", "") or ""), chunk_rows=chunk)
    if "sql" in d:
        src = _parse_sql(key, d, base_dir, common)
    else:
        src = _parse_path(key, d, base_dir, common)
    if src.engine == "dask" and src.kind != "parquet":
        raise InputError(f"{where}.summary_engine: dask reads Parquet sources only "
                         "(use auto, numpy or duckdb)")
    if src.engine == "duckdb" and src.kind not in ("parquet", "csv"):
        raise InputError(f"{where}.summary_engine: duckdb reads Parquet and CSV sources only "
                         "(use auto or numpy)")
    if src.engine == "dask" and not src.dask_scheduler:
        raise InputError(f"{where}.dask_scheduler: required with summary_engine: dask "
                         "(e.g. tcp://host:8786)")
    return src


def _parse_path(key: str, d: dict, base_dir: str, common: dict) -> Source:
    where = f"datasets.{key}"
    path = d["path"]
    if not isinstance(path, str) or not path:
        raise InputError(f"{where}.path: a file, directory or glob")
    for k in ("url", "password_file", "password_env"):
        if k in d:
            raise InputError(f"{where}.{k}: only applies to an 'sql' source")
    path = path if os.path.isabs(path) or not base_dir else os.path.join(base_dir, path)
    kind = d.get("format") or _kind_of(path)
    if kind not in ("csv", "npy", "parquet"):
        raise InputError(f"{where}.format: one of csv, npy, parquet")
    return Source(key, kind, path=path, **common)


def _parse_sql(key: str, d: dict, base_dir: str, common: dict) -> Source:
    where = f"datasets.{key}"
    query, url = d.get("sql"), d.get("url")
    if not isinstance(query, str) or not query.strip():
        raise InputError(f"{where}.sql: a query (text)")
    if not isinstance(url, str) or not url:
        raise InputError(f"{where}.url: a database URL, e.g. "
                         "postgresql+psycopg://user@host:5432/db")
    try:
        from sqlalchemy.engine import make_url  # per data-source kind (start-up cost)

        parsed = make_url(url)
    except Exception:          # noqa: BLE001 - never echo the URL
        raise InputError(f"{where}.url: not a valid database URL") from None
    if parsed.password is not None:
        raise InputError(f"{where}.url: contains a password; remove it from the URL and put "
                         "it in a file named by password_file (mode 0600) or in an "
                         "environment variable named by password_env")
    if "password_file" in d and "password_env" in d:
        raise InputError(f"{where}: give password_file or password_env, not both")
    pf = str(d.get("password_file", "") or "")
    if pf and base_dir and not os.path.isabs(pf):
        pf = os.path.join(base_dir, pf)
    return Source(key, "sql", sql=query, url=url, password_file=pf,
                  password_env=str(d.get("password_env", "") or ""), **common)


def source_for_path(key: str, path: str, columns=None) -> Source:
    """A file source (kind from the name) as the simulator's --party-data gives it."""
    return Source(key, _kind_of(path), path=path, columns=tuple(columns) if columns else None)


def source_from_arg(arg: str, columns=None, key: str = "") -> Source:
    """``simulate --party-data ARG``: a CSV, .npy or Parquet file, directory or
    glob; or a YAML file holding one data-set mapping (as in the node config:
    ``sql:``/``url:``/``password_env:``, ``summary_engine:`` ...)."""
    if arg.lower().endswith((".yaml", ".yml")):
        try:
            with open(arg) as fh:
                d = yaml.safe_load(fh)
        except (OSError, yaml.YAMLError):
            raise InputError(f"{arg}: not a readable YAML data-set description") from None
        if columns and isinstance(d, dict) and "columns" not in d:
            d = {**d, "columns": list(columns)}
        return parse_source(key or os.path.basename(arg), d,
                            os.path.dirname(os.path.abspath(arg)))
    return source_for_path(key or arg, arg, columns)


# ---------------------------------------------------------------- reading in chunks

def column_names(src: Source) -> list:
    """The names of the columns the data set provides (checked; SQL runs the query)."""
    if src.kind == "parquet":
        return _parquet_columns(src, parquet_files(src))[0]
    if src.kind == "npy":
        arr = _npy(src)
        return list(src.columns) if src.columns else [f"x{i}" for i in range(arr.shape[1])]
    if src.kind == "csv":
        header, pick = csv_header(src)
        return [header[i] for i in pick]
    names = None
    for names, _, _ in named_chunks(src):      # SQL: runs the query for its first chunk
        break
    return names or []


def iter_chunks(src: Source) -> Iterator[tuple[int, np.ndarray]]:
    """(offset of the chunk's first row, (m, d) float64 rows): every cell checked
    (numeric type, not empty, finite), errors by key, row and column."""
    for _, offset, arr in named_chunks(src):
        yield offset, arr


def read_all(src: Source) -> np.ndarray:
    """Every row in memory (exact mode, a bandwidth estimate, small data)."""
    parts = [a for _, a in iter_chunks(src)]
    d = len(column_names(src)) if not parts else parts[0].shape[1]
    return np.concatenate(parts) if parts else np.zeros((0, d))


def named_chunks(src: Source) -> Iterator[tuple[list, int, np.ndarray]]:
    """(column names, offset, rows) for every chunk: :func:`iter_chunks` with names."""
    if src.kind == "csv":
        yield from _csv_chunks(src)
    elif src.kind == "npy":
        yield from _npy_chunks(src)
    elif src.kind == "parquet":
        files = parquet_files(src)
        names, _ = _parquet_columns(src, files)
        for part in parquet_parts(src, files):
            yield names, part[2], read_part(src, part, names)
    else:
        yield from _sql_chunks(src)


def _csv_chunks(src: Source):
    if not os.path.isfile(src.path):
        raise SourceError(src.key, "file not found", src.where)
    try:           # names line, column and rule: no path, no value
        yield from iter_csv_points(src.path, src.columns, finite=True,
                                   columns_from="the node config", chunk_rows=src.chunk_rows)
    except PointsFileError as exc:
        raise SourceError(src.key, str(exc), src.where) from None


def csv_header(src: Source) -> tuple[list, list]:
    """(all header names, indices of the chosen columns) of a CSV source."""
    if not os.path.isfile(src.path):
        raise SourceError(src.key, "file not found", src.where)
    try:
        with open(src.path, newline="") as fh:
            header = [h.strip() for h in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        raise SourceError(src.key, "cannot read the header line", src.where) from None
    if not header:
        raise SourceError(src.key, "line 1: empty file (a header line is required)", src.where)
    cols = list(src.columns) if src.columns else header
    missing = [c for c in cols if c not in header]
    if missing:
        raise SourceError(src.key, f"line 1: column {missing[0]!r} (from the node config) is "
                          "not in the header", src.where)
    return header, [header.index(c) for c in cols]


def _npy(src: Source) -> np.ndarray:
    if not os.path.isfile(src.path):
        raise SourceError(src.key, "file not found", src.where)
    if src.columns:
        raise SourceError(src.key, "'columns' only applies to CSV, Parquet and SQL sources",
                          src.where)
    try:
        arr = np.load(src.path, mmap_mode="r", allow_pickle=False)
    except Exception:          # noqa: BLE001 - never echo the file's content
        raise SourceError(src.key, "not a readable numeric .npy array", src.where) from None
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise SourceError(src.key, "expected a 2-D numeric array", src.where)
    return arr


def _npy_chunks(src: Source):
    arr = _npy(src)
    names = [f"x{i}" for i in range(arr.shape[1])]
    for off in range(0, arr.shape[0], src.chunk_rows):
        part = np.asarray(arr[off:off + src.chunk_rows], dtype=np.float64)
        bad = np.argwhere(~np.isfinite(part))
        if len(bad):
            r, c = bad[0]
            raise SourceError(src.key, f"row {off + r + 1}, column {c + 1}: not a finite "
                              "number", src.where)
        yield names, off, part


def parquet_files(src: Source) -> list:
    """The Parquet files of a file, directory (recursively) or glob source, sorted."""
    p = src.path
    if os.path.isdir(p):
        files = sorted(os.path.join(r, f) for r, _, fs in os.walk(p) for f in fs
                       if f.lower().endswith((".parquet", ".pq")))
    elif glob.has_magic(p):
        files = sorted(f for f in glob.glob(p, recursive=True) if os.path.isfile(f))
    else:
        files = [p] if os.path.isfile(p) else []
    if not files:
        raise SourceError(src.key, "no Parquet file found", src.where)
    return files


def _parquet_columns(src: Source, files: list) -> tuple[list, list]:
    """(names, Arrow types) of the chosen columns, the same in every file."""
    import pyarrow as pa  # per data-source kind (start-up cost)
    import pyarrow.parquet as pq

    names, types = None, None
    for i, f in enumerate(files):
        try:
            schema = pq.read_schema(f)
        except Exception:      # noqa: BLE001 - never echo the content
            raise SourceError(src.key, f"file {i + 1} of {len(files)}: not a readable "
                              "Parquet file", src.where) from None
        cols = list(src.columns) if src.columns else list(schema.names)
        for c in cols:
            if c not in schema.names:
                raise SourceError(src.key, f"column {c!r} is not in file {i + 1} of "
                                  f"{len(files)}", src.where)
            t = schema.field(c).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t)
                    or pa.types.is_decimal(t)):
                raise SourceError(src.key, f"column {c!r}: type {t} is not numeric", src.where)
        if names is None:
            names, types = cols, [schema.field(c).type for c in cols]
    return names, types


def parquet_parts(src: Source, files: Optional[list] = None) -> list:
    """(file, row group, first row, rows) for every row group, in row order: the
    unit of work of the chunked and the Dask engines."""
    import pyarrow.parquet as pq  # per data-source kind (start-up cost)

    out, off = [], 0
    for f in files or parquet_files(src):
        md = pq.ParquetFile(f).metadata
        for g in range(md.num_row_groups):
            rows = md.row_group(g).num_rows
            out.append((f, g, off, rows))
            off += rows
    return out


def read_part(src: Source, part: tuple, names: list) -> np.ndarray:
    """One row group as checked float64 rows."""
    import pyarrow.parquet as pq  # per data-source kind (start-up cost)

    f, g, off, _ = part
    table = pq.ParquetFile(f).read_row_group(g, columns=names)
    return _arrow_to_numpy(src, table, names, off)


def _arrow_to_numpy(src: Source, table, names: list, offset: int) -> np.ndarray:
    import pyarrow.compute as pc  # per data-source kind (start-up cost)

    out = np.empty((table.num_rows, len(names)))
    for j, c in enumerate(names):
        col = table.column(c)
        if col.null_count:
            r = int(pc.index(pc.is_null(col), True).as_py())
            raise SourceError(src.key, f"row {offset + r + 1}, column {c!r}: empty (null)",
                              src.where)
        out[:, j] = col.cast("float64").to_numpy() if table.num_rows else []
    _check_finite(src, out, names, offset)
    return out


def _check_finite(src: Source, arr: np.ndarray, names: list, offset: int) -> None:
    ok = np.isfinite(arr)
    if not ok.all():
        r, c = np.argwhere(~ok)[0]
        raise SourceError(src.key, f"row {offset + r + 1}, column {names[c]!r}: not a "
                          "finite number", src.where)


def _password(src: Source) -> Optional[str]:
    if src.password_env:
        pw = os.environ.get(src.password_env)
        if pw is None:
            raise SourceError(src.key, f"environment variable {src.password_env} (password_env) "
                              "is not set", src.where)
        return pw
    if src.password_file:
        try:
            if os.stat(src.password_file).st_mode & 0o077:
                raise SourceError(src.key, "password_file is readable by others than its "
                                  "owner (chmod 600 it)", src.where)
            with open(src.password_file) as fh:
                return fh.read().rstrip("\r\n")
        except OSError as exc:
            raise SourceError(src.key, f"password_file cannot be read "
                              f"({exc.strerror or type(exc).__name__})", src.where) from None
    return None


def _sql_chunks(src: Source):
    from sqlalchemy import create_engine, text  # per data-source kind (start-up cost)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError  # per data-source kind (start-up cost)

    url = make_url(src.url)
    pw = _password(src)
    if pw is not None:
        url = url.set(password=pw)
    try:
        engine = create_engine(url)
    except Exception:          # noqa: BLE001 - driver missing, bad URL: no URL in the message
        raise SourceError(src.key, "the database URL cannot be used (unknown dialect or "
                          "driver)", src.where) from None
    try:
        with engine.connect() as conn:
            try:
                res = conn.execution_options(stream_results=True, yield_per=src.chunk_rows) \
                    .execute(text(src.sql))
            except SQLAlchemyError as exc:
                raise SourceError(src.key, f"the query failed ({_sql_reason(exc)})",
                                  src.where) from None
            names = _sql_columns(src, list(res.keys()))
            idx = [list(res.keys()).index(c) for c in names]
            off = 0
            for rows in res.partitions(src.chunk_rows):
                yield names, off, _sql_rows(src, rows, names, idx, off)
                off += len(rows)
    except SQLAlchemyError as exc:
        raise SourceError(src.key, f"cannot read from the database ({_sql_reason(exc)})",
                          src.where) from None
    finally:
        engine.dispose()


def _sql_reason(exc: BaseException) -> str:
    """The error's class (and, for a driver error, its SQLSTATE), never its text:
    a driver's message may quote values or the connection string."""
    orig = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None)
    return f"{type(orig or exc).__name__}" + (f", SQLSTATE {state}" if state else "")


def _sql_columns(src: Source, have: list) -> list:
    if not src.columns:
        return have
    for c in src.columns:
        if c not in have:
            raise SourceError(src.key, f"column {c!r} is not in the query's result", src.where)
    return list(src.columns)


def _sql_rows(src: Source, rows, names: list, idx: list, offset: int) -> np.ndarray:
    out = np.empty((len(rows), len(names)))
    for j, (c, i) in enumerate(zip(names, idx)):
        vals = [r[i] for r in rows]
        for r, v in enumerate(vals):
            if v is None:
                raise SourceError(src.key, f"row {offset + r + 1}, column {c!r}: empty (NULL)",
                                  src.where)
            if isinstance(v, bool) or not isinstance(v, (numbers.Real, Decimal)):
                raise SourceError(src.key, f"row {offset + r + 1}, column {c!r}: "
                                  f"{type(v).__name__} is not a number", src.where)
        out[:, j] = np.asarray(vals, dtype=np.float64) if vals else []
    _check_finite(src, out, names, offset)
    return out

