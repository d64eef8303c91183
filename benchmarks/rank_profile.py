"""CPU profile of every rank of issue 19's every-point job (1,000 points, 8
blobs, h = 0.1, 3 parties): the simulator CLI run once with
SECURE_MEANSHIFT_PROFILE set (secure_meanshift.simulate: each party and the
dealer write cProfile statistics of their CPU time), then per rank the top
functions by own and by cumulative time, and the CPU of the whole job (every
process, the caller's included, measured as a child subreaper on Linux).

    .venv/bin/python benchmarks/rank_profile.py --label after
    .venv/bin/python benchmarks/rank_profile.py --root /tmp/base --label before

``--root``: another checkout (run with this Python, PYTHONPATH=root); it needs
the profile hook. Writes --out/rank_profile_<label>.json and .md.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
JOB = ["--points", "1000", "--parties", "3", "--centers", "8", "--bandwidth", "0.1",
       "--seeding", "points", "--summary", "exact", "--no-sklearn", "--quiet",
       "--timeout", "600"]


def _top(stats: pstats.Stats, key: str, n: int) -> list:
    """[(function, own s, cumulative s, calls)] of the n largest by key."""
    rows = []
    for (path, line, fn), (cc, nc, tt, ct, _) in stats.stats.items():
        where = fn if path == "~" else f"{os.path.basename(path)}:{line}({fn})"
        rows.append((where, round(tt, 3), round(ct, 3), nc))
    rows.sort(key=lambda r: r[1] if key == "own" else r[2], reverse=True)
    return rows[:n]


def run_job(root: str, folder: str) -> dict:
    """The CLI job in ``root`` with the profile hook on; wall and whole-job CPU."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)     # PR_SET_CHILD_SUBREAPER: the ranks too
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = dict(os.environ, PYTHONPATH=root, SECURE_MEANSHIFT_PROFILE=folder)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "meanshift_cli.simulate", *JOB], cwd=root,
                         env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    while True:                                     # the orphaned fork server and ranks
        try:
            os.wait()
        except ChildProcessError:
            break
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-800:])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": round(wall, 2),
            "user_s": round(after.ru_utime - before.ru_utime, 2),
            "sys_s": round(after.ru_stime - before.ru_stime, 2),
            "stdout_tail": res.stdout.strip().splitlines()[:1]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=ROOT, help="checkout to run (default: this one)")
    ap.add_argument("--label", default="this")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sms-prof-") as folder:
        job = run_job(os.path.abspath(args.root), folder)
        ranks = {}
        for name in sorted(os.listdir(folder)):
            st = pstats.Stats(os.path.join(folder, name))
            ranks[name.split(".")[0]] = {"cpu_s": round(st.total_tt, 2),
                                         "own": _top(st, "own", args.top),
                                         "cumulative": _top(st, "cum", args.top)}
    load = os.getloadavg()[0]
    data = {"what": "CPU profile per rank (cProfile, process_time) of the every-point job",
            "job": JOB, "root": os.path.abspath(args.root), "label": args.label,
            "load_1min_after": round(load, 2), "job_cpu": job, "ranks": ranks}
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f"rank_profile_{args.label}")
    with open(base + ".json", "w") as fh:
        json.dump(data, fh, indent=1)
    with open(base + ".md", "w") as fh:
        fh.write(f"# Rank CPU profile: {args.label}\n\nJob: `{' '.join(JOB)}`; root "
                 f"{data['root']}; wall {job['wall_s']} s, CPU of every process "
                 f"{job['user_s']} s user + {job['sys_s']} s system; load {load:.1f}.\n")
        for r, v in ranks.items():
            fh.write(f"\n## {r} ({'dealer' if r == 'rank3' else 'party'}): "
                     f"{v['cpu_s']} s CPU in its main thread\n\n| own s | cum s | calls | "
                     "function (top by own time) |\n| --- | --- | --- | --- |\n")
            for where, tt, ct, nc in v["own"]:
                fh.write(f"| {tt} | {ct} | {nc} | `{where}` |\n")
            fh.write("\n| cum s | function (top by cumulative time) |\n| --- | --- |\n")
            for where, tt, ct, nc in v["cumulative"]:
                fh.write(f"| {ct} | `{where}` |\n")
    print(f"{args.label}: wall {job['wall_s']} s, CPU {job['user_s']} + {job['sys_s']} s; "
          + ", ".join(f"{r} {v['cpu_s']} s" for r, v in ranks.items()))
    print(f"wrote {base}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
