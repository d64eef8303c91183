"""Issue 17's bounds oracle, through a real federation: the same job with bounds
that cut through a party's data and with bounds that contain it runs alike; the
clipped rows are counted only in the party's own log."""

import os
import re

import pytest

from cluster import Cluster
from test_service import run_job

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("oracle")), parties=2, points=30).start()
    yield c
    c.stop()


def test_bounds_cutting_through_the_data_are_accepted_like_any(cluster):
    lo_x = float(min(p[:, 0].min() for p in cluster.parts))
    outcomes = []
    for hi_x in (1.0, 0.5, lo_x + 0.01):        # contains all, cuts, cuts almost all
        spec = cluster.spec(bounds={"lo": [0, 0], "hi": [hi_x, 1]}, reveal_to=["alpha"],
                            dust=4, max_iter=4, min_cluster_size=5)
        info = run_job(cluster, spec)
        outcomes.append((info["state"], info.get("reason", "")))
    assert outcomes == [("succeeded", "")] * 3, outcomes
    log = open(os.path.join(cluster.tmp, "alpha.log")).read()
    assert re.search(r"\d+ row\(s\) of data set 'points' lay outside", log)
    received = open(cluster.record).read()
    assert "outside" not in received and "clipped" not in received
