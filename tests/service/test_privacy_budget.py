"""Secure by default: a node accepts differentially private jobs only (exact ones
need allow_exact_results), and charges every accepted DP job to its data set's
privacy budget at acceptance, in a ledger that survives restarts; an exhausted
budget refuses with the budget's numbers, never a data value."""

import json
import os
import stat
import subprocess
import sys

import pytest

from meanshift_proto.v1 import service_pb2 as pb
from party_node.state import Budget, NodeState
from secure_meanshift.privacy import PrivacySpec, noise_scale, spent_epsilon
from test_trust_node import ROOT, Env, refused

pytestmark = pytest.mark.timeout(120)
DP = {"epsilon": 1.0, "delta": 1e-6}


def test_ledger_charges_atomically_and_persists(tmp_path):
    st = NodeState(str(tmp_path / "results"))
    b = Budget(2.0, 1e-5)
    s1 = noise_scale(PrivacySpec(1.0, 1e-6))
    assert st.charge("d", "job1", 1.0, 1e-6, s1, b, spent_epsilon) == ""
    reason = ""
    for i in range(2, 10):
        reason = st.charge("d", f"job{i}", 1.0, 1e-6, s1, b, spent_epsilon)
        if reason:
            break
    assert "privacy budget of data set 'd' exhausted" in reason and "of 2" in reason
    n = len(st.charges("d"))
    st.close()
    assert stat.S_IMODE(os.stat(tmp_path / "results" / "node-state.sqlite").st_mode) == 0o600
    again = NodeState(str(tmp_path / "results"))          # a restart: same charges
    assert len(again.charges("d")) == n and again.charges("other") == []
    assert again.charge("d", "late", 1.0, 1e-6, s1, b, spent_epsilon)   # still exhausted
    assert again.charge("other", "x", 1.0, 1e-6, s1, b, spent_epsilon) == ""
    assert not again.seen_before("a" * 24, 600) and again.seen_before("a" * 24, 600)


@pytest.fixture(scope="module")
def dp_env(tmp_path_factory):
    e = Env(str(tmp_path_factory.mktemp("dp-node")),
            policy={"trusted_dealers": ["dan"], "privacy_budget": {"epsilon": 1.5,
                                                                   "delta": 1e-5}})
    yield e
    e.stop()


def _budget_cli(env):
    return subprocess.run([sys.executable, "-m", "meanshift_cli", "node", "budget", "--config",
                           env.config, "--format", "json"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_exact_jobs_refused_dp_jobs_charged_until_the_budget_is_spent(dp_env):
    env = dp_env
    empty = _budget_cli(env)
    assert empty.returncode == 0 and json.loads(empty.stdout)["points"]["jobs"] == []
    reason = refused(env.ask(env.offer()))
    assert "differentially private jobs only" in reason and "allow_exact_results" in reason
    reason = refused(env.ask(env.offer(privacy={"epsilon": 1.0, "delta": 1e-4})))
    assert "delta" in reason
    accepted = []
    for _ in range(40):
        o = env.offer(privacy=DP)
        r = env.ask(o)
        if r.WhichOneof("reply") != "accept":
            reason = r.refuse.reason
            break
        accepted.append(o.job_id)
        env.evil.send(cancel=pb.Cancel(job_id=o.job_id, reason="test"))
    assert 1 <= len(accepted) < 40, accepted
    assert "exhausted" in reason and "spent epsilon" in reason and "of 1.5" in reason
    assert str(env.data[0][0]) not in reason
    out = _budget_cli(env)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)["points"]
    assert [j["job_id"] for j in d["jobs"]] == accepted      # failed jobs stay charged
    assert d["epsilon"] == 1.5 and 0 < d["spent_epsilon"] <= 1.5
    text = subprocess.run([sys.executable, "-m", "meanshift_cli", "node", "budget", "--config",
                           env.config], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "remaining" in text.stdout and accepted[0] in text.stdout
