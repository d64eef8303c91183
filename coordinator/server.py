"""The coordinator's gRPC service: a thin servicer. It checks callers
(coordinator.authz), turns node replies, cancels and the watchdog's ticks into
events for the job state machine (coordinator.machine) and applies the effects
it returns; queued jobs start when coordinator.scheduler finds their members free."""

from __future__ import annotations

import ipaddress
import json
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
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from meanshift_proto.v1 import service_pb2 as pb
from meanshift_proto.v1 import service_pb2_grpc as pb_grpc
from meanshift_rpc import jobspec, signing
from meanshift_rpc.tls import (ANONYMOUS, SERVER_OPTIONS, Revocations, TLSFiles, check_key_file,
                               peer_cert_info, peer_identity, refusal, role_of,
                               serial_hex, server_credentials)

from . import authz, machine, scheduler
from .authz import SUBMIT_ROLES
from .machine import MAX_REASON_CHARS, JobRun, Phase, Timing
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
    limit: int = 1                     # max_concurrent_jobs, as the node announced it
    jobs: set = field(default_factory=set)      # jobs given to it that have not ended

    def free(self) -> int:
        return max(0, self.limit - len(self.jobs))


# one identity replacing its own connection more than DUPLICATE_KICKS times within
# DUPLICATE_WINDOW_S is two nodes sharing a certificate: newer streams are then refused
# (ALREADY_EXISTS, naming both addresses) for DUPLICATE_HOLD_S while the first is connected
DUPLICATE_KICKS, DUPLICATE_WINDOW_S, DUPLICATE_HOLD_S = 3, 10.0, 60.0
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_CONCURRENT_LIMIT = 64           # a node's announced limit is capped at this


@dataclass(frozen=True)
class Limits:
    """Per-submitter limits (`coordinator serve` flags); 0 = no limit."""
    max_queued: int = 100
    jobs_per_hour: int = 0


