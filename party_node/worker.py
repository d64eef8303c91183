"""One job's MPC worker: a fresh process per job (CrypTen and torch.distributed
are process-global). Reads its job on stdin as JSON, writes JSON lines on
stdout: progress events, then one result or one error. Never a data value:
errors are InputError/MPCError messages (rows and fields, no values).

A node may start its next worker ahead of time (SMS_WORKER_PREWARM=1): it
loads torch and CrypTen, then waits for its one job on stdin. Nothing else
happens before the job arrives (no CrypTen init, no connection), so each job
still gets a process of its own; an empty stdin means "not needed", exit 0."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time

import numpy as np


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL this worker when its node dies, so no orphaned MPC worker
    goes on computing (set here, not in a fork hook of the threaded node)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:
        pass
    if parent_pid and os.getppid() != parent_pid:      # the node died before we got here
        os._exit(1)


def main() -> int:
    _die_with_parent(int(os.environ.get("SMS_NODE_PID", "0") or 0))
    # The engine (torch, CrypTen: seconds) loads here, once the worker dies
    # with its node: ahead of the job for a spare worker, else with the job.
    if os.environ.get("SMS_WORKER_PREWARM") == "1":
        try:
            from secure_meanshift.mpc._compat import import_crypten
            from secure_meanshift import runtime  # noqa: F401

            import_crypten()
        except Exception:          # noqa: BLE001 - the job itself reports a real problem
            pass
    text = sys.stdin.read()
    if not text.strip():
        return 0                   # a spare worker the node no longer needs
    job = json.loads(text)
    from party_node.datasets import DatasetError, job_data
    from party_node.policy import PolicyRefusal, run_time_seeds_check
    from secure_meanshift.errors import InputError, MPCError, PeerLost
    from secure_meanshift.params import MeanShiftParams
    from secure_meanshift.runtime import MPCConfig, run_dealer, run_party

    try:
        cfg = MPCConfig(rank=job["rank"], world_size=job["world_size"],
                        peers=tuple(tuple(p) for p in job["peers"]),
                        security=tuple(job["security"]) if job.get("security") else None,
                        transport=job["transport"], provider="dealer",
                        context=job["context"], timeout_s=job["timeout_s"],
                        listen_host=job.get("listen_host"))
        if job.get("role") == "dealer":
            t0 = time.perf_counter()
            dealt = run_dealer(cfg)
            emit({"result": {"dealt": dealt, "wall_s": time.perf_counter() - t0}})
            return 0
        limits = run_time_seeds_check(int(job.get("max_seeds") or 0) or 10**9)

        def report(ev: dict) -> None:
            limits(ev)              # before the event leaves: a refusal stops the job here
            emit({"progress": ev})

        points = job_data(job, progress=report)
        kw = dict(job["params"])
        floor = float(kw.pop("min_bandwidth", 0.0) or 0.0)   # this party's policy
        params = MeanShiftParams(**kw)
        if params.estimates_bandwidth:                    # estimated under MPC first
            from secure_meanshift.bandwidth import run_party_auto

            if not isinstance(points, np.ndarray):       # the estimate needs the rows
                points = points.points()
            out, _ = run_party_auto(points, params, cfg, progress=report,
                                    name=f"data set {job['dataset']!r}", clip=True,
                                    min_bandwidth=floor)
        else:
            out = run_party(points, params, cfg, progress=report,     # scale standard:
                            name=f"data set {job['dataset']!r}", clip=True,  # the floor once
                            min_bandwidth=floor)                              # standardised
    except PolicyRefusal as exc:                   # the rule and its numbers, no data
        emit({"error": str(exc), "policy": True})
        return 2
    except (InputError, DatasetError) as exc:      # may name rows: kept in the local log
        emit({"error": str(exc), "input": True})
        return 2
    except MPCError as exc:
        # a peer left, or connecting / an exchange timed out (PeerLost): the
        # coordinator then looks for the party at fault
        emit({"error": str(exc), "peer_lost": isinstance(exc, PeerLost),
              "lost_peers": list(getattr(exc, "peers", ()))})
        return 2
    except Exception as exc:  # noqa: BLE001 - report the kind, never the payload
        emit({"error": f"worker failed: {type(exc).__name__}"})
        return 3
    if out.clipped:        # the node's own log only (never the coordinator, never a reason)
        emit({"local": f"{out.clipped} row(s) of data set {job['dataset']!r} lay outside "
                       "the job's bounds and were clipped into them"})
    emit({"result": {
        "centroids": None if out.centroids is None else out.centroids.tolist(),
        "sizes": None if out.sizes is None else out.sizes.tolist(),
        "iterations": out.iterations, "wall_s": out.wall_s,
        "share": out.share}})         # analyst receivers: sealed by the node, never logged
    return 0


if __name__ == "__main__":
    sys.exit(main())
