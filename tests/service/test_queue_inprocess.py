"""The queue with an in-process coordinator and hand-driven nodes (fast): a job
whose nodes are busy is queued with its position, starts when they are free,
is kept across a restart (and the one in flight fails with the documented
reason), and messages name no other job."""

import shutil
import sqlite3
import time

import grpc
import pytest

from hostile import Coord, FakeNode, wait_parties, spec
from meanshift_proto.v1 import service_pb2 as pb

pytestmark = pytest.mark.timeout(120)



def nodes_of(c: Coord) -> list:
    nodes = [FakeNode(c, "alpha"), FakeNode(c, "beta"), FakeNode(c, "dan", "dealer")]
    wait_parties(c, ["alpha", "beta", "dealer:dan"])
    return nodes


def run_to_end(nodes: list, jid: str) -> None:
    for n in nodes:
        n.next("offer")
        assert n.accept(jid).ok
    for n in nodes[:2]:
        n.next("reveal")
        assert n.reveal(jid).ok
    for n in nodes:
        n.next("run")
    for n in nodes:
        assert n.reply(jid, finished=pb.Finished(iterations=2)).ok


def test_queued_until_free_then_offered(tmp_path):
    c = Coord(str(tmp_path))
    nodes = nodes_of(c)
    ann = c.client()
    try:
        first = ann.submit(spec())
        second, third = ann.submit(spec()), ann.submit(spec())
        assert first["state"] == "agreeing"
        assert (second["state"], second["queue_position"]) == ("queued", 1)
        assert (third["state"], third["queue_position"]) == ("queued", 2)
        events = c.svc.store.events(second["job_id"])          # what watch replays
        assert [e["stage"] for e in events] == ["submitted", "queued"]
        assert first["job_id"] not in " ".join(e.get("message", "") for e in events)
        ops = c.client("operator:olga")
        alpha = next(p for p in ops.parties() if p["id"] == "alpha")
        assert alpha["busy_job"] == first["job_id"] and alpha["running_jobs"] == 1
        eve = c.client("analyst:eve")
        seen = next(p for p in eve.parties() if p["id"] == "alpha")
        assert seen["busy_job"] == "" and seen["running_jobs"] == 1, seen
        ops.close(), eve.close()
        assert ann.cancel(third["job_id"])["state"] == "cancelled"   # at once, never offered
        run_to_end(nodes, first["job_id"])
        assert ann.status(first["job_id"])["state"] == "succeeded"
        assert [n.next("offer").job_id for n in nodes] == [second["job_id"]] * 3
        assert ann.status(second["job_id"])["state"] == "agreeing"
        time.sleep(0.3)
        assert all(n.commands.empty() for n in nodes)      # the cancelled job: no offer
    finally:
        ann.close()
        for n in nodes:
            n.close()
        c.stop()


def test_restart_keeps_the_queue_and_fails_the_job_in_flight(tmp_path):
    """A crash: the database as it was with one job agreeing and one queued (a
    copy taken then), opened by a new coordinator."""
    c = Coord(str(tmp_path / "before"))
    nodes = nodes_of(c)
    ann = c.client()
    running = ann.submit(spec())["job_id"]
    queued = ann.submit(spec())["job_id"]
    ann.close()
    after = tmp_path / "after"
    shutil.copytree(c.certs, after / "certs")
    with sqlite3.connect(c.db) as src, sqlite3.connect(after / "coord.db") as dst:
        src.backup(dst)
    for n in nodes:
        n.close()
    c.stop()
    c = Coord(str(after))
    ann = c.client()
    nodes = []
    try:
        info = ann.status(running)
        assert info["state"] == "failed" and info["reason"].startswith(
            "coordinator restarted while the job was agreeing"), info
        assert (ann.status(queued)["state"], ann.status(queued)["queue_position"]) == \
            ("queued", 1)
        nodes = nodes_of(c)                         # its nodes come back: it starts
        offers = [n.next("offer") for n in nodes]
        assert [o.job_id for o in offers] == [queued] * 3
        assert all(o.signed_spec for o in offers)  # offered with its signed job
    finally:
        ann.close()
        for n in nodes:
            n.close()
        c.stop()


def test_per_submitter_limits_refuse_with_the_flag_named(tmp_path):
    from coordinator.server import Limits

    c = Coord(str(tmp_path), limits=Limits(max_queued=1, jobs_per_hour=3))
    nodes = nodes_of(c)
    ann = c.client()
    try:
        ann.submit(spec())
        ann.submit(spec())                          # queued: the one allowed
        with pytest.raises(grpc.RpcError) as exc:
            ann.submit(spec())
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-queued-per-submitter" in exc.value.details()
        c.svc.limits = Limits(max_queued=0, jobs_per_hour=2)
        with pytest.raises(grpc.RpcError) as exc:
            ann.submit(spec())
        assert "--max-jobs-per-hour" in exc.value.details()
        refused = [r for r in c.audit() if r[2] == "submit" and "RESOURCE_EXHAUSTED" in r[4]]
        assert len(refused) == 2
    finally:
        ann.close()
        for n in nodes:
            n.close()
        c.stop()
