"""Issue 9: property-based hostile input against every RPC of the coordinator
and against a node's command stream. Whatever arrives, the servers stay up,
answer with the right status code, and no reply carries a data value."""

import re
import string

import grpc
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostile import Coord, FakeNode, wait_parties
from meanshift_proto.v1 import service_pb2 as pb
from meanshift_rpc import signing

pytestmark = pytest.mark.timeout(300)
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
FIELDS = ("name", "parties", "bandwidth", "dust", "kernel", "max_iter", "tol", "oblivious",
          "bounds", "reveal_to", "merge_radius", "return_sizes", "summary", "min_cluster_size",
          "dealer", "transport", "provider")
BASE = {"name": "h", "parties": [{"id": "alpha", "dataset": "points"},
                                 {"id": "beta", "dataset": "points"}],
        "bandwidth": 0.12, "dust": 6, "max_iter": 20, "bounds": {"lo": [0, 0], "hi": [1, 1]},
        "reveal_to": ["analyst:ann"], "summary": "exact", "dealer": "dd"}
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), text)
values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=5),
                                                      st.dictionaries(text, kids, max_size=5)),
                      max_leaves=12)


@pytest.fixture(scope="module")
def coord(tmp_path_factory):
    c = Coord(str(tmp_path_factory.mktemp("hostile")))
    nodes = [FakeNode(c, "alpha"), FakeNode(c, "beta"), FakeNode(c, "dd", "dealer")]
    wait_parties(c, ["alpha", "beta", "dealer:dd"])
    c.nodes = nodes
    yield c
    for n in nodes:
        n.close()
    c.stop()


def alive(coord):
    cl = coord.client("operator:olga")
    try:
        assert cl.healthy() and isinstance(cl.parties(), list)
    finally:
        cl.close()


@SETTINGS
@given(st.dictionaries(st.sampled_from(FIELDS + ("colour",)), values, max_size=4))
def test_submit_any_spec(coord, changes):
    cl = coord.client()
    try:
        info = cl.submit({**BASE, **changes})
        assert signing.valid_job_id(info["job_id"])
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.code(), e.details())
        field = re.split(r"[:\[]", e.details(), 1)[0]
        assert field in FIELDS + ("colour", "spec", "yaml", "signature") or \
            field in {str(k)[:64] for k in changes}, e.details()
    finally:
        cl.close()
    alive(coord)


@SETTINGS
@given(text)
def test_submit_any_text(coord, body):
    cl = coord.client()
    try:
        cl.submit(body)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        cl.close()
    alive(coord)


@SETTINGS
@given(st.sampled_from(["GetJob", "WatchJob", "CancelJob", "GetResult"]),
       st.one_of(text, st.just("0" * 24), st.text(string.hexdigits.lower(), min_size=24,
                                                    max_size=24)),
       st.sampled_from(["analyst:ann", "analyst:eve", "party:alpha", "operator:olga"]))
def test_job_reads_with_any_id(coord, rpc, job_id, who):
    stub, ch = coord.stub(who)
    try:
        out = getattr(stub, rpc)(pb.JobRef(job_id=job_id), timeout=5)
        if rpc == "WatchJob":
            list(out)
    except grpc.RpcError as e:
        assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                            grpc.StatusCode.PERMISSION_DENIED), (e.code(), e.details())
        assert len(job_id) < 6 or job_id not in e.details() or signing.valid_job_id(job_id)
    finally:
        ch.close()
    alive(coord)


replies = st.one_of(
    st.builds(lambda c, a, p: {"accept": pb.Accept(seed_commitment=c, rendezvous_address=a,
                                                   rendezvous_port=p)},
              st.binary(max_size=64), text, st.integers(-2**31, 2**31 - 1)),
    st.builds(lambda r: {"refuse": pb.Refuse(reason=r)}, text),
    st.builds(lambda p, n: {"reveal": pb.SeedReveal(party=p, nonce=n)}, text,
              st.binary(max_size=64)),
    st.builds(lambda i, m: {"progress": pb.Progress(stage="iteration", iteration=i,
                                                    max_iter=m)},
              st.integers(-2**31, 2**31 - 1), st.integers(-2**31, 2**31 - 1)),
    st.builds(lambda i, v: {"finished": pb.Finished(iterations=i, centroids=[
        pb.Centroid(values=v)])}, st.integers(-2**31, 2**31 - 1),
        st.lists(st.floats(allow_nan=True), max_size=4)),
    st.builds(lambda r, b: {"failed": pb.Failed(reason=r, peer_lost=b)}, text, st.booleans()),
    st.just({}))


@SETTINGS
@given(replies, st.booleans(), st.sampled_from([0, 1]))
def test_node_replies_out_of_order_or_malformed(coord, reply, live, who):
    """Messages from a party node that nothing expects: an Ack, never a crash."""
    node = coord.nodes[who]
    job_id = signing.new_job_id()
    if live:
        cl = coord.client()
        try:
            job_id = cl.submit(BASE)["job_id"]
        finally:
            cl.close()
    ack = node.reply(job_id, **reply)
    assert isinstance(ack.ok, bool)
    alive(coord)
    # the stored record never holds the raw values a hostile party sent as a reason
    if live:
        cl = coord.client()
        try:
            cl.cancel(job_id)
        finally:
            cl.close()


@SETTINGS
@given(st.dictionaries(st.sampled_from(["bandwidth", "dust", "max_iter", "bounds",
                                        "min_cluster_size", "kernel", "reveal_to"]),
                       values, max_size=3))
def test_node_offers_refused_by_rule_without_values(node_env, changes):
    """Signed offers with arbitrary contents to a real node: it refuses or accepts;
    a refusal reason carries no value of the party's data and no row number."""
    env = node_env
    spec = {**BASE, "reveal_to": ["alpha"], **changes}
    try:
        from meanshift_rpc.jobspec import SpecError, parse

        parse(yaml.safe_dump(spec))
    except SpecError:
        return                                # the client would not sign it
    except Exception:
        return
    o = env.offer(**{k: v for k, v in spec.items()})
    r = env.ask(o)
    assert r is not None, "the node did not answer"
    if r.WhichOneof("reply") == "refuse":
        reason = r.refuse.reason
        assert "row" not in reason
        for v in env.data.ravel():
            assert f"{v}" not in reason and f"{v:.6f}" not in reason
    else:
        env.evil.send(cancel=pb.Cancel(job_id=o.job_id, reason="test"))
    assert env.proc.poll() is None


@pytest.fixture(scope="module")
def node_env(tmp_path_factory):
    from test_trust_node import Env

    e = Env(str(tmp_path_factory.mktemp("hostile-node")))
    yield e
    e.stop()
