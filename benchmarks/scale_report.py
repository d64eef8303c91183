"""Scale report (issue 5): one command, fresh runs, Markdown with PNG plots.

    .venv/bin/python benchmarks/scale_report.py            # 1M points headline, sweeps
    .venv/bin/python benchmarks/scale_report.py --full     # adds the 10,000,000-point run
    .venv/bin/python benchmarks/scale_report.py --quick    # small smoke run (about a minute)

Writes into --out (default benchmarks/report): REPORT.md, scale.json,
scaling.png, accuracy.png, headline.png, and (unless --no-sweeps) the report's
sweeps: sweeps.json, fig4_params.png, fig6_data.png, modules.png.

Data: 2-D, 8 well-separated Gaussian clusters (std 0.02, centres >= 0.25
apart) in the unit box, bandwidth 0.1, split evenly over 3 parties.
Quality is measured against scikit-learn's MeanShift (same bandwidth,
bin_seeding=True): ARI of nearest-centroid labels, and the largest distance
from a secure centroid to the nearest scikit-learn centre, in bandwidths.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _bench_common import (MeanShiftParams, log, machine, max_offset,  # noqa: E402
                           nearest_labels, report_data, secure_run, separated_data,
                           split_even, synthetic_blobs, write_json)

H = 0.1
PARTIES = 3
CLUSTERS = 8
DUSTS = 64           # P(some cluster gets no dust) <= 8 * (7/8)^64 ~ 0.2 %
DUSTS_TIMING = 16    # exact-mode scaling runs: cost is linear in the dust count
SUMMARY = 0.25       # default summary cell, in bandwidths

# issue 5, "Done when"
TARGETS = {"1M_end_to_end_s": 60.0, "1M_ari": 0.95, "1M_offset_h": 0.1,
           "10M_end_to_end_s": 300.0, "10M_peak_rss_gib": 4.0,
           "exact_gaussian_100k_32dusts_s_per_iteration": 10.0, "secure_over_sklearn": 20.0}


def params(kernel="flat", summary=None, iters=None, dusts=DUSTS, chunk=1 << 20):
    return MeanShiftParams(bandwidth=H, bounds=([0, 0], [1, 1]), n_dust=dusts, kernel=kernel,
                           max_iter=iters or 30, oblivious=iters is not None, summary=summary,
                           chunk_elements=chunk, seeding="dust")


def sklearn_fit(points):
    from sklearn.cluster import MeanShift

    t0 = time.perf_counter()
    ms = MeanShift(bandwidth=H, bin_seeding=True).fit(points)
    return ms, time.perf_counter() - t0


def quality(centroids, points, ms=None, truth=None) -> dict:
    """ARI / offsets of the secure centroids against scikit-learn and the true centres."""
    from sklearn.metrics import adjusted_rand_score

    c = np.asarray(centroids, dtype=np.float64).reshape(-1, 2)
    q: dict = {"n_centroids": int(len(c))}
    if not len(c):
        return q
    labels = nearest_labels(points, c)
    if ms is not None:
        sk = ms.cluster_centers_
        q.update({
            "ari": float(adjusted_rand_score(ms.labels_, labels)),
            "max_offset_bandwidths": max_offset(c, sk) / H,           # secure -> nearest sklearn
            "max_missed_bandwidths": max_offset(sk, c) / H,           # sklearn -> nearest secure
            "n_sklearn": int(len(sk))})
    if truth is not None:
        q["ari_vs_truth"] = float(adjusted_rand_score(nearest_labels(points, truth), labels))
        q["max_offset_vs_truth_bandwidths"] = max_offset(c, truth) / H
    return q


def _slim(r: dict) -> dict:
    keep = ("secure_s", "wall_s", "share_s", "iterations", "s_per_iteration",
            "s_per_iteration_incl_merge", "merge_s", "module_split", "bytes_per_party",
            "bytes_each_party", "rounds", "points", "rows_shared", "peak_rss_gib_per_party",
            "peak_rss_gib_each_party", "centroids")
    return {k: r[k] for k in keep}


def _progress_printer(label: str):
    last = [0.0]

    def cb(ev: dict) -> None:
        now = time.monotonic()
        if ev.get("stage") == "chunk" and now - last[0] < 5:
            return
        last[0] = now
        detail = ", ".join(f"{k}={v}" for k, v in ev.items() if k != "stage"
                           and not isinstance(v, float))
        log(f"    {label}: {ev.get('stage')} {detail}")
    return cb


def _load_sweeps():
    spec = importlib.util.spec_from_file_location("sms_bench_sweeps",
                                                  os.path.join(HERE, "sweeps.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small N everywhere (smoke run)")
    ap.add_argument("--full", action="store_true", help="include 10,000,000 points")
    ap.add_argument("--no-sweeps", action="store_true",
                    help="skip the report's sweeps (run benchmarks/sweeps.py separately)")
    ap.add_argument("--out", default=os.path.join(HERE, "report"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()
    q = args.quick
    res: dict = {"machine": machine(), "quick": q, "full": args.full, "bandwidth": H,
                 "parties": PARTIES, "clusters": CLUSTERS, "dusts": DUSTS,
                 "dusts_timing": DUSTS_TIMING, "summary_default": SUMMARY,
                 "targets_issue5": TARGETS,
                 "scaling": [], "accuracy": [], "kernels": [], "headline": {},
                 "exact_gaussian_target": None, "sweeps": None}

    # 1. time and bytes per party versus N: exact modes (fixed 3 iterations) ...
    exact_ns = [500, 2_000] if q else [1_000, 10_000, 100_000]
    for n in exact_ns:
        parts, pts, _ = separated_data(n, CLUSTERS, PARTIES, seed=2)
        for kernel in ("flat", "gaussian"):
            r = secure_run(parts, params(kernel, None, iters=3, dusts=DUSTS_TIMING),
                           timeout_s=900)
            res["scaling"].append({"mode": f"exact/{kernel}", "dusts": DUSTS_TIMING, "n": n,
                                   **_slim(r)})
            log(f"exact/{kernel} N={n:,}: {r['s_per_iteration']:.3f} s/iteration, "
                f"{r['bytes_per_party'] / 1e6:.1f} MB/party")

    # ... and summarised (normal stopping); the largest N is the headline run
    summ_ns = [10_000, 50_000] if q else [10_000, 100_000, 1_000_000]
    if args.full and not q:
        summ_ns.append(10_000_000)
    sk_max = 100_000 if q else 1_000_000
    for n in summ_ns:
        t0 = time.perf_counter()
        parts, pts, truth = separated_data(n, CLUSTERS, PARTIES, seed=2)
        gen_s = time.perf_counter() - t0
        big = n >= 1_000_000
        r = secure_run(parts, params("flat", SUMMARY), timeout_s=900,
                       progress=_progress_printer(f"N={n:,}") if big else None)
        entry = {"mode": f"summary {SUMMARY}h/flat", "dusts": DUSTS, "n": n,
                 "data_generation_s": gen_s, **_slim(r)}
        del parts
        ms = None
        if n <= sk_max:
            ms, sk_s = sklearn_fit(pts)
            entry["sklearn_bin_seeding_s"] = sk_s
            entry["secure_over_sklearn"] = r["wall_s"] / sk_s
            entry["secure_worker_over_sklearn"] = r["secure_s"] / sk_s
        entry.update(quality(r["centroids"], pts, ms, truth))
        entry["sklearn_centres"] = ms.cluster_centers_.tolist() if ms is not None else None
        res["scaling"].append(entry)
        log(f"summary N={n:,}: {r['wall_s']:.1f} s end to end ({r['secure_s']:.1f} s in the "
            f"workers), {r['iterations']} iterations, {r['rows_shared']} rows, ARI "
            f"{entry.get('ari', float('nan')):.4f}, sklearn "
            f"{entry.get('sklearn_bin_seeding_s', float('nan')):.1f} s, peak RSS/party "
            f"{r['peak_rss_gib_per_party'] or 0:.2f} GiB")
        if n >= 1_000_000 or (q and n == summ_ns[-1]):      # headline runs
            res["headline"][str(n)] = entry
            if n <= 1_000_000:
                _headline_plot(pts, entry, truth, args.out)
        del pts

    # 2. the exact gaussian target (issue 5): 100,000 points, 32 dusts, 2 parties
    n_g = 5_000 if q else 100_000
    parts = report_data(n_g, 8, 2)
    r = secure_run(parts, params("gaussian", None, iters=2 if q else 3, dusts=32),
                   timeout_s=900)
    res["exact_gaussian_target"] = {"n": n_g, "parties": 2, "dusts": 32, **_slim(r)}
    res["exact_gaussian_target"].pop("centroids")
    log(f"exact/gaussian N={n_g:,}, 32 dusts, 2 parties: {r['s_per_iteration']:.3f} s/iteration")

    # 3. accuracy versus summary size (and exact), against scikit-learn, on two
    #    data sets: well separated (kernels hold whole clusters) and overlapping
    #    (the report's generator, wider blobs: kernel edges cut through clusters)
    n_acc = 1_000 if q else 10_000
    cells = [None, 0.5] if q else [None, 0.0625, 0.125, 0.25, 0.5, 1.0]
    sep_parts, sep_pts, sep_truth = separated_data(n_acc, CLUSTERS, PARTIES, seed=1)
    ov_pts, ov_truth = synthetic_blobs(n_acc, CLUSTERS, 2, 0.05, seed=1)
    datasets = {"separated": (sep_parts, sep_pts, sep_truth),
                "overlapping": (split_even(ov_pts, PARTIES, 1), ov_pts, ov_truth)}
    res["accuracy_data"] = {}
    sk_models = {}
    for dname, (parts, pts, truth) in datasets.items():
        ms, sk_s = sklearn_fit(pts)
        sk_models[dname] = ms
        res["accuracy_data"][dname] = {"n": n_acc, "sklearn_bin_seeding_s": sk_s,
                                       "sklearn_centres": ms.cluster_centers_.tolist()}
        exact_c = None
        for cell in cells:
            r = secure_run(parts, params("flat", cell), timeout_s=900)
            qa = quality(r["centroids"], pts, ms, truth)
            if cell is None:
                exact_c = np.asarray(r["centroids"])
            qa["max_offset_vs_exact_bandwidths"] = max_offset(r["centroids"], exact_c) / H
            res["accuracy"].append({"data": dname, "n": n_acc,
                                    "summary": cell if cell is not None else "exact",
                                    "cell_bandwidths": cell, **_slim(r), **qa})
            log(f"accuracy {dname} summary={cell or 'exact'}: ARI "
                f"{qa.get('ari', float('nan')):.4f}, offset "
                f"{qa.get('max_offset_bandwidths', float('nan')):.3f} h (vs exact "
                f"{qa['max_offset_vs_exact_bandwidths']:.3f} h), {r['rows_shared']} rows, "
                f"{r['wall_s']:.1f} s")

    # 4. the comparison-free gaussian kernel against the flat one, same data
    parts, pts, truth = datasets["separated"]
    ms = sk_models["separated"]
    flat = {a["summary"]: a for a in res["accuracy"] if a["data"] == "separated"}
    for summary in (None, SUMMARY):
        fkey = summary if summary is not None else "exact"
        fl = flat.get(fkey)
        r = secure_run(parts, params("gaussian", summary), timeout_s=900)
        qg = quality(r["centroids"], pts, ms, truth)
        if fl is not None:
            from sklearn.metrics import adjusted_rand_score

            qg["ari_vs_flat"] = float(adjusted_rand_score(
                nearest_labels(pts, np.asarray(fl["centroids"])),
                nearest_labels(pts, np.asarray(r["centroids"]))))
            qg["max_offset_vs_flat_bandwidths"] = max_offset(r["centroids"], fl["centroids"]) / H
            res["kernels"].append({"kernel": "flat", "summary": fkey, **fl})
        res["kernels"].append({"kernel": "gaussian", "summary": fkey, "n": n_acc,
                               "data": "separated",
                               **_slim(r), **qg})
        log(f"gaussian summary={fkey}: ARI {qg.get('ari', float('nan')):.4f}, offset "
            f"{qg.get('max_offset_bandwidths', float('nan')):.3f} h, "
            f"{r['s_per_iteration']:.3f} s/iteration")

    # 5. the report's own sweeps
    if not args.no_sweeps:
        sw = _load_sweeps()
        res["sweeps"] = sw.run_sweeps(quick=q, max_iter=3 if q else 20)
        write_json(os.path.join(args.out, "sweeps.json"), res["sweeps"])
        sw.plot(res["sweeps"], args.out)

    res["targets"] = evaluate(res)
    res["total_benchmark_s"] = time.perf_counter() - t_start
    write_json(os.path.join(args.out, "scale.json"), res)
    plots(res, args.out)
    write_markdown(res, args.out)
    for k, t in res["targets"].items():
        log(f"{k:32s} {_f(t['value'], '.4g'):>10s}  limit {t['target']:<6}  met={t['met']}")
    log(f"wrote {args.out}/REPORT.md ({res['total_benchmark_s']:.0f} s)")
    return 0


def evaluate(res: dict) -> dict:
    """Issue 5's 'Done when' items, for whatever N this run measured."""
    T = TARGETS
    out: dict = {}

    def add(key, what, value, target, le=True):
        met = None if value is None or (isinstance(value, float) and math.isnan(value)) else (
            value <= target if le else value >= target)
        out[key] = {"what": what, "value": value, "target": target, "met": met}

    heads = res["headline"]
    h1 = heads.get("1000000") or (heads[max(heads, key=int)] if heads else None)
    if h1:
        n = h1["n"]
        add("end_to_end_s", f"{n:,} points, 3 parties, end to end incl. process start (s)",
            h1["wall_s"], T["1M_end_to_end_s"])
        add("end_to_end_workers_s", f"{n:,} points, the same, excluding process start (s)",
            h1["secure_s"], T["1M_end_to_end_s"])
        add("ari", f"{n:,} points, ARI against scikit-learn", h1.get("ari"), T["1M_ari"],
            le=False)
        add("max_offset_h", f"{n:,} points, largest centroid offset from a scikit-learn "
            "centre (bandwidths)", h1.get("max_offset_bandwidths"), T["1M_offset_h"])
        add("secure_over_sklearn", f"{n:,} points, secure end to end / scikit-learn "
            "MeanShift (bin seeding)", h1.get("secure_over_sklearn"), T["secure_over_sklearn"])
    h10 = heads.get("10000000")
    if h10:
        add("10M_end_to_end_s", "10,000,000 points, 3 parties, end to end (s)", h10["wall_s"],
            T["10M_end_to_end_s"])
        add("10M_peak_rss_gib", "10,000,000 points, peak RSS of a party process (GiB)",
            h10["peak_rss_gib_per_party"], T["10M_peak_rss_gib"])
    g = res.get("exact_gaussian_target")
    if g:
        add("exact_gaussian_s_per_iteration", f"exact, gaussian, {g['n']:,} points, 32 dusts, "
            "2 parties (s/iteration)", g["s_per_iteration"],
            T["exact_gaussian_100k_32dusts_s_per_iteration"])
    return out


