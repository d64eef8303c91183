"""A node believes nothing about ranks and peers that it can check against the
job spec: the coordinator cannot reorder ranks, add or swap an identity, or
move this node's own port."""

import pytest

from meanshift_proto.v1 import service_pb2 as pb
from party_node.config import NodeConfig
from party_node.node import Job, PartyNode
from party_node.policy import mpc_reason
from testkit import signed_spec

pytestmark = pytest.mark.timeout(30)


def spec() -> pb.JobSpec:
    return signed_spec(transport="tls")


def peers(order=("party:alpha", "party:beta", "dealer:dd"), port=31000):
    return [pb.MpcPeer(identity=n, host="127.0.0.1", port=port + i) for i, n in enumerate(order)]


@pytest.fixture
def node():
    cfg = NodeConfig(party_id="beta", coordinator="127.0.0.1:1", datasets={})
    n = PartyNode(cfg)
    yield n
    if n.channel is not None:
        n.channel.close()


def job_for(node) -> Job:
    job = Job(pb.Offer(job_id="j1", spec=spec(), submitter="analyst:a"))
    job.port = 31001
    return job


def test_the_run_that_matches_the_spec_is_accepted(node):
    assert node._check_run(job_for(node), pb.Run(job_id="j1", rank=1, world_size=2,
                                                 peers=peers())) == ""


@pytest.mark.parametrize("run, rule", [
    (pb.Run(rank=1, world_size=2, peers=peers(("party:beta", "party:alpha", "dealer:dd"))),
     "peer list"),
    (pb.Run(rank=1, world_size=2, peers=peers(("party:alpha", "party:beta", "dealer:evil"))),
     "peer list"),
    (pb.Run(rank=1, world_size=2, peers=peers(("party:alpha", "party:beta"))), "peer list"),
    (pb.Run(rank=0, world_size=2, peers=peers()), "rank"),
    (pb.Run(rank=1, world_size=3, peers=peers()), "world size"),
    (pb.Run(rank=1, world_size=2, peers=peers(port=32000)), "own MPC address"),
])
def test_a_run_that_differs_from_the_spec_is_refused(node, run, rule):
    assert rule in node._check_run(job_for(node), run)


def test_mpc_policy_rules(node):
    s = spec()
    # by default a node trusts no dealer: its operator names them
    assert "trusted_dealers is empty" in mpc_reason(node.cfg, s)
    node.cfg.policy.trusted_dealers = ["dd"]
    assert "no TLS identity" in mpc_reason(node.cfg, s)          # this node has no certificate
    s.dealer = ""
    assert "names no dealer" in mpc_reason(node.cfg, s)
    s = spec()
    s.transport = "trusted-network"
    assert "not allowed by local policy" in mpc_reason(node.cfg, s)
    node.cfg.policy.allow_plaintext_mpc = True
    assert mpc_reason(node.cfg, s) == ""
    node.cfg.policy.trusted_dealers = ["other"]
    assert "not trusted" in mpc_reason(node.cfg, s)
