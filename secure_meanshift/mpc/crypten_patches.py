"""Every change this engine makes to CrypTen, installed from here and nowhere
else, at the start of each session (:func:`uninstall_session` then drops the
session's communicator and protocol state):

- generators (:func:`install_generators`): CrypTen's four ``torch.Generator``
  (MT19937: its state follows from 624 outputs) become AES-CTR streams
  (csprng.py), and its two random functions draw from them, so no MT19937
  output ever reaches the protocol;
- communicator: ``crypten.communicator.get()`` returns the session's
  communicator over the job's own links (communicator.py);
- protocols: CrypTen's Beaver protocols and MPCTensor's ``_ltz`` become the
  dealer-fed ones of beaver.py; CrypTen's own tuple providers, and the
  protocols mean-shift never uses, refuse to run;
- config: fixed-point precision fixedpoint.BULK_BITS for bulk work;
- speed: CrypTen's config as plain attributes (:func:`freeze_config`), copies
  without a zero sharing (:func:`fast_copies`), method calls without the
  autograd and validation wrappers (:func:`lean_dispatch`).

The one change made before CrypTen is imported (the torch-2.x import shim) is
_compat.py's.
"""

from __future__ import annotations

import contextlib

import torch
from omegaconf import OmegaConf

from . import beaver
from ._compat import import_crypten
from .communicator import MeshCommunicator
from .correlations import Correlations
from .csprng import Stream
from .fixedpoint import BULK_BITS
from ..errors import MPCError

