"""Messages that name the real cause (issue 20), one test per message: revoked
and expired said outright with the certificate's serial and dates on both
sides, an analyst's expired certificate is not "coordinator unreachable", a
node with a revocation list still names a network problem, YAML errors carry a
line and a column, policy refusals state the rule and its threshold, job JSON
has no empty dealer, and the CLI survives a closed pipe."""

from __future__ import annotations

import os
import shutil
import time
import subprocess
import sys

import grpc
import pytest

from coordinator.server import serve
from meanshift_proto.v1 import service_pb2 as pb
from meanshift_proto.v1 import service_pb2_grpc as pb_grpc
from meanshift_rpc.tls import TLSFiles, cert_info, open_channel
from testkit import ROOT, cert_from_ca, dev_pki, free_port

pytestmark = pytest.mark.timeout(120)


def cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "meanshift_cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


def _serial(files: TLSFiles) -> int:
    return cert_info(files.read()[1]).serial


@pytest.fixture(scope="module")
def coord(tmp_path_factory):
    """An in-process coordinator whose revocation list holds analyst:eve and party:beta."""
    tmp = str(tmp_path_factory.mktemp("msg"))
    certs = os.path.join(tmp, "certs")
    files = dev_pki(certs, ["coordinator", "analyst:ann", "analyst:eve", "party:alpha",
                            "party:beta"], hosts=["localhost", "127.0.0.1"])
    revoked = os.path.join(tmp, "revoked.txt")
    with open(revoked, "w") as fh:
        fh.write(f"{_serial(files['analyst:eve']):x}\n{_serial(files['party:beta']):x}\n")
    server, svc = serve("127.0.0.1:0", os.path.join(tmp, "c.db"), files["coordinator"],
                        revocation_list=revoked)
    yield {"tmp": tmp, "certs": certs, "files": files, "address": f"127.0.0.1:{svc.port}"}
    svc.stop()
    server.stop(0)


def _client_args(coord, identity, tls_dir=None):
    return ["--coordinator", coord["address"], "--tls-dir", tls_dir or coord["certs"],
            "--identity", identity, "--server-name", "localhost"]


def test_revoked_analyst_is_told_revoked_with_its_serial(coord):
    r = cli("job", "list", *_client_args(coord, "analyst:eve"))
    serial = f"{_serial(coord['files']['analyst:eve']):x}"
    assert r.returncode == 4, r.stderr
    assert f"the certificate of analyst:eve (serial {serial}) is revoked" in r.stderr
    assert "role" not in r.stderr


def test_revoked_party_is_told_revoked_not_wrong_role(coord):
    ch = open_channel(coord["address"], coord["files"]["party:beta"], server_name="localhost")
    try:
        stream = pb_grpc.CoordinatorStub(ch).Subscribe(pb.NodeHello(version="2"), timeout=10)
        with pytest.raises(grpc.RpcError) as e:
            next(iter(stream))
    finally:
        ch.close()
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "party:beta" in e.value.details() and "is revoked" in e.value.details()


