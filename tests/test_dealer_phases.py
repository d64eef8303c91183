"""Dealer phases (dealer.Correlations.phase): a repeated phase asks for all its
correlated values at its start; results stay exact, and a phase that would draw
other values than it did the first time is refused before any value is used."""

import numpy as np
import pytest

from mpc_jobs import phase_job
from secure_meanshift.simulate import run_mpc_function


@pytest.mark.parametrize("parties", [2, 3])
def test_reserved_phases_give_the_same_products_and_refuse_another_plan(parties):
    out, refused, _ = run_mpc_function(phase_job, parties, (4,))[0]
    want = np.arange(6).reshape(2, 3) * 0.25
    for got in out:
        assert np.abs(got - want).max() < 1e-3
    assert "other values than planned" in refused
