"""The coordinator's job state machine and scheduler as plain functions: no gRPC,
no store, no threads (coordinator.machine, coordinator.scheduler)."""

import hashlib
import os

from coordinator import authz, machine, scheduler
from coordinator.machine import Emit, Finish, JobRun, Persist, Phase, Refused, Send, Timing
from coordinator.scheduler import Waiting
from meanshift_proto.v1 import service_pb2 as pb

T = Timing(agreement_timeout=10, mpc_timeout=7, blame_grace=2, job_timeout=100,
           queue_timeout=50)


def job(parties=("alpha", "beta"), dealer="dd") -> JobRun:
    spec = pb.JobSpec(parties=[pb.PartyRef(id=p, dataset="points") for p in parties],
                      dealer=dealer, reveal_to=["analyst:ann"])
    return JobRun("j1", spec, "analyst:ann", queued_at=0.0)


def step(j: JobRun, s: machine.Step) -> machine.Step:
    machine.apply(j, s)
    return s


def kinds(s: machine.Step) -> list:
    return [type(e).__name__ for e in s.effects]


def accept(member: str, nonce: bytes = b"") -> pb.Accept:
    return pb.Accept(seed_commitment=hashlib.sha256(nonce).digest() if nonce else b"",
                     rendezvous_address="127.0.0.1", rendezvous_port=30000)


def running(j: JobRun) -> dict:
    nonces = {p: os.urandom(32) for p in j.parties}
    step(j, machine.dispatch(j, 0.0, T))
    for p in j.parties:
        step(j, machine.reply(j, p, "accept", accept(p, nonces[p]), 1.0, T))
    assert j.phase == Phase.REVEALING
    step(j, machine.reply(j, j.dealer, "accept", accept(j.dealer), 1.0, T))
    for p in j.parties[:-1]:
        step(j, machine.reply(j, p, "reveal", pb.SeedReveal(party=p, nonce=nonces[p]), 1.0, T))
    s = step(j, machine.reply(j, j.parties[-1], "reveal",
                              pb.SeedReveal(party=j.parties[-1], nonce=nonces[j.parties[-1]]),
                              2.0, T))
    return {"nonces": nonces, "step": s}


def test_public_states_and_terminal():
    assert [p.state for p in Phase] == ["queued", "agreeing", "agreeing", "running",
                                        "succeeded", "failed", "cancelled"]
    assert machine.TERMINAL_STATES == ("succeeded", "failed", "cancelled")


def test_dispatch_offers_every_member_and_sets_the_deadline():
    j = job()
    s = step(j, machine.dispatch(j, 100.0, T))
    assert j.phase == Phase.OFFERED and j.deadline == 110.0
    offers = [e for e in s.effects if isinstance(e, Send)]
    assert [e.member for e in offers] == ["alpha", "beta", "dealer:dd"]
    assert all(e.command.offer.job_id == "j1" for e in offers)
    assert s.effects[0] == Persist({"state": "agreeing"})
    assert isinstance(machine.dispatch(j, 0, T).effects[0], Refused)     # not twice


def test_agreement_to_running_sends_runs_in_rank_order():
    j = job()
    r = running(j)
    s = r["step"]
    assert j.phase == Phase.RUNNING and j.started == 2.0
    runs = [e for e in s.effects if isinstance(e, Send)]
    assert [(e.member, e.command.run.rank) for e in runs] == \
        [("alpha", 0), ("beta", 1), ("dealer:dd", 2)]
    assert all(e.command.run.timeout_s == 7 for e in runs)
    persist = next(e for e in s.effects if isinstance(e, Persist))
    assert persist.fields["state"] == "running" and persist.fields["seed"].startswith("0x")


def test_unexpected_messages_change_nothing():
    j = job()
    r = running(j)
    before = (j.phase, dict(j.reveals), dict(j.accepts))
    p = "alpha"
    for kind, msg in [("reveal", pb.SeedReveal(party=p, nonce=r["nonces"][p])),
                      ("accept", accept(p, r["nonces"][p])),
                      ("finished", pb.Finished(centroids=[pb.Centroid(values=[1.0])])),
                      ("bogus", None)]:
        s = machine.reply(j, p, kind, msg, 3.0, T)
        assert kinds(s) == ["Refused"], kind
        step(j, s)
    assert (j.phase, j.reveals, j.accepts) == before
    assert kinds(machine.reply(j, "dealer:dd", "progress", pb.Progress(), 3, T)) == ["Refused"]


