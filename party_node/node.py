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
import subprocess
import sys
import threading
import time
from typing import Optional

import grpc
import numpy as np

from meanshift_proto.v1 import service_pb2 as pb
from meanshift_proto.v1 import service_pb2_grpc as pb_grpc
from meanshift_rpc import DEFAULT_DEADLINE_S, joint_seed
from meanshift_rpc.tls import open_channel

from .config import NodeConfig

log = logging.getLogger("party_node")
HEARTBEAT_S = 3.0
# The command stream is long-lived but, like every call, has a deadline; an idle
# node renews it after half of that, so a deadline never ends a running job.
SUBSCRIBE_DEADLINE_S = 24 * 3600.0


class Job:
    def __init__(self, offer: pb.Offer):
        self.id, self.spec = offer.job_id, offer.spec
        self.nonce = os.urandom(32)
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.cancelled = False
        self.commits: dict = {}      # party -> commitment, as shown before we revealed


class PartyNode:
    def __init__(self, cfg: NodeConfig):
        self.cfg = cfg
        self.channel = open_channel(cfg.coordinator, cfg.tls, cfg.identity, cfg.server_name)
        self.stub = pb_grpc.CoordinatorStub(self.channel)
        self.job: Optional[Job] = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stream = None
        self._stream_since = time.time()
        self._renewing = False
        self._spare: Optional[subprocess.Popen] = None

    # ---- main loop -----------------------------------------------------------------------
    def run_forever(self) -> None:
        threading.Thread(target=self._heartbeat, daemon=True).start()
        backoff = 1.0
        while not self._stop.is_set():
            try:
                hello = pb.NodeHello(version="1", datasets=sorted(self.cfg.datasets))
                stream = self.stub.Subscribe(hello, timeout=SUBSCRIBE_DEADLINE_S)
                self._stream, self._stream_since = stream, time.time()
                log.info("connected to coordinator %s as %s", self.cfg.coordinator,
                         self.cfg.identity)
                backoff = 1.0
                self._refill_spare()
                for cmd in stream:
                    self._handle(cmd)
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    break
                if self._renewing:
                    self._renewing = False
                    log.info("renewing the command stream")
                    continue
                log.warning("coordinator stream ended (%s); reconnecting in %.0f s",
                            exc.code().name, backoff)
            self._abort_job("lost the coordinator")
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def stop(self) -> None:
        self._stop.set()
        job = self.job
        if job is not None and not job.cancelled:
            self._reply(job.id, failed=pb.Failed(reason="the party's node is shutting down"))
        self._abort_job("node stopping")
        self._drop_spare()
        try:
            self._stream.cancel()
        except Exception:
            pass
        self.channel.close()

    def _heartbeat(self) -> None:
        refused = 0
        while not self._stop.wait(HEARTBEAT_S):
            if self.job is None and self._stream is not None and \
                    time.time() - self._stream_since > SUBSCRIBE_DEADLINE_S / 2:
                self._renewing = True
                self._stream.cancel()
            try:
                ack = self.stub.Beat(pb.Heartbeat(busy_job=self.job.id if self.job else ""),
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
            except grpc.RpcError:
                pass

    def _touch_status(self) -> None:
        try:
            with open(self.cfg.status_file, "w") as fh:
                json.dump({"party": self.cfg.party_id, "time": time.time(),
                           "busy_job": self.job.id if self.job else ""}, fh)
        except OSError:
            pass

    def _reply(self, job_id: str, **kind) -> None:
        try:
            self.stub.Reply(pb.NodeReply(job_id=job_id, **kind), timeout=DEFAULT_DEADLINE_S)
        except grpc.RpcError as exc:
            log.warning("reply for job %s not delivered: %s", job_id, exc.code().name)

    def _handle(self, cmd: pb.NodeCommand) -> None:
        kind = cmd.WhichOneof("command")
        getattr(self, f"_on_{kind}")(getattr(cmd, kind))

    # ---- agreement -----------------------------------------------------------------------
    def _on_offer(self, offer: pb.Offer) -> None:
        reason = self._policy_check(offer)
        if reason:
            log.info("refusing job %s: %s", offer.job_id, reason)
            return self._reply(offer.job_id, refuse=pb.Refuse(reason=reason))
        job = Job(offer)
        job.port = self._free_port()
        if not job.port:
            return self._reply(offer.job_id, refuse=pb.Refuse(
                reason=f"no free port in {self.cfg.port_range[0]}-{self.cfg.port_range[1]}"))
        with self._lock:
            self.job = job
        log.info("accepting job %s", job.id)
        self._reply(job.id, accept=pb.Accept(seed_commitment=hashlib.sha256(job.nonce).digest(),
                                             rendezvous_address=self.cfg.advertise,
                                             rendezvous_port=job.port))

    def _policy_check(self, offer: pb.Offer) -> str:
        spec, pol = offer.spec, self.cfg.policy
        if self.job is not None and self.job.proc is not None and self.job.proc.poll() is None:
            return f"busy with job {self.job.id}"
        me = [p for p in spec.parties if p.id == self.cfg.party_id]
        if not me:
            return "this node is not a party of the job"
        if spec.kernel not in pol.kernels:
            return f"kernel {spec.kernel!r} not allowed by local policy"
        if len(spec.parties) < pol.min_parties:
            return f"local policy requires at least {pol.min_parties} parties"
        if "*" not in pol.allowed_submitters and offer.submitter not in pol.allowed_submitters:
            return f"submitter {offer.submitter} may not run jobs on this data"
        if "*" not in pol.allowed_receivers:
            bad = [r for r in spec.reveal_to if r not in pol.allowed_receivers]
            if bad:
                return f"the result may not go to {bad[0]}"
        ds = self.cfg.datasets.get(me[0].dataset)
        if ds is None:
            return f"no data set named {me[0].dataset!r} on this node"
        try:   # catch bad data now, before anybody starts computing
            from secure_meanshift.data import check_points, load_points

            check_points(load_points(ds.path, ds.columns),
                         (list(spec.bounds_lo), list(spec.bounds_hi)),
                         f"data set {me[0].dataset!r}")
        except ValueError as exc:        # InputError: names rows and columns, never values
            return str(exc)
        return ""

    def _free_port(self) -> int:
        lo, hi = self.cfg.port_range
        for port in range(lo, hi + 1):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("", port))
                    return port
                except OSError:
                    continue
        return 0

    def _on_reveal(self, req: pb.RevealRequest) -> None:
        job = self.job
        if job is None or job.id != req.job_id:
            return
        commits = {c.party: c.commitment for c in req.commits}
        if set(commits) != {p.id for p in job.spec.parties} or len(commits) != len(req.commits) \
                or commits.get(self.cfg.party_id) != hashlib.sha256(job.nonce).digest():
            return self._fail(job, "the seed commitments shown before the reveal are "
                              "incomplete or altered")
        job.commits = commits      # reveal only after everyone's commitment is fixed
        self._reply(job.id, reveal=pb.SeedReveal(party=self.cfg.party_id, nonce=job.nonce))

    # ---- run -------------------------------------------------------------------------------
    def _on_run(self, run: pb.Run) -> None:
        job = self.job
        if job is None or job.id != run.job_id:
            return
        commits = {c.party: c.commitment for c in run.commits}
        if not job.commits or commits != job.commits:
            return self._fail(job, "the seed commitments changed after the reveal")
        mine = next((r.nonce for r in run.reveals if r.party == self.cfg.party_id), None)
        if mine != job.nonce:
            return self._fail(job, "this party's own seed contribution was altered")
        nonces = []
        for p in job.spec.parties:
            rev = next((r for r in run.reveals if r.party == p.id), None)
            if rev is None or hashlib.sha256(rev.nonce).digest() != commits.get(p.id):
                return self._fail(job, f"seed reveal of party {p.id} does not match its "
                                  "commitment")
            nonces.append(rev.nonce)
        seed = joint_seed(nonces)
        log.info("job %s seed %d (rank %d of %d)", job.id, seed, run.rank, run.world_size)
        threading.Thread(target=self._run_worker, args=(job, run, seed), daemon=True).start()

    def _params(self, spec: pb.JobSpec, run: pb.Run, seed: int) -> dict:
        ids = [p.id for p in spec.parties]
        ranks = sorted({ids.index(r) for r in spec.reveal_to if r in ids}
                       | ({run.rank} if run.carry_result else set()))
        auto = {"quantile": spec.quantile or 0.3} if spec.bandwidth_auto else {}
        return {**auto, "bandwidth": "auto" if spec.bandwidth_auto else spec.bandwidth,
                "bounds": [list(spec.bounds_lo), list(spec.bounds_hi)],
                "n_dust": spec.n_dust, "kernel": spec.kernel, "max_iter": spec.max_iter,
                "tol": spec.tol or None, "oblivious": spec.oblivious, "seed": seed,
                "merge_radius": spec.merge_radius or None, "reveal_to": ranks or [0],
                "return_sizes": spec.return_sizes,
                "merge": spec.merge or "intensity", "seeding": spec.seeding or "dust",
                "seeds_per_party": spec.seeds_per_party or 32, "min_weight": spec.min_weight,
                "summary": "auto" if spec.summary == "auto" else
                (None if spec.summary == "exact" else float(spec.summary))}

    def _run_worker(self, job: Job, run: pb.Run, seed: int) -> None:
        try:
            self._run_worker_inner(job, run, seed)
            self._refill_spare()
        except Exception as exc:  # noqa: BLE001 - a reason for the coordinator, no traceback
            log.warning("job %s: the worker could not be run (%s)", job.id, type(exc).__name__)
            if not job.cancelled:
                self._fail(job, f"the worker could not be run ({type(exc).__name__})")
            with self._lock:
                if self.job is job:
                    self.job = None

    def _run_worker_inner(self, job: Job, run: pb.Run, seed: int) -> None:
        me = next(p for p in job.spec.parties if p.id == self.cfg.party_id)
        ds = self.cfg.datasets[me.dataset]
        payload = {"path": ds.path, "columns": ds.columns, "dataset": me.dataset,
                   "params": self._params(job.spec, run, seed), "rank": run.rank,
                   "world_size": run.world_size, "master_addr": run.master_addr,
                   "master_port": run.master_port, "timeout_s": run.timeout_s or
                   self.cfg.mpc_timeout_s, "ifname": self.cfg.ifname}
        proc = self._take_worker()
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
            if "progress" in msg:
                ev = msg["progress"]
                mv = ev.get("moving")
                self._reply(job.id, progress=pb.Progress(
                    stage=ev.get("stage", ""), iteration=int(ev.get("iteration", 0) or 0),
                    max_iter=int(ev.get("max_iter", 0) or 0),
                    moving="" if mv is None else ("yes" if mv else "no"),
                    seconds=float(ev.get("seconds", 0.0) or 0.0),
                    chunk=int(ev.get("chunk", 0) or 0), chunks=int(ev.get("chunks", 0) or 0)))
            else:
                outcome = msg
        code = proc.wait()
        if job.cancelled:
            log.info("job %s stopped: %s", job.id, job.cancelled)
        elif outcome and "result" in outcome:
            self._finished(job, run, outcome["result"])
        else:
            peer_lost = bool(outcome and outcome.get("peer_lost"))
            if outcome and "error" in outcome:
                why = outcome["error"]
            elif code == -signal.SIGABRT:
                # gloo aborts the process when a peer's connection breaks under it: let
                # the coordinator look for the party at fault before naming one
                why, peer_lost = "worker aborted (SIGABRT): a peer may have left", True
            elif code < 0:
                why = f"worker died (signal {-code})"
            else:
                why = f"worker exited with code {code}"
            self._fail(job, why, peer_lost=peer_lost)
        with self._lock:
            if self.job is job:
                self.job = None

    def _finished(self, job: Job, run: pb.Run, res: dict) -> None:
        cents = res.get("centroids")
        if cents is not None and self.cfg.party_id in job.spec.reveal_to:
            os.makedirs(self.cfg.results_dir, exist_ok=True)
            path = os.path.join(self.cfg.results_dir, f"{job.id}.csv")
            np.savetxt(path, np.asarray(cents), delimiter=",", comments="",
                       header=",".join(f"x{i}" for i in range(len(job.spec.bounds_lo))))
            log.info("job %s: result written to %s", job.id, path)
        fin = pb.Finished(iterations=int(res.get("iterations", 0)),
                          wall_s=float(res.get("wall_s", 0.0)))
        if run.carry_result and cents is not None:
            fin.centroids.extend(pb.Centroid(values=c) for c in cents)
            fin.sizes.extend(res.get("sizes") or [])
        log.info("job %s finished", job.id)
        self._reply(job.id, finished=fin)

    def _fail(self, job: Job, reason: str, peer_lost: bool = False) -> None:
        log.warning("job %s failed: %s", job.id, reason)
        self._reply(job.id, failed=pb.Failed(reason=reason, peer_lost=peer_lost))
        with self._lock:
            if self.job is job:
                self.job = None

    def _on_cancel(self, c: pb.Cancel) -> None:
        job = self.job
        if job is None or job.id != c.job_id:
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
        with self._lock:
            if self.job is job:
                self.job = None

    # ---- worker processes -----------------------------------------------------------------
    def _spawn_worker(self, prewarm: bool) -> subprocess.Popen:
        env = dict(os.environ, PYTHONUNBUFFERED="1", SMS_NODE_PID=str(os.getpid()),
                   SMS_WORKER_PREWARM="1" if prewarm else "0")
        return subprocess.Popen([sys.executable, "-m", "party_node.worker"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=env)

    def _take_worker(self) -> subprocess.Popen:
        """This job's worker: the spare started after the last job (torch and CrypTen
        already loaded, nothing else done) if it is alive, else a new process."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare.poll() is None:
            return spare
        return self._spawn_worker(prewarm=False)

    def _refill_spare(self) -> None:
        if not self.cfg.prewarm_worker or self._stop.is_set():
            return
        with self._lock:
            if self._spare is not None and self._spare.poll() is None:
                return
            try:
                self._spare = self._spawn_worker(prewarm=True)
            except OSError as exc:
                log.warning("could not start a spare worker (%s)", type(exc).__name__)
                self._spare = None

    def _drop_spare(self) -> None:
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare.poll() is None:
            try:
                spare.stdin.close()         # an empty job: the spare exits by itself
                spare.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                spare.kill()

    def _abort_job(self, why: str) -> None:
        job = self.job
        if job is not None:
            self._stop_worker(job, why)


def run_node(cfg: NodeConfig) -> None:
    """Run until SIGTERM / Ctrl-C; stops the current job's worker on the way out."""
    import signal

    node = PartyNode(cfg)
    signal.signal(signal.SIGTERM, lambda *a: node.stop())
    try:
        node.run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
