"""The service end to end: real coordinator and node processes, real CrypTen
workers, mutual TLS on loopback."""

import json
import os
import re
import sqlite3
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

from cluster import Cluster
from secure_meanshift.centroid_match import match_error
from secure_meanshift.params import MeanShiftParams
from secure_meanshift.plaintext import reference_meanshift
from testkit import ROOT

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("cluster")), parties=3).start()
    yield c
    c.stop()


def twin(c: Cluster, names, spec: dict, seed: int):
    import yaml

    from meanshift_rpc.jobspec import engine_params, parse

    parts = [c.parts[c.names.index(n)] for n in names]
    p = MeanShiftParams(**engine_params(parse(yaml.safe_dump(spec)), seed))
    return reference_meanshift(parts, p)


def run_job(c: Cluster, spec: dict, identity="analyst:ann") -> dict:
    cl = c.client(identity)
    try:
        info = cl.submit(spec)
        return cl.wait(info["job_id"], deadline_s=240)
    finally:
        cl.close()


@pytest.fixture(scope="module")
def finished():
    """One job per party list, run once and shared by the tests that only read it."""
    done = {}

    def get(cluster, names):
        key = tuple(names)
        if key not in done:
            done[key] = run_job(cluster, cluster.spec(list(names)))
        return done[key]
    return get


@pytest.mark.parametrize("names", [["alpha", "beta"], ["alpha", "beta", "gamma"]])
def test_job_matches_plaintext_twin(cluster, finished, names):
    spec = cluster.spec(names)
    info = finished(cluster, names)
    assert info["state"] == "succeeded", info
    cl = cluster.client()
    cents = cl.result(info["job_id"])
    cl.close()
    ref = twin(cluster, names, spec, int(info["seed_hex"], 16))
    err, unmatched = match_error(cents, ref.centroids)
    assert unmatched == 0 and err < 1e-3 * spec["bandwidth"]
    # the receiving party also has it, in its own results folder
    saved = np.loadtxt(os.path.join(cluster.tmp, f"results-{names[0]}",
                                    f"{info['job_id']}.csv"), delimiter=",", skiprows=1, ndmin=2)
    assert np.allclose(np.sort(saved, 0), np.sort(cents, 0))


