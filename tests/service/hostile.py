"""Helpers for the issue-9 tests: an in-process coordinator, a hand-driven party
node speaking the protocol to it, and a hostile coordinator that real node
processes connect to."""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from concurrent import futures

import grpc

from cluster import NAMES
from coordinator.client import Client
from coordinator.server import serve
from meanshift_proto.v1 import service_pb2 as pb
from meanshift_proto.v1 import service_pb2_grpc as pb_grpc
from meanshift_rpc.tls import TLSFiles, open_channel, server_credentials
from testkit import dev_pki, job_spec

IDENTITIES = ["coordinator", "analyst:ann", "analyst:eve", "operator:olga", "dealer:dan", "dealer:dd"] + \
    [f"party:{n}" for n in NAMES]


class Coord:
    """A real coordinator (CoordinatorService) in this process, mutual TLS."""

    def __init__(self, tmp: str, **kw):
        self.tmp = tmp
        self.certs = os.path.join(tmp, "certs")
        if not os.path.exists(os.path.join(self.certs, "ca.pem")):
            dev_pki(self.certs, IDENTITIES)
        self.db = os.path.join(tmp, "coord.db")
        kw.setdefault("agreement_timeout", 20.0)
        kw.setdefault("heartbeat_timeout", 600.0)      # hand-driven nodes do not heartbeat
        self.server, self.svc = serve("127.0.0.1:0", self.db,
                                      TLSFiles.in_dir(self.certs, "coordinator"), **kw)
        self.address = f"127.0.0.1:{self.svc.port}"

    def client(self, who: str = "analyst:ann", **kw) -> Client:
        return Client(self.address, tls_dir=self.certs, identity=who, deadline_s=10, **kw)

    def stub(self, who: str):
        ch = open_channel(self.address, TLSFiles.in_dir(self.certs, who), who)
        return pb_grpc.CoordinatorStub(ch), ch

    def audit(self, job_id=None) -> list:
        rows = self.svc.store.audit_log()
        return [r for r in rows if job_id is None or r[3] == job_id]

    def stop(self):
        self.svc.stop()
        self.server.stop(0)


class FakeNode:
    """A party node driven by hand: subscribes, then answers as the test says."""

    def __init__(self, coord: Coord, party: str, role: str = "party"):
        self.party, self.role = party, role
        self.stub, self.ch = coord.stub(f"{role}:{party}")
        self.commands: "queue.Queue" = queue.Queue()
        self.nonce = os.urandom(32)
        self._stream = self.stub.Subscribe(pb.NodeHello(version="1", datasets=["points"]))
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        try:
            for cmd in self._stream:
                self.commands.put(cmd)
        except grpc.RpcError:
            pass

    def next(self, kind: str, timeout: float = 10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                cmd = self.commands.get(timeout=0.2)
            except queue.Empty:
                continue
            if cmd.WhichOneof("command") == kind:
                return getattr(cmd, kind)
        raise TimeoutError(f"{self.party}: no {kind}")

    def reply(self, job_id: str, **kind) -> pb.Ack:
        return self.stub.Reply(pb.NodeReply(job_id=job_id, **kind), timeout=10)

    def accept(self, job_id: str, port: int = 29999) -> pb.Ack:
        commitment = hashlib.sha256(self.nonce).digest() if self.role == "party" else b""
        return self.reply(job_id, accept=pb.Accept(
            seed_commitment=commitment, rendezvous_address="127.0.0.1", rendezvous_port=port))

    def reveal(self, job_id: str) -> pb.Ack:
        return self.reply(job_id, reveal=pb.SeedReveal(party=self.party, nonce=self.nonce))

    def close(self):
        self._stream.cancel()
        self.ch.close()


def wait_parties(coord: Coord, names, timeout=10.0):
    c = coord.client("operator:olga")
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if set(names) <= {p["id"] for p in c.parties() if p["connected"]}:
                return
            time.sleep(0.05)
    finally:
        c.close()
    raise TimeoutError("fake parties did not subscribe")


class EvilCoordinator(pb_grpc.CoordinatorServicer):
    """Holds a genuine coordinator certificate but sends whatever the test wants;
    records every reply a node sends."""

    def __init__(self, certs: str):
        self.commands: "queue.Queue" = queue.Queue()
        self.replies: "queue.Queue" = queue.Queue()
        self.connected = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        pb_grpc.add_CoordinatorServicer_to_server(self, self.server)
        self.port = self.server.add_secure_port(
            "127.0.0.1:0", server_credentials(TLSFiles.in_dir(certs, "coordinator")))
        self.address = f"127.0.0.1:{self.port}"
        self.server.start()

    def Subscribe(self, request, context):
        self.connected.set()
        while context.is_active():
            try:
                cmd = self.commands.get(timeout=0.2)
            except queue.Empty:
                continue
            yield cmd

    def Beat(self, request, context):
        return pb.Ack(ok=True)

    def Reply(self, request, context):
        self.replies.put(request)
        return pb.Ack(ok=True)

    def send(self, **cmd):
        self.commands.put(pb.NodeCommand(**cmd))

    def next_reply(self, job_id: str, timeout: float = 15.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                r = self.replies.get(timeout=0.2)
            except queue.Empty:
                continue
            if r.job_id == job_id:
                return r
        return None

    def stop(self):
        self.server.stop(0)


def spec(**kw) -> dict:
    """The two-party job the trust and queue tests submit (testkit.job_spec, with
    the dealer dan), with fields replaced by kw."""
    d = job_spec(("alpha", "beta"), dealer="dan", name="t")
    d.update(kw)
    return d
