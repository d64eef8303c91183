"""Issue 9, the coordinator's side: identities pinned by role, signed submits,
authorised and audited reads, limits, the job state machine. A real coordinator
(in this process) with mutual TLS; hand-driven party nodes."""

import os
import stat
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

from coordinator.client import Client
from coordinator.server import serve
from hostile import Coord, FakeNode, spec, wait_parties
from meanshift_proto.v1 import service_pb2 as pb
from meanshift_rpc import signing
from meanshift_rpc.tls import IdentityError, TLSFiles, issue_certificate
from testkit import ROOT, cert_from_ca

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def coord(tmp_path_factory):
    c = Coord(str(tmp_path_factory.mktemp("coord")))
    yield c
    c.stop()



def code_of(fn):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code(), e.value.details()


# ---- identities pinned by role ------------------------------------------------------------

def test_only_a_coordinator_certificate_can_serve(coord, tmp_path):
    with pytest.raises(IdentityError):
        serve("127.0.0.1:0", str(tmp_path / "x.db"), TLSFiles.in_dir(coord.certs, "party:alpha"))
    # a server that uses party:alpha's certificate anyway is not accepted by clients
    from concurrent import futures

    f = TLSFiles.in_dir(coord.certs, "party:alpha")
    ca, cert, key = f.read()
    rogue = grpc.server(futures.ThreadPoolExecutor(2))
    port = rogue.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True))
    rogue.start()
    try:
        for who in ("analyst:ann", "party:beta"):
            c = Client(f"127.0.0.1:{port}", tls_dir=coord.certs, identity=who,
                       server_name="localhost", deadline_s=3)
            assert code_of(c.parties)[0] == grpc.StatusCode.UNAVAILABLE
            c.close()
    finally:
        rogue.stop(0)


