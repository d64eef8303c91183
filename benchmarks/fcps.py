"""SecureMeanShift against scikit-learn's MeanShift on the Fundamental
Clustering Problem Suite (FCPS, Ultsch 2005; issue 18).

The ten sets Atom, Chainlink, EngyTime, GolfBall, Hepta, Lsun, Target, Tetra,
TwoDiamonds and WingNut. They are not in this repository (GPL): get the R
package's ``data/<Name>.rda`` files from the public repository Mthrun/FCPS
(e.g. ``git clone https://github.com/Mthrun/FCPS`` and pass its ``data``
folder) and give their folder as --data-dir. They are read with the ``rdata``
package (``pip install -e ".[bench]"``); the sha256 of each file is recorded in
the results so that a rerun can tell whether it used the same files.

Per set and per quantile (default 0.2 and 0.3): the rows dealt at random to 3
parties (a fixed permutation, as benchmarks/public_datasets.py), standardised
with the pooled mean and variance (SecureStandardScaler, as
estimator_generators.py), h = sklearn.cluster.estimate_bandwidth(quantile) on
the standardised pooled rows; scikit-learn's MeanShift(bandwidth=h) up to the
every-point limit (1,000 points) and MeanShift(bandwidth=h, bin_seeding=True)
above it (what SecureMeanShift's seeding "auto" does: README "Defaults"),
against SecureMeanShift(h) with its defaults, the plaintext twin and (unless
--twin-only) the secure engine. Figures: clusters, ARI of the labels against
scikit-learn's, worst centre offset in h (matched centres, largest coordinate
difference: centroid_match.match_error), secure against twin, wall time.
Target: ARI >= 0.99 and offsets <= 0.05 h. Writes --out (default
benchmarks/results/fcps.json) and a PNG beside it; --table prints the README
table of a results file.

    .venv/bin/python benchmarks/fcps.py --data-dir /tmp/fcps [--only Atom] [--twin-only]
    .venv/bin/python benchmarks/fcps.py --table benchmarks/results/fcps.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from secure_meanshift.centroid_match import match_error  # noqa: E402
from secure_meanshift.params import AUTO_POINT_SEEDS_UP_TO  # noqa: E402

SETS = ("Atom", "Chainlink", "EngyTime", "GolfBall", "Hepta", "Lsun", "Target", "Tetra",
        "TwoDiamonds", "WingNut")
TARGET_ARI, TARGET_OFFSET_H = 0.99, 0.05


def load(data_dir: str, name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(points, classes, sha256 of the file) of one FCPS set from its .rda file."""
    import rdata

    path = os.path.join(data_dir, f"{name}.rda")
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    obj = rdata.read_rda(path)[name]
    return np.asarray(obj["Data"], float), np.asarray(obj["Cls"]).astype(int), digest


def _fit(engine: str, h: float, parts: list):
    from secure_meanshift import SecureMeanShift

    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # the SeedingWarning above 1,000 points is expected
        est = SecureMeanShift(h, engine=engine, verbose=0, timeout_s=600).fit(parts)
    return est, time.perf_counter() - t


def one(name: str, x: np.ndarray, quantile: float, parties: int, secure: bool) -> dict:
    """One set at one quantile: scikit-learn, the twin and (``secure``) the secure engine."""
    from sklearn.cluster import MeanShift, estimate_bandwidth
    from sklearn.metrics import adjusted_rand_score

    from secure_meanshift import SecureStandardScaler

    idx = np.random.default_rng(0).permutation(len(x))
    parts = np.array_split(x[idx], parties)
    z = SecureStandardScaler(engine="plaintext").fit(parts).transform(parts)
    zall = np.concatenate(z)
    h = float(estimate_bandwidth(zall, quantile=quantile))
    bin_seeding = len(x) > AUTO_POINT_SEEDS_UP_TO
    t = time.perf_counter()
    sk = MeanShift(bandwidth=h, bin_seeding=bin_seeding).fit(zall)
    row = {"data": name, "points": int(len(x)), "dim": int(x.shape[1]), "quantile": quantile,
           "h": h, "parties": parties, "sklearn_bin_seeding": bin_seeding,
           "sklearn": {"clusters": int(len(sk.cluster_centers_)), "n_iter": int(sk.n_iter_),
                       "wall_s": time.perf_counter() - t}}
    fits = {}
    for engine in ("plaintext", "secure") if secure else ("plaintext",):
        est, wall = _fit(engine, h, z)
        fits[engine] = est
        err, unmatched = match_error(est.cluster_centers_, sk.cluster_centers_)
        ari = float(adjusted_rand_score(sk.labels_, np.concatenate(est.labels_)))
        row[engine] = {"seeding": est.seeding_, "clusters": int(len(est.cluster_centers_)),
                       "ari": ari, "offset_h": float(err / h), "unmatched": int(unmatched),
                       "n_iter": int(est.n_iter_), "wall_s": wall,
                       "meets_target": bool(unmatched == 0 and ari >= TARGET_ARI
                                            and err / h <= TARGET_OFFSET_H)}
    row["twin_ties"] = _ties(z, fits["plaintext"].params_, h)
    if secure:
        row["secure_vs_twin_h"] = float(match_error(fits["secure"].cluster_centers_,
                                                    fits["plaintext"].cluster_centers_)[0] / h)
    return row


