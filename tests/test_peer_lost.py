"""A lost peer is an exception type (errors.PeerLost), raised by the mesh and
the runtime and caught by type; its message keeps the text operators know."""

import pickle

from secure_meanshift.errors import PEER_LOST, MPCError, PeerLost
from secure_meanshift.runtime import _aborted


def test_peer_lost_is_an_mpc_error_with_the_known_message_and_survives_pickling():
    exc = PeerLost("rank 1 (party:b) closed its connection", ("party:b",))
    assert isinstance(exc, MPCError)
    assert str(exc) == f"rank 1 (party:b) closed its connection: {PEER_LOST}"
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is PeerLost and str(back) == str(exc) and back.peers == ("party:b",)


def test_unexpected_exceptions_become_peer_lost_only_when_they_say_so():
    lost = _aborted("secure computation aborted", RuntimeError("Connection reset by peer"))
    assert type(lost) is PeerLost
    assert str(lost) == f"secure computation aborted: RuntimeError (connection reset): {PEER_LOST}"
    other = _aborted("dealer aborted", ValueError("row 3 holds 0.123"))   # payload not echoed
    assert type(other) is MPCError and str(other) == "dealer aborted: ValueError"
    nested = _aborted("dealer aborted", PeerLost("no answer within 5 s"))
    assert type(nested) is PeerLost
    assert str(nested) == f"dealer aborted: no answer within 5 s: {PEER_LOST}"
