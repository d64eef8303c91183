"""Issue 10: how close the secure engine comes to scikit-learn, on generated
data of several shapes. For each shape: scikit-learn's MeanShift(bandwidth=h),
the plaintext twin and the secure engine (3 spawned party processes), with
SecureMeanShift's intensity merge, cluster_all labels and local-mode seeds
(``seeding="both"``: dusts + every party's local modes; the estimator's default
above 1,000 points when this was written; now "auto" picks "sklearn-bins" there
when the bins fit: benchmarks/bin_seeds.py). ``public_datasets.py`` covers the default below that
(``seeding="points"``, scikit-learn's own seeds) on public data sets.

Figures per engine: ARI of its labels against scikit-learn's, centroid offset
(largest distance from one of its centroids to the nearest scikit-learn centre,
in bandwidths), number of clusters, wall time.

    .venv/bin/python benchmarks/sklearn_parity.py [--quick] [--out benchmarks/results/sklearn_parity.json]

--quick: small sizes (the 200,000-point shape becomes 20,000).

    .venv/bin/python benchmarks/sklearn_parity.py --generators [--points 300,1000] \
        [--states 170,0] [--secure-up-to 300] [--secure-where-former-differs-up-to 1000]

--generators (issue 18): scikit-learn's generators (estimator_generators.py's
moons, circles, anisotropic and varied-density blobs, 6-D and 10-D blobs),
standardised by SecureStandardScaler, h = estimate_bandwidth(quantile 0.25), 3
parties, SecureMeanShift(h)'s defaults (every point a seed up to 1,000 points)
against MeanShift(bandwidth=h): clusters, ARI, worst centre offset (in h) of the
twin and the secure engine (up to --secure-up-to points, and up to
--secure-where-former-differs-up-to where the former tie rule's answer differs),
and what the former tie rule (lower seed index) would keep. Writes
benchmarks/results/sklearn_parity_generators.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from secure_meanshift import shapes  # noqa: E402
from secure_meanshift.estimator import SecureMeanShift  # noqa: E402

H = shapes.H


def datasets(quick: bool):
    big = 20_000 if quick else 200_000
    return [
        ("separated (2-D)", *shapes.separated(seed=1, n=600), 2, {}),
        ("touching (2-D)", *shapes.touching(seed=1, n=600), 2, {}),
        ("overlapping (3-D)", *shapes.overlapping(seed=1, n=600, dim=3), 3, {}),
        ("elongated (2-D)", *shapes.elongated(seed=1, n=600), 2, {}),
        ("elongated (3-D)", *shapes.elongated(seed=1, n=600, dim=3), 3, {}),
        ("unbalanced (2-D)", *shapes.unbalanced(seed=1, n=1000), 2, {}),
        ("separated (5-D)", *shapes.separated(seed=1, n=600, dim=5), 5, {}),
        ("report generator: 1,000 points, 8 centres", *_report_blobs(), 2, {}),
        (f"tiny cluster in {big:,} points (2-D)", *shapes.tiny_in_large(seed=1, n=big), 2,
         {"summary": 0.25, "sk_bin_seeding": True}),
    ]


def _report_blobs():
    """The issue's example: `simulate --parties 3 --points 1000 --centers 8`."""
    from secure_meanshift.data import synthetic_blobs

    x, c = synthetic_blobs(1000, 8, 2, spread=0.03, seed=0)
    return x, np.argmin(((x[:, None] - c[None]) ** 2).sum(-1), axis=1)


def score(centres, labels, sk_centres, sk_labels):
    from sklearn.metrics import adjusted_rand_score

    d = np.sqrt(((centres[:, None] - sk_centres[None]) ** 2).sum(-1))
    return {"ari": float(adjusted_rand_score(sk_labels, labels)),
            "offset_h": float(d.min(axis=1).max() / H) if len(centres) else None,
            "clusters": int(len(centres))}