def test_node_names_a_revoked_coordinator_and_a_refusal_as_revoked(coord, tmp_path, caplog):
    from party_node.node import CoordinatorRefused, PartyNode

    node = _node(coord, tmp_path, revoke=f"{_serial(coord['files']['coordinator']):x}")
    with pytest.raises(CoordinatorRefused) as e:
        node._check_coordinator()
    assert str(e.value).startswith("revoked: the coordinator's certificate (serial ")

    class Refused(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.PERMISSION_DENIED

        def details(self):
            return "the certificate of party:alpha (serial 1f) is revoked"

    caplog.set_level("WARNING")
    node._not_connected(Refused(), 1.0)
    assert "revoked: the coordinator refused party:alpha: the certificate" in caplog.text
    assert isinstance(node, PartyNode)


def _node(coord, tmp_path, revoke: str = "", address: str = ""):
    from party_node.config import load, write_node_config
    from party_node.node import PartyNode

    rev = tmp_path / "revoked.txt"
    rev.write_text(revoke + "\n")
    f = coord["files"]["party:alpha"]
    cfg = write_node_config(str(tmp_path / "node.yaml"), "alpha", address or coord["address"],
                            server_name="localhost", datasets={},
                            tls={"ca": f.ca, "cert": f.cert, "key": f.key},
                            revocation_list=str(rev), results_dir=str(tmp_path / "results"))
    return PartyNode(load(cfg), checked={})


def test_node_with_a_revocation_list_names_the_network_problem(coord, tmp_path):
    from party_node.node import CoordinatorRefused

    node = _node(coord, tmp_path, address=f"127.0.0.1:{free_port()}")
    with pytest.raises(CoordinatorRefused) as e:
        node._check_coordinator()
    assert str(e.value).startswith("unreachable: cannot open a TCP connection"), str(e.value)
    assert "could not be checked" not in str(e.value)


def test_expired_analyst_certificate_is_not_unreachable(coord, tmp_path):
    old = cert_from_ca(coord["certs"], "analyst:ann", str(tmp_path / "old"), role="analyst",
                       days_from=-30, days_to=-1)
    me = tmp_path / "me"
    me.mkdir()
    shutil.copy(old.ca, me / "ca.pem")
    shutil.copy(old.cert, me / "analyst_ann.pem")
    shutil.copy(old.key, me / "analyst_ann.key")
    os.chmod(me / "analyst_ann.key", 0o600)
    r = cli("parties", *_client_args(coord, "analyst:ann", str(me)))
    assert r.returncode == 4, (r.returncode, r.stderr)
    assert "cause: expired: your certificate" in r.stderr and "(serial " in r.stderr
    assert "expired on" in r.stderr and "valid from" in r.stderr


def test_unreachable_coordinator_is_named_as_such(coord):
    args = _client_args(coord, "analyst:ann")
    args[1] = f"127.0.0.1:{free_port()}"
    r = cli("parties", *args)
    assert r.returncode == 3 and "cause: unreachable: cannot open a TCP connection" in r.stderr


def test_yaml_errors_name_line_and_column(tmp_path):
    from party_node.config import ConfigError, load

    bad = tmp_path / "node.yaml"
    bad.write_text("party_id: a\ncoordinator: {address: 'x:1'}\npolicy:\n  max_dust: 3\n"
                   "   max_iter: 4\n")
    with pytest.raises(ConfigError, match=r"line 5, column 12: not valid YAML"):
        load(str(bad))
    bad.write_text("party_id: a\nresults_dir: r\ncoordinator: {address: 'x:1'}\n"
                   "results_dir: s\n")
    with pytest.raises(ConfigError, match=r"line 4, column 1: not valid YAML \(duplicate key "
                                          r"'results_dir' \(first on line 2\)\)"):
        load(str(bad))
    r = cli("node", "run", "--config", str(bad))
    assert r.returncode == 2 and "line 4, column 1" in r.stderr and "Traceback" not in r.stderr


def test_policy_refusals_state_rule_and_threshold(coord, tmp_path):
    import yaml

    from meanshift_rpc import jobspec

    node = _node(coord, tmp_path)
    node.cfg.datasets = {}
    pol = node.cfg.policy
    pol.trusted_dealers, pol.allow_exact_results = ["d"], True
    base = {"parties": [{"id": "alpha", "dataset": "p"}, {"id": "beta", "dataset": "p"}],
            "bandwidth": 0.5, "bounds": {"lo": [0, 0], "hi": [1, 1]}, "dealer": "d",
            "reveal_to": ["alpha"], "summary": "exact"}

    def why(**kw):
        spec = jobspec.parse(yaml.safe_dump({**base, **kw}))
        return node._policy_check(pb.Offer(job_id="x", spec=spec, submitter="analyst:ann"),
                                  spec, "analyst:ann")

    pol.max_dust = 10
    assert why(dust=12, seeding="dust") == "policy: 12 initial centroids (seeding dust), " \
                                           "more than this party allows (policy.max_dust 10)"
    pol.max_dust = 1000
    pol.max_iter = 5
    assert "(policy.max_iter 5)" in why(dust=4, max_iter=6)
    pol.min_bandwidth_fraction = 0.6
    assert "(policy.min_bandwidth_fraction 0.6 x the bounds' largest span 1)" in why(dust=4,
                                                                                    max_iter=5)
    pol.min_bandwidth_fraction = 0.01
    pol.allowed_receivers = ["analyst:ann"]
    assert why(dust=4, max_iter=5) == "the result may not go to alpha " \
                                      "(policy.allowed_receivers: analyst:ann)"


def test_job_json_has_no_empty_dealer():
    from coordinator.client import _job

    with_dealer = _job(pb.JobInfo(job_id="j", state="failed", spec_yaml="dealer: dd\n"))
    assert with_dealer["dealer"] == "dd"
    assert "dealer" not in _job(pb.JobInfo(job_id="j", state="failed", spec_yaml="x: 1\n"))


def test_cli_output_survives_a_closed_pipe(tmp_path):
    from coordinator.store import Store

    db = str(tmp_path / "c.db")
    Store(db)
    import sqlite3

    with sqlite3.connect(db) as con:       # more than a pipe's buffer, in one transaction
        con.executemany("INSERT INTO audit VALUES (?,?,?,?,?)",
                        [(1.0e9, "analyst:ann", "read", "", "ok")] * 5000)
    p = subprocess.Popen([sys.executable, "-m", "meanshift_cli", "coordinator", "audit", "--db",
                          db], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    p.stdout.readline()
    p.stdout.close()                       # `| head -1`
    err = p.stderr.read().decode()
    assert p.wait(timeout=30) == 0, err
    assert "Traceback" not in err and "Broken pipe" not in err and "Exception" not in err


def test_coordinator_probe_answers_serving(coord):
    from meanshift_cli.probe import main

    assert main(["coordinator", coord["address"], "--tls-dir", coord["certs"], "--identity",
                 "analyst:ann", "--server-name", "localhost"]) == 0
    assert main(["coordinator", f"127.0.0.1:{free_port()}", "--tls-dir", coord["certs"],
                 "--identity", "analyst:ann", "--server-name", "localhost"]) == 3


def test_a_coordinator_stop_is_recorded_as_such_not_blamed_on_a_party(tmp_path):
    """Nodes subscribed, a job offered (agreeing): a graceful stop fails it naming the
    coordinator, and each node is told so (cancel) before its stream ends."""
    import threading

    import yaml

    from coordinator.client import Client

    certs = str(tmp_path / "certs")
    files = dev_pki(certs, ["coordinator", "analyst:ann", "party:alpha", "party:beta",
                            "dealer:dd"], hosts=["localhost"])
    server, svc = serve("127.0.0.1:0", str(tmp_path / "c.db"), files["coordinator"])
    address = f"127.0.0.1:{svc.port}"
    seen: dict = {}

    def node(identity):
        ch = open_channel(address, files[identity], server_name="localhost")
        try:
            for cmd in pb_grpc.CoordinatorStub(ch).Subscribe(pb.NodeHello(version="2"),
                                                             timeout=30):
                seen.setdefault(identity, []).append(cmd.WhichOneof("command"))
        except grpc.RpcError:
            pass
        finally:
            ch.close()

    threads = [threading.Thread(target=node, args=(i,), daemon=True)
               for i in ("party:alpha", "party:beta", "dealer:dd")]
    for t in threads:
        t.start()
    c = Client(address, tls_dir=certs, identity="analyst:ann", server_name="localhost")
    try:
        for _ in range(100):
            if sum(p["connected"] for p in c.parties()) == 3:
                break
            time.sleep(0.1)
        job = c.submit(yaml.safe_dump({
            "parties": [{"id": "alpha", "dataset": "p"}, {"id": "beta", "dataset": "p"}],
            "bandwidth": 0.5, "bounds": {"lo": [0, 0], "hi": [1, 1]}, "dealer": "dd",
            "reveal_to": ["analyst:ann"], "summary": "exact"}))
        assert job["state"] == "agreeing", job
    finally:
        c.close()
    svc.stop()
    server.stop(1)
    for t in threads:
        t.join(timeout=10)
    row = svc.store.get(job["job_id"])
    assert row["state"] == "failed"
    assert row["reason"].startswith("the coordinator stopped while the job was agreeing")
    assert "party" not in row["reason"].split("(")[0]
    assert seen["party:alpha"][-1] == "cancel" and seen["dealer:dd"][-1] == "cancel"


def test_two_nodes_with_one_identity_are_detected_and_named(coord):
    """Each new stream of a connected identity replaces the old one; a node that keeps
    doing so (two nodes sharing a certificate) is refused, naming both addresses."""
    ch = open_channel(coord["address"], coord["files"]["party:alpha"], server_name="localhost")
    stub = pb_grpc.CoordinatorStub(ch)
    streams, refused = [], None
    try:
        for _ in range(6):
            st = stub.Subscribe(pb.NodeHello(version="2"), timeout=30)
            md = dict(st.initial_metadata() or ())
            if "sms-welcome" not in md:
                with pytest.raises(grpc.RpcError) as e:
                    next(iter(st))
                refused = e.value
                break
            streams.append(st)
        assert refused is not None and len(streams) == 4
        assert refused.code() == grpc.StatusCode.ALREADY_EXISTS
        assert refused.details().startswith("party alpha is already connected from ipv4:127.0.0.1:")
        assert "same identity from ipv4:127.0.0.1:" in refused.details()
    finally:
        for st in streams:
            st.cancel()
        ch.close()


def test_revoking_a_connected_node_applies_at_its_next_heartbeat(tmp_path):
    certs = str(tmp_path / "certs")
    files = dev_pki(certs, ["coordinator", "operator:olga", "party:alpha"],
                    hosts=["localhost"])
    rl = tmp_path / "revoked.txt"
    rl.write_text("")
    server, svc = serve("127.0.0.1:0", str(tmp_path / "c.db"), files["coordinator"],
                        revocation_list=str(rl))
    address = f"127.0.0.1:{svc.port}"
    ch = open_channel(address, files["party:alpha"], server_name="localhost")
    try:
        stub = pb_grpc.CoordinatorStub(ch)
        st = stub.Subscribe(pb.NodeHello(version="2"), timeout=30)
        assert "sms-welcome" in dict(st.initial_metadata() or ())
        assert stub.Beat(pb.Heartbeat(), timeout=10).ok
        rl.write_text(f"{_serial(files['party:alpha']):x}\n")
        with pytest.raises(grpc.RpcError) as e:
            stub.Beat(pb.Heartbeat(), timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "is revoked" in e.value.details()
        assert list(st) == []                      # the command stream ends at once
        assert not svc.nodes["alpha"].connected
    finally:
        ch.close()
        svc.stop()
        server.stop(0)