_REFUSED = ("wraps", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d")


def install_session(comm: MeshCommunicator, corr: Correlations) -> None:
    """Install every patch but the generators (install_generators, called with
    the session's keys) for one session: ``comm`` carries every message,
    ``corr`` feeds every protocol."""
    crypten = import_crypten()
    crypten.cfg.encoder.precision_bits = BULK_BITS
    freeze_config(crypten)
    fast_copies(crypten)
    lean_dispatch(crypten)
    install_communicator(comm)
    install_protocols(corr)      # after the communicator: the openings use it


def uninstall_session() -> None:
    """The session is over: forget its protocols' state and its communicator."""
    beaver.release()
    uninstall_communicator()


def _size(args) -> torch.Size:
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return torch.Size(args[0])
    return torch.Size(args)


def install_generators(prev_key: bytes, next_key: bytes, local_key: bytes,
                       global_key: bytes) -> None:
    """Make CrypTen draw every random value from cryptographic streams.

    prev_key / next_key: shared with the previous / next party (zero sharings);
    local_key: this party's own; global_key: shared by all parties.
    """
    crypten = import_crypten()
    from crypten.common import rng  # CrypTen: loaded late (start-up cost)
    from crypten.mpc.primitives import arithmetic, binary
    from crypten.mpc.provider import tfp_provider, ttp_provider

    streams = {"prev": Stream(prev_key), "next": Stream(next_key),
               "local": Stream(local_key), "global": Stream(global_key)}
    cpu = torch.device("cpu")
    for name, stream in streams.items():
        crypten.generators[name] = {cpu: stream}

    def ring_element(size, ring_size=2**64, generator=None, **kwargs):
        if ring_size != 2**64:
            raise ValueError("only the 2^64 ring is supported")
        return _stream(generator).ring(_size((size,) if isinstance(size, int) else size))

    def kbit_tensor(size, bitlength=None, generator=None, **kwargs):
        size = _size((size,) if isinstance(size, int) else size)
        return _stream(generator).bits(size, 64 if bitlength is None else bitlength)

    def _stream(generator) -> Stream:
        if generator is None:
            return streams["local"]
        if not isinstance(generator, Stream):
            raise RuntimeError("a non-cryptographic generator reached the protocol")
        return generator

    for module in (rng, arithmetic, binary, tfp_provider, ttp_provider):
        if hasattr(module, "generate_random_ring_element"):
            module.generate_random_ring_element = ring_element
        if hasattr(module, "generate_kbit_random_tensor"):
            module.generate_kbit_random_tensor = kbit_tensor


def install_communicator(comm: MeshCommunicator) -> None:
    """Make ``crypten.communicator.get()`` return this communicator."""
    cc = import_crypten().communicator

    cc.get = lambda: comm
    cc.is_initialized = lambda: True


def uninstall_communicator() -> None:
    """``crypten.communicator.get()`` fails again: no session."""
    cc = import_crypten().communicator

    def _none():
        raise RuntimeError("no MPC session")

    cc.get = _none
    cc.is_initialized = lambda: False


def install_protocols(corr: Correlations) -> None:
    """Replace CrypTen's Beaver protocols (which ask a TupleProvider: rank 0 in
    CrypTen's default) by beaver.py's, fed from ``corr``; any other use of
    CrypTen's providers fails loudly."""
    crypten = import_crypten()
    from crypten.mpc import MPCTensor  # CrypTen: loaded late (start-up cost)
    from crypten.mpc.primitives import beaver as crypten_beaver

    crypten_ltz = getattr(MPCTensor, "_sms_crypten_ltz", MPCTensor._ltz)
    MPCTensor._sms_crypten_ltz = crypten_ltz
    protocols = beaver.start(corr, crypten_ltz)
    MPCTensor._ltz = protocols.pop("_ltz")
    for name, fn in protocols.items():
        setattr(crypten_beaver, name, fn)
    for name in _REFUSED:
        setattr(crypten_beaver, name, _refuse)
    crypten.mpc.get_default_provider = _refuse


def _refuse(*args, **kwargs):
    raise MPCError("a protocol step asked CrypTen's own triple provider")


class _Namespace:
    """Plain nested attributes: what CrypTen's config lookups need, without
    OmegaConf's per-access machinery."""

    def __init__(self, tree: dict):
        for k, v in tree.items():
            setattr(self, k, _Namespace(v) if isinstance(v, dict) else v)


def freeze_config(crypten) -> None:
    """Replace CrypTen's OmegaConf-backed config by plain attributes.

    CrypTen reads its config (e.g. ``cfg.debug.validation_mode``) on every
    attribute access of every MPCTensor; through OmegaConf that was about 45%
    of a mean-shift iteration's time (measured with cProfile). Values are
    copied once, after the caller has set them; ``temp_override`` keeps working.
    """
    cfg = crypten.cfg
    if isinstance(cfg.config, _Namespace):
        return
    fast = _Namespace(OmegaConf.to_container(cfg.config, resolve=True))
    cfg.set_config(fast)

    @contextlib.contextmanager
    def temp_override(override_dict):
        saved = []
        try:
            for key, value in override_dict.items():
                *path, leaf = key.split(".")
                node = fast
                for part in path:
                    node = getattr(node, part)
                saved.append((node, leaf, getattr(node, leaf)))
                setattr(node, leaf, value)
            yield
        finally:
            for node, leaf, value in reversed(saved):
                setattr(node, leaf, value)

    cfg.temp_override = temp_override


def fast_copies(crypten) -> None:
    """MPCTensor copies without CrypTen's detour through ``MPCTensor([])``,
    which secret-shares an empty tensor (a pseudo-random zero sharing) for
    every copy: about 700 copies per mean-shift iteration."""
    from crypten.mpc import MPCTensor  # CrypTen: loaded late (start-up cost)

    if getattr(MPCTensor, "_sms_fast_copies", False):
        return

    def blank(ptype):
        out = object.__new__(MPCTensor)
        out.requires_grad = False
        out._reset_gradients()
        out.ptype = ptype
        return out

    def shallow_copy(self):
        out = blank(self.ptype)
        out._tensor = self._tensor
        return out

    def clone(self):
        out = blank(self.ptype)
        out._tensor = self._tensor.clone()
        return out

    def from_shares(share, precision=None, ptype=MPCTensor.from_shares.__defaults__[1]):
        out = blank(ptype)
        out._tensor = ptype.to_tensor().from_shares(share, precision=precision)
        return out

    MPCTensor.shallow_copy = shallow_copy
    MPCTensor.clone = clone
    MPCTensor.from_shares = staticmethod(from_shares)
    MPCTensor._sms_fast_copies = True


def lean_dispatch(crypten) -> None:
    """Every MPCTensor method call goes through CrypTen's ``__getattribute__``:
    a debug-validation wrapper, then, with autograd on (CrypTen's default),
    an autograd forward wrapper per call. Mean-shift never differentiates:
    autograd off and the validation wrapper dropped leave CrypTen's own
    lookup (measured: about a tenth of a party's CPU per iteration)."""
    from crypten.cryptensor import CrypTensor  # CrypTen: loaded late (start-up cost)

    crypten.set_grad_enabled(False)
    inner = getattr(CrypTensor.__getattribute__, "__wrapped__", None)
    if inner is not None:
        CrypTensor.__getattribute__ = _direct_lookup(CrypTensor, inner)


def _direct_lookup(CrypTensor, lookup):
    """CrypTen's ``__getattribute__`` (``lookup``) with autograd off returns
    the object's own attribute under its builtin alias (``__add__`` -> add),
    and reads three class constants per access through CrypTen's metaclass
    (Python code). The same answer straight from a per-name cache; in-place
    names, a missing attribute and autograd on still go through ``lookup``."""
    state, alias = CrypTensor.__dict__, {}      # mappingproxy: reads the live flag
    protected, builtin = frozenset(CrypTensor.PROTECTED_ATTRIBUTES), CrypTensor.PYTHON_BUILTIN

    def aliased(name: str):
        if name in protected or name == "copy_":
            return name
        own = builtin.get(name, name)
        return None if own.endswith("_") and not own.endswith("__") else own   # in-place

    def direct(self, name):
        own = alias.get(name)
        if own is None and name not in alias:
            own = alias[name] = aliased(name)
        if own is not None and not state["AUTOGRAD_ENABLED"]:
            try:
                return object.__getattribute__(self, own)
            except AttributeError:
                pass
        return lookup(self, name)
    return direct
