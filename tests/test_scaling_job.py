"""Issue 18: federated standardisation in a job (``scale: standard``): the pooled
moments under MPC inside the job's own session, every party standardising its
own rows; lengths in standardised units, bounds in data units, centres reported
in data units and as opened (standardised)."""

import numpy as np
import pytest
import yaml

from meanshift_rpc import jobspec
from secure_meanshift.errors import InputError
from secure_meanshift.params import PARAMS, MeanShiftParams
from secure_meanshift.plaintext import reference_meanshift
from secure_meanshift.moments import Moments, plain_moments, standardised_params

SPEC = {"parties": [{"id": "a", "dataset": "d"}, {"id": "b", "dataset": "d"}],
        "bounds": {"lo": [-10, -100], "hi": [20, 100]}, "dealer": "d", "bandwidth": 0.8}
BOUNDS = ([-10.0, -100.0], [20.0, 100.0])


def _three_parties():
    """Features of very different spread (x1 ~ 20 x x0); party 2's rows shifted by +5
    in feature 0, so each party's own moments differ from the pooled ones."""
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, -40.0], [2.0, 40.0], [4.0, 0.0]])
    parts = []
    for i, n in enumerate((40, 30, 30)):
        x = centres[rng.integers(0, 3, n)] + rng.normal(0, [0.3, 6.0], (n, 2))
        if i == 2:
            x[:, 0] += 5.0
        parts.append(x)
    return parts


def test_the_table_row_and_its_checks():
    row = PARAMS["scaling"]
    assert (row.spec_key, row.cli, row.default, row.choices) == \
        ("scale", "--scale", "none", ("none", "standard"))
    p = MeanShiftParams(bandwidth=0.8, bounds=BOUNDS, scaling="standard")
    assert p.standardises
    # the bandwidth is in standardised units: not compared with the data-unit bounds
    MeanShiftParams(bandwidth=500.0, bounds=([0.0], [1.0]), scaling="standard")
    with pytest.raises(InputError, match="^scaling: must be one of none, standard"):
        MeanShiftParams(bandwidth=0.8, bounds=BOUNDS, scaling="minmax")
    with pytest.raises(InputError, match="^scale: 'standard' is refused with privacy"):
        MeanShiftParams(bandwidth=0.8, bounds=BOUNDS, scaling="standard",
                        privacy={"epsilon": 1.0})


def test_job_spec_parses_scale_and_refuses_it_with_privacy():
    spec = jobspec.parse(yaml.safe_dump({**SPEC, "scale": "standard"}))
    assert spec.scaling == "standard"
    assert jobspec.engine_params(spec, 0)["scaling"] == "standard"
    assert jobspec.parse(jobspec.to_yaml(spec)) == spec
    plain = jobspec.parse(yaml.safe_dump(SPEC))
    assert jobspec.to_dict(plain)["scale"] == "none"
    assert jobspec.engine_params(plain, 0)["scaling"] == "none"
    # lengths are standardised units: not checked against the data-unit bounds
    jobspec.parse(yaml.safe_dump({**SPEC, "scale": "standard", "bandwidth": 0.01,
                                  "bounds": {"lo": [0, 0], "hi": [1e6, 1e6]}}))
    with pytest.raises(jobspec.SpecError, match="^scale: must be one of none, standard"):
        jobspec.parse(yaml.safe_dump({**SPEC, "scale": "robust"}))
    with pytest.raises(jobspec.SpecError, match="^scale: 'standard' is refused with privacy"):
        jobspec.parse(yaml.safe_dump({**SPEC, "scale": "standard",
                                      "privacy": {"epsilon": 1.0, "delta": 1e-6}}))


def test_derived_bounds_hold_every_standardised_row():
    parts = _three_parties()
    m = plain_moments(parts)
    p = standardised_params(MeanShiftParams(bandwidth=0.8, bounds=BOUNDS,
                                            scaling="standard"), m)
    assert p.scaling == "none" and not p.standardises
    z = m.forward(np.concatenate(parts))
    assert (z >= p.lo).all() and (z <= np.asarray(p.bounds[1])).all()
    np.testing.assert_allclose(m.inverse(z), np.concatenate(parts))
    with pytest.raises(InputError, match="^bandwidth: is larger than the whole"):
        standardised_params(MeanShiftParams(bandwidth=50.0, bounds=BOUNDS,
                                            scaling="standard"), m)


def _job(**kw) -> MeanShiftParams:
    return MeanShiftParams(bandwidth=0.8, bounds=BOUNDS, scaling="standard",
                           seeding="points", summary=None, **kw)


def test_twin_standardises_by_the_pooled_moments_not_each_party_alone():
    parts = _three_parties()
    x = np.concatenate(parts)
    twin = reference_meanshift(parts, _job())
    m = twin.moments
    np.testing.assert_allclose(m.mean, x.mean(0))
    np.testing.assert_allclose(m.std, x.std(0))
    # the same as the twin on rows standardised by hand, with derived bounds
    by_hand = reference_meanshift([m.forward(q) for q in parts],
                                  standardised_params(_job(), m))
    np.testing.assert_allclose(twin.standardised, by_hand.centroids)
    np.testing.assert_allclose(twin.centroids, m.inverse(by_hand.centroids))
    assert _differs_from_each_alone(parts, twin.standardised)


