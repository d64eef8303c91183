"""The dealer's answers drawn ahead (dealer_service.Ahead) are exactly those
of a dealer that draws only when asked, whatever party 0 asks next: the
expected batch, a shorter one, another one, a fixed operand in between, and
whenever a request interrupts the drawing ahead."""

import json

import torch

from secure_meanshift.mpc import csprng, dealer_service as ds

KEYS = [bytes([i]) * 32 for i in range(3)]
PASS = [{"kind": "and", "s0": [1, 2, 1], "s1": [2, 2, 1]},
        {"kind": "mul", "s0": [8, 5], "s1": [8, 5]},
        {"kind": "ltz", "s0": [40], "bits": 20},
        {"kind": "b2a", "s0": [30]}]
DIVIDE = [{"kind": "trunc", "s0": [8, 2], "y": 1 << 16},
          {"kind": "square", "s0": [8, 2]}]
OTHER = [{"kind": "mul", "s0": [3, 3], "s1": [3, 3]},
         {"kind": "and", "s0": [4], "s1": [4]}]
FIXED = [{"kind": "fixed", "s1": [2, 5], "fixed": 1},
         {"kind": "matmul", "s0": [8, 2], "s1": [2, 5], "fixed": 1}]


def _dealing() -> ds.Dealing:
    return ds.Dealing([csprng.Stream(k) for k in KEYS])


def _run(batches, interrupt_after=None):
    """Every answer through Ahead (drawing ahead after each batch, stopped
    after interrupt_after draws if given) and through a plain Dealing."""
    ahead, plain = ds.Ahead(_dealing()), _dealing()
    for batch in batches:
        for req in batch:
            text = json.dumps(req).encode()
            got = ahead.answer(text, req)
            if req["kind"] == "fixed":
                plain.remember(req)
                assert got is None
                continue
            assert torch.equal(got, plain.answer(req)), req
        drawn = []

        def asked() -> bool:
            drawn.append(1)
            return interrupt_after is not None and len(drawn) > interrupt_after
        ahead.batch_done(asked)
    return ahead


def test_expected_batches_are_answered_ahead_and_right():
    ahead = _run([PASS, DIVIDE] * 5)
    assert len(ahead.ready) == len(PASS)                 # the next pass: drawn already
    ahead = _run([PASS, DIVIDE] * 5 + [PASS])
    assert len(ahead.ready) == len(DIVIDE) + len(PASS)   # the division and the pass after it


def test_unexpected_requests_take_the_streams_back():
    _run([PASS, DIVIDE, PASS, DIVIDE, OTHER, PASS, DIVIDE, PASS[:2], DIVIDE, PASS,
          FIXED, DIVIDE, PASS, DIVIDE, OTHER])


def test_interrupted_drawing_ahead_goes_on_later():
    for n in (0, 1, 3, 5):
        _run([PASS, DIVIDE] * 4 + [PASS[:3], OTHER, PASS, DIVIDE, PASS], interrupt_after=n)
