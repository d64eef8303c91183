"""Mutual TLS is not optional: a client without a certificate from the
federation's CA gets nowhere; plaintext only behind an explicit --insecure."""

import json
import os
import subprocess
import sys
import time

import grpc
import pytest

from cluster import Cluster
from coordinator.client import Client
from meanshift_rpc.tls import TLSFiles
from testkit import ROOT, dev_pki, free_port

pytestmark = pytest.mark.timeout(90)


def cli(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "meanshift_cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


def wait_healthy(make_client, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        c = make_client()
        try:
            if c.healthy():
                return
        finally:
            c.close()
        time.sleep(0.3)
    raise TimeoutError("coordinator did not come up")


@pytest.fixture(scope="module")
def coord(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("tls")), parties=2, points=10)
    c.start_coordinator()
    wait_healthy(c.client)
    yield c
    c.stop()


def test_certificate_from_another_ca_is_rejected(coord, tmp_path):
    other = dev_pki(str(tmp_path / "rogue"), ["analyst:ann"])["analyst:ann"]
    # trusts the real CA (so the server is accepted) but presents a foreign certificate
    files = TLSFiles(os.path.join(coord.certs, "ca.pem"), other.cert, other.key)
    c = Client(coord.address, tls=files, server_name="localhost", deadline_s=5)
    with pytest.raises(grpc.RpcError) as e:
        c.parties()
    c.close()
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_cannot_talk_to_a_tls_coordinator(coord):
    c = Client(coord.address, insecure=True, identity="analyst:ann", deadline_s=5)
    with pytest.raises(grpc.RpcError) as e:
        c.parties()
    c.close()
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_invalid_submit_is_audited(coord):
    c = coord.client("analyst:ann")
    with pytest.raises(grpc.RpcError) as e:
        c.submit({"parties": [{"id": "alpha", "dataset": "x"}], "bandwidth": 0.1})
    c.close()
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    res = cli("coordinator", "audit", "--db", coord.db, "--format", "json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert any(r["identity"] == "analyst:ann" and r["action"] == "submit"
               and r["outcome"].startswith("invalid: parties") for r in rows)


def test_serve_refuses_to_start_without_tls_unless_insecure(tmp_path):
    res = cli("coordinator", "serve", "--listen", f"127.0.0.1:{free_port()}",
              "--db", str(tmp_path / "x.db"))
    assert res.returncode == 2 and "--insecure" in res.stderr
    assert "Traceback" not in res.stderr


def test_insecure_mode_is_explicit_and_plaintext(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    log = open(tmp_path / "coord.log", "w")
    p = subprocess.Popen([sys.executable, "-m", "meanshift_cli", "coordinator", "serve",
                          "--listen", addr, "--db", str(tmp_path / "c.db"), "--insecure"],
                         stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_healthy(lambda: Client(addr, insecure=True, identity="analyst:x", deadline_s=3))
        c = Client(addr, insecure=True, identity="analyst:x")
        assert c.parties() == []
        c.close()
        time.sleep(0.2)
        assert "INSECURE" in open(tmp_path / "coord.log").read()
    finally:
        p.terminate()
        p.wait(timeout=15)
        log.close()
    assert p.returncode == 0          # SIGTERM: a clean shutdown
