"""Local summary of one party's 2-D Parquet data per engine (issue 21): time,
rows/s and peak memory, for generated data of 10^6, 10^7 and 10^8 rows.

Engines: ``in-memory`` (every row read into one numpy array, then
summary.summarize: today's path; skipped above --max-in-memory rows),
``numpy`` (row groups in chunks), ``duckdb`` (embedded, 1 GB memory limit),
``dask-1`` / ``dask-2`` (a dask.distributed LocalCluster of 1 or 2 worker
processes, one thread each). Each measurement runs in a fresh process; its
peak RSS (and the Dask workers' peak RSS) is recorded. Every engine must give
the same representatives (checked: a digest of them).

    .venv/bin/python benchmarks/data_sources.py --sizes 1e6,1e7,1e8
    .venv/bin/python benchmarks/data_sources.py --end-to-end 1e8   # 3 parties, a secure job

Generated data go to a temp folder (--dir) and are deleted at the end. 10^9
rows are about 16 GB of Parquet (give --dir on a disk with room):

    .venv/bin/python benchmarks/data_sources.py --sizes 1e9 --engines duckdb,dask-2,dask-1,numpy \
        --dir /big/disk --timeout 3600 --out benchmarks/results/data_sources_1e9.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

ENGINES = ("in-memory", "numpy", "duckdb", "dask-1", "dask-2")
FILE_ROWS = 1_000_000           # rows per generated file (one row group each)
BOUNDS = ([-1.0, -1.0], [2.0, 2.0])
CELL = 0.1 / 3 * 0.25           # h = 0.1 data units, summary 0.25, unit scale 3


def generate(folder: str, rows: int, seed: int = 0) -> float:  # noqa: D401
    """Blobs in [0, 1]^2 plus 1 % uniform background in the bounds, FILE_ROWS a file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.1, 0.9, size=(6, 2))
    for i, off in enumerate(range(0, rows, FILE_ROWS)):
        m = min(FILE_ROWS, rows - off)
        x = centres[rng.integers(0, 6, m)] + rng.normal(0, 0.03, (m, 2))
        bg = rng.random(m) < 0.01
        x[bg] = rng.uniform(-1, 2, (int(bg.sum()), 2))
        x = np.clip(x, -1, 2)
        pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1]}),
                       os.path.join(folder, f"part-{i:05d}.parquet"), row_group_size=FILE_ROWS)
    return time.perf_counter() - t0


def measure(engine: str, folder: str) -> dict:
    """One engine on one folder, in this process: check + summary."""
    from secure_meanshift.local_data import LocalData
    from secure_meanshift.sources import parse_source
    from secure_meanshift.summary import summarize_info

    lo, hi = np.asarray(BOUNDS[0]), np.asarray(BOUNDS[1])
    scale = float(np.max(hi - lo))
    cluster, workers_rss = None, None
    t0 = time.perf_counter()
    if engine == "in-memory":
        from secure_meanshift.data import check_points, to_unit
        from secure_meanshift.sources import read_all

        x = read_all(parse_source("bench", {"path": folder}))
        check_points(x, BOUNDS)
        t_check = time.perf_counter() - t0
        reps, w, info = summarize_info(to_unit(x, lo, scale), CELL)
    else:
        entry = {"path": folder, "summary_engine": engine.split("-")[0]}
        if engine.startswith("dask"):
            from distributed import LocalCluster

            cluster = LocalCluster(n_workers=int(engine.split("-")[1]), threads_per_worker=1,
                                   processes=True, host="127.0.0.1", scheduler_port=0,
                                   dashboard_address=":0", silence_logs=40)
            entry["dask_scheduler"] = cluster.scheduler_address
            t0 = time.perf_counter()           # the cluster's start-up is not the summary's
        data = LocalData(parse_source("bench", entry))
        data.check(BOUNDS)
        t_check = time.perf_counter() - t0
        reps, w, info = data.summarize(lo, scale, CELL)
    took = time.perf_counter() - t0
    if cluster is not None:
        from distributed import Client

        with Client(cluster.scheduler_address) as c:
            workers_rss = max(c.run(lambda: resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss).values()) / 1024
        cluster.close()
    digest = hashlib.sha256(reps.tobytes() + w.tobytes()).hexdigest()[:16]
    return {"engine": engine, "rows": info.points, "seconds": took, "check_s": t_check,
            "summary_s": took - t_check, "rows_per_s": info.points / took,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "workers_peak_rss_mb": workers_rss, "cells": info.cells,
            "representatives": info.representatives, "method": info.method,
            "digest": digest, "load_average": os.getloadavg()[0]}


