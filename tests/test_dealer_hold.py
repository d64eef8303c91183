"""The dealer holds answers to requests that arrived together and sends them
together (dealer_service.HOLD_BYTES): party 0 still gets every answer, in the
order asked, equal to a Dealing's on the same streams; a request sent alone is
answered at once (no wait for more)."""

import json
import threading

import torch

from secure_meanshift.mpc import csprng, dealer_service
from secure_meanshift.mpc.communicator import from_bytes
from secure_meanshift.mpc.transport import LocalLinks, socket_pairs

REQS = [{"kind": "and", "s0": [1, 1, 1], "s1": [1, 1, 1]},
        {"kind": "mul", "s0": [8, 5], "s1": [8, 5]},
        {"kind": "ltz", "s0": [40]},
        {"kind": "b2a", "s0": [30]},
        {"kind": "mul", "s0": [300, 40], "s1": [300, 40]},     # > HOLD_BYTES
        {"kind": "trunc", "s0": [8, 8], "y": 1 << 16}]


def test_held_answers_come_in_order_and_right():
    ends = socket_pairs(2)                 # rank 0: party 0; rank 1: the dealer (world 1)
    party, dealer = LocalLinks(0, dict(ends[0]), 10.0), LocalLinks(1, dict(ends[1]), 10.0)
    served = []
    t = threading.Thread(target=lambda: served.append(dealer_service.serve(dealer, 1)))
    t.start()
    key = bytes(party.recv(1))
    mirror = dealer_service.Dealing([csprng.Stream(key)])
    for req in REQS:                       # all at once, as a phase asks
        party.send(1, json.dumps(req).encode())
    party.flush()
    for req in REQS:
        want = mirror.answer(req)
        got = party.recv(1)
        assert torch.equal(from_bytes(got, want.size()), want), req["kind"]
    party.send(1, json.dumps(REQS[0]).encode())       # alone: answered without more
    party.flush()
    assert torch.equal(from_bytes(party.recv(1), (1, 1, 1)), mirror.answer(REQS[0]))
    party.send(1, b'{"kind": "end"}')
    party.flush()
    t.join(10)
    assert served == [len(REQS) + 1]
    party.close()
    dealer.close()
