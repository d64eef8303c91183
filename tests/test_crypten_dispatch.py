"""crypten_patches._direct_lookup: the same attribute CrypTen's own lookup
gives with autograd off, straight from a cache; in-place names, missing
attributes and autograd on still take CrypTen's path."""

from secure_meanshift.mpc.crypten_patches import _direct_lookup


class _Tensor:
    PROTECTED_ATTRIBUTES = ["grad", "detach"]
    PYTHON_BUILTIN = {"__add__": "add", "__mul__": "mul"}
    AUTOGRAD_ENABLED = False

    def add(self, other):
        return "add"

    def mul_(self, other):
        return "mul_"

    def detach(self):
        return "detach"


def test_direct_lookup_answers_as_cryptens_lookup_with_autograd_off():
    seen = []

    def lookup(self, name):
        seen.append(name)
        return f"crypten:{name}"

    get = _direct_lookup(_Tensor, lookup)
    t = _Tensor()
    assert get(t, "__add__")(None) == "add" and get(t, "add")(None) == "add"
    assert get(t, "detach")() == "detach"
    assert seen == []                               # all from the object itself
    assert get(t, "mul_") == "crypten:mul_"         # in-place: CrypTen's out-of-place + copy
    assert get(t, "nothing") == "crypten:nothing"   # missing: CrypTen's fallback or error
    _Tensor.AUTOGRAD_ENABLED = True
    try:
        assert get(t, "__add__") == "crypten:__add__"   # autograd on: CrypTen's wrapper
    finally:
        _Tensor.AUTOGRAD_ENABLED = False
    assert seen == ["mul_", "nothing", "__add__"]
