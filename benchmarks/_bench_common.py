"""Shared helpers for the benchmark programs (imported by path: the crypten wheel
installs a top-level package called `benchmarks`, so this folder is not a package)."""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from secure_meanshift.data import separated_blobs, split_even, synthetic_blobs  # noqa: E402
from secure_meanshift.params import MeanShiftParams  # noqa: E402
from secure_meanshift.plaintext import reference_meanshift  # noqa: E402
from secure_meanshift.simulate import run_simulation  # noqa: E402

# The report's figures (seconds per iteration), ../shared/docs/anchors.md
REPORT = {
    "dusts": {4: 2.6, 6: 3.3, 8: 3.5, 10: 4.2, 12: 4.7},
    "parties": {2: 3.2, 3: 15.5, 4: 22.5},
    "points": {100: 3.5, 200: 6.5, 500: 19, 1000: 39},
    "centers": {4: 2.9, 12: 4.3},
    "base": 3.5,
    "their_code_here": 6.9,
}


class PeakRSS:
    """Samples the resident memory of every child process while running."""

    def __init__(self, period: float = 0.2):
        self.period, self.peaks, self._stop = period, {}, threading.Event()

    def __enter__(self):
        import psutil

        me = psutil.Process()

        def loop():
            while not self._stop.is_set():
                try:
                    for ch in me.children(recursive=True):
                        try:
                            rss = ch.memory_info().rss
                        except psutil.Error:
                            continue
                        self.peaks[ch.pid] = max(self.peaks.get(ch.pid, 0), rss)
                except psutil.Error:
                    pass
                self._stop.wait(self.period)

        self._t = threading.Thread(target=loop, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    @property
    def max_gib(self) -> float:
        return max(self.peaks.values(), default=0) / 2**30


def secure_run(parts, params: MeanShiftParams, timeout_s: float = 300.0) -> dict:
    """One simulated job; the metrics every benchmark reports."""
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        run = run_simulation(parts, params, timeout_s=timeout_s)
    wall = time.perf_counter() - t0
    recv = run.receiver
    iters = recv.per_iteration
    loop = [it["total_s"] - it["merge_s"] for it in iters]
    split = {k: float(np.mean([it[k] for it in iters])) for k in
             ("distance_s", "kernel_s", "update_s")} if iters else {}
    return {
        "wall_s": wall,
        "secure_s": max(o.wall_s for o in run.outcomes),
        "share_s": recv.share_s,
        "iterations": recv.iterations,
        "s_per_iteration": float(np.mean(loop)) if loop else 0.0,
        "merge_s": iters[-1]["merge_s"] if iters else 0.0,
        "module_split": split,
        "bytes_per_party": float(np.mean([o.communication.get("bytes", 0) for o in run.outcomes])),
        "rounds": int(max(o.communication.get("rounds", 0) for o in run.outcomes)),
        "rows_shared": recv.rows,
        "peak_rss_gib_per_party": mem.max_gib,
        "centroids": recv.centroids.tolist(),
    }


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2)


def report_data(n_points: int, n_centers: int, parties: int, seed: int = 0, spread=0.03):
    pts, _ = synthetic_blobs(n_points, n_centers, 2, spread, seed)
    return split_even(pts, parties, seed)


def separated_data(n_points: int, n_centers: int, parties: int, seed: int = 0,
                   spread: float = 0.02):
    pts, centres = separated_blobs(n_points, n_centers, 2, spread, min_gap=0.25, seed=seed)
    return split_even(pts, parties, seed), pts, centres


__all__ = ["MeanShiftParams", "REPORT", "PeakRSS", "secure_run", "machine", "write_json",
           "report_data", "separated_data", "reference_meanshift"]