def _ties(z: list, p, h: float) -> dict:
    """What decided the twin's merge (plaintext.PlainResult.tie_gaps): the smallest
    intensity gap between a kept centre and one it suppressed, and the smallest
    coordinate gap (in h) where intensities were equal; the closest a point came
    to a kernel's edge (edge_gap, in h). Where these are within the secure
    engine's fixed-point error it may keep the other centre of such a pair."""
    from secure_meanshift.plaintext import reference_meanshift

    ref = reference_meanshift(z, p)
    gi, gc = ref.tie_gaps(apart=1e-3 * h)
    return {"intensity_gap": gi if np.isfinite(gi) else None,
            "equal_intensity_coordinate_gap_h": gc / h if np.isfinite(gc) else None,
            "edge_gap_h": None if ref.edge_gap is None else ref.edge_gap / h}


def plot(rows: list, path: str) -> None:
    """ARI and worst offset per set and quantile (twin and secure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['data']} q{r['quantile']:g}" for r in rows]
    xs = np.arange(len(rows))
    fig, ax = plt.subplots(2, 1, figsize=(max(8, 0.5 * len(rows)), 6), sharex=True)
    for k, (engine, colour) in enumerate((("plaintext", "tab:blue"), ("secure", "tab:orange"))):
        pick = [i for i, r in enumerate(rows) if engine in r]
        ax[0].bar(xs[pick] + 0.4 * k, [rows[i][engine]["ari"] for i in pick], 0.4,
                  color=colour, label="twin" if engine == "plaintext" else engine)
        ax[1].bar(xs[pick] + 0.4 * k, [max(rows[i][engine]["offset_h"], 1e-7) for i in pick],
                  0.4, color=colour)
    ax[0].axhline(TARGET_ARI, color="k", lw=0.8, ls="--")
    ax[0].set_ylabel("ARI vs scikit-learn")
    ax[0].set_ylim(0, 1.05)
    ax[0].legend(fontsize=8, loc="lower left")
    ax[1].axhline(TARGET_OFFSET_H, color="k", lw=0.8, ls="--")
    ax[1].set_yscale("log")
    ax[1].set_ylabel("worst centre offset (h)")
    ax[1].set_xticks(xs + 0.2, labels, rotation=45, ha="right", fontsize=8)
    fig.suptitle("FCPS, 3 parties, standardised: SecureMeanShift vs MeanShift() "
                 f"(bin_seeding above {AUTO_POINT_SEEDS_UP_TO:,} points)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(path: str) -> str:
    """The README's markdown table of a results file."""
    with open(path) as f:
        rows = json.load(f)["rows"]

    def cell(r, e):
        if e not in r:
            return "-"
        v = r[e]
        return f"{v['clusters']} / {v['ari']:.3f} / {v['offset_h']:.1e} h"

    out = ["| FCPS set (3 parties, standardised) | points | d | quantile | scikit-learn "
           "(seeds): clusters | twin: clusters / ARI / offset | secure: clusters / ARI / "
           "offset | secure vs twin | secure s |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        seeds = "bins" if r["sklearn_bin_seeding"] else "points"
        vs = f"{r['secure_vs_twin_h']:.1e} h" if "secure_vs_twin_h" in r else "-"
        secs = f"{r['secure']['wall_s']:.0f}" if "secure" in r else "-"
        out.append(f"| {r['data']} | {r['points']:,} | {r['dim']} | {r['quantile']:g} | "
                   f"{r['sklearn']['clusters']} ({seeds}) | {cell(r, 'plaintext')} | "
                   f"{cell(r, 'secure')} | {vs} | {secs} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", help="folder with the FCPS .rda files (see the docstring)")
    ap.add_argument("--quantiles", default="0.2,0.3")
    ap.add_argument("--parties", type=int, default=3)
    ap.add_argument("--only", help="comma-separated set names")
    ap.add_argument("--twin-only", action="store_true", help="skip the secure engine")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "fcps.json"))
    ap.add_argument("--table", metavar="JSON", help="print the README table of a results file")
    a = ap.parse_args(argv)
    if a.table:
        print(table(a.table))
        return 0
    names = a.only.split(",") if a.only else list(SETS)
    bad = [n for n in names if n not in SETS]
    if bad:
        ap.error(f"--only: unknown set {bad[0]!r} (one of {', '.join(SETS)})")
    if not a.data_dir:
        ap.error("--data-dir: the folder with the FCPS .rda files (see --help's source docstring)")
    missing = [n for n in names if not os.path.isfile(os.path.join(a.data_dir, f"{n}.rda"))]
    if missing:
        ap.error(f"--data-dir: {missing[0]}.rda not found in {a.data_dir}")
    try:
        quantiles = [float(q) for q in a.quantiles.split(",")]
    except ValueError:
        ap.error("--quantiles: comma-separated numbers")
    rows, digests = [], {}
    for name in names:
        x, _, digests[name] = load(a.data_dir, name)
        for q in quantiles:
            rows.append(one(name, x, q, a.parties, not a.twin_only))
            print(json.dumps(rows[-1]), flush=True)
            os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
            with open(a.out, "w") as f:        # after every row: a partial run keeps its rows
                json.dump({"command": "benchmarks/fcps.py " + " ".join(
                    argv if argv is not None else sys.argv[1:]), "sha256": digests,
                    "rows": rows}, f, indent=1)
    plot(rows, a.out[:-5] + ".png")
    print(table(a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
