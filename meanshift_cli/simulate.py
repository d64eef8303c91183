"""`secure-meanshift simulate`: all parties as local processes on loopback.

The algorithm's flags, their defaults and checks come from the one parameter
table (secure_meanshift.params.PARAMS, each row's ``cli``). Imported only for
this subcommand (the engine loads torch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from dataclasses import replace
from typing import Optional

import numpy as np

from secure_meanshift.simulate import start_fork_server
from secure_meanshift.centroid_match import match_error, sklearn_centres
from secure_meanshift.data import check_finite, check_points, load_points, split_even, \
    synthetic_blobs
from secure_meanshift.errors import InputError, MPCError
from secure_meanshift.params import (PARAMS, SCALE_DP_REFUSAL, EstimateBandwidth,
                                     MeanShiftParams, Param, bandwidth_value, resolve_seeding,
                                     resolve_summary)
from secure_meanshift.plaintext import reference_meanshift
from secure_meanshift.privacy import DEFAULT_DELTA, DEFAULT_EPSILON, PrivacySpec, noise_scale
from secure_meanshift.sources import SourceError, read_all, source_from_arg

#: the table's rows that are simulator flags, in --help order
ALGORITHM = ("bandwidth", "quantile", "n_dust", "kernel", "max_iter", "tol", "oblivious",
             "seed", "merge", "merge_radius", "seeding", "min_bin_freq", "min_weight",
             "seeds_per_party",
             "reveal_to", "return_sizes", "summary", "scaling")
TYPES = {"int": int, "float": float}


def add_table_argument(group, row: Param) -> None:
    """One flag of the parameter table: its type, choices, default and help."""
    shown = "auto" if row.name == "bandwidth" else \
        ("derived" if row.default is None else row.default)
    kw: dict = {"dest": row.name, "help": f"{row.doc} (default: {shown})"}
    if row.kind == "bool":
        kw.update(action="store_true", help=row.doc)
    elif row.kind == "choice":
        kw.update(choices=list(row.choices), default=row.default)
    elif row.kind in TYPES:
        kw.update(type=TYPES[row.kind], default=row.default)
    else:                       # bandwidth, summary, reveal_to: text, read by _params
        kw.update(default="auto" if row.name in ("bandwidth", "summary") and
                  row.default in (None, "auto") else row.default)
    group.add_argument(row.cli, **kw)


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
    g.add_argument(PARAMS["bounds"].cli, help="public feature bounds 'lo1,lo2,..:hi1,hi2,..' "
                   "(default: [0,1] for synthetic data, the files' min/max otherwise)")
    a = ap.add_argument_group("algorithm (secure_meanshift.params.PARAMS)")
    for name in ALGORITHM:
        add_table_argument(a, PARAMS[name])
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
    o.add_argument("--sklearn", action="store_true",
                   help="also fit scikit-learn's MeanShift on the pooled points (up to "
                        "20,000) and report its centres: a plaintext check that adds its "
                        "import and fit to the run (about 2.5 s at 1,000 points)")
    o.add_argument("--no-sklearn", action="store_true",
                   help="no scikit-learn fit (the default; kept for older scripts)")


def _privacy(args):
    """--epsilon / --delta -> PrivacySpec (either one turns DP mode on), or None."""
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
    src = source_from_arg(arg, cols)
    if src.kind in ("csv", "npy") and not arg.lower().endswith((".yaml", ".yml")):
        return load_points(arg, cols)
    try:
        return read_all(src)
    except SourceError as exc:          # local: the path may be shown
        raise InputError(exc.local) from None


def _load_parts(args) -> tuple[list, tuple]:
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
    recv = run.receiver
    err, unmatched = match_error(recv.centroids, ref.centroids)
    scaled = recv.moments is not None
    comm_bytes = sum(o.communication.get("bytes", 0) for o in run.outcomes)
    per_iter = recv.per_iteration
    return {
        "centroids": recv.centroids.tolist(),
        "reference_centroids": ref.centroids.tolist(),
        "sklearn_centroids": None if skl is None else skl.tolist(),
        "sizes": None if recv.sizes is None else recv.sizes.tolist(),
        "max_abs_error": err,
        "unmatched_centroids": unmatched,
        # scale standard: the moments opened in the run, the centres as opened
        # (standardised units: h's) and their distance to the twin's in those units
        "scaling": "standard" if scaled else "none",
        "moments": recv.moments.to_dict() if scaled else None,
        "standardised_centroids": recv.standardised.tolist() if scaled else None,
        "max_abs_error_standardised": match_error(recv.standardised, ref.standardised)[0]
        if scaled else None,
        "iterations": recv.iterations,
        "passes": recv.passes,
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
            "per_party_dealer_bytes": [int(o.communication.get("dealer_bytes", 0))
                                       for o in run.outcomes],   # what each party received
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


def _summary(args, total: int, dp: bool):
    """--summary: 'exact', 'auto' (resolved now that N is known; in DP mode left to
    the engine: the public grid's default cell) or a cell size in bandwidths."""
    text = str(args.summary).strip().lower()
    if dp and text == "auto":
        return None
    return resolve_summary(args.summary, total)


def _params(args, parts: list, bounds) -> MeanShiftParams:
    """The agreed parameters, every input checked before anything is spawned;
    a bandwidth to estimate is estimated last (one more local MPC run)."""
    total = sum(map(len, parts))
    privacy = _privacy(args)
    summary = _summary(args, total, privacy is not None)
    reveal = tuple(int(r) for r in args.reveal_to.split(",")) if args.reveal_to else None
    h = bandwidth_value(args.bandwidth, "--bandwidth", EstimateBandwidth(quantile=args.quantile))
    if privacy is not None and isinstance(h, EstimateBandwidth):
        raise InputError("--bandwidth: 'auto' is refused in DP mode (the estimate "
                         "would reveal a value computed from the data); give a number")
    if privacy is not None and args.scaling == "standard":
        raise InputError(f"--{SCALE_DP_REFUSAL}")
    params = MeanShiftParams(
        bandwidth=h, bounds=bounds, reveal_to=reveal, summary=summary, privacy=privacy,
        seeding=("grid" if privacy is not None and args.seeding == "auto"
                 else resolve_seeding(args.seeding, total, summary)),
        **{name: getattr(args, name) for name in ALGORITHM
           if name not in ("bandwidth", "quantile", "reveal_to", "summary", "seeding")})
    for i, p in enumerate(parts):   # fail fast, with the party's name, before spawning
        if privacy is None:         # DP mode clips rows into the bounds instead
            check_points(p, params.bounds, f"party {i}")
    params.check_world(len(parts), total)
    if params.estimates_bandwidth:
        # estimated by the parties in the run's own session (run_simulation: one
        # set of processes and links), "auto" seeding resolved there with it
        return replace(params, seeding="auto") if args.seeding == "auto" else params
    if args.seeding != "auto" or params.dp:
        return params
    _, est = _standardised_view(args, parts, params)
    return replace(params, seeding=resolve_seeding("auto", total, summary, est))


def _as_run(params: MeanShiftParams, total: int, sim, seeding: Optional[str]) -> MeanShiftParams:
    """The parameters the parties ran with: the bandwidth they estimated in the
    run (public: every outcome holds it) and the seeding they resolved with it
    (party 0's "sizes" event, else resolved here as they do)."""
    if not params.estimates_bandwidth:
        return params
    how = params.bandwidth
    p = replace(params, bandwidth=float(sim.outcomes[0].params.bandwidth))
    units = " (standardised units)" if p.standardises else ""
    print(f"bandwidth (secure estimate, quantile {how.quantile}): {p.bandwidth:.6g}{units}",
          file=sys.stderr)
    if p.seeding != "auto":
        return p
    if seeding is None:
        from secure_meanshift.moments import standardised_params

        est = standardised_params(p, sim.receiver.moments) if p.standardises else p
        seeding = resolve_seeding("auto", total, p.summary, est)
    return replace(p, seeding=seeding)


def _standardised_view(args, parts: list, params: MeanShiftParams) -> tuple:
    """(rows, parameters) on which "auto" seeding is resolved for a given
    bandwidth: as given, or with --scale standard the rows standardised by the
    pooled moments (computed here by the same secure protocol the run repeats in
    its own session, scaler.pooled_moments: the same opened values) and the
    derived parameters (moments.standardised_params). (An estimated bandwidth:
    the parties resolve it in the run, _as_run.)"""
    if not params.standardises:
        return parts, params
    from secure_meanshift.moments import Moments, standardised_params
    from secure_meanshift.scaler import pooled_moments

    _, mean, var = pooled_moments(parts, timeout_s=args.timeout * 10)
    m = Moments.of(mean, var)
    return [m.forward(q) for q in parts], standardised_params(params, m)


def _progress_printer(say, seen: Optional[dict] = None):
    """The progress callback of a run: one line per iteration (public counts
    only); ``seen`` gets the seeding the parties resolved ("sizes" event)."""
    def progress(ev: dict) -> None:
        if ev.get("stage") == "sizes" and seen is not None and ev.get("seeding"):
            seen["seeding"] = ev["seeding"]
        if ev.get("stage") == "iteration":
            mv = {True: "moving", False: "converged", None: "-"}[ev.get("moving")]
            say(f"  iteration {ev['iteration']}/{ev['max_iter']}  {ev['seconds']:.3f} s  {mv}")
        elif ev.get("stage") == "chunk" and ev["chunk"] == ev["chunks"]:
            say(f"  iteration {ev['iteration']}: {ev['chunks']} chunks done")
        elif ev.get("stage") == "shared":
            say(f"  shared {ev['rows']} rows in {ev['seconds']:.2f} s")
    return progress


class _Background:
    """fn(*args) in a daemon thread (it never holds up an exit, e.g. on Ctrl-C);
    result() waits for it and returns its value or raises its exception."""

    def __init__(self, fn, *args):
        self._out: dict = {}

        def run() -> None:
            try:
                self._out["value"] = fn(*args)
            except BaseException as exc:     # handed to result()
                self._out["error"] = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def result(self):
        self._thread.join()
        if "error" in self._out:
            raise self._out["error"]
        return self._out["value"]


def _twin_then_report_imports(parts: list, params: MeanShiftParams):
    """The twin, then the import the report's matching needs (scipy.optimize:
    about 0.5 s, else paid after the parties finish), both while they run.
    The twin's matrix products use one BLAS thread: OpenBLAS's helper threads
    spin while they wait for work, CPU the ranks need (0.4 s of the 3-party
    every-point job's 13.6 s of CPU on 2 cores, measured with perf)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        ref = reference_meanshift(parts, params)
    import scipy.optimize  # noqa: F401
    return ref


def _simulate(args, parts: list, params: MeanShiftParams) -> tuple:
    """Run the parties, the twin and scikit-learn; (report, sklearn centres, the
    parameters as run: an estimated bandwidth filled in)."""
    from secure_meanshift.simulate import run_simulation   # torch/CrypTen: only when run

    start_fork_server()    # every input checked: its engine import overlaps our work
    total = sum(map(len, parts))
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    dusts = f" ({params.n_dust} dusts)" if params.uses_dust else ""
    units = " (standardised units: scale standard)" if params.standardises else ""
    h = f"estimated in the run (quantile {params.bandwidth.quantile})" \
        if params.estimates_bandwidth else params.bandwidth
    say(f"simulating {len(parts)} parties, {total} points, seeding {params.seeding}{dusts}, "
        f"{params.kernel} kernel, h={h}{units}, max_iter {params.max_iter}")
    insecure = args.provider == "first-party"
    say(f"  correlated randomness: {args.provider}"
        f"{' (INSECURE: rank 0 deals and could read every share)' if insecure else ' (a separate process holding no data)'}"
        f"; links: {'TLS 1.3, identities pinned' if args.transport == 'tls' else 'plaintext TCP'}")
    # DP mode: the parties' noise comes back (a local simulation holds every
    # party's data anyway) so that the twin replays the same noisy histogram;
    # otherwise the twin runs in this process while the parties run (after
    # them when they estimate h first: the twin needs it)
    twin = None if params.dp or params.estimates_bandwidth else \
        _Background(_twin_then_report_imports, parts, params)
    seen: dict = {}
    sim = run_simulation(parts, params, timeout_s=args.timeout,
                         progress=_progress_printer(say, seen), provider=args.provider,
                         transport=args.transport, keep_noise=params.dp)
    params = _as_run(params, total, sim, seen.get("seeding"))
    ref = twin.result() if twin is not None else \
        reference_meanshift(parts, params, noise=sim.dp_noise)
    skl = None
    if args.sklearn and not args.no_sklearn and total <= 20000:
        m = sim.receiver.moments          # scale standard: on the standardised rows
        x = np.concatenate(parts)
        skl = sklearn_centres(x if m is None else m.forward(x), params.bandwidth,
                              bin_seeding=params.seeding == "sklearn-bins")
        skl = skl if m is None or skl is None else m.inverse(skl)
    return build_report(parts, params, sim, ref, skl), skl, params


def _print_report(args, report: dict, parts: list, params: MeanShiftParams, skl) -> None:
    """The run's summary on stdout, and the JSON / plot files asked for."""
    print(f"secure centroids ({len(report['centroids'])}), after {report['iterations']} "
          f"iterations, {report['timings']['mean_iteration_s']:.3f} s/iteration, "
          f"{report['timings']['wall_s']:.1f} s wall:")
    for c in report["centroids"]:
        print("  " + "  ".join(f"{v: .5f}" for v in c))
    if not report["centroids"] and params.privacy is not None:
        print("  none: no cell's noisy count cleared the DP threshold (too few points "
              "per cluster for this epsilon and delta; more points or a larger epsilon)")
    print(f"plaintext twin: {len(report['reference_centroids'])} centroids, "
          f"max |secure - twin| = {report['max_abs_error']:.2e} (data units)")
    if report["scaling"] == "standard":
        print("scale standard: centres above in data units (centre * std + mean, the "
              "pooled moments opened in the run); max |secure - twin| = "
              f"{report['max_abs_error_standardised']:.2e} in standardised units")
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
        from secure_meanshift.plot import plot_run     # matplotlib: only when asked

        plot_run(args.plot, parts, np.asarray(report["centroids"]),
                 np.asarray(report["reference_centroids"]), skl,
                 f"{len(parts)} parties, {report['points']} points, h={params.bandwidth}, "
                 f"{params.kernel} kernel")
        print(f"wrote {args.plot}")


def run(args) -> int:
    """The `simulate` subcommand: 0, or 2 for bad input / a failed run (one line, no
    traceback), 130 when interrupted."""
    try:
        parts, bounds = _load_parts(args)
        params = _params(args, parts, bounds)
        report, skl, params = _simulate(args, parts, params)
    except (InputError, MPCError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    _print_report(args, report, parts, params, skl)
    return 0


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(prog="secure-meanshift simulate",
                                 description=__doc__)
    add_arguments(ap)
    try:
        return run(ap.parse_args(argv))
    except BrokenPipeError:          # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
