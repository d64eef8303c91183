"""The node daemon: dial out to the coordinator (works behind NAT), heartbeat,
take job offers from the command stream, check them against local policy,
take part in the joint seed, and run each job in a fresh worker process."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from typing import Optional

import grpc
import numpy as np

from meanshift_proto.v1 import service_pb2 as pb
from meanshift_proto.v1 import service_pb2_grpc as pb_grpc
from meanshift_rpc import DEFAULT_DEADLINE_S, jobspec, joint_seed, signing
from meanshift_rpc.tls import (Revocations, check_key_file, open_channel, serial_hex,
                               server_identity)
from secure_meanshift.privacy import noise_scale, spent_epsilon

from . import agreement, datasets, output, policy
from .config import NodeConfig
from .connect import diagnose
from .state import NodeState
from .output import write_result
from .workers import WorkerPool

log = logging.getLogger("party_node")
HEARTBEAT_S = 3.0
# The command stream is long-lived but, like every call, has a deadline; an idle
# node renews it after half of that, so a deadline never ends a running job.
SUBSCRIBE_DEADLINE_S = 24 * 3600.0
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 4.0     # between attempts to (re)connect
WELCOME_TIMEOUT_S = 10.0     # the coordinator acknowledges a command stream within this
STALE_OFFER_S = 300.0        # an accepted job never run (its cancel lost) frees its slot
WELCOME_KEY = "sms-welcome"  # coordinator.server.WELCOME_KEY (the node does not import it)


class _Failed(grpc.RpcError):
    """A command stream that ended before the coordinator acknowledged it."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class _NoChannel(_Failed):
    def __init__(self):
        super().__init__(grpc.StatusCode.UNAVAILABLE, "no channel")


class CoordinatorRefused(Exception):
    """The server is not a coordinator this node may talk to."""


class Job:
    def __init__(self, offer: pb.Offer, spec: Optional[pb.JobSpec] = None):
        # spec: the one verified from the submitter's signature (never the coordinator's copy)
        self.id, self.spec = offer.job_id, spec if spec is not None else offer.spec
        self.nonce = os.urandom(32)
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.cancelled = False
        self.ended = False           # its last word (finished, failed) is sent: a free slot
        self.accepted_at = time.time()
        self.commits: dict = {}      # party -> commitment, as shown before we revealed
        self.suppressed: Optional[int] = None
        self.receivers: dict = {}    # analyst receiver -> verified certificate (sealing)
        self.announced: dict = {}    # party -> (address, port) it signed (verified)
        self.fingerprints: dict = {}  # rank identity -> SHA-256 of the certificate it signed with
        self.columns: list = []      # the data set's column names (the result's header)
        self.signed_spec = b""       # the job as its submitter signed it (result statements)


