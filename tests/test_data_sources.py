"""Data sources (issue 21): Parquet and SQL read in chunks, errors by key, row and
column (never a value, a path or a password), out-of-core summaries identical to
the in-memory path, a real PostgreSQL and a real Dask cluster."""

import os
import time

import numpy as np
import pytest

from secure_meanshift.data import separated_blobs, synthetic_blobs, to_unit
from secure_meanshift.errors import InputError
from secure_meanshift.local_data import LocalData
from secure_meanshift.sources import SourceError, parse_source, read_all
from secure_meanshift.summary import summarize_info

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def write_parquet(folder, x, names=None, files=3, row_group=5_000):
    os.makedirs(folder, exist_ok=True)
    names = names or [f"f{j}" for j in range(x.shape[1])]
    for i, part in enumerate(np.array_split(x, files)):
        pq.write_table(pa.table({n: part[:, j] for j, n in enumerate(names)}),
                       os.path.join(folder, f"part-{i:03d}.parquet"), row_group_size=row_group)
    return str(folder)


# ------------------------------------------------------------------ configuration

@pytest.mark.parametrize("entry, needle", [
    ({"sql": "SELECT 1", "url": "postgresql+psycopg://u:secret@h/db"}, "contains a password"),
    ({"sql": "SELECT 1"}, "url"),
    ({"path": "a.csv", "sql": "SELECT 1"}, "not both"),
    ({"path": "a.parquet", "summary_engine": "dask"}, "dask_scheduler"),
    ({"path": "a.npy", "summary_engine": "duckdb"}, "Parquet and CSV sources only"),
    ({"path": "a.csv", "summary_engine": "dask", "dask_scheduler": "tcp://h:1"}, "Parquet sources only"),
    ({"path": "a.csv", "url": "postgresql://h/db"}, "only applies to an 'sql'"),
    ({"path": "a.csv", "colums": ["x"]}, "unknown setting"),
    ({"sql": "SELECT 1", "url": "postgresql://h/db", "password_file": "f",
      "password_env": "E"}, "not both"),
])
def test_bad_entries_are_refused_with_the_fix(entry, needle):
    with pytest.raises(InputError) as exc:
        parse_source("clinic", entry)
    assert needle in str(exc.value)
    assert "secret" not in str(exc.value)


def test_node_config_refuses_inline_password(tmp_path):
    from party_node.config import ConfigError, load

    cfg = tmp_path / "node.yaml"
    cfg.write_text("party_id: a\ncoordinator: {address: 'x:1'}\ninsecure: true\n"
                   "datasets:\n  v: {sql: 'SELECT 1', url: 'postgresql://u:hunter2@h/db'}\n")
    with pytest.raises(ConfigError) as exc:
        load(str(cfg))
    assert "password_file" in str(exc.value) and "hunter2" not in str(exc.value)
    cfg.write_text("party_id: a\ncoordinator: {address: 'x:1'}\ninsecure: true\n"
                   "datasets:\n  t: {path: lake/*.parquet, columns: [a, b]}\n")
    ds = load(str(cfg)).datasets["t"]
    assert ds.source.kind == "parquet" and ds.source.engine == "duckdb"
    assert ds.columns == ["a", "b"] and ds.path == str(tmp_path / "lake" / "*.parquet")


# ------------------------------------------------------------------------ Parquet

def test_parquet_file_directory_glob_and_columns(tmp_path):
    x = np.random.default_rng(0).uniform(size=(1000, 3))
    folder = write_parquet(tmp_path / "lake", x, ["a", "b", "c"], files=3, row_group=100)
    for path in (folder, str(tmp_path / "lake" / "*.parquet")):
        got = read_all(parse_source("t", {"path": path, "columns": ["c", "a"]}))
        np.testing.assert_array_equal(got, x[:, [2, 0]])
    one = read_all(parse_source("t", {"path": os.path.join(folder, "part-000.parquet")}))
    np.testing.assert_array_equal(one, np.array_split(x, 3)[0])


