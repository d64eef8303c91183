"""The coordinator's job state machine, without gRPC: one phase per job, and every
transition a function of (job, event) that returns a ``Step`` (the new phase,
the job record's new values, the effects the servicer applies). Nothing here
sends, stores or logs; ``coordinator.server`` applies the effects in order.

    queued -> offered -> revealing -> running -> succeeded
       |         |            |           |
       +---------+------------+-----------+--> failed | cancelled

A job is ``queued`` until the scheduler (``coordinator.scheduler``) finds every
member (parties and dealer) free; ``offered`` and ``revealing`` are the public
state ``agreeing``. A message a phase does not expect (a replayed seed reveal, a
Finished from a party that already finished, plain centroids...) changes nothing:
the step carries a ``Refused`` effect and the servicer audits it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from meanshift_proto.v1 import service_pb2 as pb
from meanshift_rpc import joint_seed

MAX_REASON_CHARS = 500


class Phase(str, Enum):
    QUEUED = "queued"
    OFFERED = "offered"
    REVEALING = "revealing"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED)

    @property
    def state(self) -> str:
        """The public state (the store's column, JobInfo.state)."""
        return "agreeing" if self in (Phase.OFFERED, Phase.REVEALING) else self.value


TERMINAL_STATES = tuple(p.value for p in Phase if p.terminal)


@dataclass(frozen=True)
class Timing:
    """The coordinator's time limits (seconds), `coordinator serve` flags."""
    agreement_timeout: float = 30.0
    mpc_timeout: float = 30.0
    blame_grace: float = 5.0
    job_timeout: float = 6 * 3600.0
    queue_timeout: float = 3000.0


@dataclass
class JobRun:
    """What the coordinator holds for a job that has not ended. Only ``apply``
    changes it (from a Step)."""
    id: str
    spec: pb.JobSpec
    submitter: str
    phase: Phase = Phase.QUEUED
    queued_at: float = field(default_factory=time.time)
    deadline: float = 0.0                           # agreement deadline
    started: float = 0.0
    accepts: dict = field(default_factory=dict)     # member -> Accept
    reveals: dict = field(default_factory=dict)     # party -> nonce
    finished: dict = field(default_factory=dict)    # member -> Finished
    peer_lost: dict = field(default_factory=dict)   # party -> reason ("lost a peer")
    lost_from: dict = field(default_factory=dict)   # party -> the members it lost
    blame_at: float = 0.0                           # when to name the silent party
    iterations: int = 0
    signed: Optional[tuple] = None                  # (payload, signature, cert) for offers
    watchers: list = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.phase.state

    @property
    def parties(self) -> list:
        return [p.id for p in self.spec.parties]

    @property
    def dealer(self) -> str:
        """The dealer's node key ("dealer:<name>"): a member of the job, not a party."""
        return f"dealer:{self.spec.dealer}"

    @property
    def members(self) -> list:
        """Every node that takes part: the parties in rank order, then the dealer."""
        return self.parties + [self.dealer]


# ---- effects ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    """A command to one member node."""
    member: str
    command: pb.NodeCommand


@dataclass(frozen=True)
class Emit:
    """An event for the job's history and its watchers."""
    stage: str
    message: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Persist:
    """Columns of the job's row to update."""
    fields: dict


@dataclass(frozen=True)
class Finish:
    """End the job: store the state and reason, free its members, tell the nodes
    (a cancel) unless it succeeded or they never heard of it, close the watchers."""
    phase: Phase
    reason: str = ""
    notify_nodes: bool = True


@dataclass(frozen=True)
class Refused:
    """The message was not expected now: no effect but an audit row."""
    why: str


@dataclass
class Step:
    phase: Phase
    effects: list = field(default_factory=list)
    updates: dict = field(default_factory=dict)


def apply(job: JobRun, step: Step) -> None:
    """The step's new phase and values on the job record (the servicer's first act)."""
    job.phase = step.phase
    for k, v in step.updates.items():
        setattr(job, k, v)


def label(member: str) -> str:
    """A member key as messages name it: "party alpha" or "dealer:dd"."""
    return member if member.startswith("dealer:") else f"party {member}"


def _fail(job: JobRun, reason: str, notify: bool = True) -> Step:
    return Step(Phase.FAILED, [Finish(Phase.FAILED, reason[:MAX_REASON_CHARS], notify)])


# ---- transitions ------------------------------------------------------------------------
def dispatch(job: JobRun, now: float, timing: Timing) -> Step:
    """queued -> offered: every member gets the offer (the scheduler found them free)."""
    if job.phase != Phase.QUEUED:
        return Step(job.phase, [Refused("not queued")])
    sends = []
    for m in job.members:
        offer = pb.Offer(job_id=job.id, spec=job.spec, submitter=job.submitter)
        if job.signed:
            offer.signed_spec, offer.signature, offer.signer_cert = job.signed
        sends.append(Send(m, pb.NodeCommand(offer=offer)))
    return Step(Phase.OFFERED,
                [Persist({"state": "agreeing"}), *sends,
                 Emit("offered", "parties and dealer free: offered to them")],
                {"deadline": now + timing.agreement_timeout, "accepts": {}, "reveals": {}})


def cancel(job: JobRun, who: str) -> Step:
    """Any phase but the end -> cancelled; a queued job's nodes never heard of it."""
    if job.phase.terminal:
        return Step(job.phase, [Refused(f"job is {job.state}")])
    return Step(Phase.CANCELLED, [Finish(Phase.CANCELLED, f"cancelled by {who}",
                                         notify_nodes=job.phase != Phase.QUEUED)])


def coordinator_stopped(job: JobRun) -> Step:
    """A graceful stop of the coordinator: a job in flight fails as such (not blamed
    on the first party whose stream then closes) and its nodes are told; a queued
    job stays queued (it lives in the store and resumes after the restart)."""
    if job.phase.terminal or job.phase == Phase.QUEUED:
        return Step(job.phase)
    return _fail(job, f"the coordinator stopped while the job was {job.state} "
                 "(not a party's fault)")


def node_lost(job: JobRun, member: str, why: str) -> Step:
    """A member's connection ended: a queued job waits for it, any other fails."""
    if job.phase.terminal or job.phase == Phase.QUEUED or member not in job.members:
        return Step(job.phase)
    return _fail(job, f"{label(member)} {why}")


def tick(job: JobRun, now: float, timing: Timing, waiting_for: Optional[str] = None) -> Step:
    """The watchdog's second: deadlines of the agreement, the run, the blame and
    the queue. ``waiting_for``: a member the queued job waits for (not connected)."""
    if job.phase == Phase.QUEUED and now - job.queued_at > timing.queue_timeout:
        why = f"{label(waiting_for)} is not connected" if waiting_for else \
            "its parties or dealer stayed busy"
        return _fail(job, f"{why}: waited {timing.queue_timeout:.0f} s in the queue "
                     "(coordinator --queue-timeout)", notify=False)
    if job.phase == Phase.RUNNING:
        if job.blame_at and now > job.blame_at:
            return blame(job)
        if now - job.started > timing.job_timeout:
            return _fail(job, "the job exceeded the wall-clock limit of "
                         f"{timing.job_timeout:.0f} s")
    if job.phase in (Phase.OFFERED, Phase.REVEALING) and now > job.deadline:
        silent = [p for p in job.members if p not in job.accepts] or \
                 [p for p in job.parties if p not in job.reveals]
        return _fail(job, f"{label(silent[0]) if silent else '?'} did not answer within "
                     f"{timing.agreement_timeout:.0f} s")
    return Step(job.phase)


def reply(job: JobRun, member: str, kind: str, msg, now: float, timing: Timing) -> Step:
    """A node's reply (accept, refuse, reveal, progress, finished, failed)."""
    why = unexpected(job, member, kind, msg) if kind else "empty"
    if why:
        return Step(job.phase, [Refused(why)])
    return _ON[kind](job, member, msg, now, timing)


def unexpected(job: JobRun, party: str, kind: str, msg) -> str:
    """'' when this member's message of this kind may act on the job now, else why not."""
    ph = job.phase
    if ph.terminal:
        return f"job is {job.state}"
    if kind == "accept":
        if party in job.accepts:
            return "repeated acceptance"
        if ph != Phase.OFFERED and not (party == job.dealer and ph == Phase.REVEALING):
            return "acceptance outside the offer phase"
    elif party == job.dealer and kind not in ("refuse", "finished", "failed"):
        return f"a dealer sends no {kind}"
    elif kind == "refuse":
        if ph not in (Phase.OFFERED, Phase.REVEALING):
            return "refusal after the offer phase"
    elif kind == "reveal":
        if ph != Phase.REVEALING or party in job.reveals:
            return "seed reveal outside the reveal phase or repeated"
    elif kind == "progress":
        if ph != Phase.RUNNING:       # (other ranks' reports are dropped quietly)
            return "progress while not running"
    elif kind == "finished":
        return _unexpected_finished(job, party, msg)
    elif kind == "failed":
        if ph == Phase.QUEUED:
            return "failure report for a job not offered yet"
    else:
        return "unknown message"
    return ""


def _unexpected_finished(job: JobRun, party: str, msg) -> str:
    if job.phase != Phase.RUNNING or party in job.finished:
        return "finished while not running, or repeated"
    if len(msg.centroids) or len(msg.sealed):
        return "plain or carried centroids (v1.1): each party sends its sealed share"
    analysts = {r for r in job.spec.reveal_to if r.startswith("analyst:")}
    if party == job.dealer and len(msg.shares):
        return "a dealer holds no share of the output"
    if any(s.recipient not in analysts or s.rank != job.parties.index(party)
           for s in msg.shares) or len({s.recipient for s in msg.shares}) != len(msg.shares):
        return "a share for someone who is not an analyst receiver, or of another rank"
    return ""


def _on_refuse(job, member, msg, now, timing) -> Step:
    return _fail(job, f"{label(member)} refused: {msg.reason[:MAX_REASON_CHARS]}")


def _on_accept(job, member, msg, now, timing) -> Step:
    is_dealer = member == job.dealer
    if len(msg.seed_commitment) != (0 if is_dealer else 32) or \
            not msg.rendezvous_address or not 0 < msg.rendezvous_port < 65536:
        return _fail(job, f"{label(member)} sent an invalid acceptance")
    accepts = {**job.accepts, member: msg}
    step = Step(job.phase, [Emit("agreement", f"{member} accepted")], {"accepts": accepts})
    if is_dealer:
        return _maybe_run(job, step, accepts, job.reveals, now, timing)
    if all(p in accepts for p in job.parties):
        commits = commitments(job.parties, accepts)
        step.phase = Phase.REVEALING
        step.effects += [Send(p, pb.NodeCommand(reveal=pb.RevealRequest(
            job_id=job.id, commits=commits))) for p in job.parties]
    return step


def commitments(parties: list, accepts: dict) -> list:
    """Every party's commitment with its own signed announcement, unchanged."""
    return [pb.SeedCommit(party=p, commitment=accepts[p].seed_commitment,
                          announcement=accepts[p].announcement,
                          signature=accepts[p].signature, cert=accepts[p].cert)
            for p in parties]


def _on_reveal(job, member, msg, now, timing) -> Step:
    commit = job.accepts.get(member)
    if commit is None or hashlib.sha256(msg.nonce).digest() != commit.seed_commitment:
        return _fail(job, f"party {member}'s seed reveal does not match its commitment")
    reveals = {**job.reveals, member: msg.nonce}
    return _maybe_run(job, Step(job.phase, [], {"reveals": reveals}), job.accepts, reveals, now,
                      timing)


def _maybe_run(job: JobRun, step: Step, accepts: dict, reveals: dict, now: float,
               timing: Timing) -> Step:
    """-> running once every party revealed and the dealer accepted: the Run commands."""
    if len(reveals) < len(job.parties) or job.dealer not in accepts:
        return step
    seed = joint_seed([reveals[p] for p in job.parties])
    commits = commitments(job.parties, accepts)
    d = accepts[job.dealer]
    dealer = pb.SeedCommit(party=job.dealer, announcement=d.announcement,
                           signature=d.signature, cert=d.cert)
    nonces = [pb.SeedReveal(party=p, nonce=reveals[p]) for p in job.parties]
    peers = [pb.MpcPeer(identity=m if m == job.dealer else f"party:{m}",
                        host=accepts[m].rendezvous_address, port=accepts[m].rendezvous_port)
             for m in job.members]
    step.phase = Phase.RUNNING
    step.updates["started"] = now
    step.effects += [Persist({"state": "running", "seed": f"0x{seed:032x}"})]
    step.effects += [Send(m, pb.NodeCommand(run=pb.Run(
        job_id=job.id, rank=rank, world_size=len(job.parties), peers=peers, commits=commits,
        reveals=nonces, dealer=dealer, timeout_s=timing.mpc_timeout))) for rank, m in enumerate(job.members)]
    step.effects.append(Emit("running", "seed agreed; workers starting"))
    return step


def _on_progress(job, member, msg, now, timing) -> Step:
    if member != job.parties[0]:
        return Step(job.phase)          # rank 0 speaks for the job; all ranks see the same
    local = {"rows": msg.rows, "cells": msg.cells} if msg.stage == "local" else {}
    step = Step(job.phase, [Emit(msg.stage, "", {
        "iteration": msg.iteration, "max_iter": msg.max_iter, "moving": msg.moving,
        "seconds": msg.seconds, **local})])
    if msg.iteration > job.iterations:
        step.updates["iterations"] = msg.iteration
        step.effects.insert(0, Persist({"iterations": msg.iteration}))   # `job status`
    return step


def _on_finished(job, member, msg, now, timing) -> Step:
    """Succeeded once every party and the dealer finished: then every worker of the
    job has exited. Analyst receivers' result: every party's sealed, signed share,
    relayed with the signed job (ciphertext this server cannot open)."""
    finished = {**job.finished, member: msg}
    iterations = job.iterations if member == job.dealer else max(job.iterations, msg.iterations)
    step = Step(job.phase, [], {"finished": finished, "iterations": iterations})
    if len(finished) != len(job.members):
        return step
    shares = [s for p in job.parties for s in finished[p].shares]
    if shares:
        result = pb.JobResult(job_id=job.id, iterations=iterations, shares=shares)
        if job.signed:
            result.signed_spec, result.signature, result.signer_cert = job.signed
        step.effects.append(Persist({"result": result.SerializeToString()}))
    step.phase = Phase.SUCCEEDED
    step.effects.append(Finish(Phase.SUCCEEDED))
    return step


def _on_failed(job, member, msg, now, timing) -> Step:
    if member == job.dealer:
        if msg.peer_lost:
            return Step(job.phase)   # a party is at fault; the parties' reports will name it
        return _fail(job, f"{member}: {msg.reason}")
    if not msg.peer_lost:
        return _fail(job, f"party {member}: {msg.reason[:MAX_REASON_CHARS]}")
    if job.phase != Phase.RUNNING:
        return _fail(job, f"party {member}: lost a peer before the run")
    # This party's worker lost contact with a peer: the party at fault is the one
    # whose node drops (node_lost) or that stays silent while the others report.
    lost = {**job.peer_lost, member: msg.reason}
    lost_from = {**job.lost_from, member: _members(job, msg.lost_peers)}
    step = Step(job.phase, [], {"peer_lost": lost, "lost_from": lost_from})
    if not job.blame_at:
        step.updates["blame_at"] = now + timing.blame_grace
        step.effects.append(Emit("fault", f"{member}'s worker lost contact with a peer; "
                                 "identifying the party at fault"))
    if len(lost) == len(job.parties) or _cut_links(lost_from):
        return _merge(step, blame(job, lost, lost_from))
    return step


def _members(job: JobRun, identities) -> tuple:
    """MPC identities ("party:beta", the dealer's name) -> the job's member names."""
    names = set(job.parties) | {job.dealer}
    out = [i.split(":", 1)[1] if i.startswith("party:") else i for i in identities]
    return tuple(m for m in out if m in names)


def _cut_links(lost_from: dict) -> list:
    """Pairs of members each of whose workers lost the other: a broken link
    between them (a party gone silent is named by the others, and names no one)."""
    return sorted({tuple(sorted((a, b))) for a, peers in lost_from.items() for b in peers
                   if a in lost_from.get(b, ())})


def _merge(first: Step, then: Step) -> Step:
    return Step(then.phase, first.effects + then.effects, {**first.updates, **then.updates})


def blame(job: JobRun, peer_lost: Optional[dict] = None,
          lost_from: Optional[dict] = None) -> Step:
    """Fail a job after MPC peer-loss reports, naming the party at fault, or the
    pair of parties that cannot reach each other."""
    lost = job.peer_lost if peer_lost is None else peer_lost
    cut = _cut_links(job.lost_from if lost_from is None else lost_from)
    reporters = [p for p in job.parties if p in lost]
    silent = [p for p in job.parties if p not in lost and p not in job.finished]
    if cut:
        pairs = "; ".join(f"{a} and {b}" for a, b in cut)
        reason = (f"the link between {pairs} is broken: each one's worker lost contact "
                  "with the other (" + "; ".join(f"party {p}: {lost[p]}" for p in reporters
                                                 if any(p in c for c in cut)) + ")")
    elif silent:
        reason = (f"party {', '.join(silent)} stopped answering: the workers of "
                  f"{', '.join(reporters)} lost contact with it ({lost[reporters[0]]})")
    else:
        reason = ("the parties' workers lost contact with each other (network between "
                  "the parties broken?): " +
                  "; ".join(f"party {p}: {lost[p]}" for p in reporters))
    return _fail(job, reason)


_ON = {"accept": _on_accept, "refuse": _on_refuse, "reveal": _on_reveal,
       "progress": _on_progress, "finished": _on_finished, "failed": _on_failed}