def _headline_plot(pts, entry, truth, out) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    sub = pts[rng.choice(len(pts), size=min(len(pts), 20_000), replace=False)]
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(sub[:, 0], sub[:, 1], s=1, c="0.7", label=f"points (sample of {len(sub):,})")
    if entry.get("sklearn_centres"):
        sk = np.asarray(entry["sklearn_centres"])
        ax.scatter(sk[:, 0], sk[:, 1], s=160, facecolors="none", edgecolors="C1", lw=2,
                   label="scikit-learn MeanShift")
    c = np.asarray(entry["centroids"]).reshape(-1, 2)
    ax.scatter(c[:, 0], c[:, 1], marker="x", s=70, c="C0", lw=2, label="secure centroids")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(f"{entry['n']:,} points, {PARTIES} parties, bandwidth {H}: "
                 f"ARI {entry.get('ari', float('nan')):.4f}", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "headline.png"), dpi=100)
    plt.close(fig)


def plots(res: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    modes = list(dict.fromkeys(s["mode"] for s in res["scaling"]))
    for i, mode in enumerate(modes):
        rows = [s for s in res["scaling"] if s["mode"] == mode]
        ns = [s["n"] for s in rows]
        lab = f"{mode}, {rows[0]['dusts']} dusts"
        axes[0].loglog(ns, [s["s_per_iteration"] for s in rows], "o-", c=f"C{i}", label=lab)
        axes[1].loglog(ns, [s["wall_s"] for s in rows], "o-", c=f"C{i}",
                       label=lab + (" (3 iterations)" if mode.startswith("exact") else ""))
        axes[2].loglog(ns, [s["bytes_per_party"] for s in rows], "o-", c=f"C{i}", label=lab)
    sk = [s for s in res["scaling"] if s.get("sklearn_bin_seeding_s")]
    if sk:
        axes[1].loglog([s["n"] for s in sk], [s["sklearn_bin_seeding_s"] for s in sk], "k^--",
                       label="scikit-learn MeanShift, bin seeding (plaintext)")
    titles = ["seconds per iteration", "whole job, end to end (s)",
              "bytes sent + received per party, whole job"]
    for ax, t in zip(axes, titles):
        ax.set_xlabel("points N (all parties)")
        ax.set_title(t, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(f"{res['parties']} parties, bandwidth {res['bandwidth']}, 2-D, "
                 f"{res['clusters']} clusters; {res['machine']['cpus']} cores", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "scaling.png"), dpi=100)
    plt.close(fig)

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    lowest = 0.9
    for i, dname in enumerate(dict.fromkeys(a["data"] for a in res["accuracy"])):
        rows = [a for a in res["accuracy"] if a["data"] == dname and a["summary"] != "exact"]
        ex = next((a for a in res["accuracy"] if a["data"] == dname
                   and a["summary"] == "exact"), None)
        xs = [a["cell_bandwidths"] for a in rows]
        ari = [a.get("ari", np.nan) for a in rows]
        lowest = min([lowest] + [v for v in ari if v == v])
        ax.semilogx(xs, ari, "o-", c=f"C{i}", label=f"{dname}: summary")
        if ex:
            ax.axhline(ex.get("ari", np.nan), ls="--", c=f"C{i}", alpha=0.6,
                       label=f"{dname}: exact mode")
        ax2.semilogx(xs, [a.get("max_offset_bandwidths", np.nan) for a in rows], "s-",
                     c=f"C{i}", label=f"{dname}: vs scikit-learn")
        ax2.semilogx(xs, [a.get("max_offset_vs_exact_bandwidths", np.nan) for a in rows], "d:",
                     c=f"C{i}", label=f"{dname}: vs exact secure run")
        if ex:
            ax2.axhline(ex.get("max_offset_bandwidths", np.nan), ls="--", c=f"C{i}", alpha=0.6,
                        label=f"{dname}: exact mode vs scikit-learn")
    ax.set_ylim(lowest - 0.02, 1.005)
    ax.set_xlabel("summary cell size (bandwidths)")
    ax.set_ylabel("adjusted Rand index vs scikit-learn")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3, which="both")
    ax.set_title("ARI versus summary size", fontsize=10)
    ax2.axhline(0.1, ls=":", c="k", alpha=0.6, label="0.1 bandwidth (target)")
    ax2.set_xlabel("summary cell size (bandwidths)")
    ax2.set_ylabel("largest centroid offset (bandwidths)")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3, which="both")
    ax2.set_title("centroid offset versus summary size", fontsize=10)
    n = res["accuracy"][0]["n"] if res["accuracy"] else 0
    fig.suptitle(f"Accuracy of local summaries, N={n:,}, {res['parties']} parties, flat kernel, "
                 f"{res['dusts']} dusts", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "accuracy.png"), dpi=100)
    plt.close(fig)


