"""Issue 19's "done when" job: every-point seeding, 1,000 points (8 blobs,
h = 0.1), 3 parties, against scikit-learn's MeanShift(bandwidth=h) on the same
pooled points, timed in the same run.

    .venv/bin/python benchmarks/every_point.py                    # ~1 minute when quiet
    .venv/bin/python benchmarks/every_point.py --parties 2 --parties 3
    .venv/bin/python benchmarks/every_point.py --engine base=/tmp/base   # side by side
    .venv/bin/python benchmarks/every_point.py --wan              # + 20 ms / 1 Gbit/s (root)

Ours: the whole ``meanshift_cli.simulate`` run as a user starts it (party and
dealer processes, TLS on loopback, imports included), timed from outside:
``wall_s``. From its --json report: iterations, s/iteration (the loop's own
clock), bytes per iteration (between parties + from the dealer: the loop's
steps divided by the iterations; per pass: divided by the passes, one more
than the iterations unless each update settles at once, protocol.py),
rounds per iteration and the per-step split; per job: the share, merge,
sizes and reveal steps' bytes and rounds (``steps_per_job``), and the loop's
own time (``timings.loop_s``: wall_s minus it is start-up, merge, reveal,
the plaintext twin and shutdown).

scikit-learn: ``MeanShift(bandwidth=h).fit`` on the pooled points the CLI
generates (secure_meanshift.data.synthetic_blobs with the CLI's defaults),
in this process, timed around ``fit`` only (best of --sk-repeats).

``--warm K`` (default 2) also times the estimator a notebook user runs:
``SecureMeanShift(bandwidth=h, seeding="points", summary="exact").fit`` on the
CLI's parties, K + 1 times in one Python process per engine (a subprocess);
the first fit starts the engine (the fork server's import of torch, as every
simulator run does), the K later ones reuse it. ``warm_fit_s`` is their
median: the same job without the start-up a one-shot CLI run pays.

``--engine NAME=ROOT`` (repeatable) runs another checkout's engine with the
same Python, e.g. a ``git archive`` of main: every engine runs in the same
invocation, round-robin, so the figures are side by side. ``--wan`` adds a
run of each engine in a fresh network namespace whose loopback has the WAN
profile (benchmarks/peers.py's netns helper: netem, or its relay when the
kernel has none); it needs root.

Writes --out/every_point.json and every_point.png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

LOOP_STEPS = ("distance", "kernel", "update", "division", "stop")
JOB_STEPS = ("share", "merge", "sizes", "reveal")      # once per job
TARGET_BYTES = 68e6          # issue 19: bytes per iteration at 3 parties
TARGET_RATIO = 3.0           # issue 19: wall time / scikit-learn's fit
TARGET_WAN_S = 60.0


def job_args(parties: int, points: int, bandwidth: float) -> list:
    return ["--points", str(points), "--parties", str(parties), "--centers", "8",
            "--bandwidth", str(bandwidth), "--seeding", "points", "--summary", "exact",
            "--no-sklearn", "--quiet", "--timeout", "600"]


def sklearn_fit_s(points: int, bandwidth: float, repeats: int) -> dict:
    """scikit-learn's MeanShift fit on the CLI's pooled synthetic points."""
    from sklearn.cluster import MeanShift

    from secure_meanshift.data import synthetic_blobs

    pts, _ = synthetic_blobs(points, 8, 2, 0.03, 0)
    times, n_centres = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        ms = MeanShift(bandwidth=bandwidth).fit(pts)
        times.append(time.perf_counter() - t0)
        n_centres = len(ms.cluster_centers_)
    return {"fit_s": min(times), "fit_s_all": times, "centres": n_centres}


def run_engine(root: str, parties: int, points: int, bandwidth: float, wan: dict,
               timeout: float) -> dict:
    """One simulator run of the engine in ``root``; wall time measured outside."""
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    # the simulator's CLI: meanshift_cli/simulate.py (older checkouts: secure_meanshift/simcli.py)
    cli = "meanshift_cli.simulate" if os.path.exists(
        os.path.join(root, "meanshift_cli", "simulate.py")) else "secure_meanshift.simcli"
    cmd = [sys.executable, "-m", cli, *job_args(parties, points, bandwidth), "--json", out]
    check = None
    if wan:
        sys.path.insert(0, HERE)
        import peers

        check = out + ".netns.json"
        cmd = peers.netns_prefix(wan, check) + cmd
    env = dict(os.environ, PYTHONPATH=root)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                         timeout=timeout)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[-12:])} failed: {res.stderr[-800:]}")
    with open(out) as fh:
        r = json.load(fh)
    os.unlink(out)
    o = summarise(r, wall)
    if check:
        with open(check) as fh:
            o["netns_check"] = json.load(fh)
        os.unlink(check)
    return o


WARM_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
from secure_meanshift import SecureMeanShift
from secure_meanshift.data import split_even, synthetic_blobs
parties, points, h, fits = (int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]),
                            int(sys.argv[4]))
pts, _ = synthetic_blobs(points, 8, 2, 0.03, 0)       # the CLI's defaults (job_args)
parts = split_even(pts, parties, 0)
out = {"import_s": time.perf_counter() - t0, "fits_s": [], "centres": []}
for _ in range(fits):
    t = time.perf_counter()
    est = SecureMeanShift(bandwidth=h, seeding="points", summary="exact",
                          verbose=0).fit(parts)
    out["fits_s"].append(time.perf_counter() - t)
    out["centres"].append(len(est.cluster_centers_))
print(json.dumps(out))
"""


