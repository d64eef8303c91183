"""The MPC runtime under the mean-shift engine: links between ranks (a transport
interface and its TLS mesh), CrypTen's communicator over them, AES-CTR random
streams, the dealer's correlated randomness and the protocols that consume it
(Beaver products, truncation, the sign test, division), fixed-point helpers,
and CrypTen's torch-2.x compatibility step. It knows nothing of mean-shift: it
imports only itself, torch/CrypTen/numpy and the engine's leaf module of error
types (``secure_meanshift.errors``); the engine (``protocol.py``,
``runtime.py``) builds on it.
"""
