"""The one place that makes CrypTen 0.4.1 importable on torch 2.x.

CrypTen's ONNX converter imports ``torch.onnx._internal.registration``, which
torch 2.x no longer ships. Nothing in mean-shift uses the converter, so a
stand-in module is registered before the first ``import crypten``. Every entry
point that touches CrypTen calls :func:`import_crypten` instead of importing it.
"""

from __future__ import annotations

import sys
import types
import warnings

_STUB = "torch.onnx._internal.registration"


def import_crypten():
    """Return the ``crypten`` module, installing the torch-2.x shim first."""
    if "crypten" in sys.modules:
        return sys.modules["crypten"]
    try:
        import torch.onnx._internal.registration  # noqa: F401
    except ImportError:
        stub = types.ModuleType(_STUB)
        stub.registry = None  # the converter's only use of the module
        sys.modules[_STUB] = stub
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import crypten  # noqa: E402
    return crypten


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
    import contextlib

    from omegaconf import OmegaConf

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
    from crypten.mpc import MPCTensor

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
    from crypten.cryptensor import CrypTensor

    crypten.set_grad_enabled(False)
    inner = getattr(CrypTensor.__getattribute__, "__wrapped__", None)
    if inner is not None:
        CrypTensor.__getattribute__ = inner