def test_parquet_problems_name_key_row_and_column_only(tmp_path):
    folder = tmp_path / "secret-place"
    write_parquet(folder, np.ones((10, 2)), ["a", "b"], files=2)
    t = pa.table({"a": pa.array([1.0, None, 3.0]), "b": pa.array([1.0, 2.0, 3.0])})
    pq.write_table(t, folder / "part-009.parquet")          # rows 11..13: row 12 empty
    with pytest.raises(SourceError) as exc:
        read_all(parse_source("bank", {"path": str(folder)}))
    assert str(exc.value) == "data set 'bank': row 12, column 'a': empty (null)"
    assert "secret-place" in exc.value.local
    t = pa.table({"a": pa.array([1.0, float("inf")]), "b": pa.array(["u", "v"])})
    pq.write_table(t, tmp_path / "typed.parquet")
    with pytest.raises(SourceError, match="column 'b': type string is not numeric"):
        read_all(parse_source("bank", {"path": str(tmp_path / "typed.parquet")}))
    with pytest.raises(SourceError, match=r"^data set 'bank': row 2, column 'a': not a finite"):
        read_all(parse_source("bank", {"path": str(tmp_path / "typed.parquet"),
                                       "columns": ["a"]}))
    with pytest.raises(SourceError, match="column 'z' is not in file 1 of 3"):
        read_all(parse_source("bank", {"path": str(folder), "columns": ["z"]}))


def test_bounds_check_streams_and_names_the_row(tmp_path):
    x = np.random.default_rng(0).uniform(size=(3000, 2))
    x[2500, 1] = 1.5
    src = parse_source("bank", {"path": write_parquet(tmp_path / "l", x, ["a", "b"]),
                                "summary_engine": "duckdb"})
    with pytest.raises(InputError) as exc:
        LocalData(src).check(([0, 0], [1, 1]), "data set 'bank'")
    assert str(exc.value) == ("data set 'bank': row 2501 is outside the public bounds in "
                              "column 'b'")


# ---------------------------------------------- out-of-core equals in-memory, exactly

@pytest.mark.parametrize("dim, n", [(2, 60_000), (3, 30_000), (4, 40_000)])
def test_engines_give_the_in_memory_summary_exactly(tmp_path, dim, n):
    x, _ = synthetic_blobs(n, 5, dim, 0.04, seed=dim)
    x = x * 20 - 5                                   # data units: bounds [-5, 15]
    lo, hi, scale, cell = np.full(dim, -5.0), np.full(dim, 15.0), 20.0, 0.1 * 0.25
    ref_r, ref_w, ref_info = summarize_info(to_unit(x, lo, scale), cell)
    folder = write_parquet(tmp_path / "p", x, files=3, row_group=7_000)
    for engine in ("numpy", "duckdb"):
        seen = []
        src = parse_source("t", {"path": folder, "summary_engine": engine, "chunk_rows": 9_000})
        data = LocalData(src, progress=seen.append)
        assert data.check((lo, hi)) == n
        reps, w, info = data.summarize(lo, scale, cell)
        np.testing.assert_array_equal(reps, ref_r)
        np.testing.assert_array_equal(w, ref_w)
        assert info == ref_info
        assert seen[-1]["rows"] == n and seen[-1]["done"]
        assert set(seen[-1]) == {"stage", "rows", "cells", "seconds", "done", "engine"}


def test_summary_above_three_features_is_fast_and_keeps_every_point():
    x, _ = synthetic_blobs(200_000, 8, 4, 0.03, seed=0)
    t0 = time.perf_counter()
    reps, w, info = summarize_info(x, 0.025)
    took = time.perf_counter() - t0
    assert info.method == "kmeans" and len(reps) <= 20_000
    assert w.sum() == len(x)
    assert took < 20, f"{took:.1f} s for 200,000 points in 4-D"
    # every representative is a weighted mean of points: inside their hull's box
    assert (reps >= x.min(0) - 1e-9).all() and (reps <= x.max(0) + 1e-9).all()
    np.testing.assert_allclose((reps * w[:, None]).sum(0), x.sum(0), rtol=0,
                               atol=len(x) * 2.0**-30)    # sums on the 2^-30 grid