def _differs_from_each_alone(parts, standardised: np.ndarray) -> bool:
    """Each party standardising its rows alone (party 2's shift removed, the
    spreads wrong) is another data set, with other centres."""
    alone = [Moments.of(q.mean(0), q.var(0)).forward(q) for q in parts]
    lo, hi = np.min([a.min(0) for a in alone], 0), np.max([a.max(0) for a in alone], 0)
    other = reference_meanshift(alone, MeanShiftParams(
        bandwidth=0.8, bounds=(lo, hi), seeding="points", summary=None)).centroids
    return len(other) != len(standardised) or np.abs(other - standardised).max() > 0.1


@pytest.mark.usefixtures("in_memory_links")       # the subject is not the TLS link
def test_secure_job_with_scale_standard_equals_the_twin():
    from secure_meanshift.simulate import run_simulation

    from secure_meanshift.output import combine_shares

    parts = _three_parties()
    p = _job(reveal_to=(0,), export_shares=True)
    run = run_simulation(parts, p, timeout_s=60)
    got, twin = run.receiver, reference_meanshift(parts, p)
    np.testing.assert_allclose(got.moments.mean, twin.moments.mean, rtol=0, atol=1e-8)
    np.testing.assert_allclose(got.moments.std, twin.moments.std, rtol=1e-7)
    assert got.standardised.shape == twin.standardised.shape
    assert np.abs(got.standardised - twin.standardised).max() <= 1e-3 * p.bandwidth
    np.testing.assert_allclose(got.centroids, got.moments.inverse(got.standardised))
    assert _differs_from_each_alone(parts, got.standardised)
    assert got.params.scaling == "none"            # the run's (derived) parameters
    assert got.to_dict()["moments"]["std"] == got.moments.std.tolist()
    assert all(np.array_equal(o.moments.mean, got.moments.mean) for o in run.outcomes)
    # analysts: every share carries the opened moments, so they decode to data units
    analyst = combine_shares([o.share for o in run.outcomes], 3)
    np.testing.assert_allclose(analyst.centroids, got.centroids, atol=1e-9)


def test_node_policy_allow_scaling():
    from party_node import policy
    from party_node.config import NodeConfig, Policy

    cfg = NodeConfig(party_id="a", coordinator="x:1", datasets={},
                     policy=Policy(trusted_dealers=["d"], allow_plaintext_mpc=True,
                                   allow_exact_results=True))
    spec = {**SPEC, "transport": "trusted-network", "scale": "standard",
            "bounds": {"lo": [0, 0], "hi": [1000, 1000]}}

    def why(**kw):
        return policy.job_reason(cfg, jobspec.parse(yaml.safe_dump({**spec, **kw})),
                                 "analyst:ann")

    # h (0.8) is in standardised units: the floor (0.01 x 1000 in data units) is the
    # worker's, once the bounds are standardised (runtime.run_party's min_bandwidth)
    assert why() == "no data set named 'd' on this node"
    assert "policy.min_bandwidth_fraction" in why(scale="none")
    cfg.policy.allow_scaling = False
    assert why() == ("policy: the job standardises its features (scale: standard), which "
                     "opens the pooled mean and standard deviation of every feature; not "
                     "allowed by local policy (policy.allow_scaling: false)")
    assert why(scale="none", bandwidth=20) == "no data set named 'd' on this node"


def _cli_args(*argv):
    import argparse

    from meanshift_cli.simulate import add_arguments

    ap = argparse.ArgumentParser()
    add_arguments(ap)
    return ap.parse_args(list(argv))


def test_simulator_refuses_scale_standard_with_dp_before_anything_runs(capsys):
    from meanshift_cli.simulate import main

    assert main(["--scale", "standard", "--epsilon", "1", "--bandwidth", "0.1", "--quiet",
                 "--no-sklearn"]) == 2
    assert "error: --scale: 'standard' is refused with privacy" in capsys.readouterr().err
    assert _cli_args().scaling == "none"
    assert _cli_args("--scale", "standard").scaling == "standard"


@pytest.mark.usefixtures("in_memory_links")
def test_simulator_estimates_h_and_picks_seeds_in_standardised_units():
    """--scale standard --bandwidth auto: the parties standardise, estimate h on
    the standardised rows and cluster in one session; h within 2^-16 of the
    unit box of the twin's, and "auto" seeding resolved with it."""
    from meanshift_cli.simulate import _as_run, _params
    from secure_meanshift.bandwidth import plain_bandwidth
    from secure_meanshift.simulate import run_simulation

    parts = _three_parties()
    args = _cli_args("--scale", "standard", "--bandwidth", "auto", "--quantile", "0.2",
                     "--max-iter", "2")
    p = _params(args, parts, BOUNDS)
    assert p.estimates_bandwidth and p.seeding == "auto"     # nothing run yet
    seen: dict = {}
    sim = run_simulation(parts, p, progress=lambda ev: ev.get("stage") == "sizes"
                         and seen.update(seeding=ev["seeding"]))
    q = _as_run(p, sum(map(len, parts)), sim, seen.get("seeding"))
    assert q.scaling == "standard" and q.seeding == "points" == seen["seeding"]
    m = plain_moments(parts)
    derived = standardised_params(q, m)
    h = plain_bandwidth([m.forward(x) for x in parts], derived.bounds, 0.2, seed=0)
    assert abs(q.bandwidth - h) <= 2.0 ** -16 * derived.scale
