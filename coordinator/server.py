"""The coordinator's gRPC service: parties, agreement (offer, seed commit,
seed reveal), run, progress, results, cancel, failure handling."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import queue
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Optional

import grpc
from google.protobuf import text_format

from meanshift_proto.v1 import service_pb2 as pb
from meanshift_proto.v1 import service_pb2_grpc as pb_grpc
from meanshift_rpc import jobspec, joint_seed, signing
from meanshift_rpc.tls import (ANONYMOUS, SERVER_OPTIONS, Revocations, TLSFiles, check_key_file,
                               peer_cert_info, peer_identity, refusal, role_of,
                               serial_hex, server_credentials)

from .jobs import DONE, REVEALING, RUNNING, JobRun, unexpected
from .store import AUDIT_MAX_ROWS, TERMINAL, Store

log = logging.getLogger("coordinator")
WELCOME_KEY = "sms-welcome"     # Subscribe's initial metadata: the node is registered


@dataclass
class NodeConn:
    party: str
    commands: "queue.Queue[Optional[pb.NodeCommand]]" = field(default_factory=queue.Queue)
    datasets: list = field(default_factory=list)
    dataset_status: list = field(default_factory=list)     # [pb.DatasetStatus]
    last_seen: float = field(default_factory=time.time)
    connected: bool = True
    busy_job: str = ""
    peer: str = ""                  # where its command stream comes from (logs, duplicates)


# one identity replacing its own connection more than DUPLICATE_KICKS times within
# DUPLICATE_WINDOW_S is two nodes sharing a certificate: newer streams are then refused
# (ALREADY_EXISTS, naming both addresses) for DUPLICATE_HOLD_S while the first is connected
DUPLICATE_KICKS, DUPLICATE_WINDOW_S, DUPLICATE_HOLD_S = 3, 10.0, 60.0
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_REASON_CHARS = 500
SUBMIT_ROLES = ("analyst", "operator")      # who may submit unless --submitter says otherwise


class CoordinatorService(pb_grpc.CoordinatorServicer):
    def __init__(self, store: Store, insecure: bool = False, record_path: Optional[str] = None,
                 heartbeat_timeout: float = 15.0, agreement_timeout: float = 30.0,
                 mpc_timeout: float = 30.0, blame_grace: float = 5.0,
                 job_timeout: float = 6 * 3600.0, ca_pem: Optional[bytes] = None,
                 revoked: Optional[Revocations] = None, submitters: Optional[list] = None,
                 max_streams_per_identity: int = 16, max_streams: int = 400):
        self.store, self.insecure = store, insecure
        self.ca_pem, self.revoked = ca_pem, revoked
        self.job_timeout = job_timeout
        # coordinator policy: roles ("analyst") and/or identities ("analyst:alice") that
        # may submit; parties never by default
        self.submitters = list(submitters) if submitters else list(SUBMIT_ROLES)
        self.max_streams_per_identity, self.max_streams = max_streams_per_identity, max_streams
        self._streams: dict = {}
        self.heartbeat_timeout, self.agreement_timeout = heartbeat_timeout, agreement_timeout
        self.mpc_timeout, self.blame_grace = mpc_timeout, blame_grace
        self._lock = threading.RLock()
        self.nodes: dict[str, NodeConn] = {}
        self.jobs: dict[str, JobRun] = {}
        self._kicks: dict = {}          # node key -> times it replaced its own connection
        self._dup_until: dict = {}      # node key -> refuse second connections until then
        self._record = _open_private(record_path) if record_path else None
        for jid in store.recover():
            log.warning("job %s was in flight at the last stop: marked failed", jid)
        self._stop = threading.Event()
        threading.Thread(target=self._watchdog, daemon=True).start()

    # ---- helpers ---------------------------------------------------------------------
    def _who(self, context) -> str:
        return peer_identity(context, self.insecure, self.revoked)

    def _known(self, context, action: str, job_id: str = "") -> str:
        """The caller, who must hold a valid role certificate (else PERMISSION_DENIED)."""
        who = self._who(context)
        if who == ANONYMOUS:
            why = refusal(context, self.insecure, self.revoked)
            self.store.audit(who, action, _safe_id(job_id), f"PERMISSION_DENIED ({why})")
            context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
        return who

    def _may_read(self, who: str, row: dict) -> bool:
        """Job reads: its submitter, its parties, the operator (and the coordinator)."""
        import json

        return who in (row["submitter"], "coordinator") or role_of(who) == "operator" or (
            role_of(who) == "party" and who[6:] in json.loads(row["parties"]))

    def _row_for_read(self, context, action: str, job_id: str) -> tuple:
        who = self._known(context, action, job_id)
        if not signing.valid_job_id(job_id) and not _legacy_id(job_id):
            self.store.audit(who, action, _safe_id(job_id), "INVALID_ARGUMENT")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job_id: not a job id")
        row = self.store.get(job_id)
        if not row:
            self.store.audit(who, action, job_id, "NOT_FOUND")
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job {job_id!r}")
        if not self._may_read(who, row):
            self.store.audit(who, action, job_id, "PERMISSION_DENIED")
            log.warning("denied %s of job %s to %s", action, job_id, who)
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{who} may not read job {job_id} (only its submitter, its parties "
                          "and the operator)")
        return who, row

    def _stream_slot(self, who: str, context) -> None:
        with self._lock:
            total = sum(self._streams.values())
            mine = self._streams.get(who, 0)
            if mine >= self.max_streams_per_identity or total >= self.max_streams:
                self.store.audit(who, "watch", "", "RESOURCE_EXHAUSTED")
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"too many open streams ({'for ' + who if mine else 'in total'})")
            self._streams[who] = mine + 1

    def _stream_done(self, who: str) -> None:
        with self._lock:
            self._streams[who] = max(0, self._streams.get(who, 1) - 1)

    def _recv(self, who: str, msg) -> None:
        """Keep a transcript of everything received (tests inspect it)."""
        if self._record:
            self._record.write(f"## {who} {type(msg).__name__}\n"
                               f"{text_format.MessageToString(msg)}\n")
            self._record.flush()

    def _party_of(self, context) -> str:
        """The calling node's key: a party's id, or "dealer:<name>" for a dealer."""
        who = self._who(context)
        if role_of(who) == "dealer":
            return who
        if who == ANONYMOUS:                 # revoked, or role and name disagree: say which
            why = refusal(context, self.insecure, self.revoked)
            log.warning("rejected a node call from %s: %s", context.peer(), why)
            self._drop_revoked(context, why)
            self.store.audit(who, "node-rpc", "", f"PERMISSION_DENIED ({why})")
            context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
        if role_of(who) != "party":
            log.warning("rejected a node call from %s: identity %s is not a party or a "
                        "dealer (wrong role)", context.peer(), who)
            self.store.audit(who, "node-rpc", "", "PERMISSION_DENIED")
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "only party or dealer nodes "
                          "may call this")
        return who[len("party:"):]

    @staticmethod
    def _identity(key: str) -> str:
        """A node key back to its certificate identity."""
        return key if key.startswith("dealer:") else f"party:{key}"

    @staticmethod
    def _label(key: str) -> str:
        return key if key.startswith("dealer:") else f"party {key}"

    def _event(self, job: JobRun, **fields) -> None:
        body = {"job_id": job.id, "state": job.state, "time": time.time(), **fields}
        self.store.add_event(job.id, body)
        for w in list(job.watchers):
            w.put(body)

    def _send(self, party: str, cmd: pb.NodeCommand) -> bool:
        node = self.nodes.get(party)
        if node is None or not node.connected:
            return False
        node.commands.put(cmd)
        return True

    def _finish(self, job: JobRun, state: str, reason: str = "", notify_nodes: bool = True):
        if job.state in TERMINAL:
            return
        job.state, job.phase = state, DONE
        reason = reason[:MAX_REASON_CHARS]
        self.store.update(job.id, state=state, reason=reason, iterations=job.iterations)
        self._event(job, stage="end", message=reason or state)
        log.info("job %s %s %s", job.id, state, reason)
        for p in job.members:
            node = self.nodes.get(p)
            if node and node.busy_job == job.id:
                node.busy_job = ""
            if notify_nodes and state != "succeeded":
                self._send(p, pb.NodeCommand(cancel=pb.Cancel(job_id=job.id, reason=reason)))
        for w in list(job.watchers):
            w.put(None)

    # ---- party nodes -----------------------------------------------------------------
    def Subscribe(self, request, context):
        party = self._party_of(context)
        self._recv(self._identity(party), request)
        conn = NodeConn(party, datasets=list(request.datasets),
                        dataset_status=list(request.dataset_status), peer=context.peer())
        with self._lock:
            old = self.nodes.get(party)
            if old is not None and old.connected:
                dup = self._duplicate(party, old, conn.peer)
                if dup:
                    self.store.audit(self._identity(party), "subscribe", "",
                                     f"ALREADY_EXISTS ({dup})")
                    log.warning("refused a second connection: %s", dup)
                    context.abort(grpc.StatusCode.ALREADY_EXISTS, dup)
                log.warning("%s connected again from %s while connected from %s: the older "
                            "connection is closed", self._label(party), conn.peer, old.peer)
            if old is not None:
                old.connected = False
                old.commands.put(None)
            self.nodes[party] = conn
        # the node counts itself connected only on this acknowledgement
        context.send_initial_metadata(((WELCOME_KEY, party),))
        log.info("party %s connected from %s%s", party, context.peer(),
                 "".join(f"; {d.problem}" for d in conn.dataset_status if not d.available))
        try:
            while context.is_active() and conn.connected:
                try:
                    cmd = conn.commands.get(timeout=1.0)
                except queue.Empty:
                    continue
                if cmd is None:
                    break
                yield cmd
        finally:
            with self._lock:
                if self.nodes.get(party) is conn:
                    self._lost(conn, "disconnected")

    def _drop_revoked(self, context, why: str) -> None:
        """A connected node whose certificate was revoked since it subscribed (its
        heartbeat is refused): close its stream now, its job fails naming why."""
        info = peer_cert_info(context)
        if info is None or "revoked" not in why:
            return
        key = info.identity if info.role == "dealer" else info.identity.partition(":")[2]
        with self._lock:
            conn = self.nodes.get(key)
            if conn is not None and conn.connected:
                conn.commands.put(None)
                self._lost(conn, f"was revoked (certificate serial {serial_hex(info.serial)})")

    def _duplicate(self, party: str, old: NodeConn, peer: str) -> str:
        """Why a new connection of a connected node is refused (two nodes with one
        identity replacing each other), or '' to let it replace the old one."""
        now = time.time()
        kicks = [t for t in self._kicks.get(party, []) if now - t < DUPLICATE_WINDOW_S]
        self._kicks[party] = kicks + [now]
        if len(kicks) >= DUPLICATE_KICKS:
            self._dup_until[party] = now + DUPLICATE_HOLD_S
        if self._dup_until.get(party, 0.0) <= now:
            return ""
        return (f"{self._label(party)} is already connected from {old.peer}; a second "
                f"connection with the same identity from {peer} is refused (two nodes "
                "sharing one certificate?)")

    def _lost(self, conn: NodeConn, why: str) -> None:
        conn.connected = False
        log.warning("party %s %s", conn.party, why)
        for job in list(self.jobs.values()):
            if job.state not in TERMINAL and conn.party in job.members:
                self._finish(job, "failed", f"{self._label(conn.party)} {why}")

    def Beat(self, request, context):
        party = self._party_of(context)
        with self._lock:
            node = self.nodes.get(party)
            if node is not None and node.connected:
                node.last_seen = time.time()
                if request.dataset_status and \
                        list(request.dataset_status) != node.dataset_status:
                    self._recv(self._identity(party), request)
                    node.dataset_status = list(request.dataset_status)
                    log.info("party %s data sets: %s", party, "; ".join(
                        d.problem or f"{d.name} available" for d in node.dataset_status))
                return pb.Ack(ok=True)
        return pb.Ack(ok=False, message="not subscribed")

    def Reply(self, request, context):
        party = self._party_of(context)
        self._recv(self._identity(party), request)
        with self._lock:
            node = self.nodes.get(party)
            if node:
                node.last_seen = time.time()
            job = self.jobs.get(request.job_id)
            if job is None or party not in job.members:
                return pb.Ack(ok=False, message="unknown job")
            if job.state in TERMINAL:
                return pb.Ack(ok=False, message=f"job is {job.state}")
            kind = request.WhichOneof("reply")
            why = unexpected(job, party, kind, getattr(request, kind)) if kind else "empty"
            if why:
                self.store.audit(self._identity(party), f"reply:{kind}", job.id,
                                 f"refused: {why}")
                log.warning("job %s: ignored %s from party %s (%s)", job.id, kind, party, why)
                return pb.Ack(ok=False, message=f"refused: {why}")
            getattr(self, f"_on_{kind}")(job, party, getattr(request, kind))
        return pb.Ack(ok=True)

    def _on_refuse(self, job, party, msg):
        self._finish(job, "failed", f"{self._label(party)} refused: "
                     f"{msg.reason[:MAX_REASON_CHARS]}")

    def _on_accept(self, job, party, msg):
        is_dealer = party == job.dealer
        if job.state != "agreeing" or party in job.accepts or \
                len(msg.seed_commitment) != (0 if is_dealer else 32) or \
                not msg.rendezvous_address or not 0 < msg.rendezvous_port < 65536:
            return self._finish(job, "failed", f"{self._label(party)} sent an invalid "
                                "acceptance")
        job.accepts[party] = msg
        self._event(job, stage="agreement", message=f"{party} accepted")
        if is_dealer:
            return self._maybe_run(job)
        if len([p for p in job.accepts if p in job.parties]) == len(job.parties):
            job.phase = REVEALING
            commits = self._commits(job)
            for p in job.parties:
                self._send(p, pb.NodeCommand(reveal=pb.RevealRequest(job_id=job.id,
                                                                     commits=commits)))

    def _commits(self, job) -> list:
        """Every party's commitment with its own signed announcement, unchanged."""
        return [pb.SeedCommit(party=p, commitment=job.accepts[p].seed_commitment,
                              announcement=job.accepts[p].announcement,
                              signature=job.accepts[p].signature, cert=job.accepts[p].cert)
                for p in job.parties]

    def _on_reveal(self, job, party, msg):
        commit = job.accepts.get(party)
        if party == job.dealer or commit is None or party in job.reveals or \
                hashlib.sha256(msg.nonce).digest() != commit.seed_commitment:
            return self._finish(job, "failed",
                                f"party {party}'s seed reveal does not match its commitment")
        job.reveals[party] = msg.nonce
        self._maybe_run(job)

    def _maybe_run(self, job: JobRun) -> None:
        """Start the workers once every party revealed and the dealer accepted."""
        if job.state != "agreeing" or len(job.reveals) < len(job.parties) or \
                job.dealer not in job.accepts:
            return
        job.state, job.phase, job.started = "running", RUNNING, time.time()
        seed = joint_seed([job.reveals[p] for p in job.parties])
        self.store.update(job.id, state="running", seed=f"0x{seed:032x}")
        commits = self._commits(job)
        d = job.accepts[job.dealer]
        dealer = pb.SeedCommit(party=job.dealer, announcement=d.announcement,
                               signature=d.signature, cert=d.cert)
        reveals = [pb.SeedReveal(party=p, nonce=job.reveals[p]) for p in job.parties]
        peers = [pb.MpcPeer(identity=m if m == job.dealer else f"party:{m}",
                            host=job.accepts[m].rendezvous_address,
                            port=job.accepts[m].rendezvous_port) for m in job.members]
        for rank, p in enumerate(job.members):
            self._send(p, pb.NodeCommand(run=pb.Run(
                job_id=job.id, rank=rank, world_size=len(job.parties), peers=peers,
                commits=commits, reveals=reveals, dealer=dealer,
                timeout_s=self.mpc_timeout)))
        self._event(job, stage="running", message="seed agreed; workers starting")

    def _on_progress(self, job, party, msg):
        if party != job.parties[0]:
            return                      # rank 0 speaks for the job; all ranks see the same
        if msg.iteration > job.iterations:
            job.iterations = msg.iteration
            self.store.update(job.id, iterations=job.iterations)   # `job status` shows it
        local = {"rows": msg.rows, "cells": msg.cells} if msg.stage == "local" else {}
        self._event(job, stage=msg.stage, iteration=msg.iteration, max_iter=msg.max_iter,
                    moving=msg.moving, seconds=msg.seconds, **local)

    def _on_finished(self, job, party, msg):
        if party in job.finished:
            return                  # a node finishes once
        job.finished[party] = msg
        if party == job.dealer:     # no result; its worker has exited (it may deal again)
            return self._maybe_succeed(job)
        job.iterations = max(job.iterations, msg.iterations)
        self._maybe_succeed(job)

    def _maybe_succeed(self, job) -> None:
        """Succeeded once every party and the dealer finished: then every worker of
        the job has exited and each node can take the next job. Analyst receivers'
        result: every party's sealed, signed share, relayed with the signed job."""
        if len(job.finished) != len(job.members):
            return
        shares = [s for p in job.parties for s in job.finished[p].shares]
        if shares:          # ciphertext for each analyst receiver: this server cannot open it
            result = pb.JobResult(job_id=job.id, iterations=job.iterations, shares=shares)
            if job.signed:
                result.signed_spec, result.signature, result.signer_cert = job.signed
            self.store.update(job.id, result=result.SerializeToString())
        self._finish(job, "succeeded")

    def _on_failed(self, job, party, msg):
        if party == job.dealer:
            if msg.peer_lost:
                return          # a party is at fault; the parties' reports will name it
            return self._finish(job, "failed", f"{party}: {msg.reason}")
        if not msg.peer_lost:
            return self._finish(job, "failed", f"party {party}: {msg.reason[:MAX_REASON_CHARS]}")
        if job.phase != RUNNING:
            return self._finish(job, "failed", f"party {party}: lost a peer before the run")
        # This party's worker lost contact with a peer: the party at fault is the one
        # whose node drops (_lost) or that stays silent while the others report.
        job.peer_lost[party] = msg.reason
        if not job.blame_at:
            job.blame_at = time.time() + self.blame_grace
            self._event(job, stage="fault", message=f"{party}'s worker lost contact with a "
                        "peer; identifying the party at fault")
        if len(job.peer_lost) == len(job.parties):
            self._blame(job)

    def _blame(self, job: JobRun) -> None:
        """Fail a job after MPC peer-loss reports, naming the party at fault."""
        reporters = [p for p in job.parties if p in job.peer_lost]
        silent = [p for p in job.parties if p not in job.peer_lost and p not in job.finished]
        if silent:
            who = ", ".join(silent)
            reason = (f"party {who} stopped answering: the workers of "
                      f"{', '.join(reporters)} lost contact with it "
                      f"({job.peer_lost[reporters[0]]})")
        else:
            reason = ("the parties' workers lost contact with each other (network between "
                      f"the parties broken?): " +
                      "; ".join(f"party {p}: {job.peer_lost[p]}" for p in reporters))
        self._finish(job, "failed", reason)

    def _watchdog(self) -> None:
        while not self._stop.wait(1.0):
            now = time.time()
            with self._lock:
                for node in list(self.nodes.values()):
                    if node.connected and now - node.last_seen > self.heartbeat_timeout:
                        node.commands.put(None)
                        self._lost(node, f"missed heartbeats for {self.heartbeat_timeout:.0f} s")
                for job in list(self.jobs.values()):
                    if job.state == "running" and job.blame_at and now > job.blame_at:
                        self._blame(job)
                    if job.state == "running" and now - job.started > self.job_timeout:
                        self._finish(job, "failed", "the job exceeded the wall-clock limit of "
                                     f"{self.job_timeout:.0f} s")
                    if job.state == "agreeing" and now > job.deadline:
                        silent = [p for p in job.members if p not in job.accepts] or \
                                 [p for p in job.parties if p not in job.reveals]
                        self._finish(job, "failed", f"{self._label(silent[0]) if silent else '?'} did "
                                     f"not answer within {self.agreement_timeout:.0f} s")

    # ---- clients -------------------------------------------------------------------------
    def SubmitJob(self, request, context):
        who = self._known(context, "submit")
        self._recv(who, request)
        if not (role_of(who) in self.submitters or who in self.submitters):
            self.store.audit(who, "submit", "", "PERMISSION_DENIED")
            log.warning("denied submit to %s", who)
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{who} may not submit jobs (coordinator policy: "
                          f"{', '.join(self.submitters)})")
        try:
            spec = jobspec.parse(request.spec_yaml)
        except jobspec.SpecError as exc:
            self.store.audit(who, "submit", "", f"invalid: {exc}")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        signed = None
        if not request.signed_spec and not self.insecure:
            self.store.audit(who, "submit", "", "invalid: unsigned")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "signature: required (the client signs the job with its key)")
        if request.signed_spec:
            try:
                v = signing.verify(request.signed_spec, request.signature, request.signer_cert,
                                   self.ca_pem or b"", self.revoked)
            except signing.SignatureError as exc:
                self.store.audit(who, "submit", "", f"invalid: {exc}")
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            if v.submitter != who:
                self.store.audit(who, "submit", v.job_id, "PERMISSION_DENIED (signed by "
                                 f"{v.submitter})")
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              "signature: the job is signed by another identity")
            spec, signed = v.spec, (request.signed_spec, request.signature, request.signer_cert)
            if self.store.get(v.job_id):
                self.store.audit(who, "submit", v.job_id, "ALREADY_EXISTS (replay)")
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"job {v.job_id} exists already")
        return self._submit(who, spec, signed, signed and v.job_id)

    def _submit(self, who: str, spec: pb.JobSpec, signed, job_id) -> pb.JobInfo:
        jid = job_id or signing.new_job_id()
        with self._lock:
            job = JobRun(jid, spec, who, deadline=time.time() + self.agreement_timeout,
                         signed=signed)
            self.jobs[jid] = job
            self.store.create(jid, spec.name, jobspec.to_yaml(spec), spec.SerializeToString(),
                              who, job.parties)
            self.store.audit(who, "submit", jid, "accepted")
            self._event(job, stage="submitted", message=f"submitted by {who}")
            missing = [p for p in job.members
                       if p not in self.nodes or not self.nodes[p].connected]
            busy = [p for p in job.members if p in self.nodes and self.nodes[p].busy_job]
            if missing:
                self._finish(job, "failed", f"{self._label(missing[0])} is not connected",
                             notify_nodes=False)
            elif busy:
                self._finish(job, "failed", f"{self._label(busy[0])} is busy with job "
                             f"{self.nodes[busy[0]].busy_job}", notify_nodes=False)
            else:
                for p in job.members:
                    self.nodes[p].busy_job = jid
                    offer = pb.Offer(job_id=jid, spec=spec, submitter=who)
                    if signed:
                        offer.signed_spec, offer.signature, offer.signer_cert = signed
                    self._send(p, pb.NodeCommand(offer=offer))
        return self._info(jid)

    def _info(self, jid: str) -> pb.JobInfo:
        row = self.store.get(jid)
        import json

        return pb.JobInfo(job_id=row["id"], state=row["state"], reason=row["reason"] or "",
                          submitter=row["submitter"], parties=json.loads(row["parties"]),
                          created=row["created"], updated=row["updated"],
                          iterations=row["iterations"] or 0, spec_yaml=row["spec_yaml"],
                          seed=_seed_int(row["seed"]) & (2**63 - 1)
                          if row["seed"] is not None else -1,
                          seed_hex=f"{_seed_int(row['seed']):032x}"
                          if row["seed"] is not None else "")

    def GetJob(self, request, context):
        who, _ = self._row_for_read(context, "read", request.job_id)
        self.store.audit(who, "read", request.job_id, "ok")
        return self._info(request.job_id)

    def ListJobs(self, request, context):
        who = self._known(context, "list")
        limit = min(max(request.limit, 0) or 50, 1000)
        rows = [r for r in self.store.list(10_000) if self._may_read(who, r)][:limit]
        self.store.audit(who, "list", "", f"{len(rows)} jobs")
        return pb.JobList(jobs=[self._info(r["id"]) for r in rows])

    def CancelJob(self, request, context):
        who = self._known(context, "cancel", request.job_id)
        if not signing.valid_job_id(request.job_id) and not _legacy_id(request.job_id):
            self.store.audit(who, "cancel", _safe_id(request.job_id), "INVALID_ARGUMENT")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job_id: not a job id")
        with self._lock:
            row = self.store.get(request.job_id)
            if not row:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")
            import json

            # the submitter, any party of the job (it can always withdraw its data) and
            # the coordinator's operator may cancel; nobody else
            may = who in (row["submitter"], "coordinator") or role_of(who) == "operator" or (
                role_of(who) == "party" and who[6:] in json.loads(row["parties"]))
            if not may:
                self.store.audit(who, "cancel", request.job_id, "PERMISSION_DENIED")
                log.warning("denied cancel of job %s to %s", request.job_id, who)
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              f"{who} may not cancel job {request.job_id} (only its submitter "
                              "or one of its parties)")
            job = self.jobs.get(request.job_id)
            if job is not None and job.state not in TERMINAL:
                self._finish(job, "cancelled", f"cancelled by {who}")
            self.store.audit(who, "cancel", request.job_id, row["state"])
        return self._info(request.job_id)

    def WatchJob(self, request, context):
        who, row = self._row_for_read(context, "watch", request.job_id)
        self._stream_slot(who, context)
        self.store.audit(who, "watch", request.job_id, "ok")
        try:
            yield from self._watch(request, context)
        finally:
            self._stream_done(who)

    def _watch(self, request, context):
        q: queue.Queue = queue.Queue()
        with self._lock:
            past = self.store.events(request.job_id)
            job = self.jobs.get(request.job_id)
            live = job is not None and job.state not in TERMINAL
            if live:
                job.watchers.append(q)
        try:
            for body in past:
                yield _to_event(body)
            while live and context.is_active():
                try:
                    body = q.get(timeout=1.0)
                except queue.Empty:
                    continue
                if body is None:
                    break
                yield _to_event(body)
        finally:
            if live:
                with self._lock:
                    if q in job.watchers:
                        job.watchers.remove(q)

    def GetResult(self, request, context):
        who = self._known(context, "result", request.job_id)
        if not signing.valid_job_id(request.job_id) and not _legacy_id(request.job_id):
            self.store.audit(who, "result", _safe_id(request.job_id), "INVALID_ARGUMENT")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job_id: not a job id")
        row = self.store.get(request.job_id)
        if not row:
            self.store.audit(who, "result", request.job_id, "NOT_FOUND")
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")
        spec = pb.JobSpec.FromString(row["spec"])
        allowed = set(spec.reveal_to)
        # bare names in reveal_to are party ids (only a "party:<id>" certificate matches);
        # analysts are listed with their full "analyst:<name>" identity
        ok = (who.startswith("party:") and who[6:] in allowed
              and who[6:] in {p.id for p in spec.parties}) or \
             (who.startswith("analyst:") and who in allowed)
        if not ok:
            self.store.audit(who, "result", request.job_id, "PERMISSION_DENIED")
            log.warning("denied result of job %s to %s", request.job_id, who)
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{who} is not among the receivers of job {request.job_id}")
        if row["state"] != "succeeded":
            self.store.audit(who, "result", request.job_id, f"not ready ({row['state']})")
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"job {request.job_id} is {row['state']}"
                          + (f": {row['reason']}" if row["reason"] else ""))
        if not row["result"]:
            self.store.audit(who, "result", request.job_id, "kept by the parties")
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "only parties receive this job's result: read it from your node's "
                          "results folder")
        res = pb.JobResult.FromString(row["result"])
        mine = [s for s in res.shares if s.recipient == who]
        del res.shares[:]
        res.shares.extend(mine)
        legacy = bool(res.centroids or res.sealed)   # stored by v1.1: relayed, clients refuse
        if not mine and not legacy:
            self.store.audit(who, "result", request.job_id, "nothing sealed for this identity")
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "this job's result is sealed to its analyst receivers only; "
                          "parties read theirs from their node's results folder")
        self.store.audit(who, "result", request.job_id, "delivered")
        return res

    def ListParties(self, request, context):
        who = self._known(context, "parties")
        with self._lock:
            return pb.PartyList(parties=[
                self._party_info(n, who)
                for n in sorted(self.nodes.values(), key=lambda n: n.party)])

    def ListAudit(self, request, context):
        """The newest audit rows, read only, for operators (and the coordinator)."""
        who = self._known(context, "audit")
        if role_of(who) != "operator" and who != "coordinator":
            self.store.audit(who, "audit", "", "PERMISSION_DENIED")
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{who} may not read the audit log (operators only)")
        limit = min(max(request.limit, 0) or 200, 5000)
        job = request.job_id if signing.valid_job_id(request.job_id) or \
            _legacy_id(request.job_id) else ""
        rows = self.store.audit_tail(limit, job)
        self.store.audit(who, "audit", job, f"{len(rows)} rows")
        return pb.AuditList(entries=[pb.AuditEntry(time=t, identity=i, action=a, job_id=j or "",
                                                   outcome=o or "") for t, i, a, j, o in rows])

    def _party_info(self, n: NodeConn, who: str) -> pb.PartyInfo:
        """Name and online state for every caller; data set names, their state and
        the running job only for operators (and the coordinator) and the node itself."""
        info = pb.PartyInfo(id=n.party, connected=n.connected, last_seen=n.last_seen)
        if role_of(who) == "operator" or who in ("coordinator", self._identity(n.party)):
            info.datasets.extend(n.datasets)
            info.busy_job = n.busy_job
            info.dataset_status.extend(n.dataset_status)
        return info

    def stop(self) -> None:
        """A graceful stop: every job in flight fails as "the coordinator stopped"
        (not blamed on the first party whose stream then closes), then the nodes'
        streams end."""
        self._stop.set()
        with self._lock:
            for job in list(self.jobs.values()):
                if job.state not in TERMINAL:
                    self._finish(job, "failed", "the coordinator stopped while the job was "
                                 f"{job.state} (not a party's fault)")
            for n in self.nodes.values():
                n.connected = False
                n.commands.put(None)


