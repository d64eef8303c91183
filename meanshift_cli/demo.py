"""`secure-meanshift demo`: a coordinator, three party nodes and a dealer as
separate processes on this machine, each node with its own synthetic data and
its own certificate (the dealer holds no data); one job, its progress, the
revealed centroids next to the plaintext twin and scikit-learn, a plot, and a
clean shutdown."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import yaml
from scipy.optimize import linear_sum_assignment

from coordinator.client import Client
from meanshift_rpc.jobspec import engine_params, parse
from meanshift_rpc.tls import make_dev_pki
from party_node.config import write_node_config
from secure_meanshift.centroid_match import match_error, sklearn_centres
from secure_meanshift.data import split_even, synthetic_blobs
from secure_meanshift.params import MeanShiftParams, resolve_seeding
from secure_meanshift.plaintext import reference_meanshift
from secure_meanshift.simulate import free_port

from .watch import follow

PARTY_NAMES = ["alpha", "beta", "gamma", "delta", "epsilon"]
DEALER = "demo-dealer"
PORT_BASE = 29700            # each node's MPC ports: 20 from PORT_BASE + 20 * its index


def aligned_rows(secure, twin, skl, h: float) -> list:
    """Rows of (secure, twin, sklearn) centroids, matched by distance (None = no match)."""
    rows = [[c, None, None] for c in secure]
    for col, other in ((1, twin), (2, skl)):
        if len(secure) and len(other):
            cost = np.linalg.norm(np.asarray(secure)[:, None] - np.asarray(other)[None], axis=2)
            r, c = linear_sum_assignment(cost)
            used = set()
            for i, j in zip(r, c):
                if cost[i, j] < h:
                    rows[i][col] = other[j]
                    used.add(j)
            rows += [[None, *(o if k == col else None for k in (1, 2))]
                     for j, o in enumerate(other) if j not in used]
        else:
            rows += [[None, *(o if k == col else None for k in (1, 2))] for o in other]
    return rows


class _Fleet:
    """The demo's processes (coordinator, nodes, dealer), each logging to a file
    in the demo folder; stopped, last started first, by :meth:`stop`."""

    def __init__(self, work: str):
        self.work, self.procs, self.logs = work, [], []

    def start(self, name: str, cmd: list) -> None:
        log = open(os.path.join(self.work, f"{name}.log"), "w")
        self.logs.append(log)
        self.procs.append((name, subprocess.Popen([sys.executable, "-m", "meanshift_cli", *cmd],
                                                  stdout=log, stderr=subprocess.STDOUT)))

    def dead(self) -> list:
        return [n for n, p in self.procs if p.poll() is not None]

    def stop(self) -> None:
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for _, p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in self.logs:
            log.close()


def _start_federation(fleet: _Fleet, names: list, parts: list) -> tuple[str, str]:
    """Certificates, the coordinator, one node per party (its part of the data)
    and the dealer. Returns (coordinator address, certificate folder)."""
    work = fleet.work
    certs = os.path.join(work, "certs")
    make_dev_pki(certs, ["coordinator", "analyst:demo", f"dealer:{DEALER}"]
                 + [f"party:{n}" for n in names])
    coord = f"127.0.0.1:{free_port()}"
    fleet.start("coordinator", ["coordinator", "serve", "--listen", coord, "--db",
                                os.path.join(work, "coordinator.db"), "--tls-dir", certs])
    common = {"certs": certs, "advertise": "127.0.0.1", "server_name": "localhost",
              "mpc_timeout_s": 30}
    for i, n in enumerate(names):
        data = os.path.join(work, f"{n}.csv")
        np.savetxt(data, parts[i], delimiter=",", header="x,y", comments="")
        # The demo's own dealer. Exact results: the demo runs on synthetic data and
        # checks the secure centroids against the plaintext twin, which a DP job's
        # noise would not match (a real node keeps the default: DP jobs only).
        cfg = write_node_config(
            os.path.join(work, f"{n}.yaml"), n, coord, **common,
            port_range=(PORT_BASE + 20 * i, PORT_BASE + 20 * i + 19),
            datasets={"demo": data}, results_dir=os.path.join(work, f"results-{n}"),
            policy={"trusted_dealers": [DEALER], "allow_exact_results": True})
        fleet.start(f"node-{n}", ["node", "run", "--config", cfg])
    lo = PORT_BASE + 20 * len(names)
    cfg = write_node_config(os.path.join(work, f"{DEALER}.yaml"), DEALER, coord, **common,
                            dealer=True, port_range=(lo, lo + 19),
                            results_dir=os.path.join(work, "results-dealer"))
    fleet.start("dealer", ["dealer", "run", "--config", cfg])
    return coord, certs


def _wait_connected(client: Client, fleet: _Fleet, nodes: int, timeout_s: float = 60) -> None:
    """Until ``nodes`` nodes are connected to the coordinator; an error if a
    process exits first or the time runs out."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        dead = fleet.dead()
        if dead:
            raise RuntimeError(f"{dead[0]} exited early (see {fleet.work}/{dead[0]}.log)")
        try:
            if sum(p["connected"] for p in client.parties()) == nodes:
                return
        except Exception:  # noqa: BLE001 - the coordinator may not be up yet
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the party and dealer nodes did not connect within {timeout_s:.0f} s")


