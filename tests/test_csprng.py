"""csprng.Stream: a batch of draws (Stream.draw, the dealer's one keystream
call per party) gives exactly the values of the single draws in that order."""

import torch

from secure_meanshift.mpc import csprng


def test_draw_equals_single_draws():
    key = bytes(range(32))
    specs = [((3,), 64), ((1, 1, 1), 1), ((2, 5), 64), ((0,), 64), ((7,), 1), ((), 64)]
    one, many = csprng.Stream(key), csprng.Stream(key)
    singles = [one.ring(s) if b == 64 else one.bits(s, b) for s, b in specs]
    batched = many.draw(specs)
    for a, b, (size, _) in zip(singles, batched, specs):
        assert a.shape == b.shape == torch.Size(size) and a.dtype == b.dtype == torch.int64
        assert torch.equal(a, b)
    assert torch.equal(one.ring((4,)), many.ring((4,)))      # both streams still in step


def test_bits_are_in_range_and_streams_differ():
    s = csprng.Stream(b"k" * 32)
    b = s.bits((1000,), 5)
    assert int(b.min()) >= 0 and int(b.max()) < 32
    assert not torch.equal(csprng.Stream(b"a" * 32).ring((8,)),
                           csprng.Stream(b"b" * 32).ring((8,)))