def test_unauthorised_identity_is_denied_and_audited(cluster, finished):
    info = finished(cluster, ["alpha", "beta"])
    assert info["state"] == "succeeded"
    from testkit import dev_pki

    dev_pki(cluster.certs, ["alpha"])   # a valid certificate whose name is a bare party id
    # gamma is not a receiver (nor a party); "alpha" is not party:alpha
    for who in ("analyst:eve", "party:gamma", "alpha"):
        cl = cluster.client(who)
        with pytest.raises(grpc.RpcError) as e:
            cl.result(info["job_id"])
        cl.close()
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    rows = sqlite3.connect(cluster.db).execute(
        "SELECT identity, outcome FROM audit WHERE job_id=? AND action='result'",
        (info["job_id"],)).fetchall()
    assert ("analyst:eve", "PERMISSION_DENIED") in rows
    assert ("party:gamma", "PERMISSION_DENIED") in rows
    # and over the CLI: exit code 4, a message, no traceback
    res = subprocess.run([sys.executable, "-m", "meanshift_cli", "job", "result", info["job_id"],
                          "--coordinator", cluster.address, "--tls-dir", cluster.certs,
                          "--identity", "analyst:eve", "--server-name", "localhost"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 4 and "PERMISSION_DENIED" in res.stderr
    assert "Traceback" not in res.stderr


def test_coordinator_never_receives_a_data_point(cluster):
    run_job(cluster, cluster.spec(["alpha", "beta", "gamma"], reveal_to=["alpha"]))
    text = open(cluster.record).read()
    numbers = {float(x) for x in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", text)}
    data = {float(v) for part in cluster.parts for v in part.ravel()}
    assert not numbers & data
    kinds = set(re.findall(r"^## \S+ (\w+)$", text, flags=re.M))
    assert kinds <= {"NodeHello", "NodeReply", "SubmitJobRequest"}
    # this job's result goes to a party only: no centroid reached the coordinator
    assert "centroids" not in text.rsplit("SubmitJobRequest", 1)[-1]


def test_malformed_spec_names_the_field(cluster, tmp_path):
    cl = cluster.client()
    for spec, field in [({**cluster.spec(), "kernel": "epanechnikov"}, "kernel"),
                        ({**cluster.spec(), "bandwidth": -1}, "bandwidth"),
                        ({**cluster.spec(), "bandwidth": 5.0}, "bandwidth"),
                        ({**cluster.spec(), "dust": 0}, "dust"),
                        ({**cluster.spec(), "reveal_to": ["analyst:ann", "zeta"]}, "reveal_to"),
                        ("parties: [unclosed", "yaml"),
                        ({**cluster.spec(), "bounds": {"lo": [0], "hi": [1, 1]}}, "bounds"),
                        ({**cluster.spec(), "colour": "red"}, "colour"),
                        ({**cluster.spec(), "provider": "first-party"}, "provider"),
                        ({**cluster.spec(), "provider": "TFP"}, "provider"),
                        ({k: v for k, v in cluster.spec().items() if k != "dealer"}, "dealer"),
                        ({**cluster.spec(), "transport": "gloo"}, "transport")]:
        with pytest.raises(grpc.RpcError) as e:
            cl.submit(spec)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details().startswith(field)
    cl.close()
    bad = tmp_path / "bad.yaml"
    bad.write_text("parties: [alpha]\nbandwidth: 0.1\n")
    res = subprocess.run([sys.executable, "-m", "meanshift_cli", "job", "submit", str(bad),
                          "--coordinator", cluster.address, "--tls-dir", cluster.certs,
                          "--identity", "analyst:ann", "--server-name", "localhost"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 2 and "INVALID_ARGUMENT: parties" in res.stderr


def test_missing_data_set_is_refused_with_reason(cluster):
    spec = cluster.spec(["alpha", "beta"])
    spec["parties"][1]["dataset"] = "nosuch"
    info = run_job(cluster, spec)
    assert info["state"] == "failed"
    assert "party beta refused" in info["reason"] and "nosuch" in info["reason"]


def test_policy_refusal_and_recovery(cluster):
    cluster.write_config("gamma", 2, policy={"kernels": ["flat"], "max_dust": 179})
    cluster.kill("gamma")
    cluster.start_node("gamma")
    cluster.wait_connected(["gamma"])
    info = run_job(cluster, cluster.spec(kernel="gaussian"))
    assert info["state"] == "failed" and "gamma refused" in info["reason"] \
        and "kernel" in info["reason"]
    # every-point seeding: 3 x 60 rows, 180 seeds, known once the sizes are exchanged
    info = run_job(cluster, cluster.spec(seeding="points"))
    assert info["state"] == "failed" and "gamma" in info["reason"] and \
        "policy: 180 initial centroids (seeding points), more than this party allows " \
        "(policy.max_dust 179)" in info["reason"], info["reason"]
    assert run_job(cluster, cluster.spec(seeding="dust"))["state"] == "succeeded"
    cluster.write_config("gamma", 2)        # later tests (a gaussian job) need gamma as it was
    cluster.kill("gamma")
    cluster.start_node("gamma")
    cluster.wait_connected(["gamma"])


def test_first_party_provider_is_refused_with_a_reason(cluster):
    cl = cluster.client()
    with pytest.raises(grpc.RpcError) as e:
        cl.submit({**cluster.spec(), "provider": "trusted-first-party"})
    cl.close()
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "refuses the trusted-first-party provider" in e.value.details()


def test_dealer_and_transport_follow_each_party_policy(cluster):
    """A party refuses a dealer it does not trust, and plaintext MPC links unless
    its policy allows them; the job fails naming the rule, and the next job runs."""
    cluster.write_config("beta", 1, policy={"trusted_dealers": ["someone-else"]})
    cluster.kill("beta")
    cluster.start_node("beta")
    cluster.wait_connected(["beta"])
    info = run_job(cluster, cluster.spec(["alpha", "beta"]))
    assert info["state"] == "failed"
    assert "party beta refused" in info["reason"] and "not trusted" in info["reason"]
    cluster.write_config("beta", 1)
    cluster.kill("beta")
    cluster.start_node("beta")
    cluster.wait_connected(["beta"])
    info = run_job(cluster, cluster.spec(["alpha", "beta"], transport="trusted-network"))
    assert info["state"] == "failed" and "plaintext MPC links" in info["reason"]
    assert run_job(cluster, cluster.spec(["alpha", "beta"]))["state"] == "succeeded"


def test_cli_submit_wait_status_list_json(cluster, tmp_path):
    spec = tmp_path / "job.yaml"
    import yaml

    spec.write_text(yaml.safe_dump(cluster.spec(["alpha", "beta"])))
    base = ["--coordinator", cluster.address, "--tls-dir", cluster.certs, "--identity",
            "analyst:ann", "--server-name", "localhost", "--format", "json"]
    res = subprocess.run([sys.executable, "-m", "meanshift_cli", "job", "submit", str(spec),
                          "--wait", *base], capture_output=True, text=True, cwd=ROOT, timeout=200)
    assert res.returncode == 0, res.stderr
    job = json.loads(res.stdout)
    assert job["state"] == "succeeded"
    out = tmp_path / "c.csv"
    res = subprocess.run([sys.executable, "-m", "meanshift_cli", "job", "result", job["job_id"],
                          "--out", str(out), *base], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert res.returncode == 0 and out.exists()
    res = subprocess.run([sys.executable, "-m", "meanshift_cli", "job", "list", *base],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert job["job_id"] in {j["job_id"] for j in json.loads(res.stdout)}
    res = subprocess.run([sys.executable, "-m", "meanshift_cli", "parties", *base],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert {p["id"] for p in json.loads(res.stdout)} >= {"alpha", "beta", "gamma"}


def test_health_commands(cluster):
    base = [sys.executable, "-m", "meanshift_cli"]
    res = subprocess.run(base + ["coordinator", "health", "--coordinator", cluster.address,
                                 "--tls-dir", cluster.certs, "--identity", "coordinator",
                                 "--server-name", "localhost"],
                         capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert res.returncode == 0 and "SERVING" in res.stdout
    status = os.path.join(cluster.tmp, "alpha-status.json")     # alpha's status_file
    deadline = time.time() + 15                     # at least one acknowledged heartbeat
    while not os.path.exists(status) and time.time() < deadline:
        time.sleep(0.3)
    res = subprocess.run(base + ["node", "health", "--config",
                                 os.path.join(cluster.tmp, "alpha.yaml")],
                         capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert res.returncode == 0 and "healthy" in res.stdout


def test_cancel_at_any_stage_then_next_job(cluster):
    """Cancel while agreeing (a node has not answered the offer yet: frozen for a
    moment), cancel while running, cancel after the end (no effect); afterwards
    every node takes the next job."""
    import signal

    beta = cluster.procs["beta"]
    os.killpg(beta.pid, signal.SIGSTOP)
    try:
        cl = cluster.client()
        info = cl.submit(cluster.spec(["alpha", "beta"]))
        time.sleep(0.5)
        assert cl.status(info["job_id"])["state"] == "agreeing"
        for who in ("analyst:eve", "party:gamma"):     # neither submitter nor a party of it
            other = cluster.client(who)
            with pytest.raises(grpc.RpcError) as e:
                other.cancel(info["job_id"])
            other.close()
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        out = cl.cancel(info["job_id"])
        assert out["state"] == "cancelled" and "cancelled by analyst:ann" in out["reason"]
    finally:
        os.killpg(beta.pid, signal.SIGCONT)
    # the late acceptance is turned away; the cancelled job stays cancelled
    time.sleep(1.5)
    assert cl.status(info["job_id"])["state"] == "cancelled"
    # cancelling a finished job changes nothing
    assert cl.cancel(info["job_id"])["state"] == "cancelled"
    # while running: the workers are stopped
    info = cl.submit(cluster.spec(max_iter=400, oblivious=True, dust=12))
    for ev in cl.watch(info["job_id"], deadline_s=120):
        if ev.get("stage") == "iteration":
            break
    t0 = time.monotonic()
    out = cl.cancel(info["job_id"])
    assert out["state"] == "cancelled" and time.monotonic() - t0 < 1.0
    # the nodes let their workers go at once: the next job is agreed and running
    # within a second or two (0.1-0.3 s measured; the bound leaves room for load)
    nxt = cl.submit(cluster.spec())
    for ev in cl.watch(nxt["job_id"], deadline_s=60):
        if ev.get("state") in ("running", "succeeded", "failed"):
            break
    assert ev.get("state") in ("running", "succeeded") and time.monotonic() - t0 < 3.0
    assert cl.wait(nxt["job_id"], deadline_s=120)["state"] == "succeeded"
    cl.close()


def test_worker_killed_names_its_party_and_nodes_recover(cluster):
    """Only the MPC worker dies (out of memory, say); its node stays up."""
    import signal

    import psutil

    cl = cluster.client()
    info = cl.submit(cluster.spec(["alpha", "beta"], max_iter=300, oblivious=True, dust=12))
    for ev in cl.watch(info["job_id"], deadline_s=90):
        if ev.get("stage") == "iteration":
            break
    node = psutil.Process(cluster.procs["beta"].pid)
    workers = [p for p in node.children(recursive=True)
               if "party_node.worker" in " ".join(p.cmdline())]
    assert workers
    t0 = time.time()
    for w in workers:
        os.kill(w.pid, signal.SIGKILL)
    out = cl.wait(info["job_id"], deadline_s=90)
    assert out["state"] == "failed" and out["reason"].startswith("party beta"), out["reason"]
    assert time.time() - t0 < 60
    cl.close()
    assert run_job(cluster, cluster.spec())["state"] == "succeeded"


@pytest.mark.slow
def test_gaussian_oblivious_three_parties_match_twin(cluster):
    """Heavier: gaussian kernel, oblivious mode (exactly max_iter iterations, no stop
    bit revealed: progress events say nothing about movement)."""
    spec = cluster.spec(kernel="gaussian", oblivious=True, max_iter=12, dust=8)
    cl = cluster.client()
    info = cl.submit(spec)
    events = []
    final = cl.wait(info["job_id"], on_event=events.append, deadline_s=280)
    assert final["state"] == "succeeded", final
    its = [e for e in events if e.get("stage") == "iteration"]
    assert len(its) == 12 and all(not e.get("moving") for e in its)
    cents = cl.result(info["job_id"])
    cl.close()
    ref = twin(cluster, cluster.names, spec, int(final["seed_hex"], 16))
    err, unmatched = match_error(cents, ref.centroids)
    assert unmatched == 0 and err < 1e-2 * spec["bandwidth"], (err, unmatched)


def test_analyst_result_is_sealed_end_to_end(cluster):
    """Issues 9, 17: every party seals its share of the output to the analyst's
    key and signs it; the coordinator relays ciphertext and never holds a centroid."""
    import struct

    from meanshift_rpc.sealing import SealError, unseal

    spec = cluster.spec(["alpha", "beta"], reveal_to=["analyst:ann"])
    size_before = os.path.getsize(cluster.record)
    info = run_job(cluster, spec)
    assert info["state"] == "succeeded", info
    cl = cluster.client()
    cents = cl.result(info["job_id"])
    cl.close()
    ref = twin(cluster, ["alpha", "beta"], spec, int(info["seed_hex"], 16))
    err, unmatched = match_error(cents, ref.centroids)
    assert unmatched == 0 and err < 1e-3 * spec["bandwidth"]
    with open(cluster.record) as fh:
        fh.seek(size_before)
        text = fh.read()
    assert "shares {" in text and "centroids {" not in text
    numbers = {round(float(x), 4) for x in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", text)}
    assert not numbers & {round(float(v), 4) for v in cents.ravel()}
    blob = sqlite3.connect(cluster.db).execute("SELECT result FROM jobs WHERE id=?",
                                               (info["job_id"],)).fetchone()[0]
    assert not any(struct.pack("<d", v) in blob for v in cents.ravel())
    # what the coordinator holds opens with no other key
    from meanshift_proto.v1 import service_pb2 as pb

    sealed = pb.JobResult.FromString(blob).shares[0]
    with open(os.path.join(cluster.certs, "analyst_eve.key"), "rb") as fh:
        with pytest.raises(SealError):
            unseal(fh.read(), info["job_id"], sealed.recipient, sealed.ephemeral_key,
                   sealed.nonce, sealed.ciphertext)


@pytest.mark.slow
def test_auto_bandwidth_binned_seeds_job_matches_twin(cluster):
    """Issue 10: `bandwidth: auto` (estimated under MPC, then the run, in one MPC
    session) with every party's local modes as seeds and scikit-learn's merge
    rule, through the service."""
    from secure_meanshift.bandwidth import DEFAULT_SAMPLES, plain_bandwidth

    spec = cluster.spec(bandwidth="auto", quantile=0.2, seeding="both", seeds_per_party=4,
                        merge="intensity")
    info = run_job(cluster, spec)
    assert info["state"] == "succeeded", info
    cl = cluster.client()
    cents = cl.result(info["job_id"])
    cl.close()
    seed = int(info["seed_hex"], 16)
    h = plain_bandwidth(cluster.parts, ([0, 0], [1, 1]), 0.2, DEFAULT_SAMPLES, seed)
    p = MeanShiftParams(bandwidth=h, bounds=([0, 0], [1, 1]), n_dust=spec["dust"],
                        max_iter=spec["max_iter"], seed=seed, seeding="both", seeds_per_party=4,
                        min_cluster_size=5)
    ref = reference_meanshift(cluster.parts, p)
    err, unmatched = match_error(cents, ref.centroids)
    # the secure h is within 2^-16 of the twin's, so allow 1e-2 h rather than 1e-3 h
    assert unmatched == 0 and err < 1e-2 * h, (err, unmatched)
