"""Shared helpers for the benchmark programs.

Imported by path (``sys.path.insert(0, <this folder>)``), never as a package:
the crypten wheel installs a top-level package called ``benchmarks`` into
site-packages, so this folder must not be imported as ``benchmarks``. The
leading underscore keeps the module name clear of anything crypten ships.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import threading
import time
from typing import Callable, Optional, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from secure_meanshift.data import separated_blobs, split_even, synthetic_blobs  # noqa: E402
from secure_meanshift.params import MeanShiftParams  # noqa: E402
from secure_meanshift.plaintext import reference_meanshift  # noqa: E402
from secure_meanshift.simulate import run_simulation  # noqa: E402

# The report's own figures (seconds per iteration on a 2-core 2021 laptop),
# from ../shared/docs/anchors.md. "centers" is given there only as "2.9 to 4.3, flat".
REPORT = {
    "dusts": {4: 2.6, 6: 3.3, 8: 3.5, 10: 4.2, 12: 4.7},
    "parties": {2: 3.2, 3: 15.5, 4: 22.5},
    "points": {100: 3.5, 200: 6.5, 500: 19, 1000: 39},
    "centers": {4: 2.9, 12: 4.3},
    "radius": {},
    "base": 3.5,
    "module2_to_module3": [7, 4],
    "their_code_here": 6.9,          # their code, run on a machine of this project's kind
}

# The report's base setting.
BASE = dict(points=100, centers=8, radius=0.1, parties=2, dusts=8)


def log(msg: str) -> None:
    print(msg, flush=True)


class PeakRSS:
    """Samples the resident memory of the party processes (spawned children of
    this process, not multiprocessing's resource tracker) while a job runs."""

    def __init__(self, period: float = 0.1):
        self.period, self.peaks, self._stop = period, {}, threading.Event()
        self.together = 0              # the largest sum of the processes' RSS at one instant
        self.ok = True

    def __enter__(self):
        try:
            import psutil
        except ImportError:          # still benchmark, without memory figures
            self.ok = False
            return self
        me = psutil.Process()

        def is_party(proc) -> bool:
            try:
                cmd = " ".join(proc.cmdline())
            except psutil.Error:
                return False
            return "resource_tracker" not in cmd

        def loop():
            seen: dict = {}
            while not self._stop.is_set():
                now = 0                       # every sampled process at this instant
                try:
                    for ch in me.children(recursive=True):
                        if ch.pid not in seen:
                            seen[ch.pid] = is_party(ch)
                        if not seen[ch.pid]:
                            continue
                        try:
                            rss = ch.memory_info().rss
                        except psutil.Error:
                            continue
                        self.peaks[ch.pid] = max(self.peaks.get(ch.pid, 0), rss)
                        now += rss
                except psutil.Error:
                    pass
                self.together = max(self.together, now)
                self._stop.wait(self.period)

        self._t = threading.Thread(target=loop, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.ok:
            self._t.join()

    def per_process_gib(self) -> list:
        """Peak RSS of every party process (GiB), largest first."""
        return sorted((v / 2**30 for v in self.peaks.values()), reverse=True)


def _one_run(parts, params: MeanShiftParams, timeout_s: float,
             progress: Optional[Callable[[dict], None]]) -> dict:
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        run = run_simulation(parts, params, timeout_s=timeout_s, progress=progress)
    wall = time.perf_counter() - t0
    recv = run.receiver
    iters = recv.per_iteration
    n_it = len(iters)
    loop = [it["total_s"] - it["merge_s"] for it in iters]
    split = {k: (float(np.mean([it[k] for it in iters])) if iters else 0.0)
             for k in ("distance_s", "kernel_s", "update_s")}
    merge = float(iters[-1]["merge_s"]) if iters else 0.0
    split["merge_s"] = merge          # once per job, on the last iteration
    rss = mem.per_process_gib()[:len(parts)]
    bytes_each = [int(o.communication.get("bytes", 0)) for o in run.outcomes]
    return {
        # whole simulation: spawning the party processes, imports, data pickling, job
        "wall_s": wall,
        # the slowest party's worker: checks, crypten.init, local summary, sharing,
        # all iterations, merging and reveal (process start-up excluded)
        "secure_s": max(o.wall_s for o in run.outcomes),
        "share_s": max(o.share_s for o in run.outcomes),
        "iterations": recv.iterations,
        "iterations_timed": n_it,
        # mean over iterations of total_s - merge_s (merging runs once, at the end)
        "s_per_iteration": float(np.mean(loop)) if loop else 0.0,
        # the same with the merge time spread over the iterations
        "s_per_iteration_incl_merge": (float(np.sum([it["total_s"] for it in iters]) / n_it)
                                       if n_it else 0.0),
        "merge_s": merge,
        "module_split": split,
        "bytes_per_party": float(np.mean(bytes_each)),
        "bytes_each_party": bytes_each,
        "rounds": int(max(o.communication.get("rounds", 0) for o in run.outcomes)),
        "points": int(recv.points),
        "rows_shared": int(recv.rows),
        "peak_rss_gib_each_party": rss,
        "peak_rss_gib_per_party": max(rss) if rss else None,
        "centroids": np.asarray(recv.centroids).tolist(),
    }


def secure_run(parts, params: MeanShiftParams, timeout_s: float = 300.0,
               progress: Optional[Callable[[dict], None]] = None) -> dict:
    """One simulated job (every party a separate OS process); the metrics every
    benchmark reports. Raises whatever run_simulation raises."""
    return _one_run(parts, params, timeout_s, progress)


def summarise_repeats(runs: Sequence[dict]) -> dict:
    """Several runs of one setting -> the run with the median s/iteration, plus
    the spread of all repeats (noise indicator on a shared machine)."""
    order = sorted(runs, key=lambda r: r["s_per_iteration"])
    med = dict(order[(len(order) - 1) // 2])
    vals = [r["s_per_iteration"] for r in runs]
    med["repeats"] = len(runs)
    med["s_per_iteration_all"] = vals
    med["s_per_iteration_median"] = statistics.median(vals)
    med["s_per_iteration_min"] = min(vals)
    med["s_per_iteration_max"] = max(vals)
    return med


def run_settings(settings: dict, make: Callable[[dict], tuple], repeats: int = 1,
                 label: Callable[[str, dict], str] = lambda k, r: k) -> dict:
    """Run every setting `repeats` times round-robin (so slow drifts in the
    machine's load hit all settings alike) and return {key: median run}.

    make(setting) -> (parts, params, timeout_s)."""
    got: dict = {k: [] for k in settings}
    for rep in range(repeats):
        for key, setting in settings.items():
            parts, params, timeout_s = make(setting)
            r = secure_run(parts, params, timeout_s=timeout_s)
            got[key].append(r)
            log(f"[{rep + 1}/{repeats}] {label(key, r)}")
    return {k: summarise_repeats(v) for k, v in got.items()}


def machine() -> dict:
    info = {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        info["load_average_at_start"] = list(os.getloadavg())
    except OSError:
        pass
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def _default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, default=_default)
    os.replace(tmp, path)


def report_data(n_points: int, n_centers: int, parties: int, seed: int = 0,
                spread: float = 0.03) -> list:
    """The report's data: uniform centres, Gaussian blobs, 2-D, split evenly."""
    pts, _ = synthetic_blobs(n_points, n_centers, 2, spread, seed)
    return split_even(pts, parties, seed)


def separated_data(n_points: int, n_centers: int, parties: int, seed: int = 0,
                   spread: float = 0.02, min_gap: float = 0.25):
    """Well-separated 2-D clusters: (parts, all points, true centres)."""
    pts, centres = separated_blobs(n_points, n_centers, 2, spread, min_gap=min_gap, seed=seed)
    return split_even(pts, parties, seed), pts, centres


def nearest_labels(points: np.ndarray, centres: np.ndarray, chunk: int = 500_000) -> np.ndarray:
    """Index of the nearest centre for every point (chunked: bounded memory)."""
    c = np.asarray(centres, dtype=np.float64)
    labels = np.empty(len(points), dtype=np.int64)
    for a in range(0, len(points), chunk):
        x = points[a:a + chunk]
        labels[a:a + chunk] = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
    return labels


def max_offset(a: np.ndarray, b: np.ndarray) -> float:
    """Largest distance from a row of `a` to its nearest row of `b` (inf if either is empty)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not len(a) or not len(b):
        return float("inf")
    return float(np.sqrt(((a[:, None, :] - b[None]) ** 2).sum(-1)).min(axis=1).max())


__all__ = ["MeanShiftParams", "REPORT", "BASE", "PeakRSS", "secure_run", "summarise_repeats",
           "run_settings", "machine", "write_json", "report_data", "separated_data",
           "reference_meanshift", "nearest_labels", "max_offset", "log"]