# ---------------------------------------------------------------------- PostgreSQL

@pytest.fixture(scope="module")
def pg():
    from pg_cluster import start_cluster

    yield from start_cluster()


def _pg_table(pg, name, x):
    pg.execute(f"DROP TABLE IF EXISTS {name}",
               f"CREATE TABLE {name} (id serial, age double precision, bmi numeric, note text)",
               f"INSERT INTO {name} (age, bmi, note) VALUES (%s, %s, 'n')",
               rows=[(float(a), float(b)) for a, b in x])


def test_postgres_streams_with_credentials_from_file_or_env(pg, tmp_path, monkeypatch):
    x = np.round(np.random.default_rng(3).uniform(0, 1, size=(2500, 2)), 6)
    _pg_table(pg, "visits", x)
    pwf = tmp_path / "pw"
    pwf.write_text(pg.password + "\n")
    q = "SELECT age, bmi FROM visits ORDER BY id"
    by_file = parse_source("clinic", {"sql": q, "url": pg.url, "password_file": str(pwf),
                                      "chunk_rows": 700})
    os.chmod(pwf, 0o644)
    with pytest.raises(SourceError, match=r"readable by others .* \(chmod 600 it\)"):
        read_all(by_file)
    os.chmod(pwf, 0o600)
    np.testing.assert_array_equal(read_all(by_file), x)
    monkeypatch.setenv("SMS_TEST_PG_PW", pg.password)
    by_env = parse_source("clinic", {"sql": q, "url": pg.url, "password_env": "SMS_TEST_PG_PW",
                                     "columns": ["bmi"], "chunk_rows": 1000})
    np.testing.assert_array_equal(read_all(by_env), x[:, [1]])
    lo, scale = np.zeros(2), 1.0
    data = LocalData(by_file)
    assert data.check(([0, 0], [1, 1])) == 2500
    reps, w, _ = data.summarize(lo, scale, 0.02)
    ref = summarize_info(to_unit(x, lo, scale), 0.02)
    np.testing.assert_array_equal(reps, ref[0])
    np.testing.assert_array_equal(w, ref[1])


def test_postgres_problems_never_show_values_urls_or_passwords(pg, tmp_path, monkeypatch):
    pg.execute("DROP TABLE IF EXISTS odd",
               "CREATE TABLE odd (id int, a double precision, t text)",
               "INSERT INTO odd VALUES (1, 0.5, 'x'), (2, NULL, 'y'), (3, 0.25, 'z')")
    monkeypatch.setenv("SMS_TEST_PG_PW", pg.password)
    base = {"url": pg.url, "password_env": "SMS_TEST_PG_PW", "chunk_rows": 1}
    cases = [({"sql": "SELECT a FROM odd ORDER BY id"}, "row 2, column 'a': empty (NULL)"),
             ({"sql": "SELECT t FROM odd ORDER BY id"}, "row 1, column 't': str is not a number"),
             ({"sql": "SELECT nope FROM odd"}, "the query failed (UndefinedColumn, SQLSTATE 42703)"),
             ({"sql": "SELECT a FROM odd", "columns": ["b"]}, "column 'b' is not in the query")]
    for extra, needle in cases:
        with pytest.raises(SourceError) as exc:
            read_all(parse_source("clinic", {**base, **extra}))
        msg = str(exc.value)
        assert needle in msg and pg.password not in msg and str(pg.port) not in msg
    monkeypatch.setenv("SMS_TEST_PG_PW", "wrong-password")
    with pytest.raises(SourceError) as exc:
        read_all(parse_source("clinic", {**base, "sql": "SELECT a FROM odd"}))
    assert "cannot read from the database (OperationalError" in str(exc.value)
    assert "wrong-password" not in exc.value.local and pg.password not in exc.value.local
    monkeypatch.delenv("SMS_TEST_PG_PW")
    with pytest.raises(SourceError, match="SMS_TEST_PG_PW .* is not set"):
        read_all(parse_source("clinic", {**base, "sql": "SELECT a FROM odd"}))


