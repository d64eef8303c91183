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


def test_seek_goes_back_and_forth_in_the_keystream():
    key = bytes(range(32))
    whole = csprng.Stream(key).ring((100,))
    s = csprng.Stream(key)
    s.ring((3,))
    at = s.tell()
    assert at == 24
    ahead = s.ring((50,))
    s.seek(at)                                # back: the same values again
    assert torch.equal(s.ring((50,)), ahead)
    assert torch.equal(ahead, whole[3:53])
    for start in (0, 1, 7, 8, 17, 40, 99):      # any element, block-aligned or not
        s.seek(8 * start)
        assert torch.equal(s.ring((100 - start,)), whole[start:])
        assert s.tell() == 800
