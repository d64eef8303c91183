"""The one place that makes CrypTen 0.4.1 importable on torch 2.x.

CrypTen's ONNX converter imports ``torch.onnx._internal.registration``, which
torch 2.x no longer ships. Nothing in mean-shift uses the converter, so a
stand-in module is registered before the first ``import crypten``. Every entry
point that touches CrypTen calls :func:`import_crypten` instead of importing it.
Every other change to CrypTen is made, per session, by crypten_patches.py.

The converter itself (``crypten.nn.onnx_converter``) is replaced by a stand-in
too: loading it imports the ``onnx`` package (and ml_dtypes), a third of the
engine's import time (0.5 of 1.5 s in the simulator's fork server, every rank's
start-up path). Its functions then say that the converter is not loaded.
"""

from __future__ import annotations

import sys
import types
import warnings

_STUB = "torch.onnx._internal.registration"
_CONVERTER = "crypten.nn.onnx_converter"


def _no_converter(*args, **kwargs):
    raise NotImplementedError("CrypTen's ONNX converter is not loaded by secure-meanshift")


def _stand_in_converter() -> None:
    """crypten.nn imports these names from its converter; nothing here uses them."""
    if _CONVERTER in sys.modules:
        return
    stub = types.ModuleType(_CONVERTER)
    stub.from_onnx = stub.from_pytorch = stub.from_tensorflow = _no_converter
    stub.TF_AND_TF2ONNX = False
    sys.modules[_CONVERTER] = stub


_META = "torch._meta_registrations"


def stand_in_meta_registrations() -> None:
    """For the ranks' processes only (_warm.py, before torch loads): torch's
    import registers Python shape functions for meta and fake tensors
    (``torch._meta_registrations``: 0.23 of the fork server's 1.0 s import,
    on every run's critical path). They serve torch.compile, export and meta
    tensors, none of which the engine uses: its CPU tensors dispatch to the
    C++ kernels. A stand-in module takes the name, so torch skips the load.
    No effect once torch is loaded; the caller's own process keeps the real one."""
    if "torch" not in sys.modules and _META not in sys.modules:
        sys.modules[_META] = types.ModuleType(_META)


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
    _stand_in_converter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import crypten  # noqa: E402
    return crypten