@pytest.mark.slow
def test_mixed_sources_job_equals_the_twin(pg, tmp_path, monkeypatch):
    """Party 0 in PostgreSQL, party 1 in Parquet, party 2 in a CSV: the secure
    job (rows where they live, summarised out of core) equals the plaintext twin
    on the same rows."""
    from secure_meanshift.params import MeanShiftParams
    from secure_meanshift.plaintext import reference_meanshift
    from secure_meanshift.centroid_match import match_error
    from secure_meanshift.simulate import run_simulation

    x, _ = separated_blobs(30_300, 3, 2, 0.03, seed=4)
    parts = [np.round(p, 6) for p in np.array_split(x, 3)]
    _pg_table(pg, "party0", parts[0])
    monkeypatch.setenv("SMS_TEST_PG_PW", pg.password)
    src0 = parse_source("p0", {"sql": "SELECT age, bmi FROM party0 ORDER BY id", "url": pg.url,
                               "password_env": "SMS_TEST_PG_PW", "chunk_rows": 4000})
    src1 = parse_source("p1", {"path": write_parquet(tmp_path / "p1", parts[1], ["a", "b"])})
    csv = tmp_path / "p2.csv"
    np.savetxt(csv, parts[2], delimiter=",", header="a,b", comments="", fmt="%.6f")
    src2 = parse_source("p2", {"path": str(csv)})
    params = MeanShiftParams(bandwidth=0.12, bounds=([0, 0], [1, 1]), n_dust=8, max_iter=20,
                             summary=0.25, seeding="dust", seed=1)
    run = run_simulation([LocalData(s) for s in (src0, src1, src2)], params, timeout_s=120)
    ref = reference_meanshift(parts, params)
    err, unmatched = match_error(run.receiver.centroids, ref.centroids)
    assert unmatched == 0 and err < 2e-3, (err, unmatched)


# ---------------------------------------------------------------------------- Dask

def test_dask_cluster_sums_partitions_to_the_same_summary(tmp_path):
    """A real dask.distributed LocalCluster (2 worker processes): per row group
    cell sums on the workers, added up there; only the summary comes back."""
    distributed = pytest.importorskip("distributed")
    x, _ = synthetic_blobs(50_000, 4, 2, 0.03, seed=7)
    x[123, 0] = np.nan
    folder = write_parquet(tmp_path / "lake", x, ["a", "b"], files=4, row_group=4_000)
    lo, hi, scale, cell = np.zeros(2), np.ones(2), 1.0, 0.025
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", scheduler_port=0, dashboard_address=":0",
                                  silence_logs=40) as cluster:
        src = parse_source("bank", {"path": folder, "summary_engine": "dask",
                                    "dask_scheduler": cluster.scheduler_address})
        with pytest.raises(InputError, match=r"^bank: row 124, column 'a': not a finite"):
            LocalData(src).check((lo, hi), "bank")
        x[123, 0] = 0.5
        folder = write_parquet(tmp_path / "lake", x, ["a", "b"], files=4, row_group=4_000)
        data = LocalData(src)
        assert data.check((lo, hi)) == len(x)
        reps, w, info = data.summarize(lo, scale, cell)
    ref_r, ref_w, ref_info = summarize_info(to_unit(x, lo, scale), cell)
    np.testing.assert_array_equal(reps, ref_r)
    np.testing.assert_array_equal(w, ref_w)
    assert info == ref_info


