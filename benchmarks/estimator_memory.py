"""SecureMeanShift with its defaults on 1,000,000 points (issue 18): bounded
memory over every process, progress on the way, the defaults it picked.

    .venv/bin/python benchmarks/estimator_memory.py                    # 1,000,000 points
    .venv/bin/python benchmarks/estimator_memory.py --points 100000    # smaller

Data: 4 features, 8 Gaussian blobs, split evenly over 3 parties, fitted with
``SecureMeanShift(n_parties=3)`` and nothing else set (the estimator's defaults:
bandwidth estimated under MPC, seeding and summary chosen for the size). While
it runs, the resident memory of every process of the fit (the caller and each
party process it starts) is sampled every 0.1 s; the report gives each peak,
their sum (the issue's bound: 4 GB over all processes) and the largest total at
one instant (the processes of the bandwidth estimate and of the clustering do
not all live at once). Writes
--out/estimator_memory.json and estimator_memory.png.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _bench_common import ROOT, PeakRSS, log, write_json  # noqa: E402

sys.path.insert(0, ROOT)
from secure_meanshift import SecureMeanShift  # noqa: E402

GIB = 2.0**30


def blobs(n: int, d: int = 4, k: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-6, 6, size=(k, d))
    return centres[rng.integers(0, k, n)] + rng.standard_normal((n, d))


def plot(peaks: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar([f"p{i}" for i in range(len(peaks))], peaks)
    ax.axhline(4.0 / max(1, len(peaks)), ls="--", c="grey", lw=1)
    ax.set_ylabel("peak RSS (GiB)")
    ax.set_title(f"peak memory per process, sum {sum(peaks):.2f} GiB")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    if args.points < 1000:
        ap.error("--points >= 1000")
    x = blobs(args.points)
    parts = np.array_split(x, 3)
    log(f"{args.points} points, 4 features, 3 parties: SecureMeanShift(n_parties=3).fit")
    est = SecureMeanShift(n_parties=3)
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        est.fit(parts)
    wall = time.perf_counter() - t0
    children = mem.per_process_gib()
    caller = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB   # KiB on Linux
    peaks = [caller] + children
    data = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]),
            "points": args.points, "features": 4, "parties": 3, "wall_s": wall,
            "peak_rss_gib_caller": caller, "peak_rss_gib_children": children,
            "peak_rss_gib_sum": sum(peaks),
            # the processes do not all live at once (the bandwidth estimate's and the
            # clustering's sessions): the largest total at one instant, caller included
            "peak_rss_gib_at_once": caller + mem.together / GIB, "cpus": os.cpu_count(),
            "picked": {"bandwidth_": float(est.bandwidth_), "seeding_": est.seeding_,
                       "summary_": est.summary_, "n_iter_": int(est.n_iter_)},
            "clusters": int(len(est.cluster_centers_))}
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "estimator_memory.json"), data)
    plot(peaks, os.path.join(args.out, "estimator_memory.png"))
    log(f"wall {wall:.0f} s, {data['clusters']} clusters, peak RSS sum {sum(peaks):.2f} GiB, "
        f"at one instant {data['peak_rss_gib_at_once']:.2f} GiB "
        f"(caller {caller:.2f}, parties {', '.join(f'{p:.2f}' for p in children)}); "
        f"picked {data['picked']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
