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
