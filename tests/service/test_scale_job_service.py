"""Issue 18: a job with ``scale: standard`` through the service (coordinator, three
party nodes, the dealer): the pooled moments in the job's session, the centres
reported in data units to the analyst (shares carry the moments) and in the
first party's result CSV, equal to the twin's."""

import os

import numpy as np
import pytest
import yaml

from cluster import Cluster
from meanshift_rpc.jobspec import engine_params, parse
from secure_meanshift.centroid_match import match_error
from secure_meanshift.params import MeanShiftParams
from secure_meanshift.plaintext import reference_meanshift

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("cluster")), parties=3).start()
    yield c
    c.stop()


def test_scale_standard_job_reports_data_units_equal_to_the_twin(cluster):
    spec = cluster.spec(cluster.names, scale="standard", bandwidth=0.5)
    cl = cluster.client()
    try:
        info = cl.wait(cl.submit(spec)["job_id"], deadline_s=240)
        assert info["state"] == "succeeded", info
        cents = cl.result(info["job_id"])
    finally:
        cl.close()
    p = MeanShiftParams(**engine_params(parse(yaml.safe_dump(spec)),
                                        int(info["seed_hex"], 16)))
    ref = reference_meanshift(cluster.parts, p)
    assert p.scaling == "standard" and len(ref.centroids) == len(cluster.centres)
    # within 1e-3 h: h is in standardised units, so compare there
    err, unmatched = match_error(ref.moments.forward(cents), ref.standardised)
    assert unmatched == 0 and err < 1e-3 * spec["bandwidth"], (err, unmatched)
    own = np.loadtxt(os.path.join(cluster.tmp, f"results-{cluster.names[0]}",
                                  f"{info['job_id']}.csv"), delimiter=",", skiprows=1)
    np.testing.assert_allclose(own.reshape(-1, 2), cents, atol=1e-9)
