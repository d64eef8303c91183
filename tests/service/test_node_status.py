"""What a node says can be trusted: "connected" only once the coordinator has
acknowledged it, a one-line reason for every failed connection, data sets
checked at start (exit 2 naming key, line and column) and on change, and
nothing that leaves the node carries a local path or a data value."""

import json
import os
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

from cluster import Cluster
from meanshift_proto.v1 import service_pb2 as pb
from meanshift_proto.v1 import service_pb2_grpc as pb_grpc
from meanshift_rpc.tls import TLSFiles, open_channel
from party_node.connect import probe
from testkit import ROOT, cert_from_ca, dev_pki, free_port

pytestmark = pytest.mark.timeout(180)


def cli(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "meanshift_cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


def wait_for(pred, timeout=20.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def log_of(c: Cluster, name: str) -> str:
    with open(os.path.join(c.tmp, f"{name}.log")) as fh:
        return fh.read()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("status")), parties=2, points=30)
    # the data sets' own column names: the result CSVs must carry them
    for i, n in enumerate(c.names):
        np.savetxt(os.path.join(c.tmp, f"{n}.csv"), c.parts[i], delimiter=",",
                   header="age,bmi", comments="")
    c.start()
    yield c
    c.stop()


# ---- connecting ------------------------------------------------------------------------
def test_node_from_another_ca_says_why_and_never_connected(cluster):
    rogue_dir = os.path.join(cluster.tmp, "rogue")
    rogue = dev_pki(rogue_dir, ["party:delta"])["party:delta"]
    cfg = cluster.write_config("delta", 1, tls={"ca": rogue.ca, "cert": rogue.cert,
                                                "key": rogue.key},
                               datasets={"points": {"path": os.path.join(cluster.tmp,
                                                                         "alpha.csv")}})
    cluster._start("delta", ["node", "run", "--config", cfg])
    try:
        text = wait_for(lambda: "not connected" in log_of(cluster, "delta")
                        and log_of(cluster, "delta"), what="the node's reason")
        time.sleep(3)                      # a few more attempts
        text = log_of(cluster, "delta")
    finally:
        cluster.kill("delta", wait_gone=False)
    assert "party_node connected to coordinator" not in text
    lines = [ln for ln in text.splitlines() if "not connected" in ln]
    assert lines and all("not signed by the configured CA " + rogue.ca in ln for ln in lines)
    assert "Traceback" not in text
    assert "delta" not in {p["id"] for p in cluster.client().parties()}


def test_probe_names_each_cause(cluster, tmp_path):
    good = TLSFiles.in_dir(cluster.certs, "party:alpha")
    assert probe(cluster.address, good, "localhost") == ""
    rogue = dev_pki(str(tmp_path / "rogue"), ["party:alpha"])["party:alpha"]
    # the coordinator's certificate is checked against another CA
    assert "coordinator's certificate is not signed by the configured CA " + rogue.ca in \
        probe(cluster.address, rogue, "localhost")
    # the coordinator does not trust this node's certificate
    why = probe(cluster.address, TLSFiles(good.ca, rogue.cert, rogue.key), "localhost")
    assert "coordinator rejected this node's certificate" in why, why
    # a server name is ignored, as by the gRPC channel: the coordinator is pinned by
    # the name 'coordinator' whatever address was dialled
    assert probe(cluster.address, good, "elsewhere.example") == ""
    # nothing listens there
    assert probe(f"127.0.0.1:{free_port()}", good, "localhost").startswith(
        "unreachable: cannot open a TCP connection")


def test_wrong_role_is_refused_and_logged_with_the_peer_address(cluster):
    files = TLSFiles.in_dir(cluster.certs, "analyst:ann")
    ch = open_channel(cluster.address, files, server_name="localhost")
    stream = pb_grpc.CoordinatorStub(ch).Subscribe(pb.NodeHello(version="2"), timeout=10)
    with pytest.raises(grpc.RpcError) as e:
        next(iter(stream))
    ch.close()
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    line = wait_for(lambda: [ln for ln in log_of(cluster, "coordinator").splitlines()
                             if "wrong role" in ln], what="the coordinator's log line")[0]
    assert "analyst:ann" in line and "127.0.0.1:" in line


def test_connected_is_logged_only_after_the_acknowledgement(cluster):
    text = log_of(cluster, "alpha")
    assert text.count("party_node connected to coordinator") == 1
    assert "not connected" not in text