def table(path: str) -> str:
    """The README's markdown table from a results file."""
    with open(path) as f:
        res = json.load(f)
    out = ["| data (3 parties) | points | scikit-learn clusters | old default (twin) ARI / "
           "clusters | twin ARI / offset | secure ARI / offset | secure clusters | "
           "secure vs twin |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["rows"]:
        tw, se, od = r["plaintext"], r["secure"], r.get("old_default_twin")
        old = f"{od['ari']:.2f} / {od['clusters']}" if od else "-"
        out.append(f"| {r['shape']} | {r['points']:,} | {r['sklearn']['clusters']} | {old} | "
                   f"{tw['ari']:.3f} / {tw['offset_h']:.4f} h | {se['ari']:.3f} / "
                   f"{se['offset_h']:.4f} h | {se['clusters']} | {r['secure_vs_twin_h']:.1e} h |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--parties", type=int, default=3)
    ap.add_argument("--seeds-per-party", type=int, default=16)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "sklearn_parity.json"))
    ap.add_argument("--only", help="run only shapes whose name contains this")
    ap.add_argument("--table", metavar="JSON", help="print the README table of a results file")
    ap.add_argument("--generators", action="store_true", help="scikit-learn's generators (issue 18)")
    ap.add_argument("--points", default="300,1000", help="--generators: sizes, comma-separated")
    ap.add_argument("--gen-out", default=os.path.join(HERE, "results",
                                                      "sklearn_parity_generators.json"),
                    help="--generators: the results file (the PNG beside it)")
    ap.add_argument("--states", default="170", help="--generators: random states, comma-separated")
    ap.add_argument("--secure-up-to", type=int, default=300,
                    help="--generators: run the secure engine up to this many points")
    ap.add_argument("--secure-where-former-differs-up-to", type=int, default=1000,
                    help="--generators: and up to this many where the former tie rule differs")
    a = ap.parse_args(argv)
    if a.table:
        if "generators" in a.table:        # the table, and the plot redrawn beside the file
            with open(a.table) as f:
                _generators_plot(json.load(f)["rows"], a.table[:-5] + ".png")
            print(generators_table(a.table))
        else:
            print(table(a.table))
        return 0
    if a.generators:
        return run_generators([int(v) for v in a.points.split(",")],
                              [int(v) for v in a.states.split(",")], a.secure_up_to,
                              a.secure_where_former_differs_up_to, a.parties, a.only,
                              a.gen_out)
    from sklearn.cluster import MeanShift

    rows = []
    for name, x, truth, dim, opt in datasets(a.quick):
        if a.only and a.only not in name:
            continue
        parts = shapes.spread_parties(x, a.parties, 1)
        xs = np.concatenate(parts)
        t = time.perf_counter()
        sk = MeanShift(bandwidth=H, bin_seeding=opt.get("sk_bin_seeding", False)).fit(xs)
        sk_s = time.perf_counter() - t
        row = {"shape": name, "points": int(len(xs)), "dim": dim, "parties": a.parties,
               "truth_clusters": int(len(np.unique(truth))),
               "sklearn": {"clusters": int(len(sk.cluster_centers_)), "wall_s": sk_s,
                           "bin_seeding": bool(opt.get("sk_bin_seeding", False))}}
        kw = dict(bounds=([0.0] * dim, [1.0] * dim), seeding="both",
                  seeds_per_party=a.seeds_per_party, max_iter=50, summary=opt.get("summary"), timeout_s=600)
        for engine in ("plaintext", "secure"):
            t = time.perf_counter()
            est = SecureMeanShift(H, engine=engine, **kw).fit(parts)
            wall = time.perf_counter() - t
            row[engine] = {**score(est.cluster_centers_, np.concatenate(est.labels_),
                                   sk.cluster_centers_, sk.labels_),
                           "iterations": int(est.n_iter_), "wall_s": wall}
        old = SecureMeanShift(H, engine="plaintext", merge="first", seeding="dust", n_dust=8,
                              **{k: v for k, v in kw.items() if k != "seeds_per_party"}).fit(parts)
        row["old_default_twin"] = score(old.cluster_centers_, np.concatenate(old.labels_),
                                        sk.cluster_centers_, sk.labels_)
        from secure_meanshift.centroid_match import match_error

        row["secure_vs_twin_h"] = match_error(est.cluster_centers_,
                                              SecureMeanShift(H, engine="plaintext", **kw)
                                              .fit(parts).cluster_centers_)[0] / H
        rows.append(row)
        print(f"{name:38s} sk={row['sklearn']['clusters']:2d}  "
              f"twin ARI {row['plaintext']['ari']:.3f} off {row['plaintext']['offset_h']:.4f}h  "
              f"secure ARI {row['secure']['ari']:.3f} off {row['secure']['offset_h']:.4f}h "
              f"k={row['secure']['clusters']} vs twin {row['secure_vs_twin_h']:.1e}h "
              f"({row['secure']['wall_s']:.0f} s)", flush=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"bandwidth": H, "quick": a.quick, "rows": rows,
                   "command": "benchmarks/sklearn_parity.py" + (" --quick" if a.quick else "")},
                  f, indent=1)
    print(f"wrote {a.out}")
    return 0


