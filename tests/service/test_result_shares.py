"""Issue 17: results only their receivers can open, and can check. For an analyst
receiver no party opens the output: each seals its own share to the analyst and
signs it; the client verifies every signature against the CA and the signed job
and combines the shares. A forged, altered, incomplete or plain result (the
coordinator rewrites what it stores) is refused with a message and exit 1."""

import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from cluster import Cluster
from meanshift_proto.v1 import service_pb2 as pb
from meanshift_rpc import results
from meanshift_rpc.tls import TLSFiles
from secure_meanshift.centroid_match import match_error
from test_service import run_job, twin
from testkit import ROOT

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("shares")), parties=2).start()
    spec = c.spec(reveal_to=["analyst:ann"], return_sizes=True)
    info = run_job(c, spec)
    assert info["state"] == "succeeded", info
    yield c, spec, info
    c.stop()


def _blob(c, job_id, new=None):
    db = sqlite3.connect(c.db)
    try:
        if new is not None:
            db.execute("UPDATE jobs SET result=? WHERE id=?", (new, job_id))
            db.commit()
        return db.execute("SELECT result FROM jobs WHERE id=?", (job_id,)).fetchone()[0]
    finally:
        db.close()


def test_honest_shares_combine_to_the_twins_centroids(done):
    c, spec, info = done
    cl = c.client()
    cents, sizes = cl.result(info["job_id"], with_sizes=True)
    cl.close()
    ref = twin(c, c.names, spec, int(info["seed_hex"], 16))
    err, unmatched = match_error(cents, ref.centroids)
    assert unmatched == 0 and err < 1e-3 * spec["bandwidth"]
    assert sizes.sum() <= sum(len(p) for p in c.parts) and len(sizes) == len(cents)
    # no party opened it: nothing in a results folder, no centroid in any log
    for n in c.names:
        assert not os.path.exists(os.path.join(c.tmp, f"results-{n}", f"{info['job_id']}.csv"))
        log = open(os.path.join(c.tmp, f"{n}.log")).read()
        assert not any(f"{v:.5f}" in log for v in cents.ravel())
    res = pb.JobResult.FromString(_blob(c, info["job_id"]))
    assert sorted(s.rank for s in res.shares) == [0, 1] and not res.centroids


def _tampered(res: pb.JobResult, how: str, certs: str) -> pb.JobResult:
    r = pb.JobResult()
    r.CopyFrom(res)
    if how == "ciphertext":
        ct = bytearray(r.shares[0].ciphertext)
        ct[5] ^= 1
        r.shares[0].ciphertext = bytes(ct)
    elif how == "signature":
        r.shares[1].signature = r.shares[0].signature
    elif how == "missing":
        del r.shares[1]
    elif how == "duplicate":
        r.shares[1].CopyFrom(r.shares[0])
    elif how == "plain":
        del r.shares[:]
        r.centroids.add(values=[0.5, 0.5])
    elif how == "forged":        # a share the coordinator made and signed with its own key
        _, ccert, ckey = TLSFiles.in_dir(certs, "coordinator").read()
        ann = open(os.path.join(certs, "analyst_ann.pem"), "rb").read()
        fake = results.seal_share({"rank": 1}, [], r.job_id, r.signed_spec, 1, "beta",
                                  "analyst:ann", ann, ckey, ccert)
        r.shares[1].CopyFrom(fake)
    return r


@pytest.mark.parametrize("how, words", [
    ("ciphertext", "another job, rank, receiver or ciphertext"),
    ("signature", "does not verify"),
    ("missing", "exactly one share from each"),
    ("duplicate", "exactly one share from each"),
    ("plain", "no party shares"),
    ("forged", "not party:beta"),
])
def test_altered_forged_or_plain_results_are_refused(done, how, words):
    c, _, info = done
    good = _blob(c, info["job_id"])
    bad = _tampered(pb.JobResult.FromString(good), how, c.certs)
    _blob(c, info["job_id"], bad.SerializeToString())
    try:
        cl = c.client()
        with pytest.raises(results.ResultError) as e:
            cl.result(info["job_id"])
        cl.close()
        assert words in str(e.value), e.value
        if how in ("forged", "plain"):
            r = subprocess.run([sys.executable, "-m", "meanshift_cli", "job", "result",
                                info["job_id"], "--coordinator", c.address, "--tls-dir",
                                c.certs, "--identity", "analyst:ann", "--server-name",
                                "localhost"], capture_output=True, text=True, cwd=ROOT,
                               timeout=60)
            assert r.returncode == 1 and "result refused" in r.stderr, r
            assert "Traceback" not in r.stderr and not r.stdout.strip()
    finally:
        _blob(c, info["job_id"], good)
    cl = c.client()
    assert len(cl.result(info["job_id"]))        # the honest result opens again
    cl.close()


def test_a_dp_job_runs_is_charged_at_every_party_and_reaches_the_analyst(done):
    """Issue 17 through the service: a DP job (privacy: {epsilon, delta}) with an
    analyst receiver runs, each party's ledger holds its charge, and the analyst
    opens the parties' signed shares (with 60 points a party and epsilon 1 the noise
    may suppress every cluster: utility is docs/privacy.md's benchmark, not this test)."""
    import json

    c, _, _ = done
    spec = c.spec(reveal_to=["analyst:ann"], privacy={"epsilon": 1.0, "delta": 1e-6},
                  summary="auto", max_iter=10)
    info = run_job(c, spec)
    assert info["state"] == "succeeded", info
    cl = c.client()
    cents = cl.result(info["job_id"])
    cl.close()
    assert cents.ndim == 2 and np.all((cents >= -0.01) & (cents <= 1.01))
    for n in c.names:
        r = subprocess.run([sys.executable, "-m", "meanshift_cli", "node", "budget", "--config",
                            os.path.join(c.tmp, f"{n}.yaml"), "--format", "json"],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
        jobs = json.loads(r.stdout)["points"]["jobs"]
        assert [j["job_id"] for j in jobs] == [info["job_id"]] and jobs[0]["epsilon"] == 1.0