def _open_private(path: str):
    """A transcript file for appending, owner-only (0600) whether new or old: it
    holds specs, seed nonces and sealed results."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "a")


def _seed_int(stored) -> int:
    """Seeds are stored as "0x..." text (128 bits do not fit SQLite's INTEGER)."""
    return int(stored, 16) if isinstance(stored, str) else int(stored)
def _legacy_id(job_id: str) -> bool:
    """Job ids made by earlier versions (12 hex digits) stay readable."""
    return isinstance(job_id, str) and len(job_id) == 12 and all(
        c in "0123456789abcdef" for c in job_id)


def _safe_id(job_id: str) -> str:
    """A job id fit for the audit table (a hostile one is not stored verbatim)."""
    return job_id if signing.valid_job_id(job_id) or _legacy_id(job_id) else \
        f"<invalid id, {len(job_id)} chars>"


def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _to_event(body: dict) -> pb.JobEvent:
    keys = {f.name for f in pb.JobEvent.DESCRIPTOR.fields}
    return pb.JobEvent(**{k: v for k, v in body.items() if k in keys and v is not None})


def serve(address: str, db_path: str, tls: Optional[TLSFiles], insecure: bool = False,
          record_path: Optional[str] = None, revocation_list: Optional[str] = None,
          audit_max_rows: int = AUDIT_MAX_ROWS,
          **timeouts) -> tuple[grpc.Server, CoordinatorService]:
    """Start the coordinator (non-blocking). Mutual TLS unless insecure (loopback only)."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    if insecure and not _loopback(address):
        raise OSError(f"--insecure listens on a loopback address only, not {address}")
    ca_pem = None
    if tls is not None:
        check_key_file(tls.key)
        creds = server_credentials(tls)          # only a coordinator certificate can serve
        ca_pem = tls.read()[0]
    revoked = Revocations(revocation_list) if revocation_list else None
    svc = CoordinatorService(Store(db_path, audit_max_rows), insecure=insecure, record_path=record_path,
                             ca_pem=ca_pem, revoked=revoked, **timeouts)
    # Watch streams hold a thread each: the pool is larger than the stream limit,
    # so unary calls (heartbeats, ListParties) always find a thread.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=svc.max_streams + 64),
                         options=list(SERVER_OPTIONS) +
                         [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                          ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
    pb_grpc.add_CoordinatorServicer_to_server(svc, server)
    hs = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    hs.set("", health_pb2.HealthCheckResponse.SERVING)
    hs.set("secure_meanshift.v1.Coordinator", health_pb2.HealthCheckResponse.SERVING)
    if insecure:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, creds)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    svc.port = port
    return server, svc