# ---- issue 18: scikit-learn's generators, every point a seed ---------------------
def _generators(n: int, rs: int) -> dict:
    """estimator_generators.py's data sets (one home for their definitions)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "estimator_generators", os.path.join(HERE, "estimator_generators.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.generators(n, rs)


def _former_rule_centres(twin, p) -> np.ndarray:
    """The centres the former tie rule (equal intensity: the lower seed index)
    keeps from the twin's converged centroids and intensities (data units)."""
    from secure_meanshift.merge import greedy_keep, sq_distances

    c, inten = (twin.unmerged - p.lo) / p.scale, twin.intensity
    m = len(c)
    lower = np.tril(np.ones((m, m), bool), -1)
    dom = ((inten[None, :] > inten[:, None]) | ((inten[None, :] == inten[:, None]) & lower))
    a = dom & ~np.eye(m, dtype=bool) & (sq_distances(c, c) <= p.merge_unit**2)
    keep = greedy_keep(a, inten >= p.keep_threshold)
    return twin.unmerged[keep]


def _generator_row(name: str, x: np.ndarray, parties: int, secure) -> dict:
    """One data set: scikit-learn, the twin, the former rule and (if ``secure``
    says so for this row: a bool, or a callable of the row so far) the secure run."""
    import warnings

    from sklearn.cluster import MeanShift, estimate_bandwidth
    from sklearn.metrics import adjusted_rand_score

    from secure_meanshift import SecureStandardScaler
    from secure_meanshift.centroid_match import match_error
    from secure_meanshift.plaintext import reference_meanshift

    parts = np.array_split(x, parties)
    z = SecureStandardScaler(engine="plaintext").fit(parts).transform(parts)
    zall = np.concatenate(z)
    h = float(estimate_bandwidth(zall, quantile=0.25))
    sk = MeanShift(bandwidth=h).fit(zall)
    row = {"data": name, "points": int(len(x)), "dim": int(x.shape[1]), "h": h,
           "parties": parties, "sklearn_clusters": int(len(sk.cluster_centers_))}
    for engine in ("plaintext", "secure"):
        if engine == "secure" and not (secure(row) if callable(secure) else secure):
            break
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = SecureMeanShift(h, engine=engine, verbose=0, timeout_s=600).fit(z)
        err, unmatched = match_error(est.cluster_centers_, sk.cluster_centers_)
        row[engine] = {"clusters": int(len(est.cluster_centers_)), "offset_h": float(err / h),
                       "unmatched": int(unmatched), "seeding": est.params_.seeding,
                       "ari": float(adjusted_rand_score(sk.labels_, np.concatenate(est.labels_))),
                       "wall_s": time.perf_counter() - t}
        if engine == "plaintext":
            p = est.params_
            twin = reference_meanshift(z, p)
            old = _former_rule_centres(twin, p)
            err_old, unmatched_old = match_error(old, sk.cluster_centers_)
            row["former_rule"] = {"clusters": int(len(old)), "offset_h": float(err_old / h),
                                  "unmatched": int(unmatched_old),
                                  "same_as_sklearn": bool(len(old) == len(sk.cluster_centers_)
                                                          and unmatched_old == 0
                                                          and err_old <= 0.05 * h)}
            gi, gc = twin.tie_gaps(apart=1e-3 * h)
            row["tie_gaps"] = {"intensity": gi if np.isfinite(gi) else None,
                               "coordinate_h": gc / h if np.isfinite(gc) else None}
            plain = est.cluster_centers_
        else:
            row["secure_vs_twin_h"] = float(match_error(est.cluster_centers_, plain)[0] / h)
    return row


def run_generators(sizes: list, states: list, secure_up_to: int, differs_up_to: int,
                   parties: int, only, out: str) -> int:
    """Every size x random state x generator; the secure engine up to
    ``secure_up_to`` points, and up to ``differs_up_to`` where the former tie
    rule's answer differs from scikit-learn's."""
    rows = []
    for n in sizes:
        for rs in states:
            for name, x in _generators(n, rs).items():
                if only and only not in name:
                    continue
                rows.append(_generator_row(
                    name, x, parties, lambda r, n=n: n <= secure_up_to or (
                        n <= differs_up_to and not r["former_rule"]["same_as_sklearn"])))
                rows[-1]["random_state"] = rs
            print(json.dumps(rows[-1]), flush=True)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with open(out, "w") as f:      # after every row: a partial run keeps its rows
                json.dump({"rows": rows, "command": "benchmarks/sklearn_parity.py --generators "
                           f"--points {','.join(map(str, sizes))} --states "
                           f"{','.join(map(str, states))} --secure-up-to {secure_up_to} "
                           f"--secure-where-former-differs-up-to {differs_up_to}"}, f, indent=1)
    _generators_plot(rows, out[:-5] + ".png")
    print(generators_table(out))
    return 0