def test_dask_scheduler_unreachable_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    from testkit import free_port

    folder = write_parquet(tmp_path / "lake", np.full((10, 2), 0.5), ["a", "b"], files=1)
    src = parse_source("bank", {"path": folder, "summary_engine": "dask",
                                "dask_scheduler": f"tcp://127.0.0.1:{free_port()}"})
    from secure_meanshift import local_data

    monkeypatch.setattr(local_data, "DASK_CONNECT_S", 2)
    with pytest.raises(SourceError, match="^data set 'bank': cannot reach the Dask scheduler"):
        LocalData(src).check(([0, 0], [1, 1]))


# ------------------------------------------------------------------- the node's view

def test_node_checks_parquet_data_sets_without_loading_them(tmp_path):
    from party_node import datasets
    from party_node.config import load

    x = np.random.default_rng(2).uniform(size=(500, 2))
    write_parquet(tmp_path / "lake", x, ["a", "b"], files=2, row_group=100)
    cfg = tmp_path / "node.yaml"
    cfg.write_text("party_id: a\ncoordinator: {address: 'x:1'}\ninsecure: true\n"
                   "datasets:\n  tx: {path: lake, columns: [b, a]}\n"
                   "  gone: {path: nowhere/*.parquet}\n")
    sets = load(str(cfg)).datasets
    status = datasets.check_all(sets)
    assert status["tx"].available and status["tx"].columns == ["b", "a"]
    assert status["tx"].stamp == datasets.stamp(sets["tx"].source)
    assert not status["gone"].available
    assert status["gone"].problem == "data set 'gone': no Parquet file found"
    assert "nowhere" in status["gone"].local
    # a party node clips rows into a job's bounds instead of refusing the job
    # (acceptance independent of where the data lie): checked for finiteness only
    clipped = LocalData(sets["tx"].source)
    assert clipped.check(([0, 0], [0.001, 1]), "tx", clip=True) == len(x)
    assert clipped.columns == ["b", "a"] and clipped.points()[:, 0].max() <= 0.001
    data = datasets.job_data({"dataset": "tx", "path": sets["tx"].path,
                              "source": sets["tx"].source.to_dict()})
    assert isinstance(data, LocalData) and data.src.key == "tx"
    np.testing.assert_array_equal(data.points(), x[:, [1, 0]])


def test_data_changed_after_the_check_is_caught(tmp_path):
    x = np.random.default_rng(5).uniform(size=(30_000, 2))
    folder = write_parquet(tmp_path / "l", x, ["a", "b"], files=2)
    data = LocalData(parse_source("t", {"path": folder, "summary_engine": "duckdb"}))
    assert data.check(([0, 0], [1, 1])) == 30_000
    write_parquet(tmp_path / "l", x * 2, ["a", "b"], files=2)        # now outside the bounds
    with pytest.raises(InputError, match="the data changed between the check and the summary"):
        data.summarize(np.zeros(2), 1.0, 0.05)


def test_csv_in_chunks_and_through_duckdb_equal_the_in_memory_summary(tmp_path):
    x, _ = synthetic_blobs(30_000, 4, 2, 0.03, seed=9)
    path = tmp_path / "p.csv"
    with open(path, "w") as fh:
        fh.write("id, a ,b\n")
        for i, (a, b) in enumerate(x):
            fh.write(f"{i},{float(a)!r}, {float(b)!r}\n" + ("\n" if i == 100 else ""))  # + blank
    lo, scale, cell = np.zeros(2), 1.0, 0.025
    ref = summarize_info(to_unit(x, lo, scale), cell)
    for engine in ("numpy", "duckdb"):
        src = parse_source("c", {"path": str(path), "columns": ["a", "b"],
                                 "summary_engine": engine, "chunk_rows": 7_000})
        data = LocalData(src)
        assert data.check(([0, 0], [1, 1])) == len(x)
        reps, w, _ = data.summarize(lo, scale, cell)
        np.testing.assert_array_equal(reps, ref[0])
        np.testing.assert_array_equal(w, ref[1])
    with open(path, "a") as fh:
        fh.write("30000,0.5,oops\n")
    for engine in ("numpy", "duckdb"):
        src = parse_source("c", {"path": str(path), "columns": ["a", "b"],
                                 "summary_engine": engine, "chunk_rows": 7_000})
        with pytest.raises(SourceError) as exc:
            LocalData(src).check(([0, 0], [1, 1]))
        assert str(exc.value) == "data set 'c': line 30003, column 3 ('b'): not a number"