class PartyNode:
    def __init__(self, cfg: NodeConfig, checked: Optional[dict] = None):
        self.cfg = cfg
        self.ca_pem = self.key_pem = self.cert_pem = None
        if cfg.tls is not None:
            check_key_file(cfg.tls.key)           # refuse a key others can read
            self.ca_pem, self.cert_pem, self.key_pem = cfg.tls.read()
        self.revoked = Revocations(cfg.revocation_list) if cfg.revocation_list else None
        self._state: Optional[NodeState] = None   # seen offers, privacy ledger (lazily)
        self.channel: Optional[grpc.Channel] = None
        self.stub = None
        self.datasets: dict = checked if checked is not None else datasets.check_all(
            cfg.datasets)                       # name -> datasets.Status
        self._last_problem, self._problem_logged = "", 0.0
        self._diagnosed = ("", "", 0.0)        # (gRPC's detail, our reason, when)
        self._connected = False                # acknowledged by the coordinator
        self.jobs: dict = {}                   # job id -> Job, at most max_concurrent_jobs
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stream = None
        self._stream_since = time.time()
        self._renewing = False
        self.workers = WorkerPool(cfg.prewarm_worker)   # a spare worker, prewarmed
        self._columns: list = []          # of the data set the last accepted offer names

    @property
    def state(self) -> NodeState:
        """The node's persistent memory (results_dir/node-state.sqlite), opened on first use."""
        with self._lock:
            if self._state is None:
                self._state = NodeState(self.cfg.results_dir)
            return self._state

    # ---- main loop -----------------------------------------------------------------------
    def run_forever(self) -> None:
        threading.Thread(target=self._heartbeat, daemon=True).start()
        backoff = BACKOFF_MIN_S
        while not self._stop.is_set():
            try:
                stream = self._subscribe()
            except CoordinatorRefused as exc:
                self._problem(f"not connecting: {exc}; retrying in {backoff:.1f} s")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            except (grpc.RpcError, ValueError) as exc:     # ValueError: a closed channel
                if self._stop.is_set():
                    break
                if isinstance(exc, grpc.RpcError):
                    self._not_connected(exc, backoff)
                self._new_channel()          # a fresh channel: no stale connection state
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            log.info("connected to coordinator %s as %s", self.cfg.coordinator,
                     self.cfg.identity)
            self._connected, self._last_problem = True, ""
            backoff = BACKOFF_MIN_S
            self._refill_spare()
            try:
                for cmd in stream:
                    self._handle(cmd)
                why = "the coordinator closed it"
            except grpc.RpcError as exc:
                why = exc.code().name
            self._connected = False
            if self._stop.is_set():
                break
            if self._renewing:
                self._renewing = False
                log.info("renewing the command stream")
                continue
            log.warning("coordinator stream ended (%s); reconnecting", why)
            self._abort_job("lost the coordinator")
            self._new_channel()

    def _new_channel(self) -> None:
        old, self.channel = self.channel, None
        if old is not None:
            old.close()
        try:
            self.channel = open_channel(self.cfg.coordinator, self.cfg.tls, self.cfg.identity,
                                        self.cfg.server_name)
            self.stub = pb_grpc.CoordinatorStub(self.channel)
        except (OSError, ValueError) as exc:       # a TLS file missing or unreadable
            self.stub = None
            self._problem(f"TLS: {exc}")

    def _hello(self) -> pb.NodeHello:
        return pb.NodeHello(version="2", datasets=sorted(self.cfg.datasets),
                            dataset_status=self._dataset_status(),
                            max_concurrent_jobs=self.cfg.max_concurrent_jobs)

    def _subscribe(self):
        """Open the command stream; return it once the coordinator has acknowledged
        the node (Subscribe's initial metadata), raise grpc.RpcError otherwise."""
        if self.stub is None:
            self._new_channel()
            if self.stub is None:
                raise _NoChannel()
        self._check_coordinator()
        stream = self.stub.Subscribe(self._hello(), timeout=SUBSCRIBE_DEADLINE_S)
        self._stream, self._stream_since = stream, time.time()
        if self._stop.is_set():      # request_stop ran before there was this stream to cancel
            stream.cancel()
        timer = threading.Timer(WELCOME_TIMEOUT_S, stream.cancel)   # a silent connection
        timer.start()
        try:
            md = dict(stream.initial_metadata() or ())
        finally:
            timer.cancel()
        if WELCOME_KEY in md or not stream.done():
            return stream
        raise _Failed(stream.code(), stream.details() or "")

    def _not_connected(self, exc: grpc.RpcError, backoff: float) -> None:
        if isinstance(exc, _NoChannel):
            return                  # _new_channel has said why
        code, detail = exc.code(), exc.details() or ""
        if code == grpc.StatusCode.PERMISSION_DENIED and "revoked" in detail:
            why = f"revoked: the coordinator refused {self.cfg.identity}: {detail}"
        elif code == grpc.StatusCode.PERMISSION_DENIED:
            why = f"wrong role: the coordinator refused {self.cfg.identity} ({detail})"
        else:
            if code == grpc.StatusCode.CANCELLED:          # our WELCOME_TIMEOUT_S timer
                detail = f"no acknowledgement within {WELCOME_TIMEOUT_S:.0f} s"
            last_detail, why, when = self._diagnosed
            if detail != last_detail or time.time() - when > 30:   # the probe takes up to 3 s
                why = diagnose(self.cfg.coordinator, self.cfg.tls, self.cfg.identity,
                               self.cfg.server_name, detail)
                self._diagnosed = (detail, why, time.time())
        self._problem(f"{why}; retrying in {backoff:.1f} s")

    def _problem(self, line: str) -> None:
        """Log why the node is not connected: when the reason changes, else every 30 s."""
        key = line.rsplit("; retrying", 1)[0]
        if key != self._last_problem or time.time() - self._problem_logged > 30:
            log.warning("not connected to coordinator %s: %s", self.cfg.coordinator, line)
            self._last_problem, self._problem_logged = key, time.time()

    def _check_coordinator(self) -> None:
        """With a revocation list: the coordinator's certificate must be a coordinator's
        and not revoked (checked on every (re)connection)."""
        if self.cfg.tls is None or self.revoked is None:
            return
        try:
            info = server_identity(self.cfg.coordinator, self.cfg.tls)
        except (OSError, ValueError):    # the network or TLS: name the cause (connect.py)
            raise CoordinatorRefused(diagnose(self.cfg.coordinator, self.cfg.tls,
                                              self.cfg.identity, self.cfg.server_name)
                                     or "the coordinator's certificate could not be checked") \
                from None
        if info.role != "coordinator":
            raise CoordinatorRefused(f"the server's certificate is {info.identity}'s, not a "
                                     "coordinator's")
        if self.revoked.revoked(info.serial):
            raise CoordinatorRefused(f"revoked: the coordinator's certificate (serial "
                                     f"{serial_hex(info.serial)}) is on this node's "
                                     "revocation list")

    def request_stop(self) -> None:
        """Make run_forever return soon (it may be waiting on the command stream). Only
        that: the stop itself (the reply, the worker, the channel) is stop()'s, called
        once the main loop is out. Not for a signal handler (see party_node.startup)."""
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.cancel()
            except Exception:
                pass

    def stop(self) -> None:
        self._stop.set()
        for job in list(self.jobs.values()):
            if not job.cancelled and not job.ended:
                self._reply(job.id, failed=pb.Failed(reason="the party's node is shutting "
                                                     "down"))
        self._abort_job("node stopping")
        self.workers.drop()
        try:
            self._stream.cancel()
        except Exception:
            pass
        if self.channel is not None:
            self.channel.close()

    def _heartbeat(self) -> None:
        refused = 0
        while not self._stop.wait(HEARTBEAT_S):
            self.recheck_datasets()
            if not self.jobs and self._stream is not None and \
                    time.time() - self._stream_since > SUBSCRIBE_DEADLINE_S / 2:
                self._renewing = True
                self._stream.cancel()
            stub = self.stub
            if stub is None or not self._connected:    # heartbeats belong to a stream
                refused = 0
                continue
            try:
                busy = sorted(self.jobs)
                ack = stub.Beat(pb.Heartbeat(busy_job=busy[0] if busy else "", busy_jobs=busy,
                                             dataset_status=self._dataset_status()),
                                timeout=DEFAULT_DEADLINE_S)
                if ack.ok:
                    self._touch_status()
                    refused = 0
                else:
                    # the coordinator has dropped this node (e.g. after a network outage)
                    # while the stream still looks open here: subscribe again
                    refused += 1
                    if refused >= 2 and self._stream is not None:
                        log.warning("the coordinator no longer lists this node; "
                                    "subscribing again")
                        refused = 0
                        self._stream.cancel()
            except (grpc.RpcError, ValueError):          # ValueError: a closed channel
                pass

    def _touch_status(self) -> None:
        try:
            with open(self.cfg.status_file, "w") as fh:
                json.dump({"party": self.cfg.party_id, "time": time.time(),
                           "busy_job": ", ".join(sorted(self.jobs)),
                           "datasets": {n: {"available": st.available, "problem": st.problem}
                                        for n, st in self.datasets.items()}}, fh)
        except OSError:
            pass

    # ---- data sets -------------------------------------------------------------------------
    def _dataset_status(self) -> list:
        return [pb.DatasetStatus(name=n, available=st.available, problem=st.problem)
                for n, st in sorted(self.datasets.items())]

    def recheck_datasets(self, force: bool = False) -> None:
        """Check again every data set whose file changed (all of them with force, on
        SIGHUP); log what changed. The next heartbeat tells the coordinator."""
        for name, ds in sorted(self.cfg.datasets.items()):
            old = self.datasets.get(name)
            if not force and old is not None and old.stamp == datasets.stamp(ds.source):
                continue
            self._set_status(datasets.check(name, ds))

    def _set_status(self, st: "datasets.Status") -> None:
        old = self.datasets.get(st.name)
        self.datasets[st.name] = st
        if old is None or (old.available, old.problem) != (st.available, st.problem):
            if st.available:
                log.info("data set %r is available (%s)", st.name,
                         self.cfg.datasets[st.name].path)
            else:
                log.warning("data set unavailable: %s", st.local)

    def _reply(self, job_id: str, **kind) -> None:
        stub = self.stub
        try:
            if stub is None:
                raise ValueError("no channel")
            stub.Reply(pb.NodeReply(job_id=job_id, **kind), timeout=DEFAULT_DEADLINE_S)
        except grpc.RpcError as exc:
            log.warning("reply for job %s not delivered: %s", job_id, exc.code().name)
        except ValueError:           # the channel was closed or is being replaced
            log.warning("reply for job %s not delivered: not connected", job_id)

    def _handle(self, cmd: pb.NodeCommand) -> None:
        kind = cmd.WhichOneof("command")
        if kind is None:
            return log.warning("ignored an empty command from the coordinator")
        try:
            getattr(self, f"_on_{kind}")(getattr(cmd, kind))
        except Exception as exc:  # noqa: BLE001 - a hostile command must not stop the node
            log.warning("ignored a %s command the node could not handle (%s)", kind,
                        type(exc).__name__)

    # ---- agreement -----------------------------------------------------------------------
    def _on_offer(self, offer: pb.Offer) -> None:
        if not signing.valid_job_id(offer.job_id):
            log.warning("ignored an offer whose job id is malformed")
            return
        if not self._slot_free():   # the coordinator schedules within the limit: a race only
            log.info("refusing job %s: at max_concurrent_jobs (%d)", offer.job_id,
                     self.cfg.max_concurrent_jobs)
            return self._reply(offer.job_id, refuse=pb.Refuse(reason="busy"))
        try:
            spec, submitter, receivers = self._verified(offer)
        except signing.SignatureError as exc:
            log.warning("refusing job %s: %s", offer.job_id, exc)
            return self._reply(offer.job_id,
                               refuse=pb.Refuse(reason=f"signed job rejected: {exc}"))
        except (sqlite3.Error, OSError) as exc:
            return self._state_failed(offer.job_id, exc)
        reason = self._policy_check(offer, spec, submitter)
        job = Job(offer, spec)
        job.receivers = receivers
        job.columns = self._columns
        job.signed_spec = offer.signed_spec
        if not reason:
            job.port = self._free_port()
            if not job.port:
                reason = f"no free port in {self.cfg.port_range[0]}-{self.cfg.port_range[1]}"
        try:
            reason = reason or self._charge(job)  # the last check: nothing moves before it
        except (sqlite3.Error, OSError) as exc:
            return self._state_failed(offer.job_id, exc)
        if reason:
            log.info("refusing job %s: %s", offer.job_id, reason)
            return self._reply(offer.job_id, refuse=pb.Refuse(reason=reason))
        with self._lock:
            self.jobs[job.id] = job
        log.info("accepting job %s", job.id)
        acc = pb.Accept(seed_commitment=self._commitment(job),
                        rendezvous_address=self.cfg.advertise, rendezvous_port=job.port)
        if self.key_pem is not None:          # signed: the coordinator cannot alter it
            acc.announcement, acc.signature = signing.announce(
                job.id, self.cfg.party_id, acc.seed_commitment, self.cfg.advertise, job.port,
                self.key_pem)
            acc.cert = self.cert_pem
        self._reply(job.id, accept=acc)

    def _commitment(self, job: Job) -> bytes:
        return hashlib.sha256(job.nonce).digest()

    def _state_failed(self, job_id: str, exc: Exception) -> None:
        """The node's state file (seen offers, privacy ledger) cannot be used: refuse."""
        log.error("job %s: the node's state file %s cannot be used (%s: %s)", job_id,
                  self.cfg.results_dir, type(exc).__name__, exc)
        self._reply(job_id, refuse=pb.Refuse(reason="this node's state file (seen offers, "
                                             "privacy ledger) cannot be used; details in "
                                             "its local log"))

    def _verified(self, offer: pb.Offer) -> tuple:
        """(spec, submitter, receivers) from the submitter's signature, before any
        policy check (party_node.agreement). A node without TLS (insecure: local
        experiments) takes the coordinator's word."""
        if self.ca_pem is None:
            return offer.spec, offer.submitter, {}
        return agreement.verify_offer(offer, self.ca_pem, self.revoked, self.state.seen_before)

    def _policy_check(self, offer: pb.Offer, spec: Optional[pb.JobSpec] = None,
                      submitter: Optional[str] = None) -> str:
        """A reason naming the rule (never a row or a value), or '' (party_node.policy)."""
        spec = offer.spec if spec is None else spec
        submitter = offer.submitter if submitter is None else submitter
        reason = policy.job_reason(self.cfg, spec, submitter)
        if reason:
            return reason
        name = policy.my_dataset(self.cfg, spec)
        self.recheck_datasets()              # only a file that changed is read again
        st = self.datasets.get(name)
        reason = policy.dataset_reason(spec, name, st)
        if not reason:
            self._columns = st.columns
        return reason

    def _charge(self, job: Job) -> str:
        """Charge a DP job to this party's data set, atomically and before any share
        moves; '' when charged (or an exact job), else the refusal. A charge is kept
        even if the job fails later."""
        priv = jobspec.privacy_of(job.spec)
        if priv is None:
            return ""

        name = next(p.dataset for p in job.spec.parties if p.id == self.cfg.party_id)
        reason = self.state.charge(name, job.id, priv.epsilon, priv.delta, noise_scale(priv),
                                   self.cfg.budget(name), spent_epsilon)
        if not reason:
            log.info("job %s: charged epsilon %.4g, delta %.3g to data set %r", job.id,
                     priv.epsilon, priv.delta, name)
        return reason

    def _check_run(self, job: Job, run: pb.Run) -> str:
        """The Run against the signed spec and the signed announcements
        (party_node.agreement); the MPC links then accept exactly the certificate
        each rank signed with."""
        reason, fingerprints = agreement.check_run(
            job.id, job.spec, run, self.cfg.identity, job.port, self.cfg.advertise,
            self.ca_pem, self.revoked)
        if not reason:
            job.fingerprints = fingerprints
        return reason

    def _mpc_payload(self, job: Job, run: pb.Run, seed: int) -> dict:
        tls = self.cfg.tls
        return {"rank": run.rank, "world_size": run.world_size,
                "peers": [[p.identity, p.host, p.port, job.fingerprints.get(p.identity, "")]
                          for p in run.peers],
                "security": None if tls is None else [tls.ca, tls.cert, tls.key],
                "transport": job.spec.transport or "tls", "listen_host": "",
                # every rank hashes this before anything secret moves (runtime.MPCConfig)
                "context": agreement.job_context(job.id, job.spec, seed),
                "timeout_s": run.timeout_s or self.cfg.mpc_timeout_s}

    def _slot_free(self) -> bool:
        """Fewer jobs than max_concurrent_jobs that have not ended. A job offered
        but never run (its cancel lost) stops counting after STALE_OFFER_S."""
        now = time.time()
        with self._lock:
            for jid, job in list(self.jobs.items()):
                if job.ended or (job.proc is None and now - job.accepted_at > STALE_OFFER_S):
                    del self.jobs[jid]
            return len(self.jobs) < self.cfg.max_concurrent_jobs

    def _free_port(self) -> int:
        """A port of the range that no job of this node holds and nothing listens on."""
        lo, hi = self.cfg.port_range
        with self._lock:
            held = {j.port for j in self.jobs.values()}
        for port in range(lo, hi + 1):
            if port in held:
                continue
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("", port))
                    return port
                except OSError:
                    continue
        return 0

    def _on_reveal(self, req: pb.RevealRequest) -> None:
        job = self.jobs.get(req.job_id)
        if job is None:
            return
        commits = {c.party: c.commitment for c in req.commits}
        if set(commits) != {p.id for p in job.spec.parties} or len(commits) != len(req.commits) \
                or commits.get(self.cfg.party_id) != hashlib.sha256(job.nonce).digest():
            return self._fail(job, "the seed commitments shown before the reveal are "
                              "incomplete or altered")
        if self.ca_pem is not None:    # every commitment as its own party signed it
            try:
                for c in req.commits:
                    job.announced[c.party] = signing.verify_announcement(
                        c.announcement, c.signature, c.cert, self.ca_pem, job.id, c.party,
                        c.commitment, self.revoked)
            except signing.SignatureError as exc:
                return self._fail(job, f"the seed commitments are not as the parties signed "
                                  f"them ({exc})")
        job.commits = commits      # reveal only after everyone's commitment is fixed
        self._reply(job.id, reveal=pb.SeedReveal(party=self.cfg.party_id, nonce=job.nonce))

    # ---- run -------------------------------------------------------------------------------
    def _on_run(self, run: pb.Run) -> None:
        job = self.jobs.get(run.job_id)
        if job is None:
            return
        # ranks and world size follow from the signed spec; run.carry_result (v1.1) is
        # ignored: no party opens an analyst's result (each seals its share instead)
        ids = [p.id for p in job.spec.parties]
        rank = ids.index(self.cfg.party_id)
        if run.rank != rank or run.world_size != len(ids):
            return self._fail(job, "the coordinator's rank or world size disagrees with the "
                              "signed job")
        commits = {c.party: c.commitment for c in run.commits}
        if not job.commits or commits != job.commits:
            return self._fail(job, "the seed commitments changed after the reveal")
        mine = next((r.nonce for r in run.reveals if r.party == self.cfg.party_id), None)
        if mine != job.nonce:
            return self._fail(job, "this party's own seed contribution was altered")
        seed = self._joint_seed(job, run, commits)
        if seed is None:
            return
        bad = self._check_run(job, run)
        if bad:
            return self._fail(job, bad)
        log.info("job %s seed %032x (rank %d of %d)", job.id, seed, run.rank, run.world_size)
        threading.Thread(target=self._run_worker, args=(job, run, seed), daemon=True).start()

    def _joint_seed(self, job: Job, run: pb.Run, commits: dict) -> Optional[int]:
        """The seed from every party's reveal, each checked against its commitment
        (None, and the job failed, if one does not match)."""
        nonces = []
        for p in job.spec.parties:
            rev = next((r for r in run.reveals if r.party == p.id), None)
            if rev is None or hashlib.sha256(rev.nonce).digest() != commits.get(p.id):
                self._fail(job, f"seed reveal of party {p.id} does not match its commitment")
                return None
            nonces.append(rev.nonce)
        return joint_seed(nonces)

    def _params(self, spec: pb.JobSpec, run: pb.Run, seed: int) -> dict:
        """The engine's parameters, from the signed spec only: the receiving parties
        open the output, analyst receivers get every party's share."""
        return jobspec.engine_params(spec, seed)

    def _run_worker(self, job: Job, run: pb.Run, seed: int) -> None:
        try:
            self._run_worker_inner(job, run, seed)
            self._refill_spare()
        except Exception as exc:  # noqa: BLE001 - a reason for the coordinator, no traceback
            log.warning("job %s: the worker could not be run (%s)", job.id, type(exc).__name__)
            if not job.cancelled:
                self._fail(job, f"the worker could not be run ({type(exc).__name__})")
            self._forget(job)

    def _worker_job(self, job: Job, run: pb.Run, seed: int) -> dict:
        me = next(p for p in job.spec.parties if p.id == self.cfg.party_id)
        ds = self.cfg.datasets[me.dataset]
        params = self._params(job.spec, run, seed)
        if policy.floor_at_run_time(job.spec):   # this party's floor, checked once h is
            # estimated or standardised (in the bounds' units: runtime.run_party scales it)
            span = max(h - l for l, h in zip(job.spec.bounds_lo, job.spec.bounds_hi))
            params["min_bandwidth"] = self.cfg.policy.min_bandwidth_fraction * span
        return {"role": "party", "path": ds.path, "columns": ds.columns,
                "source": ds.source.to_dict(),
                "dataset": me.dataset, "params": params, "max_seeds": self.cfg.policy.max_dust,
                **self._mpc_payload(job, run, seed)}

    def _run_worker_inner(self, job: Job, run: pb.Run, seed: int) -> None:
        payload = self._worker_job(job, run, seed)
        proc = self.workers.take()
        job.proc = proc
        if job.cancelled:
            proc.kill()
        try:
            proc.stdin.write(json.dumps(payload))
            proc.stdin.close()
        except OSError:               # the worker is already gone (cancelled, killed)
            pass
        outcome = None
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "local" in msg:          # for this node's own log only
                log.info("job %s: %s", job.id, msg["local"])
                continue
            if "progress" in msg:
                ev = msg["progress"]
                if ev.get("stage") == "suppressed":     # for receivers only, not progress
                    job.suppressed = int(ev.get("count", 0) or 0)
                    continue
                if ev.get("stage") == "local":          # counts only, never values
                    log.info("job %s: local summary (%s): %d rows read, %d cells%s", job.id,
                             ev.get("engine", ""), int(ev.get("rows", 0)),
                             int(ev.get("cells", 0)), ", done" if ev.get("done") else "")
                mv = ev.get("moving")
                self._reply(job.id, progress=pb.Progress(
                    stage=ev.get("stage", ""), iteration=int(ev.get("iteration", 0) or 0),
                    max_iter=int(ev.get("max_iter", 0) or 0),
                    moving="" if mv is None else ("yes" if mv else "no"),
                    seconds=float(ev.get("seconds", 0.0) or 0.0),
                    chunk=int(ev.get("chunk", 0) or 0), chunks=int(ev.get("chunks", 0) or 0),
                    rows=int(ev.get("rows", 0) or 0), cells=int(ev.get("cells", 0) or 0)))
            else:
                outcome = msg
        code = proc.wait()
        if job.cancelled:
            log.info("job %s stopped: %s", job.id, job.cancelled)
        elif outcome and "result" in outcome:
            self._finished(job, run, outcome["result"])
        else:
            peer_lost = bool(outcome and outcome.get("peer_lost"))
            if outcome and outcome.get("input"):
                log.warning("job %s: the engine rejected the local data: %s", job.id,
                            outcome.get("error"))
                why = "the engine rejected this party's input (details in its local log)"
            elif outcome and "error" in outcome:
                why = outcome["error"]
            elif code == -signal.SIGABRT:
                # a worker aborted by a signal may have lost a peer under it: let
                # the coordinator look for the party at fault before naming one
                why, peer_lost = "worker aborted (SIGABRT): a peer may have left", True
            elif code < 0:
                why = f"worker died (signal {-code})"
            else:
                why = f"worker exited with code {code}"
            self._fail(job, why, peer_lost=peer_lost,
                       lost_peers=(outcome or {}).get("lost_peers") or ())
        self._forget(job)

    def _finished(self, job: Job, run: pb.Run, res: dict) -> None:
        cents = res.get("centroids")
        if cents is not None and self.cfg.party_id in job.spec.reveal_to:
            write_result(self.cfg.results_dir, job.id, np.asarray(cents),
                         len(job.spec.bounds_lo), self._header(job))
            log.info("job %s: result written to the results folder (%s centroids "
                     "suppressed as too small)", job.id, job.suppressed or 0)
        fin = pb.Finished(iterations=int(res.get("iterations", 0)),
                          wall_s=float(res.get("wall_s", 0.0)))
        share = res.get("share")
        if share is not None:       # analyst receivers: this party's share, sealed and signed
            fin.shares.extend(self._sealed_shares(job, run.rank, share))
        log.info("job %s finished", job.id)
        self._last_reply(job, finished=fin)

    def _sealed_shares(self, job: Job, rank: int, share: dict) -> list:
        """This party's output share for each analyst receiver (party_node.output)."""
        analysts = sorted(r for r in job.spec.reveal_to if r.startswith("analyst:"))
        return output.sealed_shares(share, self._header(job), analysts, job.receivers, job.id,
                                    job.signed_spec, rank, self.cfg.party_id, self.key_pem,
                                    self.cert_pem)

    @staticmethod
    def _header(job: Job) -> list:
        return output.header(job.columns, len(job.spec.bounds_lo))

    def _fail(self, job: Job, reason: str, peer_lost: bool = False,
              lost_peers=()) -> None:
        log.warning("job %s failed: %s", job.id, reason)
        self._last_reply(job, failed=pb.Failed(reason=reason, peer_lost=peer_lost,
                                               lost_peers=list(lost_peers)))
        self._forget(job)

    def _on_cancel(self, c: pb.Cancel) -> None:
        job = self.jobs.get(c.job_id)
        if job is None:
            return
        self._stop_worker(job, c.reason or "cancelled")

    def _stop_worker(self, job: Job, why: str) -> None:
        job.cancelled = why
        proc = job.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._forget(job)

    def _refill_spare(self) -> None:
        if not self._stop.is_set():
            self.workers.refill()

    def _abort_job(self, why: str) -> None:
        """Stop every job of this node."""
        for job in list(self.jobs.values()):
            self._stop_worker(job, why)

    def _last_reply(self, job: Job, **kind) -> None:
        """The job's last word (finished, failed): its slot is free before the
        coordinator reads it (it may offer this node the next job at once)."""
        job.ended = True
        self._reply(job.id, **kind)

    def _forget(self, job: Job) -> None:
        """The job holds no slot nor port any more."""
        job.ended = True
        with self._lock:
            if self.jobs.get(job.id) is job:
                del self.jobs[job.id]