def test_success_needs_every_member_and_keeps_the_shares():
    j = job()
    running(j)
    share = pb.SealedShare(recipient="analyst:ann", rank=0)
    step(j, machine.reply(j, "alpha", "finished", pb.Finished(iterations=4, shares=[share]), 5, T))
    step(j, machine.reply(j, "beta", "finished", pb.Finished(iterations=4, shares=[
        pb.SealedShare(recipient="analyst:ann", rank=1)]), 5, T))
    assert j.phase == Phase.RUNNING and j.iterations == 4
    s = step(j, machine.reply(j, "dealer:dd", "finished", pb.Finished(), 6, T))
    assert j.phase == Phase.SUCCEEDED and kinds(s) == ["Persist", "Finish"]
    res = pb.JobResult.FromString(s.effects[0].fields["result"])
    assert [x.rank for x in res.shares] == [0, 1]


def test_refusal_fails_the_job_naming_the_party():
    j = job()
    step(j, machine.dispatch(j, 0.0, T))
    s = step(j, machine.reply(j, "beta", "refuse", pb.Refuse(reason="policy: no"), 3, T))
    assert j.phase == Phase.FAILED and s.effects[0].reason == "party beta refused: policy: no"


def test_peer_loss_blames_the_silent_party_after_the_grace():
    j = job(("alpha", "beta", "gamma"))
    running(j)
    s = step(j, machine.reply(j, "alpha", "failed", pb.Failed(reason="reset", peer_lost=True),
                              10, T))
    assert j.blame_at == 12 and kinds(s) == ["Emit"]
    assert machine.tick(j, 11, T).phase == Phase.RUNNING
    s = step(j, machine.tick(j, 13, T))
    assert j.phase == Phase.FAILED
    assert s.effects[0].reason.startswith("party beta, gamma stopped answering")


def test_a_cut_link_names_the_pair_not_every_party():
    """beta and gamma cannot reach each other; alpha reaches both. Each worker
    names the ranks it waited for: the mutual pair is the broken link."""
    j = job(("alpha", "beta", "gamma"))
    running(j)
    lost = lambda *who: pb.Failed(reason="no answer within 30 s", peer_lost=True,  # noqa: E731
                                  lost_peers=[f"party:{w}" for w in who])
    s = step(j, machine.reply(j, "alpha", "failed", lost("beta"), 10, T))
    assert kinds(s) == ["Emit"] and j.phase == Phase.RUNNING
    step(j, machine.reply(j, "beta", "failed", lost("gamma"), 10.5, T))
    assert j.phase == Phase.RUNNING               # no pair yet: beta may be the silent one
    s = step(j, machine.reply(j, "gamma", "failed", lost("beta"), 10.6, T))
    assert j.phase == Phase.FAILED
    assert s.effects[-1].reason.startswith("the link between beta and gamma is broken")
    assert "alpha" not in s.effects[-1].reason


def test_a_silent_party_is_blamed_even_if_its_peers_name_it():
    j = job(("alpha", "beta", "gamma"))
    running(j)
    for who, t in (("alpha", 10), ("beta", 10.2)):
        step(j, machine.reply(j, who, "failed", pb.Failed(
            reason="no answer", peer_lost=True, lost_peers=["party:gamma"]), t, T))
    s = step(j, machine.tick(j, 13, T))
    assert j.phase == Phase.FAILED and s.effects[0].reason.startswith(
        "party gamma stopped answering")


