"""SIGTERM stops a node cleanly: exit code 0 within seconds, idle or mid-job, and
no worker left behind. (The handler only asks the main loop to stop; the stop
itself runs in normal control flow, never inside the signal handler.)"""

import os
import signal
import time

import psutil
import pytest

from cluster import Cluster
from test_failures import long_spec, wait_running_iteration

pytestmark = pytest.mark.timeout(300)


def sigterm_and_wait(c: Cluster, name: str, within: float) -> float:
    """SIGTERM the node's own process (as `docker stop` does; not its group), wait for
    it, and check its workers went with it; returns how long it took."""
    p = c.procs[name]
    children = psutil.Process(p.pid).children(recursive=True)
    t0 = time.time()
    os.kill(p.pid, signal.SIGTERM)
    code = p.wait(timeout=within)
    took = time.time() - t0
    assert code == 0, open(os.path.join(c.tmp, f"{name}.log")).read()[-3000:]
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, [q.cmdline() for q in alive]
    return took


def test_sigterm_stops_a_node_cleanly_idle_and_mid_job(tmp_path):
    c = Cluster(str(tmp_path), parties=2).start()
    try:
        assert sigterm_and_wait(c, "alpha", within=10) < 10          # idle
        c.wait_gone("alpha")
        c.start_node("alpha")
        c.wait_connected(["alpha"])
        cl = c.client()
        job = cl.submit(long_spec(c))
        wait_running_iteration(cl, job["job_id"])
        assert sigterm_and_wait(c, "alpha", within=20) < 15          # with a worker running
        info = cl.wait(job["job_id"], deadline_s=90)
        assert info["state"] == "failed"
        assert "alpha" in info["reason"], info["reason"]
        cl.close()
    finally:
        c.stop()