def _job_spec(args, names: list) -> dict:
    return {"name": "demo", "parties": [{"id": n, "dataset": "demo"} for n in names],
            "bandwidth": args.bandwidth, "dust": args.dust, "kernel": args.kernel,
            "max_iter": 30, "bounds": {"lo": [0, 0], "hi": [1, 1]},
            "reveal_to": [names[0], "analyst:demo"], "summary": "exact", "dealer": DEALER}


def _report(args, spec: dict, info: dict, cents: np.ndarray, pts: np.ndarray,
            parts: list, seconds: float, work: str) -> dict:
    """The run's report: the secure centroids next to the plaintext twin (on
    all the data: only the demo, which made it, can do this) and scikit-learn."""
    params = MeanShiftParams(**engine_params(parse(yaml.safe_dump(spec)),
                                             int(info["seed_hex"], 16)))
    ref = reference_meanshift(parts, params)
    skl = sklearn_centres(pts, args.bandwidth) if args.kernel == "flat" else None
    if skl is None:
        skl = np.zeros((0, 2))
    err, unmatched = match_error(cents, ref.centroids)
    return {"job_id": info["job_id"], "seconds": seconds,
            "iterations": info.get("iterations"), "centroids": cents.tolist(),
            "reference_centroids": ref.centroids.tolist(),
            "sklearn_centroids": skl.tolist(), "max_abs_error": err,
            "unmatched": unmatched, "folder": work,
            "seeding": resolve_seeding(params.seeding, len(pts), params.summary, params)}


def _print_report(report: dict, say) -> None:
    cents, ref = np.asarray(report["centroids"]), np.asarray(report["reference_centroids"])
    skl, h = np.asarray(report["sklearn_centroids"]).reshape(-1, 2), report["bandwidth"]
    say(f"\njob {report['job_id']} succeeded in {report['seconds']:.1f} s, "
        f"{report['iterations']} iterations")
    say(f"  {'secure (revealed)':<22}{'plaintext twin':<22}"
        f"{'scikit-learn' if len(skl) else ''}")
    for row in aligned_rows(cents, ref, skl, h):
        say(("  " + "".join(f"{'' if c is None else f'({c[0]:.4f}, {c[1]:.4f})':<22}"
                            for c in row)).rstrip())
    say(f"max |secure - twin| = {report['max_abs_error']:.1e} (bandwidth {h})")
    if len(skl) > len(cents):
        say(f"(scikit-learn seeds from every point; this job's seeds "
            f"({report['seeding']}) reached {len(cents)} of its {len(skl)} modes)")


def _demo(args, fleet: _Fleet, names: list, say) -> int:
    """Start the federation, run one job as analyst:demo, report and check it."""
    k = len(names)
    pts, _ = synthetic_blobs(args.points * k, 6, 2, 0.03, seed=7)
    parts = split_even(pts, k, seed=7)
    coord, certs = _start_federation(fleet, names, parts)
    say(f"demo folder: {fleet.work}")
    say(f"coordinator on {coord}; party nodes: {', '.join(names)} "
        f"({args.points} synthetic points each); dealer {DEALER} (no data)")
    client = Client(coord, tls_dir=certs, identity="analyst:demo", server_name="localhost")
    _wait_connected(client, fleet, k + 1)
    spec = _job_spec(args, names)
    job = client.submit(spec)
    say(f"submitted job {job['job_id']} as analyst:demo")
    t0 = time.time()
    info = follow(client, job["job_id"], json_mode=args.format == "json")
    if info["state"] != "succeeded":
        raise RuntimeError(f"job {info['state']}: {info.get('reason', '')}")
    cents = client.result(job["job_id"])
    report = _report(args, spec, {**info, "job_id": job["job_id"]}, cents, pts, parts,
                     time.time() - t0, fleet.work)
    if args.format == "json":
        print(json.dumps({k: v for k, v in report.items() if k != "seeding"}, indent=2))
    else:
        _print_report({**report, "bandwidth": args.bandwidth}, say)
    if args.plot:
        from secure_meanshift.plot import plot_run  # matplotlib: only when a plot is asked for

        plot_run(args.plot, parts, cents, np.asarray(report["reference_centroids"]),
                 np.asarray(report["sklearn_centroids"]).reshape(-1, 2),
                 f"demo: {k} party nodes, {args.points} points each")
        say(f"wrote {args.plot}")
    ok = report["unmatched"] == 0 and report["max_abs_error"] < 1e-3 * 0.1
    if not ok:
        print("error: secure result differs from the plaintext twin", file=sys.stderr)
    return 0 if ok else 1


def run_demo(args) -> int:
    """`secure-meanshift demo`; exit code 0 when the secure centroids match the
    plaintext twin's, 1 otherwise or on failure, 2 for bad arguments."""
    k = args.parties
    if not 2 <= k <= len(PARTY_NAMES):
        print(f"error: --parties must be in [2, {len(PARTY_NAMES)}]", file=sys.stderr)
        return 2
    work = args.keep or tempfile.mkdtemp(prefix="sms-demo-")
    os.makedirs(work, exist_ok=True)
    say = (lambda *a: None) if args.format == "json" else (lambda *a: print(*a, flush=True))
    fleet = _Fleet(work)
    try:
        return _demo(args, fleet, PARTY_NAMES[:k], say)
    except Exception as exc:  # noqa: BLE001 - a demo must end with a message, not a traceback
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        fleet.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
