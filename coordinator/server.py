"""The coordinator's gRPC service: parties, agreement (offer, seed commit,
seed reveal), run, progress, results, cancel, failure handling."""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
import uuid
from concurrent import futures
from dataclasses import dataclass, field
from typing import Optional

import grpc
from google.protobuf import text_format

from meanshift_proto.v1 import service_pb2 as pb
from meanshift_proto.v1 import service_pb2_grpc as pb_grpc
from meanshift_rpc import jobspec, joint_seed
from meanshift_rpc.tls import SERVER_OPTIONS, TLSFiles, peer_identity, server_credentials

from .store import TERMINAL, Store

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

    @property
    def parties(self) -> list:
        return [p.id for p in self.spec.parties]


class CoordinatorService(pb_grpc.CoordinatorServicer):
    def __init__(self, store: Store, insecure: bool = False, record_path: Optional[str] = None,
                 heartbeat_timeout: float = 15.0, agreement_timeout: float = 30.0,
                 mpc_timeout: float = 30.0, blame_grace: float = 5.0):
        self.store, self.insecure = store, insecure
        self.heartbeat_timeout, self.agreement_timeout = heartbeat_timeout, agreement_timeout
        self.mpc_timeout, self.blame_grace = mpc_timeout, blame_grace
        self._lock = threading.RLock()
        self.nodes: dict[str, NodeConn] = {}
        self.jobs: dict[str, JobRun] = {}
        self._record = open(record_path, "a") if record_path else None
        for jid in store.recover():
            log.warning("job %s was in flight at the last stop: marked failed", jid)
        self._stop = threading.Event()
        threading.Thread(target=self._watchdog, daemon=True).start()

    # ---- helpers ---------------------------------------------------------------------
    def _who(self, context) -> str:
        return peer_identity(context, self.insecure)

    def _recv(self, who: str, msg) -> None:
        """Keep a transcript of everything received (tests inspect it)."""
        if self._record:
            self._record.write(f"## {who} {type(msg).__name__}\n"
                               f"{text_format.MessageToString(msg)}\n")
            self._record.flush()

    def _party_of(self, context) -> str:
        who = self._who(context)
        if not who.startswith("party:"):
            log.warning("rejected a party-node call from %s: identity %s is not a party "
                        "(wrong role)", context.peer(), who)
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "only party nodes may call this")
        return who[len("party:"):]

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
        job.state = state
        self.store.update(job.id, state=state, reason=reason, iterations=job.iterations)
        self._event(job, stage="end", message=reason or state)
        log.info("job %s %s %s", job.id, state, reason)
        for p in job.parties:
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
        self._recv(f"party:{party}", request)
        conn = NodeConn(party, datasets=list(request.datasets),
                        dataset_status=list(request.dataset_status))
        with self._lock:
            old = self.nodes.get(party)
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

    def _lost(self, conn: NodeConn, why: str) -> None:
        conn.connected = False
        log.warning("party %s %s", conn.party, why)
        for job in list(self.jobs.values()):
            if job.state not in TERMINAL and conn.party in job.parties:
                self._finish(job, "failed", f"party {conn.party} {why}")

    def Beat(self, request, context):
        party = self._party_of(context)
        with self._lock:
            node = self.nodes.get(party)
            if node is not None and node.connected:
                node.last_seen = time.time()
                if request.dataset_status and \
                        list(request.dataset_status) != node.dataset_status:
                    self._recv(f"party:{party}", request)
                    node.dataset_status = list(request.dataset_status)
                    log.info("party %s data sets: %s", party, "; ".join(
                        d.problem or f"{d.name} available" for d in node.dataset_status))
                return pb.Ack(ok=True)
        return pb.Ack(ok=False, message="not subscribed")

    def Reply(self, request, context):
        party = self._party_of(context)
        self._recv(f"party:{party}", request)
        with self._lock:
            node = self.nodes.get(party)
            if node:
                node.last_seen = time.time()
            job = self.jobs.get(request.job_id)
            if job is None or party not in job.parties:
                return pb.Ack(ok=False, message="unknown job")
            if job.state in TERMINAL:
                return pb.Ack(ok=False, message=f"job is {job.state}")
            kind = request.WhichOneof("reply")
            getattr(self, f"_on_{kind}")(job, party, getattr(request, kind))
        return pb.Ack(ok=True)

    def _on_refuse(self, job, party, msg):
        self._finish(job, "failed", f"party {party} refused: {msg.reason}")

    def _on_accept(self, job, party, msg):
        if job.state != "agreeing" or len(msg.seed_commitment) != 32:
            return self._finish(job, "failed", f"party {party} sent an invalid acceptance")
        job.accepts[party] = msg
        self._event(job, stage="agreement", message=f"{party} accepted")
        if len(job.accepts) == len(job.parties):
            commits = [pb.SeedCommit(party=p, commitment=job.accepts[p].seed_commitment)
                       for p in job.parties]
            for p in job.parties:
                self._send(p, pb.NodeCommand(reveal=pb.RevealRequest(job_id=job.id,
                                                                     commits=commits)))

    def _on_reveal(self, job, party, msg):
        commit = job.accepts.get(party)
        if commit is None or hashlib.sha256(msg.nonce).digest() != commit.seed_commitment:
            return self._finish(job, "failed",
                                f"party {party}'s seed reveal does not match its commitment")
        job.reveals[party] = msg.nonce
        if len(job.reveals) < len(job.parties):
            return
        job.state = "running"
        seed = joint_seed([job.reveals[p] for p in job.parties])
        self.store.update(job.id, state="running", seed=seed)
        first = job.accepts[job.parties[0]]
        commits = [pb.SeedCommit(party=p, commitment=job.accepts[p].seed_commitment)
                   for p in job.parties]
        reveals = [pb.SeedReveal(party=p, nonce=job.reveals[p]) for p in job.parties]
        analysts = any(r.startswith("analyst:") for r in job.spec.reveal_to)
        carrier = next((p for p in job.parties if p in job.spec.reveal_to), job.parties[0])
        for rank, p in enumerate(job.parties):
            self._send(p, pb.NodeCommand(run=pb.Run(
                job_id=job.id, rank=rank, world_size=len(job.parties),
                master_addr=first.rendezvous_address, master_port=first.rendezvous_port,
                commits=commits, reveals=reveals, carry_result=analysts and p == carrier,
                timeout_s=self.mpc_timeout)))
        self._event(job, stage="running", message="seed agreed; workers starting")

    def _on_progress(self, job, party, msg):
        if party != job.parties[0]:
            return                      # rank 0 speaks for the job; all ranks see the same
        if msg.iteration > job.iterations:
            job.iterations = msg.iteration
            self.store.update(job.id, iterations=job.iterations)   # `job status` shows it
        self._event(job, stage=msg.stage, iteration=msg.iteration, max_iter=msg.max_iter,
                    moving=msg.moving, seconds=msg.seconds)

    def _on_finished(self, job, party, msg):
        job.finished[party] = msg
        job.iterations = max(job.iterations, msg.iterations)
        if msg.centroids:
            result = pb.JobResult(job_id=job.id, centroids=msg.centroids, sizes=msg.sizes,
                                  iterations=msg.iterations, columns=msg.columns)
            self.store.update(job.id, result=result.SerializeToString())
        if len(job.finished) == len(job.parties):
            self._finish(job, "succeeded")

    def _on_failed(self, job, party, msg):
        if not msg.peer_lost:
            return self._finish(job, "failed", f"party {party}: {msg.reason}")
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
                    if job.state == "agreeing" and now > job.deadline:
                        silent = [p for p in job.parties if p not in job.accepts] or \
                                 [p for p in job.parties if p not in job.reveals]
                        self._finish(job, "failed", f"party {silent[0] if silent else '?'} did "
                                     f"not answer within {self.agreement_timeout:.0f} s")

    # ---- clients -------------------------------------------------------------------------
    def SubmitJob(self, request, context):
        who = self._who(context)
        self._recv(who, request)
        try:
            spec = jobspec.parse(request.spec_yaml)
        except jobspec.SpecError as exc:
            self.store.audit(who, "submit", "", f"invalid: {exc}")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        jid = uuid.uuid4().hex[:12]
        with self._lock:
            job = JobRun(jid, spec, who, deadline=time.time() + self.agreement_timeout)
            self.jobs[jid] = job
            self.store.create(jid, spec.name, jobspec.to_yaml(spec), spec.SerializeToString(),
                              who, job.parties)
            self.store.audit(who, "submit", jid, "accepted")
            self._event(job, stage="submitted", message=f"submitted by {who}")
            missing = [p for p in job.parties
                       if p not in self.nodes or not self.nodes[p].connected]
            busy = [p for p in job.parties if p in self.nodes and self.nodes[p].busy_job]
            if missing:
                self._finish(job, "failed", f"party {missing[0]} is not connected",
                             notify_nodes=False)
            elif busy:
                self._finish(job, "failed", f"party {busy[0]} is busy with job "
                             f"{self.nodes[busy[0]].busy_job}", notify_nodes=False)
            else:
                for p in job.parties:
                    self.nodes[p].busy_job = jid
                    self._send(p, pb.NodeCommand(offer=pb.Offer(job_id=jid, spec=spec,
                                                                submitter=who)))
        return self._info(jid)

    def _info(self, jid: str) -> pb.JobInfo:
        row = self.store.get(jid)
        import json

        return pb.JobInfo(job_id=row["id"], state=row["state"], reason=row["reason"] or "",
                          submitter=row["submitter"], parties=json.loads(row["parties"]),
                          created=row["created"], updated=row["updated"],
                          iterations=row["iterations"] or 0, spec_yaml=row["spec_yaml"],
                          seed=row["seed"] if row["seed"] is not None else -1)

    def GetJob(self, request, context):
        if not self.store.get(request.job_id):
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")
        return self._info(request.job_id)

    def ListJobs(self, request, context):
        return pb.JobList(jobs=[self._info(r["id"]) for r in self.store.list(request.limit or 50)])

    def CancelJob(self, request, context):
        who = self._who(context)
        with self._lock:
            row = self.store.get(request.job_id)
            if not row:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")
            import json

            # the submitter, any party of the job (it can always withdraw its data) and
            # the coordinator's operator may cancel; nobody else
            may = who in (row["submitter"], "coordinator") or (
                who.startswith("party:") and who[6:] in json.loads(row["parties"]))
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
        row = self.store.get(request.job_id)
        if not row:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")
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
        who = self._who(context)
        row = self.store.get(request.job_id)
        if not row:
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
        self.store.audit(who, "result", request.job_id, "delivered")
        return pb.JobResult.FromString(row["result"])

    def ListParties(self, request, context):
        with self._lock:
            return pb.PartyList(parties=[
                pb.PartyInfo(id=n.party, connected=n.connected, last_seen=n.last_seen,
                             datasets=n.datasets, busy_job=n.busy_job,
                             dataset_status=n.dataset_status)
                for n in sorted(self.nodes.values(), key=lambda n: n.party)])

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for n in self.nodes.values():
                n.connected = False
                n.commands.put(None)


def _to_event(body: dict) -> pb.JobEvent:
    keys = {f.name for f in pb.JobEvent.DESCRIPTOR.fields}
    return pb.JobEvent(**{k: v for k, v in body.items() if k in keys and v is not None})


def serve(address: str, db_path: str, tls: Optional[TLSFiles], insecure: bool = False,
          record_path: Optional[str] = None, **timeouts) -> tuple[grpc.Server, CoordinatorService]:
    """Start the coordinator (non-blocking). Mutual TLS unless insecure."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    svc = CoordinatorService(Store(db_path), insecure=insecure, record_path=record_path,
                             **timeouts)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64),
                         options=list(SERVER_OPTIONS))
    pb_grpc.add_CoordinatorServicer_to_server(svc, server)
    hs = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    hs.set("", health_pb2.HealthCheckResponse.SERVING)
    hs.set("secure_meanshift.v1.Coordinator", health_pb2.HealthCheckResponse.SERVING)
    if insecure:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, server_credentials(tls))
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    svc.port = port
    return server, svc