def _generators_plot(rows: list, path: str) -> None:
    """Left: per generator, the share of sets with scikit-learn's clusters
    (former tie rule, twin, secure). Right: each set's worst centre offset,
    former rule against the engines'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["data"] for r in rows))
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    xs = np.arange(len(names))
    for k, (key, colour) in enumerate((("former_rule", "tab:gray"), ("plaintext", "tab:blue"),
                                       ("secure", "tab:orange"))):
        share = []
        for name in names:
            got = [_same(r[key], r["sklearn_clusters"]) for r in rows
                   if r["data"] == name and key in r]
            share.append(np.mean(got) if got else np.nan)
        label = {"former_rule": "former tie rule (twin)", "plaintext": "twin",
                 "secure": "secure (sets it ran on)"}[key]
        ax[0].bar(xs + 0.27 * k, share, 0.27, color=colour, label=label)
    ax[0].set_xticks(xs + 0.27, names, rotation=30, ha="right", fontsize=8)
    ax[0].set_ylabel("share of sets with MeanShift()'s clusters")
    ax[0].set_ylim(0, 1.05)
    ax[0].legend(fontsize=8, loc="lower left")
    floor = 1e-7
    old = np.array([max(r["former_rule"]["offset_h"], floor) for r in rows])
    for key, colour, mark in (("plaintext", "tab:blue", "o"), ("secure", "tab:orange", "x")):
        pick = [i for i, r in enumerate(rows) if key in r]
        ax[1].scatter(old[pick], [max(rows[i][key]["offset_h"], floor) for i in pick], s=14,
                      color=colour, marker=mark, label=key if key == "secure" else "twin")
    ax[1].set_xscale("log")
    ax[1].set_yscale("log")
    ax[1].axvline(0.05, color="k", lw=0.8, ls="--")
    ax[1].axhline(0.05, color="k", lw=0.8, ls="--")
    ax[1].set_xlabel("former tie rule: worst centre offset (h)")
    ax[1].set_ylabel("scikit-learn's tie rule: worst centre offset (h)")
    ax[1].legend(fontsize=8)
    fig.suptitle(f"SecureMeanShift vs MeanShift(): {len(rows)} generated sets, 3 parties, "
                 "standardised, every point a seed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _same(v: dict, sk_clusters: int) -> bool:
    return v["clusters"] == sk_clusters and v["unmatched"] == 0 and v["offset_h"] <= 0.05 and \
        v.get("ari", 1.0) >= 0.99


def generators_table(path: str) -> str:
    """The README's table of a --generators results file: a summary line, then
    every row the secure engine ran on or where the former tie rule or the twin differs."""
    with open(path) as f:
        rows = json.load(f)["rows"]

    def cell(r, e):
        if e not in r:
            return "-"
        v = r[e]
        return f"{v['clusters']} / {v['ari']:.3f} / {v['offset_h']:.4f} h"

    twin_ok = sum(_same(r["plaintext"], r["sklearn_clusters"]) for r in rows)
    sec = [r for r in rows if "secure" in r]
    sec_ok = sum(_same(r["secure"], r["sklearn_clusters"]) for r in sec)
    old_ok = sum(_same(r["former_rule"], r["sklearn_clusters"]) for r in rows)
    out = [f"Same clusters as MeanShift() (ARI >= 0.99, offsets <= 0.05 h): twin {twin_ok} of "
           f"{len(rows)} sets, secure {sec_ok} of {len(sec)}, former tie rule {old_ok} of "
           f"{len(rows)}.", "",
           "| data (3 parties, standardised) | random state | points | d | scikit-learn clusters | "
           "former tie rule: clusters / offset | twin: clusters / ARI / offset | "
           "secure: clusters / ARI / offset | secure vs twin |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if ("secure" not in r and r["former_rule"]["same_as_sklearn"]
                and _same(r["plaintext"], r["sklearn_clusters"])):
            continue
        vs = f"{r['secure_vs_twin_h']:.1e} h" if "secure_vs_twin_h" in r else "-"
        old = r["former_rule"]
        out.append(f"| {r['data']} | {r.get('random_state', 170)} | {r['points']:,} | {r['dim']} | "
                   f"{r['sklearn_clusters']} | {old['clusters']} / {old['offset_h']:.3f} h | "
                   f"{cell(r, 'plaintext')} | {cell(r, 'secure')} | {vs} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
