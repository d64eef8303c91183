"""Many analysts, one federation (issue 22): N jobs from several analysts at once
through a real local federation (coordinator, party nodes and dealer as
separate processes, mutual TLS; the service tests' harness), for each
``max_concurrent_jobs`` given.

    .venv/bin/python benchmarks/load.py --jobs 10 --analysts 2          # small (~3 min here)
    .venv/bin/python benchmarks/load.py --jobs 100 --analysts 5         # the issue's run

Jobs alternate between a dust job (``seeding: dust``, 4 dust rows) and an
every-point job (``seeding: points``: every row a seed), on 2 or 3 parties
(every third job on 3), each analyst submitting its share of the jobs from its
own thread, all at once. Reported per setting: throughput (jobs per minute,
first submit to last end), each job's queue wait (submit to offer), its run
time (offer to end), its outcome; and checks that no result is lost or
duplicated (every job ends once, each succeeded job's result opens for its
analyst). Writes --out/load.json and load.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _bench_common import ROOT, log, write_json  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tests", "service"))    # the harness: cluster.py
sys.path.insert(0, os.path.join(ROOT, "tests"))               # and its testkit.py
from cluster import Cluster  # noqa: E402


def job_spec(c: Cluster, i: int, analyst: str) -> dict:
    parties = c.names[:3] if i % 3 == 2 else c.names[:2]
    kind = "points" if i % 2 else "dust"
    spec = c.spec(parties, max_iter=10, dust=4, seeding=kind,
                  reveal_to=[f"analyst:{analyst}", parties[0]], name=f"load-{i}-{kind}")
    return spec


def stage_times(db: str, job_id: str) -> dict:
    """When each stage of a job first happened (coordinator's event history)."""
    with sqlite3.connect(db) as con:
        out = {}
        for (body,) in con.execute("SELECT body FROM events WHERE job_id=? ORDER BY rowid",
                                   (job_id,)):
            ev = json.loads(body)
            out.setdefault(ev.get("stage", ""), []).append(ev["time"])
    return out


def run_setting(n_jobs: int, analysts: list, mcj: int, points: int) -> dict:
    tmp = tempfile.mkdtemp(prefix=f"sms-load-{mcj}-")
    # --mpc-timeout 60: a worker started cold on a loaded 2-core host can take longer
    # than the tests' 20 s to listen (one job of the first run failed so)
    c = Cluster(tmp, parties=3, points=points, max_concurrent_jobs=mcj, mpc_timeout=60.0,
                analysts=tuple(analysts),
                coordinator_args=["--max-queued-per-submitter", str(n_jobs)]).start()
    jobs, lock = [], threading.Lock()

    def submit_all(a: str, idx: list) -> None:
        cl = c.client(f"analyst:{a}")
        try:
            for i in idx:
                info = cl.submit(job_spec(c, i, a))
                with lock:
                    jobs.append({"i": i, "analyst": a, "job_id": info["job_id"],
                                 "submitted": time.time()})
            for j in [j for j in list(jobs) if j["analyst"] == a]:
                end = cl.wait(j["job_id"], deadline_s=6 * 3600)
                j["state"], j["reason"] = end["state"], end.get("reason", "")
                if end["state"] == "succeeded":
                    j["centroids"] = len(cl.result(j["job_id"]))
        finally:
            cl.close()

    try:
        t0 = time.time()
        threads = [threading.Thread(target=submit_all,
                                    args=(a, list(range(k, n_jobs, len(analysts)))))
                   for k, a in enumerate(analysts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.time() - t0
    finally:
        c.stop()
    for j in jobs:
        st = stage_times(c.db, j["job_id"])
        sub = st["submitted"][0]
        j["offers"] = len(st.get("offered", []))
        j["ends"] = len(st.get("end", []))
        j["queue_wait_s"] = st["offered"][0] - sub if "offered" in st else None
        j["run_s"] = st["end"][0] - st["offered"][0] if "offered" in st and "end" in st else None
    ok = [j for j in jobs if j.get("state") == "succeeded"]
    waits = [j["queue_wait_s"] for j in jobs if j["queue_wait_s"] is not None]
    return {"max_concurrent_jobs": mcj, "jobs": len(jobs), "succeeded": len(ok),
            "lost_or_duplicated": sum(1 for j in jobs if j["ends"] != 1 or j["offers"] != 1),
            "results_opened": sum(1 for j in ok if j.get("centroids")),
            "wall_s": wall, "jobs_per_min": 60.0 * len(ok) / wall if wall else 0.0,
            "queue_wait_s": {"median": statistics.median(waits) if waits else None,
                             "max": max(waits) if waits else None},
            "per_job": sorted(jobs, key=lambda j: j["i"]), "tmp": tmp}


def plot(results: list, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for r in results:
        w = [j["queue_wait_s"] or 0 for j in r["per_job"]]
        a1.plot(range(len(w)), w, marker=".", label=f"max_concurrent_jobs {r['max_concurrent_jobs']}")
    a1.set_xlabel("job index (the analysts submit in parallel)")
    a1.set_ylabel("queue wait (s)")
    a1.legend()
    a2.bar([str(r["max_concurrent_jobs"]) for r in results], [r["jobs_per_min"] for r in results])
    a2.set_xlabel("max_concurrent_jobs")
    a2.set_ylabel("jobs per minute")
    fig.suptitle(f"{results[0]['jobs']} jobs, dust and every-point, 2-3 parties")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--analysts", type=int, default=5)
    ap.add_argument("--points", type=int, default=30, help="points per party")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    if args.jobs < 1 or not 1 <= args.analysts <= 50 or args.points < 10 or \
            any(not 1 <= m <= 8 for m in args.concurrency):
        ap.error("--jobs >= 1, --analysts 1-50, --points >= 10, --concurrency values 1-8")
    analysts = ["ann"] + [f"analyst{k}" for k in range(1, args.analysts)]  # ann: the harness's
    results = []
    for mcj in args.concurrency:
        log(f"max_concurrent_jobs {mcj}: {args.jobs} jobs from {args.analysts} analysts")
        r = run_setting(args.jobs, analysts, mcj, args.points)
        log(f"  {r['succeeded']}/{r['jobs']} succeeded, {r['jobs_per_min']:.1f} jobs/min, "
            f"queue wait median {r['queue_wait_s']['median']:.1f} s, max "
            f"{r['queue_wait_s']['max']:.1f} s, lost or duplicated {r['lost_or_duplicated']}")
        results.append(r)
    data = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]),
            "jobs": args.jobs, "analysts": args.analysts, "points_per_party": args.points,
            "cpus": os.cpu_count(), "settings": results}
    write_json(os.path.join(args.out, "load.json"), data)
    plot(results, os.path.join(args.out, "load.png"))
    log(f"wrote {os.path.join(args.out, 'load.json')} and load.png")
    return 0 if all(r["succeeded"] == r["jobs"] and not r["lost_or_duplicated"]
                    for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
