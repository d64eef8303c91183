"""The one parameter table (secure_meanshift.params.PARAMS): every edge (the engine's
MeanShiftParams, the job spec, the simulator's flags, the estimator) takes its
defaults and checks from it (issue 16 item 1)."""

import argparse
import dataclasses
import inspect
import re

import pytest
import yaml

from meanshift_cli.simulate import ALGORITHM, add_arguments
from meanshift_rpc import jobspec
from secure_meanshift import SecureMeanShift
from secure_meanshift.errors import InputError
from secure_meanshift.estimator import TABLE_PARAMS
from secure_meanshift.params import (PARAMS, EstimateBandwidth, MeanShiftParams,
                                     bandwidth_value)

UNIT = ([0, 0], [1, 1])
SPEC = {"parties": [{"id": "a", "dataset": "d"}, {"id": "b", "dataset": "d"}],
        "bounds": {"lo": [0, 0], "hi": [1, 1]}, "dealer": "d", "bandwidth": 0.1}


def _simulator_defaults() -> dict:
    ap = argparse.ArgumentParser()
    add_arguments(ap)
    return vars(ap.parse_args([]))


def test_keys_and_flags_are_unique_and_named():
    keys = [r.spec_key for r in PARAMS.values() if r.spec_key]
    flags = [r.cli for r in PARAMS.values() if r.cli]
    assert len(keys) == len(set(keys)) and len(flags) == len(set(flags))
    assert all(re.fullmatch(r"--[a-z][a-z-]*", f) for f in flags)
    assert all(r.doc and r.kind in ("int", "float", "bool", "choice", "summary", "custom")
               for r in PARAMS.values())
    assert not set(keys) & set(jobspec.JOB_KEYS)


def test_engine_defaults_are_the_tables():
    fields = {f.name: f for f in dataclasses.fields(MeanShiftParams)}
    assert set(fields) <= set(PARAMS)
    p = MeanShiftParams(bandwidth=0.1, bounds=UNIT)
    for name, f in fields.items():
        if f.default is not dataclasses.MISSING:
            assert f.default == PARAMS[name].default, name
            assert getattr(p, name) == PARAMS[name].default, name
    assert EstimateBandwidth() == EstimateBandwidth(PARAMS["quantile"].default,
                                                    PARAMS["n_samples"].default)


def test_job_spec_defaults_are_the_tables():
    params = jobspec.engine_params(jobspec.parse(yaml.safe_dump(SPEC)), 0)
    for row in PARAMS.values():
        if row.spec_key and row.kind != "custom" and row.name in params:
            want = jobspec.SPEC_DEFAULTS.get(row.spec_key, row.default)
            assert params[row.name] == want, row.name
    assert jobspec.SPEC_DEFAULTS == {"min_cluster_size": jobspec.DEFAULT_MIN_CLUSTER_SIZE}


def test_simulator_defaults_are_the_tables():
    args = _simulator_defaults()
    for name in ALGORITHM:
        row = PARAMS[name]
        want = "auto" if name == "bandwidth" else row.default
        assert args[name] == want, name
    assert bandwidth_value(args["bandwidth"]) == EstimateBandwidth()


def test_estimator_defaults_and_constraints_are_the_tables():
    sig = inspect.signature(SecureMeanShift.__init__).parameters
    for name in TABLE_PARAMS:
        assert sig[name].default == PARAMS[name].default, name
        assert name in SecureMeanShift._parameter_constraints
    assert sig["bandwidth"].default is None and PARAMS["bandwidth"].default is None
    doc = SecureMeanShift.__doc__
    for name in TABLE_PARAMS:      # the docstring says the same default
        m = re.search(rf"^    {name} : .*default=(.+)$", doc, re.M)
        assert m and m.group(1).strip('"') == str(PARAMS[name].default), name


@pytest.mark.parametrize("name,bad", [("max_iter", 0), ("n_dust", 0), ("kernel", "box"),
                                      ("seeding", "x"), ("tol", -1.0), ("summary", 3.0),
                                      ("seeds_per_party", 5000), ("quantile", 1.5)])
def test_every_edge_refuses_what_the_table_refuses(name, bad):
    row = PARAMS[name]
    with pytest.raises(InputError, match=f"^{name}:"):
        row.check(bad)
    if name in MeanShiftParams.__dataclass_fields__:
        with pytest.raises(InputError, match=f"^{name}:"):
            MeanShiftParams(bandwidth=0.1, bounds=UNIT, **{name: bad})
    with pytest.raises(ValueError):
        SecureMeanShift(**{name: bad}).fit([[[0.1, 0.1]] * 3, [[0.2, 0.2]] * 3])
    with pytest.raises(jobspec.SpecError, match=f"^{row.spec_key}:"):
        jobspec.parse(yaml.safe_dump({**SPEC, row.spec_key: bad}))


def test_estimate_bandwidth_is_one_typed_value():
    est = EstimateBandwidth(quantile=0.2)
    for spelled in (None, "auto", " AUTO ", {"quantile": 0.3}, EstimateBandwidth()):
        assert bandwidth_value(spelled) == EstimateBandwidth()
    assert bandwidth_value("auto", estimate=est) == est
    assert bandwidth_value("0.5") == 0.5
    p = MeanShiftParams(bandwidth="auto", bounds=UNIT)
    assert p.estimates_bandwidth and MeanShiftParams(**p.to_dict()) == p
    with pytest.raises(InputError, match="refused in DP mode"):
        MeanShiftParams(bandwidth=est, bounds=UNIT, privacy={"epsilon": 1})
    spec = jobspec.parse(yaml.safe_dump({**SPEC, "bandwidth": {"quantile": 0.2}}))
    assert spec.bandwidth_auto and jobspec.estimate_of(spec) == est
    assert MeanShiftParams(**jobspec.engine_params(spec, 0)).bandwidth == est
    assert jobspec.parse(jobspec.to_yaml(spec)) == spec
    for bad in ("wide", -1, {"q": 1}):
        with pytest.raises(InputError, match="^bandwidth:"):
            bandwidth_value(bad)


def test_integers_of_any_size_and_huge_numbers():
    """The service's joint seed is a large integer: kept exactly; a number too
    large for a float is refused with the field's rule, never an OverflowError."""
    assert MeanShiftParams(bandwidth=0.1, bounds=UNIT, seed=2**64 + 1).seed == 2**64 + 1
    with pytest.raises(InputError, match="^quantile:"):
        PARAMS["quantile"].check(10**400)
    with pytest.raises(InputError, match="^max_iter:"):
        PARAMS["max_iter"].check(2.5)
