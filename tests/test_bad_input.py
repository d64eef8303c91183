"""Bad input gives a clear message naming the problem, exit code 2, no traceback,
and never a data value."""

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def simulate(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "meanshift_cli.simulate", "--quiet",
                           "--no-sklearn", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def write_csv(path, rows, header="x,y"):
    with open(path, "w") as fh:
        fh.write(header + "\n")
        for r in rows:
            fh.write(",".join(str(v) for v in r) + "\n")
    return str(path)


@pytest.fixture
def good(tmp_path):
    rng = np.random.default_rng(1)
    return [write_csv(tmp_path / f"p{i}.csv", np.round(rng.uniform(0.1, 0.9, (15, 2)), 3))
            for i in range(2)]


def assert_clean_error(res, *needles):
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    for n in needles:
        assert n in res.stderr, res.stderr


def test_nan_row_is_named(tmp_path, good):
    bad = write_csv(tmp_path / "nan.csv", [[0.5, 0.5], [0.4, "nan"], [0.2, 0.3]])
    res = simulate("--party-data", good[0], "--party-data", bad, "--bounds", "0,0:1,1")
    assert_clean_error(res, "party 1", "row 1", "NaN")


def test_infinite_value(tmp_path, good):
    bad = write_csv(tmp_path / "inf.csv", [[0.5, 0.5], [0.4, 0.1], ["inf", 0.3]])
    res = simulate("--party-data", bad, "--party-data", good[1], "--bounds", "0,0:1,1")
    assert_clean_error(res, "party 0", "row 2", "infinity")


def test_wrong_column_count(tmp_path, good):
    three = write_csv(tmp_path / "three.csv", [[0.1, 0.2, 0.3]] * 4, header="x,y,z")
    res = simulate("--party-data", good[0], "--party-data", three)
    assert_clean_error(res, "different column counts")


def test_ragged_csv_line(tmp_path, good):
    path = tmp_path / "ragged.csv"
    path.write_text("x,y\n0.1,0.2\n0.3\n")
    res = simulate("--party-data", good[0], "--party-data", str(path))
    assert_clean_error(res, "line 3", "1 fields")


def test_out_of_bounds_row_named_without_its_value(tmp_path, good):
    bad = write_csv(tmp_path / "oob.csv", [[0.5, 0.5], [0.25, 0.5], [0.123456, 7.654321]])
    res = simulate("--party-data", good[0], "--party-data", bad, "--bounds", "0,0:1,1")
    assert_clean_error(res, "party 1", "row 2", "outside the public bounds", "feature 1")
    assert "7.654321" not in res.stderr and "0.123456" not in res.stderr


def test_empty_party(tmp_path, good):
    empty = write_csv(tmp_path / "empty.csv", [])
    res = simulate("--party-data", good[0], "--party-data", empty)
    assert_clean_error(res, "party 1", "no points")


def test_more_dusts_than_points(good):
    res = simulate("--party-data", good[0], "--party-data", good[1], "--seeding", "dust",
                   "--dust", "40")
    assert_clean_error(res, "n_dust", "40", "30")


def test_missing_file_and_bad_parameter(good):
    res = simulate("--party-data", good[0], "--party-data", "/nonexistent.csv")
    assert_clean_error(res, "does not exist")
    res = simulate("--bandwidth", "-1")
    assert_clean_error(res, "bandwidth")


def test_engine_rejects_before_any_connection():
    """run_party raises InputError before joining: no peer is needed to fail fast."""
    from secure_meanshift import InputError, MeanShiftParams
    from secure_meanshift.runtime import MPCConfig, run_party

    p = MeanShiftParams(bandwidth=0.1, bounds=([0, 0], [1, 1]))
    pts = np.array([[0.2, 0.2], [0.5, 1.5]])
    with pytest.raises(InputError, match="row 1 is outside"):
        peers = [("party:a", "127.0.0.1", 1), ("party:b", "127.0.0.1", 2),
                 ("dealer:d", "127.0.0.1", 3)]
        run_party(pts, p, MPCConfig(rank=0, world_size=2, peers=peers,
                                    transport="trusted-network", timeout_s=1))


def test_simulate_json_report(tmp_path):
    out = tmp_path / "r.json"
    res = simulate("--points", "60", "--centers", "3", "--dust", "4", "--bandwidth", "0.1",
                   "--json", str(out),
                   "--plot", str(tmp_path / "p.png"))
    assert res.returncode == 0, res.stderr
    import json

    r = json.loads(out.read_text())
    for key in ["centroids", "reference_centroids", "max_abs_error", "iterations", "parties",
                "points", "dust", "bandwidth", "kernel", "timings", "communication"]:
        assert key in r
    assert set(r["timings"]) >= {"wall_s", "per_iteration"}
    assert set(r["timings"]["per_iteration"][0]) == {"distance_s", "kernel_s", "update_s",
                                                     "merge_s", "total_s"}
    assert set(r["communication"]) >= {"bytes", "rounds"}
    assert r["max_abs_error"] < 1e-3 * r["bandwidth"]
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_a_dp_run_with_no_cluster_left_says_why_not_a_traceback():
    """200 points in 4 clusters at epsilon 1: the noise hides every cluster."""
    res = simulate("--points", "200", "--parties", "2", "--centers", "4",
                   "--bandwidth", "0.1", "--epsilon", "1")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "secure centroids (0)" in res.stdout and "DP threshold" in res.stdout, res.stdout
