"""Smoke test of the benchmark programs: each runs with --quick into a temporary
folder (as a subprocess, by path: crypten ships a package called `benchmarks`)
and writes JSON with the expected keys. Timings are not checked.

They test the benchmark programs, not the engine, and take minutes (sweeps.py
and targets.py about 50 s each here, cost_table.py about 25 s, scale_report.py
about two minutes): the whole module is marked slow (run with -m slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
pytestmark = pytest.mark.slow


def _run(script: str, out, *extra: str, timeout: float = 240.0) -> None:
    cmd = [sys.executable, os.path.join(BENCH, script), "--quick", "--out", str(out), *extra]
    proc = subprocess.run(cmd, cwd=str(out), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])


def _run_keys(row: dict) -> None:
    for k in ("s_per_iteration", "s_per_iteration_incl_merge", "module_split", "merge_s",
              "iterations", "wall_s", "secure_s", "bytes_per_party", "rounds"):
        assert k in row, k
    assert set(row["module_split"]) >= {"distance_s", "kernel_s", "update_s", "merge_s"}
    assert row["s_per_iteration"] > 0


def test_sweeps_quick(tmp_path):
    _run("sweeps.py", tmp_path)
    data = json.loads((tmp_path / "sweeps.json").read_text())
    assert set(data["sweeps"]) == {"dusts", "parties", "radius", "points", "centers"}
    for rows in data["sweeps"].values():
        assert len(rows) >= 2
        for r in rows:
            _run_keys(r)
    assert data["base_s_per_iteration"] > 0
    for png in ("fig4_params.png", "fig6_data.png", "modules.png"):
        assert (tmp_path / png).stat().st_size > 0


def test_targets_quick(tmp_path):
    _run("targets.py", tmp_path)
    data = json.loads((tmp_path / "targets.json").read_text())
    assert set(data["targets"]) == {"base", "points_1000", "large_flat",
                                    "large_gaussian_exact_32dusts", "parties_4_over_2"}
    for t in data["targets"].values():
        assert {"value", "target", "met"} <= set(t)
        assert isinstance(t["met"], bool)
    for r in data["runs"].values():
        _run_keys(r)


def test_scale_report_quick(tmp_path):
    _run("scale_report.py", tmp_path, "--no-sweeps", timeout=600.0)
    data = json.loads((tmp_path / "scale.json").read_text())
    for k in ("scaling", "accuracy", "kernels", "headline", "targets",
              "exact_gaussian_target"):
        assert data[k], k
    assert {s["mode"] for s in data["scaling"]} >= {"exact/flat", "exact/gaussian"}
    assert any(s["mode"].startswith("summary") for s in data["scaling"])
    for a in data["accuracy"]:
        assert {"ari", "max_offset_bandwidths", "rows_shared"} <= set(a)
    assert {"end_to_end_s", "ari", "max_offset_h", "secure_over_sklearn"} <= set(data["targets"])
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Targets" in report
    for png in ("scaling.png", "accuracy.png", "headline.png"):
        assert (tmp_path / png).stat().st_size > 0


def test_cost_table_quick(tmp_path):
    # two CLI runs (2 parties, 100 points: the dust job, the every-point job), about 20 s
    _run("cost_table.py", tmp_path)
    data = json.loads((tmp_path / "cost_table.json").read_text())
    ep = data["settings"]["ep_p2_n100"]
    assert ep["m"] == 100 and ep["seeding"] == "points" and "kernel" in ep["per_pair"]
    row = data["settings"]["p2_n100"]
    assert {"parties", "points", "m", "d", "J", "iterations", "ours", "spu_model",
            "ratio_bytes", "ratio_rounds"} <= set(row)
    steps = {"distance", "kernel", "update", "division", "stop"}
    assert set(row["ours"]["per_iteration"]) == steps
    assert set(row["spu_model"]["per_iteration"]) == steps
    assert row["spu_model"]["protocol"] == "SEMI2K"
    for s in row["spu_model"]["per_iteration"].values():
        assert s["bytes"] > 0 and s["rounds"] > 0 and s["model"]
    assert row["ours"]["total_per_iteration"]["bytes"] > 0
    assert (tmp_path / "cost_table.png").stat().st_size > 0


@pytest.mark.slow        # five fresh processes (each imports the engine): ~20 s quiet, 80 s loaded
def test_data_sources_quick(tmp_path):
    _run("data_sources.py", tmp_path)
    data = json.loads((tmp_path / "data_sources.json").read_text())
    assert data["identical_across_engines"] == {"100000": True}
    assert {r["engine"] for r in data["results"]} == {"in-memory", "numpy", "duckdb", "dask-1"}
    for r in data["results"]:
        assert r["rows"] == 100_000 and r["seconds"] > 0 and r["peak_rss_mb"] > 0
    assert (tmp_path / "data_sources.png").stat().st_size > 0


def test_round_cost_quick(tmp_path):
    _run("round_cost.py", tmp_path)
    data = json.loads((tmp_path / "round_cost.json").read_text())
    assert [r["parties"] for r in data["rows"]] == [2, 3]
    for r in data["rows"]:
        for op in ("opening", "sign_test"):
            assert r[op]["wall_ms"] > 0 and r[op]["cpu_ms_per_party"] > 0
        assert r["opening"]["rounds"] == 1
        assert r["sign_test"]["rounds"] >= 3
    assert (tmp_path / "round_cost.png").stat().st_size > 0


def test_every_point_small(tmp_path):
    """every_point.py on a small job: the simulator run and the warm estimator
    fits (a second fit in one process) both reported, against scikit-learn."""
    cmd = [sys.executable, os.path.join(BENCH, "every_point.py"), "--parties", "2",
           "--points", "200", "--repeats", "1", "--sk-repeats", "1", "--warm", "1",
           "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    data = json.loads((tmp_path / "every_point.json").read_text())
    run = data["runs"]["this"]["2"]["local"]
    assert run["wall_s"] > 0 and run["iterations"] >= 1 and run["max_abs_error"] < 1e-3
    warm = data["warm_estimator"]["this"]["2"]
    assert len(warm["fits_s"]) == 2 and warm["warm_fit_s"] > 0
    assert warm["centres"][0] == warm["centres"][1] == run["centroids"]
    assert "estimator: first fit" in proc.stdout
    assert (tmp_path / "every_point.png").stat().st_size > 0
