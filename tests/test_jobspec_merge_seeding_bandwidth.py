"""The merge, seeding and `bandwidth: auto` parameters (issue 10) reach the job spec,
the node, the simulator CLI and the estimator, and come from the one kernel registry."""

import pytest

from meanshift_rpc import jobspec
from secure_meanshift.kernels import KERNEL_NAMES

BASE = """
parties: [{id: a, dataset: d}, {id: b, dataset: d}]
bounds: {lo: [0, 0], hi: [1, 1]}
dealer: d
"""


def test_defaults_and_round_trip():
    spec = jobspec.parse(BASE + "bandwidth: 0.1\n")
    d = jobspec.to_dict(spec)
    assert d["merge"] == "intensity" and d["seeding"] == "auto" and d["seeds_per_party"] == 32
    assert jobspec.to_dict(jobspec.parse(jobspec.to_yaml(spec))) == d


def test_new_fields_and_auto_bandwidth():
    spec = jobspec.parse(BASE + "bandwidth: auto\nquantile: 0.2\nmerge: first\n"
                         "seeding: both\nseeds_per_party: 16\n")
    assert spec.bandwidth_auto and spec.quantile == pytest.approx(0.2)
    assert (spec.merge, spec.seeding, spec.seeds_per_party) == ("first", "both", 16)
    d = jobspec.to_dict(spec)
    assert d["bandwidth"] == "auto"
    assert jobspec.parse(jobspec.to_yaml(spec)).bandwidth_auto


@pytest.mark.parametrize("extra,field", [("merge: biggest\n", "merge"),
                                         ("seeding: grid\n", "seeding"),
                                         ("quantile: 2\n", "quantile"),
                                         ("kernel: epanechnikov\n", "kernel")])
def test_bad_values_name_the_field(extra, field):
    with pytest.raises(jobspec.SpecError, match=f"^{field}:"):
        jobspec.parse(BASE + "bandwidth: 0.1\n" + extra)


def test_one_kernel_registry():
    from party_node.config import Policy
    from secure_meanshift.params import KERNELS

    assert jobspec.KERNELS == KERNELS == KERNEL_NAMES
    assert Policy().kernels == list(KERNEL_NAMES)


def test_node_passes_new_parameters():
    from party_node.node import PartyNode

    spec = jobspec.parse(BASE + "bandwidth: auto\nseeding: bins\nmerge: first\n")

    class Run:
        rank, carry_result = 0, False

    params = PartyNode._params(None, spec, Run(), 7)
    from secure_meanshift.params import EstimateBandwidth

    assert params["bandwidth"] == EstimateBandwidth().to_dict()    # "auto": the typed value
    assert params["seeding"] == "bins" and params["merge"] == "first"


def test_simulate_cli_takes_the_same_parameters():
    import argparse

    from meanshift_cli.simulate import add_arguments

    ap = argparse.ArgumentParser()
    add_arguments(ap)
    a = ap.parse_args(["--merge", "first", "--seeding", "both", "--seeds-per-party", "5",
                       "--min-weight", "3", "--bandwidth", "auto", "--quantile", "0.2",
                       "--kernel", KERNEL_NAMES[-1]])
    assert (a.merge, a.seeding, a.seeds_per_party, a.min_weight) == ("first", "both", 5, 3.0)
    assert a.bandwidth == "auto" and a.quantile == 0.2
    with pytest.raises(SystemExit):
        ap.parse_args(["--merge", "biggest"])


def test_estimator_params_build_engine_params():
    from secure_meanshift import SecureMeanShift

    est = SecureMeanShift(0.2, merge="first", seeding="bins", seeds_per_party=4, min_weight=2)
    p = est.make_params(0.2, ([0, 0], [1, 1]))
    assert (p.merge, p.seeding, p.seeds_per_party, p.min_weight) == ("first", "bins", 4, 2)
    assert p.merge_unit == pytest.approx(0.1)                       # h/2 for the old rule
    assert SecureMeanShift(0.2).make_params(0.2, ([0], [1])).merge_unit == pytest.approx(0.2)
    assert set(est.get_params()) >= {"bandwidth", "kernel", "merge", "cluster_all"}
