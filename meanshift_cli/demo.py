"""`secure-meanshift demo`: a coordinator, three party nodes and a dealer as
separate processes on this machine, each node with its own synthetic data and
its own certificate (the dealer holds no data); one job, its progress, the revealed centroids next to the
plaintext twin and scikit-learn, a plot, and a clean shutdown."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import yaml

PARTY_NAMES = ["alpha", "beta", "gamma", "delta", "epsilon"]
DEALER = "demo-dealer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_node_config(path: str, party: str, coord: str, certs: str, data: str | None,
                      port_lo: int, results: str, advertise: str = "127.0.0.1",
                      extra: dict | None = None) -> None:
    """A party node's config, or a dealer's when data is None."""
    role = "party" if data is not None else "dealer"
    safe = f"{role}_{party}"
    cfg = {f"{role}_id": party, "coordinator": {"address": coord, "server_name": "localhost"},
           "tls": {"ca": os.path.join(certs, "ca.pem"),
                   "cert": os.path.join(certs, f"{safe}.pem"),
                   "key": os.path.join(certs, f"{safe}.key")},
           "rendezvous": {"advertise": advertise, "port_range": [port_lo, port_lo + 19]},
           "results_dir": results, "mpc_timeout_s": 30}
    if data is not None:
        cfg["datasets"] = {"demo": {"path": data}}
        # The demo's own dealer. Exact results: the demo runs on synthetic data and
        # checks the secure centroids against the plaintext twin, which a DP job's
        # noise would not match (a real node keeps the default: DP jobs only).
        cfg["policy"] = {"trusted_dealers": [DEALER], "allow_exact_results": True}
    cfg.update(extra or {})
    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh, sort_keys=False)


def aligned_rows(secure, twin, skl, h: float) -> list:
    """Rows of (secure, twin, sklearn) centroids, matched by distance (None = no match)."""
    from scipy.optimize import linear_sum_assignment

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


def run_demo(args) -> int:
    from coordinator.client import Client
    from secure_meanshift.centroid_match import match_error, sklearn_centres
    from secure_meanshift.data import split_even, synthetic_blobs
    from secure_meanshift.params import MeanShiftParams, resolve_seeding
    from secure_meanshift.plaintext import reference_meanshift

    from meanshift_rpc.tls import make_dev_pki

    k = args.parties
    if not 2 <= k <= len(PARTY_NAMES):
        print(f"error: --parties must be in [2, {len(PARTY_NAMES)}]", file=sys.stderr)
        return 2
    work = args.keep or tempfile.mkdtemp(prefix="sms-demo-")
    os.makedirs(work, exist_ok=True)
    names = PARTY_NAMES[:k]
    say = (lambda *a: None) if args.format == "json" else (lambda *a: print(*a, flush=True))
    procs: list = []
    logs = []
    try:
        certs = os.path.join(work, "certs")
        make_dev_pki(certs, ["coordinator", "analyst:demo", f"dealer:{DEALER}"]
                     + [f"party:{n}" for n in names])
        pts, _ = synthetic_blobs(args.points * k, 6, 2, 0.03, seed=7)
        parts = split_even(pts, k, seed=7)
        port = _free_port()
        coord = f"127.0.0.1:{port}"

        def start(name, cmd):
            log = open(os.path.join(work, f"{name}.log"), "w")
            logs.append(log)
            procs.append((name, subprocess.Popen([sys.executable, "-m", "meanshift_cli", *cmd],
                                                 stdout=log, stderr=subprocess.STDOUT)))

        start("coordinator", ["coordinator", "serve", "--listen", coord, "--db",
                              os.path.join(work, "coordinator.db"), "--tls-dir", certs])
        for i, n in enumerate(names):
            data = os.path.join(work, f"{n}.csv")
            np.savetxt(data, parts[i], delimiter=",", header="x,y", comments="")
            cfg = os.path.join(work, f"{n}.yaml")
            write_node_config(cfg, n, coord, certs, data, 29700 + 20 * i,
                              os.path.join(work, f"results-{n}"))
            start(f"node-{n}", ["node", "run", "--config", cfg])
        cfg = os.path.join(work, f"{DEALER}.yaml")
        write_node_config(cfg, DEALER, coord, certs, None, 29700 + 20 * k,
                          os.path.join(work, "results-dealer"))
        start("dealer", ["dealer", "run", "--config", cfg])
        say(f"demo folder: {work}")
        say(f"coordinator on {coord}; party nodes: {', '.join(names)} "
            f"({args.points} synthetic points each); dealer {DEALER} (no data)")
        client = Client(coord, tls_dir=certs, identity="analyst:demo", server_name="localhost")
        deadline = time.time() + 60
        while time.time() < deadline:
            dead = [n for n, p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead[0]} exited early (see {work}/{dead[0]}.log)")
            try:
                if sum(p["connected"] for p in client.parties()) == k + 1:
                    break
            except Exception:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError("the party and dealer nodes did not connect within 60 s")
        h, dust = args.bandwidth, args.dust
        spec = {"name": "demo", "parties": [{"id": n, "dataset": "demo"} for n in names],
                "bandwidth": h, "dust": dust, "kernel": args.kernel, "max_iter": 30,
                "bounds": {"lo": [0, 0], "hi": [1, 1]},
                "reveal_to": [names[0], "analyst:demo"], "summary": "exact",
                "dealer": DEALER}
        job = client.submit(spec)
        say(f"submitted job {job['job_id']} as analyst:demo")
        from .main import follow

        t0 = time.time()
        info = follow(client, job["job_id"], json_mode=args.format == "json")
        if info["state"] != "succeeded":
            raise RuntimeError(f"job {info['state']}: {info.get('reason', '')}")
        cents = client.result(job["job_id"])
        # the reference runs on all the data: only the demo, which made it, can do this
        from meanshift_rpc.jobspec import engine_params, parse

        params = MeanShiftParams(**engine_params(parse(yaml.safe_dump(spec)),
                                                 int(info["seed_hex"], 16)))
        ref = reference_meanshift(parts, params)
        skl = sklearn_centres(pts, h) if args.kernel == "flat" else None
        if skl is None:
            skl = np.zeros((0, 2))
        err, unmatched = match_error(cents, ref.centroids)
        report = {"job_id": job["job_id"], "seconds": time.time() - t0,
                  "iterations": info.get("iterations"), "centroids": cents.tolist(),
                  "reference_centroids": ref.centroids.tolist(),
                  "sklearn_centroids": skl.tolist(), "max_abs_error": err,
                  "unmatched": unmatched, "folder": work}
        if args.format == "json":
            print(json.dumps(report, indent=2))
        else:
            say(f"\njob {job['job_id']} succeeded in {report['seconds']:.1f} s, "
                f"{info.get('iterations')} iterations")
            say(f"  {'secure (revealed)':<22}{'plaintext twin':<22}"
                f"{'scikit-learn' if len(skl) else ''}")
            for row in aligned_rows(cents, ref.centroids, skl, h):
                say(("  " + "".join(f"{'' if c is None else f'({c[0]:.4f}, {c[1]:.4f})':<22}"
                                    for c in row)).rstrip())
            say(f"max |secure - twin| = {err:.1e} (bandwidth {h})")
            if len(skl) > len(cents):
                rule = resolve_seeding(params.seeding, len(pts), params.summary)
                say(f"(scikit-learn seeds from every point; this job's seeds "
                    f"({rule}) reached {len(cents)} of its {len(skl)} modes)")
        if args.plot:
            from secure_meanshift.plot import plot_run

            plot_run(args.plot, parts, cents, ref.centroids, skl,
                     f"demo: {k} party nodes, {args.points} points each")
            say(f"wrote {args.plot}")
        ok = unmatched == 0 and err < 1e-3 * 0.1
        if not ok:
            print("error: secure result differs from the plaintext twin", file=sys.stderr)
        return 0 if ok else 1
    except Exception as exc:  # noqa: BLE001 - a demo must end with a message, not a traceback
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for _, p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for _, p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