# ---------------------------------------------------------------------- simulate

def test_simulate_party_data_sources_fail_cleanly(tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    good = write_parquet(tmp_path / "good", np.full((20, 2), 0.5), ["a", "b"], files=1)
    yml = tmp_path / "clinic.yaml"
    yml.write_text("sql: SELECT a, b FROM t\nurl: postgresql+psycopg://u:pw123@h/db\n")
    bad = tmp_path / "bad"
    write_parquet(bad, np.full((20, 2), 0.5), ["a", "b"], files=1)
    pq.write_table(pa.table({"a": pa.array([0.5, None]), "b": pa.array([0.5, 0.5])}),
                   str(bad / "z.parquet"))
    for args, needle in (([good, str(yml)], "contains a password"),
                         ([good, str(bad)], "row 22, column 'a': empty (null)")):
        cmd = [sys.executable, "-m", "meanshift_cli.simulate", "--quiet", "--no-sklearn"]
        for a in args:
            cmd += ["--party-data", a]
        res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and needle in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and "pw123" not in res.stderr


def test_node_scan_per_engine(tmp_path):
    """The node's standing check: DuckDB one query, Dask metadata only, the
    Python reader naming the first bad row either way."""
    from party_node import datasets
    from party_node.config import Dataset

    x = np.random.default_rng(4).uniform(size=(3000, 2))
    x[1234, 1] = np.inf
    folder = write_parquet(tmp_path / "l", x, ["a", "b"], files=2, row_group=500)
    for engine, extra in (("duckdb", {}), ("numpy", {})):
        src = parse_source("tx", {"path": folder, "summary_engine": engine, **extra})
        st = datasets.check("tx", Dataset(src.path, None, src))
        assert st.problem == "data set 'tx': row 1235, column 'b': not a finite number"
    src = parse_source("tx", {"path": folder, "summary_engine": "dask",
                              "dask_scheduler": "tcp://127.0.0.1:1"})
    st = datasets.check("tx", Dataset(src.path, None, src))   # metadata only: no cluster
    assert st.available and st.columns == ["a", "b"]


def test_dp_histogram_is_counted_chunk_by_chunk_from_the_source(tmp_path, monkeypatch):
    """A DP job reads a data set where it lives: the noisy histogram's exact
    counts come from the source's chunks (never every row in memory), equal to
    the counts of the same rows in memory, rows outside the bounds clipped."""
    from secure_meanshift.params import MeanShiftParams
    from secure_meanshift.privacy import local_counts, local_release
    from secure_meanshift.runtime import _check_before_connecting

    x = np.random.default_rng(3).uniform(-0.1, 1.1, size=(9_000, 2))
    csv = tmp_path / "p.csv"
    np.savetxt(csv, x, delimiter=",", header="a,b", comments="", fmt="%.6f")
    x = np.loadtxt(csv, delimiter=",", skiprows=1)
    p = MeanShiftParams(bandwidth=0.1, bounds=([0, 0], [1, 1]),
                        privacy={"epsilon": 1.0, "delta": 1e-6})
    data = LocalData(parse_source("p", {"path": str(csv), "chunk_rows": 1000}))
    monkeypatch.setattr(LocalData, "points", lambda self: pytest.fail("read into memory"))
    got, n_rows, *_ = _check_before_connecting(data, p, "p", clip=True, before=None)
    assert got is data and n_rows == 9_000
    rel = local_release(data, p, keep_noise=True)
    np.testing.assert_array_equal(rel.counts - rel.noise, local_counts(x, p))
    assert rel.points == 9_000