class CoordinatorService(pb_grpc.CoordinatorServicer):
    def __init__(self, store: Store, insecure: bool = False, record_path: Optional[str] = None,
                 heartbeat_timeout: float = 15.0, agreement_timeout: float = 30.0,
                 mpc_timeout: float = 30.0, blame_grace: float = 5.0,
                 job_timeout: float = 6 * 3600.0, ca_pem: Optional[bytes] = None,
                 revoked: Optional[Revocations] = None, submitters: Optional[list] = None,
                 max_streams_per_identity: int = 16, max_streams: int = 400,
                 queue_timeout: float = 3000.0, limits: Limits = Limits()):
        self.store, self.insecure = store, insecure
        self.ca_pem, self.revoked = ca_pem, revoked
        self.timing = Timing(agreement_timeout=agreement_timeout, mpc_timeout=mpc_timeout,
                             blame_grace=blame_grace, job_timeout=job_timeout,
                             queue_timeout=queue_timeout)
        self.limits = limits
        # coordinator policy: roles ("analyst") and/or identities ("analyst:alice") that
        # may submit; parties never by default
        self.submitters = list(submitters) if submitters else list(SUBMIT_ROLES)
        self.max_streams_per_identity, self.max_streams = max_streams_per_identity, max_streams
        self._streams: dict = {}
        self.heartbeat_timeout = heartbeat_timeout
        self._lock = threading.RLock()
        self.nodes: dict[str, NodeConn] = {}
        self.jobs: dict[str, JobRun] = {}
        self._kicks: dict = {}          # node key -> times it replaced its own connection
        self._dup_until: dict = {}      # node key -> refuse second connections until then
        self._record = _open_private(record_path) if record_path else None
        for jid in store.recover():
            log.warning("job %s was in flight at the last stop: marked failed", jid)
        self._restore_queue()
        self._stop = threading.Event()
        threading.Thread(target=self._watchdog, daemon=True).start()

    def _restore_queue(self) -> None:
        """The queued jobs of the last run, in their order (they start once their
        members connect)."""
        for row in self.store.queued():
            signed = (row["signed_spec"], row["signature"], row["signer_cert"]) \
                if row["signed_spec"] else None
            self.jobs[row["id"]] = JobRun(row["id"], pb.JobSpec.FromString(row["spec"]),
                                          row["submitter"], queued_at=row["created"],
                                          signed=signed)
        if self.jobs:
            log.info("%d queued jobs kept from the last run", len(self.jobs))

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

    def _row_for(self, context, action: str, job_id: str) -> tuple:
        """(caller, row) for an action on a job the caller may read (else aborted)."""
        who = self._known(context, action, job_id)
        if not signing.valid_job_id(job_id) and not _legacy_id(job_id):
            self.store.audit(who, action, _safe_id(job_id), "INVALID_ARGUMENT")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job_id: not a job id")
        row = self.store.get(job_id)
        if not row:
            self.store.audit(who, action, job_id, "NOT_FOUND")
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job {job_id!r}")
        if not authz.may_read(who, row):
            self.store.audit(who, action, job_id, "PERMISSION_DENIED")
            log.warning("denied %s of job %s to %s", action, job_id, who)
            what = "cancel" if action == "cancel" else "read"
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{who} may not {what} job {job_id} (only its submitter, its "
                          "parties and the operator)")
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
        if who == ANONYMOUS:                 # revoked, or role and name disagree: say which
            why = refusal(context, self.insecure, self.revoked)
            log.warning("rejected a node call from %s: %s", context.peer(), why)
            self._drop_revoked(context, why)
            self.store.audit(who, "node-rpc", "", f"PERMISSION_DENIED ({why})")
            context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
        key = authz.node_key(who)
        if not key:
            log.warning("rejected a node call from %s: identity %s is not a party or a "
                        "dealer (wrong role)", context.peer(), who)
            self.store.audit(who, "node-rpc", "", "PERMISSION_DENIED")
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "only party or dealer nodes "
                          "may call this")
        return key

    @staticmethod
    def _identity(key: str) -> str:
        """A node key back to its certificate identity."""
        return key if key.startswith("dealer:") else f"party:{key}"

    def _event(self, job: JobRun, store: bool = True, **fields) -> None:
        body = {"job_id": job.id, "state": job.state, "time": time.time(), **fields}
        if store:
            self.store.add_event(job.id, body)
        for w in list(job.watchers):
            w.put(body)

    def _send(self, party: str, cmd: pb.NodeCommand) -> bool:
        node = self.nodes.get(party)
        if node is None or not node.connected:
            return False
        node.commands.put(cmd)
        return True

    # ---- the state machine's effects -------------------------------------------------------
    def _step(self, job: JobRun, step: machine.Step) -> Optional[str]:
        """Apply a transition: the job's new phase and values, then each effect in
        order. Returns the refusal, if the machine refused the event."""
        machine.apply(job, step)
        for eff in step.effects:
            if isinstance(eff, machine.Send):
                self._send(eff.member, eff.command)
            elif isinstance(eff, machine.Persist):
                self.store.update(job.id, **eff.fields)
            elif isinstance(eff, machine.Emit):
                self._event(job, stage=eff.stage, message=eff.message, **eff.extra)
            elif isinstance(eff, machine.Finish):
                self._finish(job, eff)
            elif isinstance(eff, machine.Refused):
                return eff.why
        return None

    def _finish(self, job: JobRun, eff: machine.Finish) -> None:
        reason = eff.reason[:MAX_REASON_CHARS]
        self.store.update(job.id, state=eff.phase.value, reason=reason,
                          iterations=job.iterations)
        self._event(job, stage="end", message=reason or eff.phase.value)
        log.info("job %s %s %s", job.id, eff.phase.value, reason)
        for p in job.members:
            node = self.nodes.get(p)
            if node:
                node.jobs.discard(job.id)
            if eff.notify_nodes and eff.phase != Phase.SUCCEEDED:
                self._send(p, pb.NodeCommand(cancel=pb.Cancel(job_id=job.id, reason=reason)))
        for w in list(job.watchers):
            w.put(None)
        self.jobs.pop(job.id, None)
        self._schedule()

    # ---- the queue ----------------------------------------------------------------------
    def _waiting(self) -> list:
        """The queued jobs, oldest first."""
        return [scheduler.Waiting(j.id, tuple(j.members))
                for j in sorted(self.jobs.values(), key=lambda j: j.queued_at)
                if j.phase == Phase.QUEUED]

    def _connected(self) -> set:
        return {k for k, n in self.nodes.items() if n.connected}

    def _schedule(self) -> None:
        """Offer every queued job whose members are all free now (coordinator.scheduler);
        nothing once the server is stopping (queued jobs wait for the restart)."""
        if self._stop.is_set():
            return
        now = time.time()
        waiting = self._waiting()
        free = {k: n.free() for k, n in self.nodes.items() if n.connected}
        started = scheduler.pick(waiting, free, self._connected())
        for jid in started:
            job = self.jobs[jid]
            for m in job.members:
                self.nodes[m].jobs.add(jid)
            self._step(job, machine.dispatch(job, now, self.timing))
        if started:
            self._announce_positions()

    def _positions(self) -> dict:
        """Each queued job's place (1 = next to start)."""
        with self._lock:
            return {w.job_id: i + 1 for i, w in enumerate(self._waiting())}

    def _announce_positions(self) -> None:
        """Each queued job's watchers learn its new place (not stored: the history
        keeps the place at submission)."""
        for jid, pos in self._positions().items():
            job = self.jobs[jid]
            if job.watchers:
                self._event(job, store=False, stage="queued", queue_position=pos,
                            message=f"queued: position {pos}")

    # ---- party nodes -----------------------------------------------------------------
    def Subscribe(self, request, context):
        party = self._party_of(context)
        self._recv(self._identity(party), request)
        limit = min(max(request.max_concurrent_jobs, 1), MAX_CONCURRENT_LIMIT)
        conn = NodeConn(party, datasets=list(request.datasets),
                        dataset_status=list(request.dataset_status), peer=context.peer(),
                        limit=limit)
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
                            "connection is closed", machine.label(party), conn.peer, old.peer)
                # what was sent on the old stream may never have arrived: its jobs fail now,
                # naming the party, instead of waiting out the agreement timeout
                self._lost(old, "connected again; its earlier connection was cut")
            if old is not None:
                old.connected = False
                old.commands.put(None)
            self.nodes[party] = conn
        # a closed stream is noticed at once (not at the generator's next poll), so no
        # command is queued on a connection that is already gone
        context.add_callback(lambda: self._stream_ended(conn))
        # the node counts itself connected only on this acknowledgement
        context.send_initial_metadata(((WELCOME_KEY, party),))
        log.info("party %s connected from %s (max_concurrent_jobs %d)%s", party,
                 context.peer(), limit,
                 "".join(f"; {d.problem}" for d in conn.dataset_status if not d.available))
        with self._lock:
            self._schedule()
        try:
            while context.is_active() and conn.connected:
                try:
                    cmd = conn.commands.get(timeout=1.0)
                except queue.Empty:
                    continue
                if cmd is None:
                    break
                yield cmd
            if context.is_active():      # queued before the close (a stop's cancels): still sent
                yield from _queued(conn.commands)
        finally:
            with self._lock:
                if self.nodes.get(party) is conn:
                    self._lost(conn, "disconnected")

    def _stream_ended(self, conn: NodeConn) -> None:
        with self._lock:
            if conn.connected and self.nodes.get(conn.party) is conn:
                self._lost(conn, "disconnected")
        conn.commands.put(None)

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
        return (f"{machine.label(party)} is already connected from {old.peer}; a second "
                f"connection with the same identity from {peer} is refused (two nodes "
                "sharing one certificate?)")

    def _lost(self, conn: NodeConn, why: str) -> None:
        conn.connected = False
        log.warning("party %s %s", conn.party, why)
        for job in list(self.jobs.values()):
            self._step(job, machine.node_lost(job, conn.party, why))

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
                row = self.store.get(request.job_id) if job is None else None
                if row and row["state"] in TERMINAL and party in _members(row):
                    return pb.Ack(ok=False, message=f"job is {row['state']}")
                return pb.Ack(ok=False, message="unknown job")
            kind = request.WhichOneof("reply")
            msg = getattr(request, kind) if kind else None
            why = self._step(job, machine.reply(job, party, kind, msg, time.time(),
                                                self.timing))
            if why:
                self.store.audit(self._identity(party), f"reply:{kind}", job.id,
                                 f"refused: {why}")
                log.warning("job %s: ignored %s from party %s (%s)", job.id, kind, party, why)
                return pb.Ack(ok=False, message=f"refused: {why}")
        return pb.Ack(ok=True)

    def _watchdog(self) -> None:
        while not self._stop.wait(1.0):
            now = time.time()
            with self._lock:
                for node in list(self.nodes.values()):
                    if node.connected and now - node.last_seen > self.heartbeat_timeout:
                        node.commands.put(None)
                        self._lost(node, f"missed heartbeats for {self.heartbeat_timeout:.0f} s")
                connected = self._connected()
                for job in list(self.jobs.values()):
                    waits = scheduler.waiting_for(scheduler.Waiting(job.id, tuple(job.members)),
                                                  connected)
                    self._step(job, machine.tick(job, now, self.timing, waits))

    # ---- clients -------------------------------------------------------------------------
    def SubmitJob(self, request, context):
        who = self._known(context, "submit")
        self._recv(who, request)
        if not authz.may_submit(who, self.submitters):
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
        return self._submit(who, spec, signed, signed and v.job_id, context)

    def _limit_reached(self, who: str) -> str:
        """Why this submitter may not submit now (coordinator limits), or ''."""
        lim = self.limits
        if lim.max_queued and self.store.count(who, state="queued") >= lim.max_queued:
            return (f"limit: {who} has {lim.max_queued} jobs queued already (coordinator "
                    "--max-queued-per-submitter); submit again when some have started")
        if lim.jobs_per_hour and \
                self.store.count(who, since=time.time() - 3600) >= lim.jobs_per_hour:
            return (f"limit: {who} submitted {lim.jobs_per_hour} jobs in the last hour "
                    "(coordinator --max-jobs-per-hour); submit again later")
        return ""

    def _submit(self, who: str, spec: pb.JobSpec, signed, job_id, context) -> pb.JobInfo:
        jid = job_id or signing.new_job_id()
        with self._lock:
            why = self._limit_reached(who)
            if why:
                self.store.audit(who, "submit", jid, f"RESOURCE_EXHAUSTED ({why})")
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, why)
            job = JobRun(jid, spec, who, signed=signed)
            self.jobs[jid] = job
            self.store.create(jid, spec.name, jobspec.to_yaml(spec), spec.SerializeToString(),
                              who, job.parties, signed)
            self.store.audit(who, "submit", jid, "accepted")
            self._event(job, stage="submitted", message=f"submitted by {who}")
            missing = [p for p in job.members
                       if p not in self.nodes or not self.nodes[p].connected]
            if missing:
                self._finish(job, machine.Finish(Phase.FAILED, f"{machine.label(missing[0])} "
                                                 "is not connected", notify_nodes=False))
                return self._info(jid)
            self._schedule()
            pos = self._positions().get(jid)
            if pos:         # a member is busy: "busy", never which job keeps it so
                self._event(job, stage="queued", queue_position=pos,
                            message=f"queued: position {pos} (a party or the dealer is busy)")
        return self._info(jid)

    def _info(self, jid: str) -> pb.JobInfo:
        row = self.store.get(jid)
        pos = self._positions().get(jid, 0) if row["state"] == "queued" else 0
        return pb.JobInfo(job_id=row["id"], state=row["state"], reason=row["reason"] or "",
                          submitter=row["submitter"], parties=json.loads(row["parties"]),
                          created=row["created"], updated=row["updated"],
                          iterations=row["iterations"] or 0, spec_yaml=row["spec_yaml"],
                          seed=_seed_int(row["seed"]) & (2**63 - 1)
                          if row["seed"] is not None else -1,
                          seed_hex=f"{_seed_int(row['seed']):032x}"
                          if row["seed"] is not None else "", queue_position=pos)

    def GetJob(self, request, context):
        who, _ = self._row_for(context, "read", request.job_id)
        self.store.audit(who, "read", request.job_id, "ok")
        return self._info(request.job_id)

    def ListJobs(self, request, context):
        who = self._known(context, "list")
        limit = min(max(request.limit, 0) or 50, 1000)
        rows = [r for r in self.store.list(10_000) if authz.may_read(who, r)][:limit]
        self.store.audit(who, "list", "", f"{len(rows)} jobs")
        return pb.JobList(jobs=[self._info(r["id"]) for r in rows])

    def CancelJob(self, request, context):
        """The submitter, a party of the job (it can always withdraw its data) or an
        operator; a queued job ends at once (its nodes never heard of it)."""
        who, row = self._row_for(context, "cancel", request.job_id)
        with self._lock:
            job = self.jobs.get(request.job_id)
            if job is not None:
                was_queued = job.phase == Phase.QUEUED
                self._step(job, machine.cancel(job, who))
                if was_queued:
                    self._announce_positions()
            self.store.audit(who, "cancel", request.job_id, row["state"])
        return self._info(request.job_id)

    def WatchJob(self, request, context):
        who, row = self._row_for(context, "watch", request.job_id)
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
        if not authz.may_receive(who, pb.JobSpec.FromString(row["spec"])):
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
        info.max_concurrent_jobs, info.running_jobs = n.limit, len(n.jobs)
        if authz.sees_node_details(who, self._identity(n.party)):
            info.datasets.extend(n.datasets)
            info.busy_job = ", ".join(sorted(n.jobs))
            info.dataset_status.extend(n.dataset_status)
        return info

    def stop(self) -> None:
        """A graceful stop: every job in flight fails as "the coordinator stopped"
        (not blamed on the first party whose stream then closes), then the nodes'
        streams end."""
        self._stop.set()
        with self._lock:
            for job in list(self.jobs.values()):
                self._step(job, machine.coordinator_stopped(job))
            for n in self.nodes.values():
                n.connected = False
                n.commands.put(None)


def _queued(commands: queue.Queue):
    """The commands already queued, up to the end marker (None)."""
    while True:
        try:
            cmd = commands.get_nowait()
        except queue.Empty:
            return
        if cmd is None:
            return
        yield cmd


def _open_private(path: str):
    """A transcript file for appending, owner-only (0600) whether new or old: it
    holds specs, seed nonces and sealed results."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "a")


def _seed_int(stored) -> int:
    """Seeds are stored as "0x..." text (128 bits do not fit SQLite's INTEGER)."""
    return int(stored, 16) if isinstance(stored, str) else int(stored)
def _members(row: dict) -> list:
    """A stored job's member keys: its parties and its dealer."""
    return json.loads(row["parties"]) + [f"dealer:{pb.JobSpec.FromString(row['spec']).dealer}"]


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
