"""Issue 21 through the service: three party nodes whose data sets are a
PostgreSQL table, a Parquet directory and a CSV file; the job's result equals
the plaintext twin, and the nodes log the local phase as counts only."""

import os

import numpy as np
import pytest

from cluster import Cluster
from secure_meanshift.centroid_match import match_error

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


@pytest.fixture(scope="module")
def pg():
    from pg_cluster import start_cluster

    yield from start_cluster()


def test_postgres_parquet_csv_job_equals_the_twin(pg, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from test_service import run_job, twin

    c = Cluster(str(tmp_path), parties=3, points=80)
    alpha, beta = c.parts[0], c.parts[1]
    pg.execute("DROP TABLE IF EXISTS alpha_rows",
               "CREATE TABLE alpha_rows (id serial, x double precision, y double precision)",
               "INSERT INTO alpha_rows (x, y) VALUES (%s, %s)",
               rows=[(float(a), float(b)) for a, b in alpha])
    pw = tmp_path / "alpha-db-password"
    pw.write_text(pg.password)
    os.chmod(pw, 0o600)
    c.write_config("alpha", 0, datasets={"points": {
        "sql": "SELECT x, y FROM alpha_rows ORDER BY id", "url": pg.url,
        "password_file": str(pw), "chunk_rows": 25}})
    lake = tmp_path / "beta-lake"
    lake.mkdir()
    for i, part in enumerate(np.array_split(beta, 2)):
        pq.write_table(pa.table({"x": part[:, 0], "y": part[:, 1]}),
                       str(lake / f"part-{i}.parquet"), row_group_size=16)
    c.write_config("beta", 1, datasets={"points": {"path": str(lake), "columns": ["x", "y"]}})
    c.start()
    try:
        spec = c.spec(summary=0.25)
        info = run_job(c, spec)
        assert info["state"] == "succeeded", info
        cl = c.client()
        cents = cl.result(info["job_id"])
        cl.close()
        ref = twin(c, c.names, spec, int(info["seed_hex"], 16))
        err, unmatched = match_error(cents, ref.centroids)
        assert unmatched == 0 and err < 1e-3 * spec["bandwidth"], (err, unmatched)
    finally:
        c.stop()
    log = open(os.path.join(str(tmp_path), "alpha.log")).read()
    assert "local summary (numpy): 80 rows read" in log
    assert pg.password not in log