# ---- data sets ---------------------------------------------------------------------------
@pytest.mark.parametrize("content, expect", [
    (None, "data set 'points' ({path}): file not found"),
    ("age,bmi\n0.1,0.2\n0.3,abc\n", "data set 'points' ({path}): line 3, column 2 ('bmi'): "
                                    "not a number"),
    ("age,bmi\n0.1,0.2\n,0.4\n", "line 3, column 1 ('age'): empty"),
    ("age,bmi\n0.1,0.2\n0.3,0.4,0.5\n", "line 3: 3 fields, the header has 2"),
    ("age,bmi\n0.1,nan\n", "line 2, column 2 ('bmi'): not a finite number"),
    ("", "line 1: empty file"),
])
def test_node_run_exits_2_naming_key_line_and_column(tmp_path, content, expect):
    data = tmp_path / "p.csv"
    if content is not None:
        data.write_text(content)
    cfg = tmp_path / "node.yaml"
    cfg.write_text(f"party_id: alpha\ncoordinator: {{address: '127.0.0.1:{free_port()}'}}\n"
                   f"insecure: true\ndatasets:\n  points: {{path: {data}}}\n")
    res = cli("node", "run", "--config", str(cfg))
    assert res.returncode == 2, res.stderr
    assert expect.format(path=data) in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and "connected" not in res.stderr


def test_data_set_broken_while_running_is_shown_and_refused_without_a_path(cluster):
    path = os.path.join(cluster.tmp, "beta.csv")
    good = open(path).read()
    lines = good.splitlines()
    secret = lines[3].split(",")[0]             # a real value: it must never leave the node
    lines[3] = f"{secret},oops"
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    cl = cluster.client("operator:olga")       # data set details: operators only
    try:
        problem = "data set 'points': line 4, column 2 ('bmi'): not a number"

        def shown():
            beta = next(p for p in cl.parties() if p["id"] == "beta")
            return [d for d in beta["dataset_status"] if not d["available"]]
        bad = wait_for(shown, what="parties to show the unavailable data set")
        assert bad[0]["problem"] == problem
        health = cli("node", "health", "--config", os.path.join(cluster.tmp, "beta.yaml"))
        assert health.returncode == 1 and problem in health.stderr, health
        text = cli("parties", "--coordinator", cluster.address, "--tls-dir", cluster.certs,
                   "--identity", "operator:olga", "--server-name", "localhost")
        assert f"unavailable: {problem}" in text.stdout, text
        other = cli("parties", "--coordinator", cluster.address, "--tls-dir", cluster.certs,
                    "--identity", "analyst:ann", "--server-name", "localhost")
        assert "beta" in other.stdout and "unavailable" not in other.stdout, other
        info = cl.wait(cl.submit(cluster.spec())["job_id"], deadline_s=60)
        assert info["state"] == "failed" and info["reason"] == f"party beta refused: {problem}"
    finally:
        with open(path, "w") as fh:
            fh.write(good)
    wait_for(lambda: all(d["available"] for p in cl.parties() for d in p["dataset_status"]),
             what="the repaired data set")
    assert cli("node", "health", "--config",
               os.path.join(cluster.tmp, "beta.yaml")).returncode == 0
    received = open(cluster.record).read()
    assert cluster.tmp not in received and "beta.csv" not in received
    assert secret not in received
    cl.close()


def test_results_carry_the_data_sets_column_names(cluster, tmp_path):
    cl = cluster.client()
    info = cl.wait(cl.submit(cluster.spec())["job_id"], deadline_s=150)
    assert info["state"] == "succeeded", info
    cents, cols = cl.result_table(info["job_id"])
    assert cols == ["age", "bmi"] and cents.shape[1] == 2
    saved = os.path.join(cluster.tmp, "results-alpha", f"{info['job_id']}.csv")
    assert open(saved).readline().strip() == "age,bmi"
    out = tmp_path / "c.csv"
    res = cli("job", "result", info["job_id"], "--out", str(out), "--coordinator",
              cluster.address, "--tls-dir", cluster.certs, "--identity", "analyst:ann",
              "--server-name", "localhost")
    assert res.returncode == 0, res.stderr
    assert out.read_text().splitlines()[0] == "age,bmi"
    cl.close()
    status = json.load(open(os.path.join(cluster.tmp, "alpha-status.json")))
    assert status["datasets"] == {"points": {"available": True, "problem": ""}}


def test_own_certificate_expired_early_or_of_another_role(cluster, tmp_path):
    from party_node.connect import check_own_certificate, diagnose

    expired = cert_from_ca(cluster.certs, "party:alpha", str(tmp_path / "old"),
                           days_from=-30, days_to=-1)
    assert "expired: this node's certificate " + expired.cert + " (serial " in \
        check_own_certificate(expired, "party:alpha")
    early = cert_from_ca(cluster.certs, "party:alpha", str(tmp_path / "early"),
                         days_from=2, days_to=30)
    assert "is not valid before" in check_own_certificate(early, "party:alpha") and \
        "clock" in check_own_certificate(early, "party:alpha")
    analyst = TLSFiles.in_dir(cluster.certs, "analyst:ann")
    assert diagnose(cluster.address, analyst, "party:alpha", "localhost").startswith(
        "wrong role: the certificate " + analyst.cert + " is for 'analyst:ann'")
    assert check_own_certificate(TLSFiles.in_dir(cluster.certs, "party:alpha"),
                                 "party:alpha") == ""