def run_one(engine: str, folder: str, timeout: float) -> dict:
    """measure() in a fresh process (its own peak RSS)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--one", engine, "--dir", folder]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"engine": engine, "error": f"timeout after {timeout:.0f} s"}
    if out.returncode != 0:
        return {"engine": engine, "error": (out.stderr or "").strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot(path: str, results: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for eng in ENGINES:
        pts = [r for r in results if r.get("engine") == eng and "seconds" in r]
        if not pts:
            continue
        n = [r["rows"] for r in pts]
        a.plot(n, [r["seconds"] for r in pts], "o-", label=eng)
        b.plot(n, [max(r["peak_rss_mb"], r.get("workers_peak_rss_mb") or 0) for r in pts],
               "o-", label=eng)
    for ax, yl in ((a, "local check + summary (s)"), (b, "peak RSS, node or worker (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows (2-D Parquet, one party)")
        ax.set_ylabel(yl)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("Local summary per engine (same representatives from every engine)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


SUBSET_ROWS = 10_000_000      # the in-memory path's subset per party (issue 21)
SUBSET_BOUND_H = 1e-3         # secure vs secure on the same rows: the twin bound


def _in_memory_subset(folders, rows: int, params) -> dict:
    """Today's in-memory path (every row in one numpy array, summarised in the
    party's process) against the out-of-core path (DuckDB over the same files)
    on the first ``rows`` rows of each party: one secure job each. (A subset of
    other size has other dust seeds, hence other spurious modes: not comparable.)"""
    import pyarrow.parquet as pq
    from _bench_common import secure_run

    from secure_meanshift.centroid_match import match_error
    from secure_meanshift.local_data import LocalData
    from secure_meanshift.sources import parse_source

    arrays, sources = [], []
    for i, f in enumerate(folders):
        files = sorted(os.listdir(f))[:max(1, rows // FILE_ROWS)]
        sub = f + "-subset"                       # the same files, linked
        os.makedirs(sub, exist_ok=True)
        for n in files:
            os.symlink(os.path.join(f, n), os.path.join(sub, n))
        arrays.append(np.concatenate([pq.read_table(os.path.join(f, n)).to_pandas().to_numpy()
                                      for n in files]))
        sources.append(LocalData(parse_source(f"p{i}", {"path": sub})))
    mem = secure_run(arrays, params, timeout_s=1800)
    ooc = secure_run(sources, params, timeout_s=1800)
    err, unmatched = match_error(np.asarray(ooc["centroids"]), np.asarray(mem["centroids"]))
    return {"rows_per_party": len(arrays[0]), "in_memory_wall_s": mem["wall_s"],
            "out_of_core_wall_s": ooc["wall_s"], "max_offset": err, "unmatched": unmatched,
            "bound": SUBSET_BOUND_H * params.bandwidth}


def end_to_end(rows: int, base: str, parties: int = 3, max_iter: int = 10) -> dict:
    """A 3-party secure job whose parties each read ``rows`` rows of their own
    Parquet out of core (DuckDB): wall time, every party's peak RSS, and the
    secure centroids against the plaintext twin on the same summaries."""
    from _bench_common import secure_run

    from secure_meanshift.centroid_match import match_error
    from secure_meanshift.data import from_unit
    from secure_meanshift.local_data import LocalData
    from secure_meanshift.params import MeanShiftParams
    from secure_meanshift.plaintext import reference_meanshift
    from secure_meanshift.sources import parse_source

    folders = [os.path.join(base, f"party-{i}") for i in range(parties)]
    gen = [generate(f, rows, seed=i) for i, f in enumerate(folders)]
    params = MeanShiftParams(bandwidth=0.1, bounds=BOUNDS, n_dust=8, max_iter=max_iter,
                             summary=0.25, seeding="dust", seed=3)
    srcs = [parse_source(f"p{i}", {"path": f}) for i, f in enumerate(folders)]
    res = secure_run([LocalData(s) for s in srcs], params, timeout_s=1800)
    reps, weights = [], []
    for s in srcs:                       # the twin on the same summaries
        data = LocalData(s)
        data.check(BOUNDS)
        r, w, _ = data.summarize(params.lo, params.scale, params.h_unit * params.summary)
        reps.append(from_unit(r, params.lo, params.scale))
        weights.append(w)
    ref = reference_meanshift(reps, params, weights=weights)
    err, unmatched = match_error(np.asarray(res["centroids"]), ref.centroids)
    subset = _in_memory_subset(folders, min(rows, SUBSET_ROWS), params)
    for f in folders:
        shutil.rmtree(f, ignore_errors=True)
        shutil.rmtree(f + "-subset", ignore_errors=True)
    return {"rows_per_party": rows, "parties": parties, "generate_s": gen,
            "max_abs_error_vs_twin": err, "unmatched": unmatched,
            "bound": 1e-3 * params.bandwidth,
            "in_memory_vs_out_of_core_on_a_subset": subset,
            **{k: res[k] for k in (
                "wall_s", "secure_s", "share_s", "iterations", "s_per_iteration",
                "rows_shared", "peak_rss_gib_each_party", "peak_rss_gib_per_party",
                "centroids")},
            "load_average": os.getloadavg()[0]}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e6,1e7,1e8", help="row counts, comma-separated")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--max-in-memory", type=float, default=1e7,
                    help="skip the in-memory engine above this many rows")
    ap.add_argument("--dir", help="folder for the generated data (default: a temp folder)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "data_sources.json"),
                    help="JSON file (or a folder for data_sources.json); the PNG beside it")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--end-to-end", type=float, metavar="ROWS",
                    help="instead: a 3-party secure job, ROWS rows of Parquet per party "
                         "(DuckDB), against the twin; writes results/data_sources_e2e.json")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 10^5 rows, in-memory, numpy, duckdb and dask-1")
    return ap


def _run_end_to_end(args) -> None:
    from _bench_common import log, machine, write_json

    base = args.dir or tempfile.mkdtemp(prefix="sms-bench-e2e-")
    try:
        out = end_to_end(int(args.end_to_end), base)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    out["machine"] = machine()
    path = os.path.join(os.path.dirname(args.out), "data_sources_e2e.json")
    write_json(path, out)
    log(f"{json.dumps({k: v for k, v in out.items() if k != 'centroids'})}\nwrote {path}")


def _run_engines(args) -> None:
    from _bench_common import log, machine, write_json

    base = args.dir or tempfile.mkdtemp(prefix="sms-bench-data-")
    results, generated = [], {}
    try:
        for size in [int(float(s)) for s in args.sizes.split(",")]:
            folder = os.path.join(base, f"rows-{size}")
            log(f"generating {size:,} rows")
            generated[size] = generate(folder, size)
            for eng in args.engines.split(","):
                if eng == "in-memory" and size > args.max_in_memory:
                    continue
                r = run_one(eng, folder, args.timeout)
                log(f"  {eng}: {r}")
                results.append(r)
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    digests: dict = {}
    for r in results:
        if "digest" in r:
            digests.setdefault(r["rows"], set()).add(r["digest"])
    write_json(args.out, {
        "machine": machine(), "cell_unit": CELL, "bounds": BOUNDS,
        "generate_s": generated, "results": results,
        "identical_across_engines": {str(k): len(v) == 1 for k, v in digests.items()}})
    plot(os.path.splitext(args.out)[0] + ".png", results)
    log(f"wrote {args.out}")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if os.path.isdir(args.out):
        args.out = os.path.join(args.out, "data_sources.json")
    if args.quick:
        args.sizes, args.engines = "1e5", "in-memory,numpy,duckdb,dask-1"
    if args.one:          # the measured process: nothing imported beyond what it needs
        print(json.dumps(measure(args.one, args.dir)))
    elif args.end_to_end:
        _run_end_to_end(args)
    else:
        _run_engines(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
