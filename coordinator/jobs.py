"""The coordinator's job state machine, apart from the gRPC servicer: which
party's message is expected in which phase. A message that is not expected
(a replayed seed reveal, a Finished from a party that already finished, a
progress report from a rank other than 0, plain centroids, a share for someone
who is not an analyst receiver) has no effect; the servicer refuses and audits it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from meanshift_proto.v1 import service_pb2 as pb

# phases: offered -> revealing -> running -> (terminal: the store's state)
OFFERED, REVEALING, RUNNING, DONE = "offered", "revealing", "running", "done"


@dataclass
class JobRun:
    id: str
    spec: pb.JobSpec
    submitter: str
    state: str = "agreeing"
    deadline: float = 0.0
    accepts: dict = field(default_factory=dict)     # party -> Accept
    reveals: dict = field(default_factory=dict)     # party -> nonce
    finished: dict = field(default_factory=dict)    # party -> Finished
    watchers: list = field(default_factory=list)
    iterations: int = 0
    peer_lost: dict = field(default_factory=dict)   # party -> reason ("lost a peer")
    blame_at: float = 0.0                           # when to name the silent party
    phase: str = OFFERED
    started: float = field(default_factory=time.time)
    signed: Optional[tuple] = None                  # (payload, signature, cert) for offers

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


def unexpected(job: JobRun, party: str, kind: str, msg) -> str:
    """'' when this party's message of this kind may act on the job now, else why not."""
    if kind == "accept":
        if party in job.accepts:
            return "repeated acceptance"
        if job.phase != OFFERED and not (party == job.dealer and job.phase == REVEALING):
            return "acceptance outside the offer phase"
    elif party == job.dealer and kind not in ("refuse", "finished", "failed"):
        return f"a dealer sends no {kind}"
    elif kind == "refuse":
        if job.phase not in (OFFERED, REVEALING):
            return "refusal after the offer phase"
    elif kind == "reveal":
        if job.phase != REVEALING or party in job.reveals:
            return "seed reveal outside the reveal phase or repeated"
    elif kind == "progress":
        if job.phase != RUNNING:       # (other ranks' reports are dropped quietly)
            return "progress while not running"
    elif kind == "finished":
        if job.phase != RUNNING or party in job.finished:
            return "finished while not running, or repeated"
        if len(msg.centroids) or len(msg.sealed):
            return "plain or carried centroids (v1.1): each party sends its sealed share"
        analysts = {r for r in job.spec.reveal_to if r.startswith("analyst:")}
        if party == job.dealer and len(msg.shares):
            return "a dealer holds no share of the output"
        if any(s.recipient not in analysts or s.rank != job.parties.index(party)
               for s in msg.shares) or \
                len({s.recipient for s in msg.shares}) != len(msg.shares):
            return "a share for someone who is not an analyst receiver, or of another rank"
    elif kind == "failed":
        if job.phase == DONE:
            return "failure report after the end"
    else:
        return "unknown message"
    return ""