def _f(v, fmt=".3f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return format(v, fmt)


def write_markdown(res: dict, out: str) -> None:
    m = res["machine"]
    L = ["# Scale report", "",
         f"Fresh runs on this machine ({m['cpus']} cores, {m.get('memory_gib', '?')} GiB, "
         f"load average at start {', '.join(f'{x:.1f}' for x in m.get('load_average_at_start', []))}"
         f"), {m['when']}; {res['total_benchmark_s'] / 60:.1f} minutes in all."
         + (" **Quick smoke run: small N, not the real figures.**" if res["quick"] else ""), "",
         "Regenerate: `.venv/bin/python benchmarks/scale_report.py` "
         "(add `--full` for the 10,000,000-point run).", "",
         f"Data: 2-D, {res['clusters']} well-separated Gaussian clusters (std 0.02, centres at "
         f"least 0.25 apart) in the unit box, bandwidth h = {res['bandwidth']}, points split "
         f"evenly over {res['parties']} parties (every party a separate OS process, gloo on "
         "loopback). Quality: scikit-learn `MeanShift(bandwidth=h, bin_seeding=True)` on the "
         "same points; ARI of nearest-centroid labels; offset = largest distance from a secure "
         "centroid to the nearest scikit-learn centre, in bandwidths.", "",
         "## Targets (issue 5)", "",
         "| target | measured | limit | met |", "| --- | --- | --- | --- |"]
    for t in res["targets"].values():
        sign = ">=" if "ARI" in t["what"] else "<="
        L.append(f"| {t['what']} | {_f(t['value'])} | {sign} {t['target']} | "
                 f"{'yes' if t['met'] else ('n/a' if t['met'] is None else '**no**')} |")
    L += ["", "End to end = from starting the party processes to every party holding its "
          "result: process start-up, imports, input checks, local summary, sharing, all "
          "iterations, merging and reveal. 'Excluding process start' is the slowest party "
          "worker's own clock.", "",
          "## Headline runs", "", "![headline](headline.png)", "",
          "| N | end to end (s) | in workers (s) | iterations | rows shared | peak RSS / party "
          "(GiB) | ARI vs sklearn | max offset (h) | ARI vs truth | sklearn bin seeding (s) | "
          "secure / sklearn |", "| " + " | ".join(["---"] * 11) + " |"]
    for n, h in res["headline"].items():
        L.append(f"| {int(n):,} | {h['wall_s']:.1f} | {h['secure_s']:.1f} | {h['iterations']} | "
                 f"{h['rows_shared']:,} | {_f(h['peak_rss_gib_per_party'], '.2f')} | "
                 f"{_f(h.get('ari'), '.4f')} | {_f(h.get('max_offset_bandwidths'))} | "
                 f"{_f(h.get('ari_vs_truth'), '.4f')} | "
                 f"{_f(h.get('sklearn_bin_seeding_s'), '.1f')} | "
                 f"{_f(h.get('secure_over_sklearn'), '.2f')} |")
    L += ["", "scikit-learn runs single-process; the secure run's parties share the same "
          f"{m['cpus']} cores.", "",
          "## Time and bytes per party versus N", "", "![scaling](scaling.png)", "",
          "| mode | dusts | N | s / iteration | iterations | end to end (s) | MB / party | "
          "rows shared | peak RSS / party (GiB) |", "| " + " | ".join(["---"] * 9) + " |"]
    for s in res["scaling"]:
        L.append(f"| {s['mode']} | {s['dusts']} | {s['n']:,} | {s['s_per_iteration']:.3f} | "
                 f"{s['iterations']} | {s['wall_s']:.1f} | {s['bytes_per_party'] / 1e6:.1f} | "
                 f"{s['rows_shared']:,} | {_f(s['peak_rss_gib_per_party'], '.2f')} |")
    g = res.get("exact_gaussian_target")
    L += ["", "Exact runs do exactly 3 iterations (oblivious mode) so that every N does the "
          "same work; summarised runs stop normally (one revealed bit per iteration). "
          "s / iteration excludes the one-off merge and reveal.", ""]
    if g:
        L += [f"Exact mode, gaussian kernel, {g['n']:,} points, 32 dusts, 2 parties: "
              f"**{g['s_per_iteration']:.2f} s per iteration** "
              f"({g['bytes_per_party'] / 1e6:.0f} MB per party for "
              f"{g['iterations']} iterations).", ""]
    L += ["## Accuracy versus summary size", "",
          "Each party replaces its own points, in the clear, by one weighted representative "
          "per occupied grid cell (the cell's mean, weighted by its count). A point moves by "
          "at most one cell diagonal (cell x sqrt(d)) and every cell's sum is kept exactly, so "
          "only cells cut by a kernel's edge shift a centroid; the table measures the effect "
          "against scikit-learn and against the exact secure run on the same points, on two "
          "data sets: 'separated' (the headline data: every kernel holds whole clusters) and "
          "'overlapping' (the report's generator with std 0.05: kernel edges cut through "
          "clusters, and dust seeding versus scikit-learn's bin seeding may find different "
          "modes even in exact mode).", "",
          "![accuracy](accuracy.png)", "",
          "| data | summary cell (h) | rows shared | ARI vs sklearn | max offset vs sklearn (h) | "
          "max offset vs exact (h) | centroids | sklearn centres | end to end (s) |",
          "| " + " | ".join(["---"] * 9) + " |"]
    for a in res["accuracy"]:
        L.append(f"| {a['data']} | {a['summary']} | {a['rows_shared']:,} | "
                 f"{_f(a.get('ari'), '.4f')} | "
                 f"{_f(a.get('max_offset_bandwidths'), '.4f')} | "
                 f"{_f(a.get('max_offset_vs_exact_bandwidths'), '.4f')} | "
                 f"{a['n_centroids']} | {a.get('n_sklearn', 'n/a')} | {a['wall_s']:.1f} |")
    L += ["", "## Comparison-free gaussian kernel versus flat", "",
          "| kernel | summary | ARI vs sklearn | max offset vs sklearn (h) | ARI vs flat | "
          "max offset vs flat (h) | s / iteration | iterations | MB / party |",
          "| " + " | ".join(["---"] * 9) + " |"]
    for k in res["kernels"]:
        L.append(f"| {k['kernel']} | {k['summary']} | {_f(k.get('ari'), '.4f')} | "
                 f"{_f(k.get('max_offset_bandwidths'), '.4f')} | "
                 f"{_f(k.get('ari_vs_flat'), '.4f')} | "
                 f"{_f(k.get('max_offset_vs_flat_bandwidths'), '.4f')} | "
                 f"{k['s_per_iteration']:.3f} | {k['iterations']} | "
                 f"{k['bytes_per_party'] / 1e6:.1f} |")
    L += ["", "scikit-learn's MeanShift uses the flat kernel; the gaussian kernel's modes "
          "differ slightly by construction, which the offset columns show.", ""]
    sw = res.get("sweeps")
    if sw:
        L += ["## The report's sweeps", "",
              f"Flat kernel, base setting 100 points, 8 centres, R = 0.1, 2 parties, 8 dusts "
              f"(the report's data generator), at most {sw['max_iter']} iterations. Base: "
              f"**{sw['base_s_per_iteration']:.3f} s per iteration** against the report's 3.5 s "
              f"(their code on this kind of machine: 6.9 s).", "",
              "![fig4](fig4_params.png)", "", "![fig6](fig6_data.png)", "",
              "![modules](modules.png)", "",
              "| sweep | value | s / iteration | incl. merge | distances | kernel | update | "
              "merge (once) | iterations |", "| " + " | ".join(["---"] * 9) + " |"]
        for name, rows in sw["sweeps"].items():
            for r in rows:
                sp = r["module_split"]
                L.append(f"| {name} | {r['value']} | {r['s_per_iteration']:.3f} | "
                         f"{r['s_per_iteration_incl_merge']:.3f} | {sp['distance_s']:.4f} | "
                         f"{sp['kernel_s']:.4f} | {sp['update_s']:.4f} | {r['merge_s']:.3f} | "
                         f"{r['iterations']} |")
        L.append("")
    with open(os.path.join(out, "REPORT.md"), "w") as fh:
        fh.write("\n".join(L))


if __name__ == "__main__":
    sys.exit(main())