def test_deadlines_agreement_job_and_queue():
    j = job()
    step(j, machine.dispatch(j, 0.0, T))
    s = machine.tick(j, 11, T)
    assert s.phase == Phase.FAILED and s.effects[0].reason == "party alpha did not answer " \
                                                              "within 10 s"
    j = job()
    running(j)
    assert machine.tick(j, 103, T).effects[0].reason.startswith("the job exceeded")
    j = job()
    assert machine.tick(j, 49, T).phase == Phase.QUEUED
    s = machine.tick(j, 51, T, waiting_for="beta")
    assert s.phase == Phase.FAILED and s.effects[0] == Finish(
        Phase.FAILED, "party beta is not connected: waited 50 s in the queue (coordinator "
        "--queue-timeout)", notify_nodes=False)


def test_cancel_and_node_loss_by_phase():
    j = job()
    assert machine.cancel(j, "analyst:ann").effects == [
        Finish(Phase.CANCELLED, "cancelled by analyst:ann", notify_nodes=False)]
    assert machine.node_lost(j, "alpha", "disconnected").phase == Phase.QUEUED   # waits
    step(j, machine.dispatch(j, 0, T))
    assert machine.cancel(j, "analyst:ann").effects[0].notify_nodes
    s = machine.node_lost(j, "dealer:dd", "disconnected")
    assert s.phase == Phase.FAILED and s.effects[0].reason == "dealer:dd disconnected"
    assert machine.node_lost(j, "gamma", "disconnected").phase == Phase.OFFERED


def test_progress_from_rank_zero_only():
    j = job()
    running(j)
    assert machine.reply(j, "beta", "progress", pb.Progress(iteration=3), 5, T).effects == []
    s = step(j, machine.reply(j, "alpha", "progress", pb.Progress(stage="iteration",
                                                                  iteration=3), 5, T))
    assert j.iterations == 3 and kinds(s) == ["Persist", "Emit"]
    assert isinstance(s.effects[1], Emit) and s.effects[1].extra["iteration"] == 3


def test_scheduler_is_first_come_first_served_without_starvation():
    big = Waiting("big", ("alpha", "beta", "dealer:dd"))
    small = [Waiting(f"s{i}", ("alpha", "dealer:dd")) for i in range(3)]
    everyone = {"alpha", "beta", "dealer:dd"}
    # beta busy: the big job reserves alpha and the dealer, the small ones wait behind it
    assert scheduler.pick([big] + small, {"alpha": 1, "beta": 0, "dealer:dd": 1}, everyone) == []
    assert scheduler.pick([big] + small, {"alpha": 1, "beta": 1, "dealer:dd": 1},
                          everyone) == ["big"]
    # two slots each: the big job and one small job
    assert scheduler.pick([big] + small, {"alpha": 2, "beta": 1, "dealer:dd": 2},
                          everyone) == ["big", "s0"]


def test_scheduler_skips_jobs_waiting_for_a_missing_node():
    gone = Waiting("g", ("alpha", "gamma", "dealer:dd"))
    other = Waiting("o", ("alpha", "beta", "dealer:dd"))
    up = {"alpha", "beta", "dealer:dd"}
    assert scheduler.pick([gone, other], {"alpha": 1, "beta": 1, "dealer:dd": 1}, up) == ["o"]
    assert scheduler.waiting_for(gone, up) == "gamma"


def test_authorisation_rules():
    row = {"submitter": "analyst:ann", "parties": '["alpha", "beta"]'}
    assert authz.may_read("analyst:ann", row) and authz.may_read("party:beta", row)
    assert authz.may_read("operator:olga", row)
    assert not authz.may_read("analyst:eve", row) and not authz.may_read("party:gamma", row)
    spec = pb.JobSpec(parties=[pb.PartyRef(id="alpha")], reveal_to=["alpha", "analyst:ann"])
    assert authz.may_receive("analyst:ann", spec) and authz.may_receive("party:alpha", spec)
    assert not authz.may_receive("operator:olga", spec)
    assert authz.may_submit("analyst:x", list(authz.SUBMIT_ROLES))
    assert not authz.may_submit("party:alpha", list(authz.SUBMIT_ROLES))
    assert authz.node_key("dealer:dd") == "dealer:dd" and authz.node_key("party:a") == "a"
    assert authz.node_key("analyst:ann") == ""
