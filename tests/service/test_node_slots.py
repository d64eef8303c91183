"""max_concurrent_jobs at the node: the config key, the slots and the ports
(party_node: no coordinator, no worker)."""

import pytest

from meanshift_proto.v1 import service_pb2 as pb
from party_node.config import ConfigError, load
from party_node.node import Job, PartyNode
from testkit import free_port_range

pytestmark = pytest.mark.timeout(30)

BASE = """\
party_id: alpha
coordinator: {address: "127.0.0.1:1"}
insecure: true
datasets: {}
rendezvous: {port_range: [PORTS]}
"""


def node_config(tmp_path, extra: str = "", ports: str = "29500, 29509"):
    p = tmp_path / "node.yaml"
    p.write_text(BASE.replace("PORTS", ports) + extra)
    return load(str(p))


def test_default_one_and_bad_values_named(tmp_path):
    assert node_config(tmp_path).max_concurrent_jobs == 1
    assert node_config(tmp_path, "max_concurrent_jobs: 3\n").max_concurrent_jobs == 3
    for bad in ("0", "true", "2.5", "65", "'2'"):
        with pytest.raises(ConfigError, match="max_concurrent_jobs: an integer from 1 to 64"):
            node_config(tmp_path, f"max_concurrent_jobs: {bad}\n")
    with pytest.raises(ConfigError, match="3 jobs need 3 ports"):
        node_config(tmp_path, "max_concurrent_jobs: 3\n", ports="29500, 29501")


def free_range(n: int) -> tuple:
    """n consecutive ports nothing listens on (testkit.free_port_range)."""
    found = free_port_range(n)
    if found is None:
        pytest.skip("no free port range")
    return found


def job(jid: str) -> Job:
    return Job(pb.Offer(job_id=jid, spec=pb.JobSpec()))


def test_slots_and_ports_per_job(tmp_path):
    lo, hi = free_range(3)
    node = PartyNode(node_config(tmp_path, "max_concurrent_jobs: 2\n", f"{lo}, {hi}"))
    assert node._hello().max_concurrent_jobs == 2
    a, b = job("a" * 24), job("b" * 24)
    assert node._slot_free()
    a.port = node._free_port()
    node.jobs[a.id] = a
    b.port = node._free_port()
    node.jobs[b.id] = b
    assert a.port != b.port and {a.port, b.port} <= set(range(lo, hi + 1))
    assert not node._slot_free()              # two jobs held: the limit
    b.ended = True                            # its last reply is out: a free slot
    assert node._slot_free() and b.id not in node.jobs
    node._forget(a)
    assert node.jobs == {}
