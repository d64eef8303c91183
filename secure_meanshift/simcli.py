"""`secure-meanshift simulate`: all parties as local processes on loopback."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

import numpy as np

from .errors import InputError, MPCError
from .kernels import DEFAULT_KERNEL, KERNEL_NAMES
from .params import MERGE_RULES, SEEDINGS


def add_arguments(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("data (synthetic unless --party-data is given)")
    g.add_argument("--parties", type=int, default=2, help="number of parties K (default 2)")
    g.add_argument("--points", type=int, default=100, help="total synthetic points, split evenly")
    g.add_argument("--centers", type=int, default=8, help="synthetic cluster centres")
    g.add_argument("--dim", type=int, default=2, help="synthetic feature count")
    g.add_argument("--spread", type=float, default=0.03, help="synthetic cluster std-dev")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic generator")
    g.add_argument("--party-data", action="append", metavar="FILE",
                   help="one party's data: a CSV (with header), .npy or Parquet file, a "
                   "Parquet directory or glob, or a YAML data-set description (e.g. an "
                   "SQL query; docs/operating.md 'Data sources'); repeat once per party")
    g.add_argument("--columns", help="comma-separated CSV columns to use (default all)")
    g.add_argument("--bounds", help="public feature bounds 'lo1,lo2,..:hi1,hi2,..' "
                   "(default: [0,1] for synthetic data, the files' min/max otherwise)")
    a = ap.add_argument_group("algorithm")
    a.add_argument("--bandwidth", default="0.1",
                   help="kernel radius h, data units, or 'auto' (secure estimate_bandwidth)")
    a.add_argument("--quantile", type=float, default=0.3, help="for --bandwidth auto")
    a.add_argument("--dust", type=int, default=8, help="number of dust points m")
    a.add_argument("--kernel", choices=list(KERNEL_NAMES), default=DEFAULT_KERNEL)
    a.add_argument("--max-iter", type=int, default=30)
    a.add_argument("--tol", type=float, default=None, help="default 1e-3 * bandwidth")
    a.add_argument("--oblivious", action="store_true",
                   help="run exactly --max-iter iterations, reveal nothing before the end")
    a.add_argument("--seed", type=int, default=0, help="shared seed choosing the dusts")
    a.add_argument("--merge", choices=list(MERGE_RULES), default="intensity",
                   help="intensity: scikit-learn's rule (default); first: the old rule")
    a.add_argument("--merge-radius", type=float, default=None,
                   help="default bandwidth (bandwidth / 2 with --merge first)")
    a.add_argument("--seeding", choices=list(SEEDINGS), default="auto",
                   help="auto (default): points up to 1,000 points, else sklearn-bins "
                        "when the bins fit (else both); dust: --dust public random rows; "
                        "bins: every party's local modes; both; points: every row "
                        "(scikit-learn's seeds, N^2 cost); sklearn-bins: scikit-learn's "
                        "bin_seeding=True")
    a.add_argument("--min-bin-freq", type=int, default=1,
                   help="sklearn-bins: a bin seeds only with at least this many points")
    a.add_argument("--min-weight", type=float, default=0.0,
                   help="drop centroids with fewer points within h (0: only empty ones)")
    a.add_argument("--seeds-per-party", type=int, default=32,
                   help="fixed per-party seed budget for --seeding bins/both")
    a.add_argument("--reveal-to", help="comma-separated ranks that receive the result "
                   "(default: all)")
    a.add_argument("--sizes", action="store_true", help="also reveal cluster sizes")
    a.add_argument("--summary", default="auto",
                   help="local weighted summary: a cell size in bandwidths (e.g. 0.25), "
                   "'exact', or 'auto' (default: exact up to 20,000 points, else 0.25); "
                   "in DP mode the public grid's cell (auto: 0.5)")
    d = ap.add_argument_group("differential privacy (docs/privacy.md)")
    d.add_argument("--epsilon", type=float, default=None,
                   help="DP mode: the whole output is (epsilon, delta)-DP per record "
                        "(noisy histogram on a public grid; seeding grid; numeric bandwidth)")
    d.add_argument("--delta", type=float, default=None,
                   help="DP mode's delta (default 1e-6; implies DP mode)")
    m = ap.add_argument_group("MPC")
    m.add_argument("--provider", choices=["dealer", "first-party"], default="dealer",
                   help="who makes the correlated randomness: a dealer process holding no "
                        "data (default) or rank 0 itself (insecure: rank 0 could read "
                        "every share; for experiments only)")
    m.add_argument("--transport", choices=["tls", "trusted-network"], default="tls",
                   help="links between ranks: TLS 1.3 with throw-away certificates "
                        "(default) or plaintext TCP")
    o = ap.add_argument_group("output")
    o.add_argument("--json", metavar="OUT", help="write the full report as JSON")
    o.add_argument("--plot", metavar="OUT.png", help="write a plot (first two features)")
    o.add_argument("--timeout", type=float, default=60.0,
                   help="seconds any rendezvous or collective may take")
    o.add_argument("--quiet", action="store_true", help="no progress lines")
    o.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn's MeanShift")


def _privacy(args):
    """--epsilon / --delta -> PrivacySpec (either one turns DP mode on), or None."""
    from .privacy import DEFAULT_DELTA, DEFAULT_EPSILON, PrivacySpec

    if args.epsilon is None and args.delta is None:
        return None
    return PrivacySpec(DEFAULT_EPSILON if args.epsilon is None else args.epsilon,
                       DEFAULT_DELTA if args.delta is None else args.delta)


def _parse_bounds(text: str) -> tuple:
    try:
        lo, hi = text.split(":")
        return ([float(v) for v in lo.split(",")], [float(v) for v in hi.split(",")])
    except ValueError:
        raise InputError("--bounds: expected 'lo1,lo2,...:hi1,hi2,...'") from None


def _party_points(arg: str, cols) -> np.ndarray:
    """One --party-data argument in memory: CSV/.npy as before (data.load_points),
    Parquet (file, directory, glob) or a YAML data-set description (sources.py)."""
    from .data import load_points
    from .sources import SourceError, read_all, source_from_arg

    src = source_from_arg(arg, cols)
    if src.kind in ("csv", "npy") and not arg.lower().endswith((".yaml", ".yml")):
        return load_points(arg, cols)
    try:
        return read_all(src)
    except SourceError as exc:          # local: the path may be shown
        raise InputError(exc.local) from None


def _load_parts(args) -> tuple[list, tuple]:
    from .data import check_finite, split_even, synthetic_blobs

    if args.party_data:
        cols = args.columns.split(",") if args.columns else None
        if len(args.party_data) < 2:
            raise InputError("--party-data: give one file per party, at least 2")
        parts = [check_finite(_party_points(f, cols), f"party {i} ({f})")
                 for i, f in enumerate(args.party_data)]
        if len({p.shape[1] for p in parts}) > 1:
            raise InputError("--party-data: the files have different column counts "
                             f"({', '.join(str(p.shape[1]) for p in parts)})")
        if args.bounds:
            bounds = _parse_bounds(args.bounds)
        else:
            allp = np.concatenate([p for p in parts if len(p)]) if any(len(p) for p in parts) \
                else np.zeros((0, parts[0].shape[1]))
            if not len(allp) or not np.isfinite(allp).all():
                raise InputError("--bounds: cannot derive bounds from these files "
                                 "(empty, NaN or infinite values); give --bounds")
            bounds = (allp.min(0).tolist(), allp.max(0).tolist())
        return parts, bounds
    if args.parties < 2:
        raise InputError("--parties: at least 2 parties are needed")
    if args.points < args.parties:
        raise InputError("--points: need at least one point per party")
    pts, _ = synthetic_blobs(args.points, args.centers, args.dim, args.spread, args.data_seed)
    bounds = _parse_bounds(args.bounds) if args.bounds else ([0.0] * args.dim, [1.0] * args.dim)
    return split_even(pts, args.parties, args.data_seed), bounds


def build_report(parts, params, run, ref, skl) -> dict:
    from .centroid_match import match_error
    from .privacy import noise_scale

    recv = run.receiver
    err, unmatched = match_error(recv.centroids, ref.centroids)
    comm_bytes = sum(o.communication.get("bytes", 0) for o in run.outcomes)
    per_iter = recv.per_iteration
    return {
        "centroids": recv.centroids.tolist(),
        "reference_centroids": ref.centroids.tolist(),
        "sklearn_centroids": None if skl is None else skl.tolist(),
        "sizes": None if recv.sizes is None else recv.sizes.tolist(),
        "max_abs_error": err,
        "unmatched_centroids": unmatched,
        "iterations": recv.iterations,
        "reference_iterations": ref.iterations,
        "parties": len(parts),
        "points": int(sum(len(p) for p in parts)),
        "rows_shared": recv.rows,
        "dust": params.n_dust,
        "seeding": params.seeding,
        "bandwidth": params.bandwidth,
        "kernel": params.kernel,
        "oblivious": params.oblivious,
        "summary": params.summary,
        "privacy": None if params.privacy is None else {
            **params.privacy.to_dict(), "noise_scale_per_party": noise_scale(params.privacy)},
        "params": params.to_dict(),
        "timings": {
            "wall_s": run.wall_s,
            "share_s": recv.share_s,
            "mean_iteration_s": float(np.mean([t["total_s"] - t["merge_s"] for t in per_iter]))
            if per_iter else 0.0,
            "per_iteration": per_iter,
        },
        "provider": recv.provider,
        "transport": recv.transport,
        "communication": {
            "bytes": int(comm_bytes),
            "dealer_bytes": int(sum(o.communication.get("dealer_bytes", 0)
                                    for o in run.outcomes)),
            "rounds": int(max(o.communication.get("rounds", 0) for o in run.outcomes)),
            "per_party_bytes": [int(o.communication.get("bytes", 0)) for o in run.outcomes],
            "steps": _step_totals(run.outcomes),
        },
    }


def _step_totals(outcomes) -> dict:
    """Per protocol step: bytes and dealer bytes summed over parties, rounds of
    the busiest party."""
    out: dict = {}
    for o in outcomes:
        for name, v in o.communication.get("steps", {}).items():
            t = out.setdefault(name, {"bytes": 0, "dealer_bytes": 0, "rounds": 0})
            t["bytes"] += int(v.get("bytes", 0))
            t["dealer_bytes"] += int(v.get("dealer_bytes", 0))
            t["rounds"] = max(t["rounds"], int(v.get("rounds", 0)))
    return out


def run(args) -> int:
    from dataclasses import replace

    from .params import MeanShiftParams, resolve_seeding, resolve_summary
    from .plaintext import reference_meanshift
    from .simulate import run_simulation

    try:
        parts, bounds = _load_parts(args)
        total = sum(map(len, parts))
        summary = resolve_summary(args.summary, total)
        reveal = tuple(int(r) for r in args.reveal_to.split(",")) if args.reveal_to else None
        bandwidth = args.bandwidth
        privacy = _privacy(args)
        if privacy is not None:
            if str(bandwidth).lower() == "auto":
                raise InputError("--bandwidth: 'auto' is refused in DP mode (the estimate "
                                 "would reveal a value computed from the data); give a number")
            summary = None if str(args.summary).lower() == "auto" else summary
        if str(bandwidth).lower() == "auto":
            from .bandwidth import estimate_bandwidth

            bandwidth = estimate_bandwidth(parts, quantile=args.quantile, seed=args.seed,
                                           bounds=bounds, timeout_s=args.timeout * 10)
            print(f"bandwidth (secure estimate, quantile {args.quantile}): {bandwidth:.6g}",
                  file=sys.stderr)
        params = MeanShiftParams(
            bandwidth=float(bandwidth), bounds=bounds, n_dust=args.dust, kernel=args.kernel,
            max_iter=args.max_iter, tol=args.tol, oblivious=args.oblivious, seed=args.seed,
            merge_radius=args.merge_radius, reveal_to=reveal, return_sizes=args.sizes,
            merge=args.merge, seeds_per_party=args.seeds_per_party, min_weight=args.min_weight,
            min_bin_freq=args.min_bin_freq,
            seeding=("grid" if privacy is not None and args.seeding == "auto"
                     else resolve_seeding(args.seeding, total, summary)),
            summary=summary, privacy=privacy)
        if privacy is None:     # 'auto' once more, with the bounds and h: scikit-learn's bins
            params = replace(params, seeding=resolve_seeding(args.seeding, total, summary, params))
        from .data import check_points

        for i, p in enumerate(parts):   # fail fast, with the party's name, before spawning
            if privacy is None:         # DP mode clips rows into the bounds instead
                check_points(p, params.bounds, f"party {i}")
        params.check_world(len(parts), total)
        say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
        say(f"simulating {len(parts)} parties, {total} points, "
            f"{params.n_seeds(len(parts), total)} seeds ({params.seeding}), "
            f"{params.kernel} kernel, h={params.bandwidth}")

        def progress(ev: dict) -> None:
            if ev.get("stage") == "iteration":
                mv = {True: "moving", False: "converged", None: "-"}[ev.get("moving")]
                say(f"  iteration {ev['iteration']}/{ev['max_iter']}  {ev['seconds']:.3f} s  {mv}")
            elif ev.get("stage") == "chunk" and ev["chunk"] == ev["chunks"]:
                say(f"  iteration {ev['iteration']}: {ev['chunks']} chunks done")
            elif ev.get("stage") == "shared":
                say(f"  shared {ev['rows']} rows in {ev['seconds']:.2f} s")

        say(f"  correlated randomness: {args.provider}"
            f"{' (INSECURE: rank 0 deals and could read every share)' if args.provider == 'first-party' else ' (a separate process holding no data)'}"
            f"; links: {'TLS 1.3, identities pinned' if args.transport == 'tls' else 'plaintext TCP'}")
        # DP mode: the parties' noise comes back (a local simulation holds every
        # party's data anyway) so that the twin replays the same noisy histogram
        sim = run_simulation(parts, params, timeout_s=args.timeout, progress=progress,
                             provider=args.provider, transport=args.transport,
                             keep_noise=params.dp)
        ref = reference_meanshift(parts, params, noise=sim.dp_noise)
        skl = None
        if not args.no_sklearn and total <= 20000:
            from .centroid_match import sklearn_centres
            skl = sklearn_centres(np.concatenate(parts), params.bandwidth,
                                  bin_seeding=params.seeding == "sklearn-bins")
        report = build_report(parts, params, sim, ref, skl)
    except (InputError, MPCError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

    print(f"secure centroids ({len(report['centroids'])}), after {report['iterations']} "
          f"iterations, {report['timings']['mean_iteration_s']:.3f} s/iteration, "
          f"{report['timings']['wall_s']:.1f} s wall:")
    for c in report["centroids"]:
        print("  " + "  ".join(f"{v: .5f}" for v in c))
    print(f"plaintext twin: {len(report['reference_centroids'])} centroids, "
          f"max |secure - twin| = {report['max_abs_error']:.2e} (data units)")
    if skl is not None:
        bins = "(bin_seeding=True)" if params.seeding == "sklearn-bins" else ""
        print(f"scikit-learn MeanShift{bins}: {len(skl)} centres")
    print(f"communication: {report['communication']['bytes'] / 1e6:.2f} MB between parties, "
          f"{report['communication']['dealer_bytes'] / 1e6:.2f} MB from the dealer, "
          f"{report['communication']['rounds']} rounds "
          f"(provider {report['provider']}, transport {report['transport']})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"wrote {args.json}")
    if args.plot:
        from .plot import plot_run

        plot_run(args.plot, parts, np.asarray(report["centroids"]),
                 np.asarray(report["reference_centroids"]), skl,
                 f"{len(parts)} parties, {report['points']} points, h={params.bandwidth}, "
                 f"{params.kernel} kernel")
        print(f"wrote {args.plot}")
    return 0


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(prog="secure-meanshift simulate",
                                 description=__doc__)
    add_arguments(ap)
    try:
        return run(ap.parse_args(argv))
    except BrokenPipeError:          # output piped into `head` and the like
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
