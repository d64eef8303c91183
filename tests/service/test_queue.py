"""The job queue through a real local federation (issue 22): jobs whose parties
or dealer are busy wait (state `queued`, a position), start when all are free,
survive a coordinator restart, wait for a stopped party or fail after the queue
timeout naming it; per-submitter limits; nodes running two jobs at once."""

import json
import re
import sqlite3
import time

import grpc
import pytest

from cluster import Cluster

pytestmark = pytest.mark.timeout(300)
JOB_ID = re.compile(r"\b[0-9a-f]{24}\b")


def small(c: Cluster, parties=None, **kw) -> dict:
    return c.spec(parties or c.names[:2], max_iter=8, dust=4, **kw)


def long_spec(c: Cluster, parties=None) -> dict:
    return c.spec(parties or c.names[:2], max_iter=300, oblivious=True, dust=12)


def wait_state(cl, job_id: str, states: tuple, timeout: float = 90.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = cl.status(job_id)
        if info["state"] in states:
            return info
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} never reached {states}: {info}")


def others_named(text: str, mine: str) -> set:
    """Job ids in a message other than the job's own."""
    return set(JOB_ID.findall(text)) - {mine}


def events(c: Cluster, job_id: str) -> list:
    with sqlite3.connect(c.db) as db:
        return [json.loads(b) for (b,) in db.execute(
            "SELECT body FROM events WHERE job_id=? ORDER BY rowid", (job_id,))]


@pytest.mark.slow
def test_twelve_jobs_at_once_all_succeed_in_order(tmp_path):
    """One analyst, 12 jobs at once, one job at a time per node: every job queues,
    shows its position, and succeeds; nothing names another job (~2 min here)."""
    c = Cluster(str(tmp_path), parties=2).start()
    try:
        cl = c.client()
        jobs = [cl.submit(small(c)) for _ in range(12)]
        assert jobs[0]["state"] == "agreeing"
        assert [j["state"] for j in jobs[1:]] == ["queued"] * 11
        assert [j.get("queue_position") for j in jobs[1:]] == list(range(1, 12))
        listed = {j["job_id"]: j for j in cl.list(50)}
        assert listed[jobs[-1]["job_id"]]["state"] in ("queued", "agreeing", "running")
        done = [cl.wait(j["job_id"], deadline_s=240) for j in jobs]
        assert [d["state"] for d in done] == ["succeeded"] * 12, [d.get("reason") for d in done]
        for j in jobs:
            for ev in events(c, j["job_id"]):
                assert not others_named(ev.get("message", ""), j["job_id"]), ev
        # first come, first served: each job started after the one submitted before it
        starts = [next(e["time"] for e in events(c, j["job_id"]) if e["stage"] == "offered")
                  for j in jobs]
        assert starts == sorted(starts)
        cl.close()
    finally:
        c.stop()


@pytest.mark.slow
def test_cancel_of_a_queued_job_is_immediate_and_limits_refuse_clearly(tmp_path):
    """(test_queue_inprocess.py checks the same in the default run, in seconds)"""
    c = Cluster(str(tmp_path), parties=2,
                coordinator_args=["--max-queued-per-submitter", "2"]).start()
    try:
        cl = c.client()
        first = cl.submit(long_spec(c))
        q1, q2 = cl.submit(small(c)), cl.submit(small(c))
        assert (q1["state"], q2["state"]) == ("queued", "queued")
        with pytest.raises(grpc.RpcError) as exc:
            cl.submit(small(c))
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-queued-per-submitter" in exc.value.details()
        assert not others_named(exc.value.details(), "")
        t0 = time.time()
        gone = cl.cancel(q1["job_id"])
        assert gone["state"] == "cancelled" and time.time() - t0 < 2
        assert cl.status(q2["job_id"])["queue_position"] == 1
        cl.cancel(first["job_id"])
        assert cl.wait(q2["job_id"], deadline_s=120)["state"] == "succeeded"
        cl.close()
    finally:
        c.stop()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_coordinator_killed_with_jobs_queued_and_one_running(tmp_path):
    """SIGKILL with 20 jobs queued and one running (issue 22): the running job fails
    with the documented reason, the 20 run to success after the restart, none twice."""
    c = Cluster(str(tmp_path), parties=2).start()
    try:
        cl = c.client()
        running = cl.submit(long_spec(c))
        queued = [cl.submit(small(c)) for _ in range(20)]
        wait_state(cl, running["job_id"], ("running",))
        assert all(cl.status(q["job_id"])["state"] == "queued" for q in queued)
        cl.close()
        c.kill("coordinator")
        c.start_coordinator()
        c.wait_listening()
        cl = c.client()
        info = cl.status(running["job_id"])
        assert info["state"] == "failed"
        assert info["reason"].startswith("coordinator restarted while the job was running")
        done = [cl.wait(q["job_id"], deadline_s=600) for q in queued]
        assert [d["state"] for d in done] == ["succeeded"] * 20, [d.get("reason") for d in done]
        for q in queued:      # each offered and run once
            stages = [e["stage"] for e in events(c, q["job_id"])]
            assert stages.count("offered") == 1 and stages.count("running") == 1, stages
        log = open(tmp_path / "alpha.log").read()
        for q in queued:
            assert log.count(f"accepting job {q['job_id']}") == 1
        cl.close()
    finally:
        c.stop()


@pytest.mark.slow
def test_a_stopped_party_keeps_its_jobs_waiting_then_fails_them_the_others_run(tmp_path):
    c = Cluster(str(tmp_path), parties=3, coordinator_args=["--queue-timeout", "25"]).start()
    try:
        cl = c.client()
        busy = cl.submit(long_spec(c, ["alpha", "beta"]))
        wait_state(cl, busy["job_id"], ("running",))
        waits = cl.submit(small(c, ["alpha", "gamma"]))       # alpha busy: queued
        other = cl.submit(small(c, ["alpha", "beta"]))        # behind it
        c.kill("gamma")                                       # stopped while waiting
        cl.cancel(busy["job_id"])
        assert cl.wait(other["job_id"], deadline_s=120)["state"] == "succeeded"
        assert cl.status(waits["job_id"])["state"] == "queued"
        info = cl.wait(waits["job_id"], deadline_s=120)
        assert info["state"] == "failed"
        assert info["reason"].startswith("party gamma is not connected: waited 25 s"), info
        cl.close()
    finally:
        c.stop()


@pytest.mark.slow
def test_two_jobs_at_once_per_node(tmp_path):
    """max_concurrent_jobs 2: two jobs run side by side, each its own worker and port."""
    c = Cluster(str(tmp_path), parties=2, max_concurrent_jobs=2).start()
    try:
        cl = c.client()
        a, b = cl.submit(long_spec(c)), cl.submit(long_spec(c))
        wait_state(cl, a["job_id"], ("running",))
        wait_state(cl, b["job_id"], ("running",))
        third = cl.submit(small(c))
        assert third["state"] == "queued"
        ops = c.client("operator:olga")
        alpha = next(p for p in ops.parties() if p["id"] == "alpha")
        assert alpha["max_concurrent_jobs"] == 2 and alpha["running_jobs"] == 2
        ops.close()
        cl.cancel(a["job_id"])
        assert cl.wait(third["job_id"], deadline_s=120)["state"] == "succeeded"
        cl.cancel(b["job_id"])
        cl.close()
    finally:
        c.stop()