def warm_fits(root: str, parties: int, points: int, bandwidth: float, warm: int,
              timeout: float) -> dict:
    """The estimator fitted warm + 1 times in one fresh process (WARM_SCRIPT)."""
    env = dict(os.environ, PYTHONPATH=root)
    res = subprocess.run([sys.executable, "-c", WARM_SCRIPT, str(parties), str(points),
                          str(bandwidth), str(warm + 1)], cwd=root, env=env,
                         capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"warm fits failed: {res.stderr[-800:]}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    later = sorted(r["fits_s"][1:])
    return {"first_fit_s": round(r["fits_s"][0], 2),
            "warm_fit_s": round(later[len(later) // 2], 2),
            "fits_s": [round(v, 2) for v in r["fits_s"]], "centres": r["centres"]}


def summarise(r: dict, wall: float) -> dict:
    """Figures of one --json report: per pass of the loop (every step that runs
    once per pass, the final checking pass included)."""
    comm = r["communication"]
    steps = comm.get("steps", {})
    # the report's own count (older engines: none, and always one checking pass)
    passes = max(1, int(r.get("passes") or int(r["iterations"]) + 1))
    iterations = max(1, int(r["iterations"]))
    loop = {k: steps.get(k, {}) for k in LOOP_STEPS}
    per = {k: {f: v.get(f, 0) / iterations for f in ("bytes", "dealer_bytes", "rounds")}
           for k, v in loop.items()}
    between = sum(v["bytes"] for v in per.values())
    dealer = sum(v["dealer_bytes"] for v in per.values())
    return {"wall_s": round(wall, 2), "iterations": int(r["iterations"]), "passes": passes,
            "s_per_iteration": r["timings"]["mean_iteration_s"],
            "bytes_per_iteration": round(between + dealer),
            "bytes_per_pass": round((between + dealer) * iterations / passes),
            "between_parties_per_iteration": round(between),
            "dealer_bytes_per_iteration": round(dealer),
            "rounds_per_iteration": round(sum(v["rounds"] for v in per.values()), 1),
            "steps_per_iteration": per,
            "steps_per_job": {k: {f: steps[k].get(f, 0) for f in ("bytes", "dealer_bytes", "rounds")}
                              for k in JOB_STEPS if k in steps},
            "timings": {"share_s": r["timings"].get("share_s"),
                        "loop_s": sum(i["total_s"] - i.get("merge_s", 0)
                                      for i in r["timings"].get("per_iteration", [])),
                        "merge_and_reveal_s": sum(i.get("merge_s", 0)
                                                  for i in r["timings"].get("per_iteration", []))},
            "job_bytes": comm["bytes"] + comm.get("dealer_bytes", 0),
            # the dealer's bytes each party received over the job (its one link)
            "dealer_bytes_per_party": comm.get("per_party_dealer_bytes"),
            "max_abs_error": r.get("max_abs_error"),
            "centroids": len(r.get("centroids") or [])}


def _job_mb(v: dict, step: str) -> float:
    """MB of a once-per-job step (between parties plus from the dealer)."""
    st = v.get("steps_per_job", {}).get(step, {})
    return (st.get("bytes", 0) + st.get("dealer_bytes", 0)) / 1e6


def plot(data: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{e}\n{p}p{' WAN' if w == 'wan' else ''}", v) for e, byp in data["runs"].items()
            for p, modes in byp.items() for w, v in modes.items()]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    names = [n for n, _ in rows]
    axes[0].bar(names, [v["wall_s"] for _, v in rows], color="tab:blue", label="ours, wall")
    warm = [(f"{e}\n{p}p estimator\n(warm)", v["warm_fit_s"])
            for e, byp in data.get("warm_estimator", {}).items() for p, v in byp.items()]
    if warm:
        axes[0].bar([n for n, _ in warm], [s for _, s in warm], color="tab:green",
                    label="ours, a later fit in one process")
    for p, sk in data["sklearn"].items():
        axes[0].axhline(sk["fit_s"] * TARGET_RATIO, color="tab:red", ls="--",
                        label=f"3x scikit-learn fit ({sk['fit_s']:.2f} s)")
        break
    axes[0].set_ylabel("seconds (whole simulator run)")
    axes[0].legend(fontsize=7)
    axes[0].set_title("every-point job, 1,000 points: wall time", fontsize=9)
    axes[1].bar(names, [v["bytes_per_iteration"] / 1e6 for _, v in rows], color="tab:cyan")
    axes[1].axhline(TARGET_BYTES / 1e6, color="tab:red", ls="--", label="issue 19 target")
    axes[1].set_ylabel("MB per iteration (all links + dealer)")
    axes[1].legend(fontsize=7)
    axes[1].set_title("bytes per iteration", fontsize=9)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parties", type=int, action="append",
                    help="parties (repeatable; default 3)")
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--bandwidth", type=float, default=0.1)
    ap.add_argument("--engine", action="append", default=[], metavar="NAME=ROOT",
                    help="also run the engine of another checkout (side by side)")
    ap.add_argument("--skip-this", action="store_true",
                    help="only the --engine checkouts (e.g. snapshots), not this tree")
    ap.add_argument("--repeats", type=int, default=1, help="runs per engine (median kept)")
    ap.add_argument("--sk-repeats", type=int, default=3)
    ap.add_argument("--warm", type=int, default=2,
                    help="estimator fits after the first, in one process (0: none)")
    ap.add_argument("--wan", action="store_true", help="also the WAN profile (root)")
    ap.add_argument("--rtt-ms", type=float, default=20.0)
    ap.add_argument("--rate", default="1gbit")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    parties = args.parties or [3]
    if any(p < 2 for p in parties) or args.points < 2 or args.repeats < 1 or args.warm < 0:
        ap.error("need at least 2 parties, 2 points, 1 repeat and --warm >= 0")
    engines = {} if args.skip_this else {"this": ROOT}
    for spec in args.engine:
        name, _, root = spec.partition("=")
        if not name or not os.path.isdir(os.path.join(root, "secure_meanshift")):
            ap.error(f"--engine {spec!r}: expected NAME=ROOT of a checkout")
        engines[name] = os.path.abspath(root)
    if not engines:
        ap.error("--skip-this needs at least one --engine")
    if args.wan and os.geteuid() != 0:
        ap.error("--wan needs root (network namespaces)")
    wan = {"rtt_ms": args.rtt_ms, "rate": args.rate}
    modes = [False, True] if args.wan else [False]

    os.makedirs(args.out, exist_ok=True)
    sk = {str(p): sklearn_fit_s(args.points, args.bandwidth, args.sk_repeats) for p in parties[:1]}
    raw: dict = {e: {str(p): {m: [] for m in modes} for p in parties} for e in engines}
    for rep in range(args.repeats):          # round-robin: engines side by side
        for p in parties:
            for m in modes:
                for e, root in engines.items():
                    print(f"[{rep + 1}/{args.repeats}] {e}: {p} parties"
                          f"{' WAN' if m else ''} ...", flush=True)
                    raw[e][str(p)][m].append(run_engine(root, p, args.points, args.bandwidth,
                                                        wan if m else {}, args.timeout))
    warm = {e: {str(p): warm_fits(root, p, args.points, args.bandwidth, args.warm,
                                  args.timeout) for p in parties}
            for e, root in engines.items()} if args.warm else {}
    runs = {e: {p: {("wan" if m else "local"): sorted(v, key=lambda r: r["wall_s"])[len(v) // 2]
                    for m, v in byp.items()} for p, byp in per.items()}
            for e, per in raw.items()}
    fit = next(iter(sk.values()))["fit_s"]
    for per in runs.values():
        for byp in per.values():
            for v in byp.values():
                v["wall_over_sklearn_fit"] = round(v["wall_s"] / fit, 2)
    for per in warm.values():
        for v in per.values():
            v["warm_over_sklearn_fit"] = round(v["warm_fit_s"] / fit, 2)
    data = {"what": "issue 19 every-point job: simulator wall time and bytes vs "
                    "scikit-learn's MeanShift fit, same run",
            "command": " ".join([sys.executable, os.path.relpath(__file__, ROOT),
                                 *(argv if argv is not None else sys.argv[1:])]),
            "job": job_args(0, args.points, args.bandwidth)[2:], "engines": engines,
            "targets": {"bytes_per_iteration_3p": TARGET_BYTES,
                        "wall_over_sklearn_fit": TARGET_RATIO, "wan_wall_s": TARGET_WAN_S},
            "wan_profile": wan if args.wan else None,
            "sklearn": sk, "runs": runs, "warm_estimator": warm,
            "wall_spread": {e: {p: {("wan" if m else "local"): [r["wall_s"] for r in v]
                                    for m, v in byp.items()} for p, byp in per.items()}
                            for e, per in raw.items()}}
    with open(os.path.join(args.out, "every_point.json"), "w") as fh:
        json.dump(data, fh, indent=1)
    plot(data, os.path.join(args.out, "every_point.png"))
    print(f"scikit-learn MeanShift fit: {fit:.2f} s")
    for e, per in runs.items():
        for p, byp in per.items():
            for mode, v in byp.items():
                print(f"{e:>6} {p}p {mode:<5}: wall {v['wall_s']:6.1f} s "
                      f"({v['wall_over_sklearn_fit']:.1f}x sklearn), {v['iterations']} it, "
                      f"{v['s_per_iteration']:.2f} s/it, "
                      f"{v['bytes_per_iteration'] / 1e6:.1f} MB/it "
                      f"({v['dealer_bytes_per_iteration'] / 1e6:.1f} dealer; "
                      f"{v['bytes_per_pass'] / 1e6:.1f} MB/pass, {v['passes']} passes), "
                      f"{v['rounds_per_iteration']:.0f} rounds/it; outside the loop "
                      f"{v['wall_s'] - v['timings']['loop_s']:.1f} s (merge and reveal "
                      f"{v['timings']['merge_and_reveal_s']:.1f} s, "
                      f"{_job_mb(v, 'merge'):.0f} MB merge, {_job_mb(v, 'reveal'):.0f} MB reveal)")
    for e, per in warm.items():
        for p, v in per.items():
            print(f"{e:>6} {p}p estimator: first fit {v['first_fit_s']:.1f} s, then "
                  f"{v['warm_fit_s']:.1f} s a fit ({v['warm_over_sklearn_fit']:.1f}x sklearn; "
                  f"the engine already started)")
    print(f"wrote {os.path.join(args.out, 'every_point.json')} and every_point.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
