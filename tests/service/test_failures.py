"""Faults: a party node dies mid-job, the coordinator restarts. Jobs fail with a
reason naming the party within a bounded time, and the cluster recovers."""

import re
import time

import pytest

from cluster import Cluster

pytestmark = pytest.mark.timeout(300)


def long_spec(c: Cluster) -> dict:
    return c.spec(max_iter=300, oblivious=True, dust=12)


def wait_running_iteration(cl, job_id: str, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    seen = []
    for ev in cl.watch(job_id, deadline_s=timeout):
        if ev.get("stage") == "iteration" and ev.get("iteration", 0) >= 1:
            return
        seen.append({k: ev.get(k) for k in ("state", "stage", "iteration", "reason")})
        if time.time() > deadline:
            break
    raise AssertionError(f"job never reached its first iteration: {cl.status(job_id)}, "
                         f"events {seen[-5:]}")


def test_node_killed_mid_job_fails_fast_and_cluster_recovers(tmp_path):
    c = Cluster(str(tmp_path), parties=3).start()
    try:
        cl = c.client()
        job = cl.submit(long_spec(c))
        wait_running_iteration(cl, job["job_id"])
        t_kill = time.time()
        c.kill("gamma", wait_gone=False)          # node and its worker, like a host crash
        info = cl.wait(job["job_id"], deadline_s=90)
        elapsed = time.time() - t_kill
        assert info["state"] == "failed"
        assert info["reason"].startswith("party gamma"), info["reason"]
        assert elapsed < 60, f"failure noticed after {elapsed:.0f} s"
        # the survivors take the next job straight away
        nxt = cl.wait(cl.submit(c.spec(["alpha", "beta"]))["job_id"], deadline_s=120)
        assert nxt["state"] == "succeeded", nxt
        # and the restarted node too
        c.start_node("gamma")
        c.wait_connected(["gamma"])
        assert cl.wait(cl.submit(c.spec())["job_id"], deadline_s=120)["state"] == "succeeded"
        cl.close()
    finally:
        c.stop()


def test_worker_network_break_names_a_party_within_60s(tmp_path):
    """The MPC link breaks but the node stays up: the collective timeout fires."""
    import os
    import signal

    import psutil

    c = Cluster(str(tmp_path), parties=2, mpc_timeout=10.0).start()
    try:
        cl = c.client()
        job = cl.submit(long_spec(c))
        wait_running_iteration(cl, job["job_id"])
        node = psutil.Process(c.procs["beta"].pid)
        workers = [p for p in node.children(recursive=True) if "party_node.worker" in
                   " ".join(p.cmdline())]
        assert workers
        t0 = time.time()
        for w in workers:
            os.kill(w.pid, signal.SIGSTOP)        # a frozen peer: its sockets stay open
        info = cl.wait(job["job_id"], deadline_s=90)
        for w in workers:
            try:
                os.kill(w.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert info["state"] == "failed"
        # alpha's worker times out; beta, whose worker froze, is the one named
        assert re.match(r"party beta stopped answering", info["reason"]), info["reason"]
        assert time.time() - t0 < 60
        assert cl.wait(cl.submit(c.spec())["job_id"], deadline_s=120)["state"] == "succeeded"
        cl.close()
    finally:
        c.stop()


def test_coordinator_restart_keeps_history_and_fails_inflight_jobs(tmp_path):
    c = Cluster(str(tmp_path), parties=2).start()
    try:
        cl = c.client()
        done = cl.wait(cl.submit(c.spec())["job_id"], deadline_s=120)
        assert done["state"] == "succeeded"
        running = cl.submit(long_spec(c))
        wait_running_iteration(cl, running["job_id"])
        cl.close()
        c.kill("coordinator")
        c.start_coordinator()
        c.wait_connected(c.names, timeout=15)       # nodes are back within 15 s by themselves
        cl = c.client()
        jobs = {j["job_id"]: j for j in cl.list()}
        assert jobs[done["job_id"]]["state"] == "succeeded"
        assert jobs[running["job_id"]]["state"] == "failed"
        assert "coordinator restarted" in jobs[running["job_id"]]["reason"]
        assert cl.result(done["job_id"]).shape[1] == 2          # results survive too
        time.sleep(2)     # the nodes' old workers are stopped when their stream ends
        assert cl.wait(cl.submit(c.spec())["job_id"], deadline_s=120)["state"] == "succeeded"
        cl.close()
    finally:
        c.stop()