def test_certificate_without_role_or_revoked_is_denied(coord, tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    with open(os.path.join(coord.certs, "ca.pem"), "rb") as fh:
        ca = x509.load_pem_x509_certificate(fh.read())
    with open(os.path.join(coord.certs, "ca.key"), "rb") as fh:
        ca_key = serialization.load_pem_private_key(fh.read(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    # the name says analyst, the certificate carries no role
    cert = issue_certificate(ca, ca_key, key.public_key(), "analyst:mallory", role=None)
    (tmp_path / "m.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp = tmp_path / "m.key"
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    c = Client(coord.address, tls=TLSFiles(os.path.join(coord.certs, "ca.pem"),
                                           str(tmp_path / "m.pem"), str(kp)))
    assert code_of(c.parties)[0] == grpc.StatusCode.PERMISSION_DENIED
    c.close()
    # a revoked certificate: the list is re-read while the coordinator runs
    from cryptography.x509 import load_pem_x509_certificate

    with open(os.path.join(coord.certs, "analyst_eve.pem"), "rb") as fh:
        serial = load_pem_x509_certificate(fh.read()).serial_number
    rl = tmp_path / "revoked.txt"
    rl.write_text("# revoked\n")
    tmp = tmp_path / "rev"
    tmp.mkdir()
    import shutil

    shutil.copytree(coord.certs, tmp / "certs")
    rc = Coord(str(tmp), revocation_list=str(rl))
    try:
        eve = rc.client("analyst:eve")
        assert eve.parties() == []
        rl.write_text(f"{serial:x}\n")
        assert code_of(eve.parties)[0] == grpc.StatusCode.PERMISSION_DENIED
        # and a job signed by a revoked analyst is rejected
        assert code_of(lambda: eve.submit(spec()))[0] in (grpc.StatusCode.PERMISSION_DENIED,)
        eve.close()
    finally:
        rc.stop()


def test_certs_request_and_sign_keep_the_key_with_its_owner(coord, tmp_path):
    def cli(*a):
        return subprocess.run([sys.executable, "-m", "meanshift_cli", *a], capture_output=True,
                              text=True, cwd=ROOT, timeout=60)

    mine = tmp_path / "zed"
    r = cli("certs", "request", "--identity", "analyst:zed", "--out", str(mine))
    assert r.returncode == 0, r.stderr
    key = mine / "analyst_zed.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    r = cli("certs", "sign", "--ca-dir", coord.certs, "--csr", str(mine / "analyst_zed.csr"),
            "--out", str(mine / "analyst_zed.pem"), "--expect", "analyst:zed")
    assert r.returncode == 0, r.stderr
    assert not any("zed" in f and f.endswith(".key") for f in os.listdir(coord.certs))
    c = Client(coord.address, tls=TLSFiles(os.path.join(coord.certs, "ca.pem"),
                                           str(mine / "analyst_zed.pem"), str(key)))
    assert c.parties() == [] or isinstance(c.parties(), list)
    assert c.submit(spec())["submitter"] == "analyst:zed"     # a signed job
    c.close()
    # a request for a bare name, or for another identity than expected, is refused
    r = cli("certs", "request", "--identity", "zed", "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and "identity" in r.stderr
    r = cli("certs", "sign", "--ca-dir", coord.certs, "--csr", str(mine / "analyst_zed.csr"),
            "--out", str(tmp_path / "x.pem"), "--expect", "operator:zed")
    assert r.returncode == 2


# ---- submit: who, signed, limits ------------------------------------------------------------

def test_submit_only_by_allowed_roles_and_audited(coord):
    c = coord.client("party:alpha")
    code, _ = code_of(lambda: c.submit(spec()))
    c.close()
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert any(r[1] == "party:alpha" and r[2] == "submit" and r[4] == "PERMISSION_DENIED"
               for r in coord.audit())


def test_submit_must_be_signed_by_the_caller_and_not_replayed(coord):
    import yaml

    stub, ch = coord.stub("analyst:ann")
    text = yaml.safe_dump(spec())
    code = code_of(lambda: stub.SubmitJob(pb.SubmitJobRequest(spec_yaml=text), timeout=5))
    assert code[0] == grpc.StatusCode.INVALID_ARGUMENT and code[1].startswith("signature")
    f = TLSFiles.in_dir(coord.certs, "analyst:ann")
    _, cert, key = f.read()
    s = signing.sign_spec(text, key, cert)
    req = pb.SubmitJobRequest(spec_yaml=text, signed_spec=s.payload, signature=s.signature,
                              signer_cert=s.cert_pem)
    assert stub.SubmitJob(req, timeout=5).job_id == __import__("json").loads(s.payload)["job_id"]
    code = code_of(lambda: stub.SubmitJob(req, timeout=5))           # the same job again
    assert code[0] == grpc.StatusCode.ALREADY_EXISTS
    bad = pb.SubmitJobRequest(spec_yaml=text, signed_spec=s.payload.replace(b"0.12", b"0.02"),
                              signature=s.signature, signer_cert=s.cert_pem)
    code = code_of(lambda: stub.SubmitJob(bad, timeout=5))
    assert code[0] == grpc.StatusCode.INVALID_ARGUMENT and code[1].startswith("signature")
    ch.close()
    # ann's signed job presented by eve
    estub, ech = coord.stub("analyst:eve")
    s2 = signing.sign_spec(text, key, cert)
    code = code_of(lambda: estub.SubmitJob(pb.SubmitJobRequest(
        spec_yaml=text, signed_spec=s2.payload, signature=s2.signature,
        signer_cert=s2.cert_pem), timeout=5))
    ech.close()
    assert code[0] == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("change, field", [
    ({"dust": 5e9}, "dust"), ({"dust": 2e9}, "dust"), ({"max_iter": 10001}, "max_iter"),
    ({"bandwidth": 1e-6}, "bandwidth"), ({"min_cluster_size": 0}, "min_cluster_size"),
    ({"parties": [{"id": "../x", "dataset": "points"}, {"id": "beta", "dataset": "p"}]},
     "parties"), ({"name": "n" * 5000}, "name"), ({"bounds": {"lo": [0] * 100, "hi": [1] * 100}},
                                                   "bounds"),
    ({"bounds": {"lo": [0, 0], "hi": [1e300, 1]}}, "bounds")])
def test_spec_limits_name_the_field(coord, change, field):
    c = coord.client()
    code, details = code_of(lambda: c.submit(spec(**change)))
    c.close()
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field), details


def test_oversized_spec_is_refused(coord):
    c = coord.client()
    code, details = code_of(lambda: c.submit("name: x\n" + "#" * 70_000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("spec")
    code, _ = code_of(lambda: c.submit("name: x\n" + "#" * (5 << 20)))   # above the message cap
    assert code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT)
    assert c.parties() is not None
    c.close()


# ---- reads -------------------------------------------------------------------------------------

def test_job_reads_only_by_submitter_parties_and_operator(coord):
    ann = coord.client("analyst:ann")
    jid = ann.submit(spec())["job_id"]          # no node connected: fails at once, still a job
    for who in ("analyst:ann", "party:alpha", "party:beta", "operator:olga"):
        c = coord.client(who)
        assert c.status(jid)["job_id"] == jid
        assert jid in {j["job_id"] for j in c.list()}
        assert list(c.watch(jid, deadline_s=5))
        c.close()
    for who in ("analyst:eve", "party:gamma", "dealer:dan"):
        c = coord.client(who)
        assert code_of(lambda: c.status(jid))[0] == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: list(c.watch(jid, deadline_s=5)))[0] == \
            grpc.StatusCode.PERMISSION_DENIED
        assert jid not in {j["job_id"] for j in c.list()}
        c.close()
    ann.close()
    rows = coord.audit(jid)
    assert ("party:alpha", "read") in {(r[1], r[2]) for r in rows}
    assert ("analyst:eve", "read", "PERMISSION_DENIED") in {(r[1], r[2], r[4]) for r in rows}
    assert ("party:gamma", "watch", "PERMISSION_DENIED") in {(r[1], r[2], r[4]) for r in rows}
    # a path-shaped or oversized job id is refused before any lookup
    c = coord.client("operator:olga")
    for bad in ("../../etc/passwd", "x" * 10_000):
        assert code_of(lambda: c.status(bad))[0] == grpc.StatusCode.INVALID_ARGUMENT
    c.close()


# ---- streams, time limits, state machine -------------------------------------------------------

def test_stream_limits_and_a_responsive_server_with_hundreds_of_watches(tmp_path):
    c = Coord(str(tmp_path), max_streams_per_identity=110, max_streams=400,
              agreement_timeout=60.0)
    nodes = [FakeNode(c, "alpha"), FakeNode(c, "beta"), FakeNode(c, "dan", "dealer")]
    try:
        wait_parties(c, ["alpha", "beta", "dealer:dan"])
        ann = c.client()
        jid = ann.submit(spec())["job_id"]            # stays in agreement: nobody answers
        streams, chans = [], []
        for who in ("analyst:ann", "party:alpha", "operator:olga"):
            stub, ch = c.stub(who)
            chans.append(ch)
            for _ in range(100):
                streams.append(stub.WatchJob(pb.JobRef(job_id=jid), timeout=60))
        deadline = time.time() + 20
        while sum(c.svc._streams.values()) < 300 and time.time() < deadline:
            time.sleep(0.1)
        assert sum(c.svc._streams.values()) == 300
        t0 = time.time()
        assert {p["id"] for p in ann.parties()} == {"alpha", "beta", "dealer:dan"}
        assert nodes[0].stub.Beat(pb.Heartbeat(), timeout=5).ok
        assert time.time() - t0 < 2.0
        # per-identity limit
        more, ch = c.stub("analyst:ann")
        chans.append(ch)
        for _ in range(10):
            streams.append(more.WatchJob(pb.JobRef(job_id=jid), timeout=60))
        while sum(c.svc._streams.values()) < 310 and time.time() < deadline + 20:
            time.sleep(0.1)
        extra = c.stub("analyst:ann")[0].WatchJob(pb.JobRef(job_id=jid), timeout=60)
        assert code_of(lambda: [next(extra) for _ in range(100)])[0] == \
            grpc.StatusCode.RESOURCE_EXHAUSTED
        for s in streams:
            s.cancel()
        for ch in chans:
            ch.close()
        ann.close()
    finally:
        for n in nodes:
            n.close()
        c.stop()


SIGNED: dict = {}       # job id -> the signed job the nodes were offered


def _shares(c, jid: str, table=(0.5, 0.5, 1.0)) -> list:
    """Honest parties' sealed, signed shares of a one-row output ``table`` (two
    parties, receiver analyst:ann), as party nodes make them."""
    from meanshift_rpc.results import seal_share

    enc = np.array([round(v * 2**16) for v in table], dtype=np.int64)
    r = np.frombuffer(os.urandom(8 * len(table)), dtype=np.int64)
    parts = [enc - r, r]                       # wraps modulo 2^64, like the ring
    ann = open(os.path.join(c.certs, "analyst_ann.pem"), "rb").read()
    out = []
    for rank, (name, vals) in enumerate(zip(("alpha", "beta"), parts)):
        _, cert, key = TLSFiles.in_dir(c.certs, f"party:{name}").read()
        export = {"format": "sms-share/1", "rank": rank, "rows": 1, "cols": len(table),
                  "frac_scale": 2**16, "dim": len(table) - 1, "sizes": False, "small": False,
                  "lo": [0.0] * (len(table) - 1), "scale": 1.0,
                  "values": [int(v) for v in vals]}
        out.append(seal_share(export, ["x", "y"], jid, SIGNED[jid], rank, name, "analyst:ann",
                              ann, key, cert))
    return out


def _running_job(c, nodes, **kw):
    ann = c.client()
    jid = ann.submit(spec(**kw))["job_id"]
    for n in nodes:
        SIGNED[jid] = n.next("offer").signed_spec
        assert n.accept(jid).ok
    for n in nodes:
        if n.role == "party":       # the dealer takes no part in the seed
            n.next("reveal")
            assert n.reveal(jid).ok
    runs = [n.next("run") for n in nodes]
    ann.close()
    return jid, runs


def test_state_machine_refuses_replays_and_wrong_parties(tmp_path):
    c = Coord(str(tmp_path))
    nodes = [FakeNode(c, "alpha"), FakeNode(c, "beta"), FakeNode(c, "dan", "dealer")]
    try:
        wait_parties(c, ["alpha", "beta", "dealer:dan"])
        jid, runs = _running_job(c, nodes)
        assert [r.rank for r in runs] == [0, 1, 2] and not any(r.carry_result for r in runs)
        assert not nodes[0].reveal(jid).ok                       # replayed seed reveal
        assert not nodes[0].accept(jid).ok                       # acceptance after the fact
        cents = [pb.Centroid(values=[0.5, 0.5])]
        shares = _shares(c, jid)
        # plain centroids (v1.1's carrier) from anyone, or another rank's share: refused
        assert not nodes[0].reply(jid, finished=pb.Finished(iterations=3, centroids=cents)).ok
        assert not nodes[1].reply(jid, finished=pb.Finished(iterations=3,
                                                            shares=[shares[0]])).ok
        assert nodes[1].reply(jid, finished=pb.Finished(iterations=3, shares=[shares[1]])).ok
        assert not nodes[1].reply(jid, finished=pb.Finished(iterations=3)).ok   # twice
        assert nodes[0].reply(jid, finished=pb.Finished(iterations=3, shares=[shares[0]])).ok
        ann = c.client()
        assert ann.status(jid)["state"] == "running"     # until the dealer's worker is done
        assert not nodes[2].reply(jid, finished=pb.Finished(shares=[shares[0]])).ok
        assert nodes[2].reply(jid, finished=pb.Finished()).ok
        assert ann.status(jid)["state"] == "succeeded"
        assert ann.result(jid).tolist() == [[0.5, 0.5]]
        ann.close()
        refused = [r for r in c.audit(jid) if r[4].startswith("refused")]
        assert {r[1] for r in refused} == {"party:alpha", "party:beta", "dealer:dan"}
        assert {r[2] for r in refused} >= {"reply:reveal", "reply:finished", "reply:accept"}
    finally:
        for n in nodes:
            n.close()
        c.stop()


def test_job_wall_clock_limit(tmp_path):
    c = Coord(str(tmp_path), job_timeout=1.0)
    nodes = [FakeNode(c, "alpha"), FakeNode(c, "beta"), FakeNode(c, "dan", "dealer")]
    try:
        wait_parties(c, ["alpha", "beta", "dealer:dan"])
        jid, _ = _running_job(c, nodes)
        ann = c.client()
        deadline = time.time() + 10
        while ann.status(jid)["state"] == "running" and time.time() < deadline:
            time.sleep(0.2)
        info = ann.status(jid)
        assert info["state"] == "failed" and "wall-clock" in info["reason"]
        for n in nodes:           # the parties and the dealer
            assert n.next("cancel").job_id == jid
        ann.close()
    finally:
        for n in nodes:
            n.close()
        c.stop()


# ---- files and --insecure ------------------------------------------------------------------------

def test_database_is_owner_only_and_insecure_only_on_loopback(coord, tmp_path):
    assert stat.S_IMODE(os.stat(coord.db).st_mode) == 0o600
    rec = tmp_path / "received.txt"
    rec.write_text("")
    os.chmod(rec, 0o644)                                    # an old world-readable transcript
    for path in (rec, tmp_path / "new.txt"):
        s, svc = serve("127.0.0.1:0", str(tmp_path / "r.db"),
                       TLSFiles.in_dir(coord.certs, "coordinator"), record_path=str(path))
        svc.stop()
        s.stop(0)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(OSError, match="loopback"):
        serve("0.0.0.0:0", str(tmp_path / "i.db"), None, insecure=True)
    r = subprocess.run([sys.executable, "-m", "meanshift_cli", "coordinator", "serve",
                        "--listen", "0.0.0.0:0", "--db", str(tmp_path / "j.db"), "--insecure"],
                       capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 2 and "loopback" in r.stderr


def test_list_parties_details_only_for_operators_and_the_node_itself(coord):
    nodes = [FakeNode(coord, "alpha"), FakeNode(coord, "beta")]
    try:
        wait_parties(coord, ["alpha", "beta"])
        for who, sees in (("analyst:ann", set()), ("operator:olga", {"alpha", "beta"})):
            cl = coord.client(who)
            ps = {p["id"]: p for p in cl.parties()}
            cl.close()
            assert {"alpha", "beta"} <= {i for i, p in ps.items() if p["connected"]}
            assert {i for i, p in ps.items() if p["datasets"]} >= sees
            if not sees:
                assert not any(p["datasets"] or p["dataset_status"] for p in ps.values())
        stub, ch = coord.stub("party:alpha")
        ps = {p.id: p for p in stub.ListParties(pb.Empty(), timeout=10).parties}
        ch.close()
        assert list(ps["alpha"].datasets) == ["points"] and not list(ps["beta"].datasets)
    finally:
        for n in nodes:
            n.close()


def test_node_rpcs_only_for_party_and_dealer_certificates(coord):
    for who in ("analyst:ann", "operator:olga", "coordinator"):
        stub, ch = coord.stub(who)
        assert code_of(lambda: stub.Beat(pb.Heartbeat(), timeout=5))[0] == \
            grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: stub.Reply(pb.NodeReply(job_id="0" * 24), timeout=5))[0] == \
            grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: list(stub.Subscribe(pb.NodeHello(), timeout=5)))[0] == \
            grpc.StatusCode.PERMISSION_DENIED
        ch.close()


def test_expired_or_foreign_client_certificates_get_nowhere(coord, tmp_path):
    from testkit import dev_pki

    expired = cert_from_ca(coord.certs, "operator:old", str(tmp_path / "old"), role="operator")
    foreign = dev_pki(str(tmp_path / "rogue"), ["operator:olga"])["operator:olga"]
    ca_path = os.path.join(coord.certs, "ca.pem")
    for files in (expired, TLSFiles(ca_path, foreign.cert, foreign.key)):
        c = Client(coord.address, tls=files, deadline_s=5)
        assert code_of(c.parties)[0] == grpc.StatusCode.UNAVAILABLE
        c.close()
    assert coord.client("operator:olga").healthy()
