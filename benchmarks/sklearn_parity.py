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
    a = ap.parse_args(argv)
    if a.table:
        print(table(a.table))
        return 0
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


if __name__ == "__main__":
    sys.exit(main())
