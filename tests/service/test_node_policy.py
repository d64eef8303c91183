"""A node's policy as pure functions of (config, signed job): no node, no file."""

import pytest

from meanshift_proto.v1 import service_pb2 as pb
from party_node import policy
from party_node.config import Dataset, NodeConfig, Policy
from testkit import signed_spec

pytestmark = pytest.mark.timeout(30)


def cfg(**pol) -> NodeConfig:
    return NodeConfig(party_id="alpha", coordinator="c:1", datasets={"d": Dataset("d.csv")},
                      policy=Policy(trusted_dealers=["dd"], allow_exact_results=True, **pol))


def spec(**kw) -> pb.JobSpec:
    return signed_spec(transport="trusted-network", min_cluster_size=5, **kw)


def test_rules_in_order_each_named():
    ok = cfg(allow_plaintext_mpc=True)
    assert policy.job_reason(ok, spec(), "analyst:ann") == ""
    assert "not allowed by local policy" in policy.job_reason(cfg(), spec(), "analyst:ann")
    assert policy.job_reason(ok, spec(parties=[pb.PartyRef(id="beta", dataset="d")]),
                             "analyst:ann") == "this node is not a party of the job"
    assert "kernel" in policy.job_reason(cfg(allow_plaintext_mpc=True, kernels=["gaussian"]),
                                         spec(), "analyst:ann")
    assert policy.job_reason(cfg(allow_plaintext_mpc=True, allowed_submitters=["analyst:x"]),
                             spec(), "analyst:ann") == \
        "submitter analyst:ann may not run jobs on this data"
    assert policy.job_reason(ok, spec(n_dust=1001, seeding="dust"), "a") == \
        "policy: 1001 initial centroids (seeding dust), more than this party allows " \
        "(policy.max_dust 1000)"
    # automatic seeding counts its dust-and-bins branch: 990 + 32 x 2 parties
    assert policy.job_reason(ok, spec(n_dust=990), "a") == \
        "policy: 1054 initial centroids (seeding auto), more than this party allows " \
        "(policy.max_dust 1000)"
    assert policy.job_reason(ok, spec(seeding="points"), "a") == ""   # at run time
    assert policy.job_reason(ok, spec(parties=[pb.PartyRef(id="alpha", dataset="x"),
                                               pb.PartyRef(id="beta", dataset="d")]), "a") == \
        "no data set named 'x' on this node"


def test_every_point_seeds_are_checked_when_the_sizes_are_known():
    check = policy.run_time_seeds_check(256)
    check({"stage": "sizes", "rows": 256, "seeds": 256, "seeding": "points"})
    check({"stage": "iteration", "seeds": 10 ** 6})          # other events: not this rule
    with pytest.raises(policy.PolicyRefusal) as err:
        check({"stage": "sizes", "rows": 450, "seeds": 450, "seeding": "points"})
    assert str(err.value) == ("policy: 450 initial centroids (seeding points), more than "
                              "this party allows (policy.max_dust 256)")


def test_dataset_reason_reads_the_status_only():
    class St:
        available, problem, columns = True, "", ["a", "b"]

    assert policy.dataset_reason(spec(), "d", St()) == ""
    assert "unavailable" in policy.dataset_reason(spec(), "d", None)
    assert "has 2 columns" in policy.dataset_reason(spec(bounds_lo=[0], bounds_hi=[1]), "d",
                                                    St())
