"""The one place that makes CrypTen 0.4.1 importable on torch 2.x.

CrypTen's ONNX converter imports ``torch.onnx._internal.registration``, which
torch 2.x no longer ships. Nothing in mean-shift uses the converter, so a
stand-in module is registered before the first ``import crypten``. Every entry
point that touches CrypTen calls :func:`import_crypten` instead of importing it.
Every other change to CrypTen is made, per session, by crypten_patches.py.
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
