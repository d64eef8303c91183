"""The transport interface: the TLS mesh and the local socket pairs both
implement it; the local links frame messages like the mesh and report a peer
that left as PeerLost."""

import threading

import numpy as np
import pytest

from secure_meanshift.errors import PeerLost
from secure_meanshift.mpc.mesh import Mesh
from secure_meanshift.mpc.transport import LocalLinks, Transport, keep_own, socket_pairs


def test_both_implementations_declare_the_interface():
    for cls in (Mesh, LocalLinks):
        for name in ("send", "recv", "ready", "flush", "received_from", "close"):
            assert callable(getattr(cls, name)), (cls, name)


def test_local_links_carry_frames_and_count_bytes():
    ends = socket_pairs(3)
    links = [LocalLinks(r, dict(ends[r]), timeout_s=5.0) for r in range(3)]
    assert all(isinstance(lk, Transport) for lk in links)
    big = np.arange(300_000, dtype=np.int64)           # larger than a socket buffer
    links[0].send(2, b"hello")
    links[0].send(2, memoryview(big).cast("B"))
    links[1].send(2, b"")
    senders = [threading.Thread(target=links[r].flush) for r in (0, 1)]   # other "processes"
    for t in senders:
        t.start()
    assert bytes(links[2].recv(0)) == b"hello"
    assert np.array_equal(np.asarray(links[2].recv(0)).view(np.int64), big)
    assert bytes(links[2].recv(1)) == b""
    for t in senders:
        t.join()
    assert links[0].sent_bytes == 5 + big.nbytes
    assert links[2].received_from(0) == 5 + big.nbytes and links[2].received_from(1) == 0
    links[1].close()
    with pytest.raises(PeerLost, match="rank 1 .* closed its connection"):
        links[2].recv(1)
    for lk in (links[0], links[2]):
        lk.close()


def test_a_timeout_names_the_ranks_it_waited_for():
    """What lets the coordinator tell a cut link from a silent party."""
    ends = socket_pairs(3)
    links = [LocalLinks(r, dict(ends[r]), timeout_s=0.3) for r in range(3)]
    with pytest.raises(PeerLost) as err:
        links[0].recv(2)                               # rank 2 never sends
    assert err.value.peers == ("local:2",) and "from rank 2 (local:2)" in str(err.value)
    links[1].close()
    with pytest.raises(PeerLost) as err:
        links[2].recv(1)
    assert err.value.peers == ("local:1",)
    for lk in (links[0], links[2]):
        lk.close()


def test_a_timeout_names_the_rank_waited_on_not_those_owed_bytes():
    """A party held up behind a cut link elsewhere owes bytes to everyone but
    waits on one: naming only that one keeps the coordinator's pair blame fair."""
    ends = socket_pairs(3)
    links = [LocalLinks(r, dict(ends[r]), timeout_s=0.3) for r in range(3)]
    big = np.zeros(2_000_000, dtype=np.uint8)          # more than rank 1 will buffer
    links[0].send(1, memoryview(big))                  # rank 1 never reads it
    with pytest.raises(PeerLost) as err:
        links[0].recv(2)                               # rank 2 never sends
    assert err.value.peers == ("local:2",), err.value
    links[2].send(0, b"late")                          # its frame comes: now the unread bytes block
    links[2].flush()
    with pytest.raises(PeerLost) as err:
        links[0].recv(2)
    assert err.value.peers == ("local:1",), err.value
    for lk in links:
        lk.close()


def test_keep_own_closes_the_other_ranks_ends():
    ends = socket_pairs(2)
    mine = keep_own(ends, 0)
    assert set(mine) == {1} and mine[1].fileno() >= 0
    assert ends[1][0].fileno() == -1            # rank 1's end is closed here
    mine[1].close()
